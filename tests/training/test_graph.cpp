// Graph models: the functional builder, the module behaviour LibTorch users expect, the trace,
// the zoo's graph models (summaries computed by hand), training, checkpoints and the flip ratio.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "ext_test_util.h"
#include "onebit/convert.h"
#include "onebit/metrics.h"
#include "onebit/nn.h"
#include "onebit/nn/graph.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/serialize.h"
#include "onebit/summary.h"
#include "onebit/trace.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

using namespace onebit;
using onebit::testing::expect_throw_with;
namespace fs = std::filesystem;

namespace {

using Bits = std::map<int, int64_t>;

// y = concat(a, a + relu(b)) with a = fc1(x), b = fc2(x): a shortcut and a concatenation.
nn::Graph small_graph() {
  nn::Graph g;
  nn::Value x = g->input();
  nn::Value a = g->call("fc1", torch::nn::Linear(4, 3), x);
  nn::Value b = g->call("fc2", torch::nn::Linear(4, 3), x);
  nn::Value r = g->call("relu", torch::nn::ReLU(), b);
  nn::Value s = g->add({a, r}, "add");
  g->output(g->concat({a, s}, "cat"));
  return g;
}

std::string temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("onebit_graph_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  return d.string();
}

/// `n` random 1 x hw x hw images in [-1, 1] with random labels of 10 classes.
data::Dataset random_images(int64_t n, int64_t hw) {
  return {torch::rand({n, 1, hw, hw}) * 2 - 1, torch::randint(10, {n}), 10};
}

/// One quiet epoch in batches of 16, written to a fresh temporary directory.
train::TrainOptions one_epoch(const std::string& name) {
  train::TrainOptions o;
  o.epochs = 1;
  o.batch_size = 16;
  o.progress = false;
  o.out_dir = temp_dir(name);
  return o;
}

}  // namespace

TEST(Graph, ForwardIsTheDagItDescribes) {
  torch::manual_seed(1);
  auto g = small_graph();
  const auto x = torch::randn({5, 4});
  auto* fc1 = g->node("fc1")->as<torch::nn::Linear>();
  auto* fc2 = g->node("fc2")->as<torch::nn::Linear>();
  const auto a = fc1->forward(x);
  const auto want = torch::cat({a, a + torch::relu(fc2->forward(x))}, 1);
  EXPECT_TRUE(torch::allclose(g->forward(x), want));
  EXPECT_EQ(g->nodes().size(), 5u);
  EXPECT_EQ(g->output_id(), 5);
  EXPECT_EQ(g[0].get(), g->node("fc1").get());
}

TEST(Graph, IsATorchModule) {
  torch::manual_seed(2);
  auto g = small_graph();
  std::vector<std::string> names;
  for (const auto& p : g->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, std::vector<std::string>({"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  // train()/eval() reach every node.
  g->eval();
  EXPECT_FALSE(g->node("relu")->is_training());
  g->train();
  EXPECT_TRUE(g->node("fc2")->is_training());
  // A torch optimizer trains it.
  torch::optim::SGD sgd(g->parameters(), 0.05);
  const auto x = torch::randn({8, 4});
  const auto before = g->forward(x).pow(2).mean().item<double>();
  for (int i = 0; i < 5; ++i) {
    sgd.zero_grad();
    g->forward(x).pow(2).mean().backward();
    sgd.step();
  }
  EXPECT_LT(g->forward(x).pow(2).mean().item<double>(), before);
  // to(dtype) converts every parameter (to(device) goes through the same path).
  g->to(torch::kDouble);
  EXPECT_EQ(g->forward(x.to(torch::kDouble)).scalar_type(), torch::kDouble);
  g->to(torch::kFloat);
  // torch::save / torch::load of the module state.
  const auto path = temp_dir("torch_save.pt");
  torch::save(g, path);
  auto other = small_graph();
  torch::load(other, path);
  EXPECT_TRUE(torch::equal(other->forward(x), g->forward(x)));
  fs::remove(path);
}

TEST(Graph, SequentialConvertsToAChainSharingItsModules) {
  torch::nn::Sequential seq(torch::nn::Linear(3, 2), torch::nn::ReLU());
  nn::Graph g = seq;
  const auto x = torch::randn({2, 3});
  EXPECT_TRUE(torch::equal(g->forward(x), seq->forward(x)));
  EXPECT_EQ(g[0].get(), seq[0].get());
  EXPECT_EQ(g->named_parameters().keys(), seq->named_parameters().keys());
}

TEST(Graph, NestedGraphsAreInlinedByTheTrace) {
  nn::Graph inner;
  nn::Value y = inner->call("fc", torch::nn::Linear(4, 4), inner->input());
  inner->output(inner->add({inner->input(), y}, "add"));
  nn::Graph outer;
  nn::Value x = outer->call("block", inner, outer->input());
  outer->call("head", torch::nn::Linear(4, 2), x);
  const auto t = trace(outer, {4});
  std::vector<std::string> names;
  for (const auto& n : t.nodes) names.push_back(n.name + ":" + n.type);
  EXPECT_EQ(names, std::vector<std::string>(
                       {"block.fc:torch.Linear", "block.add:Add", "head:torch.Linear"}));
  EXPECT_EQ(t.nodes[1].inputs, std::vector<int>({0, 1}));  // the shortcut reads the input
  EXPECT_EQ(t.nodes[2].inputs, std::vector<int>({2}));
  EXPECT_EQ(t.nodes[2].output_shape, std::vector<int64_t>({-1, 2}));
  EXPECT_EQ(t.consumers(0), std::vector<size_t>({0, 1}));
  EXPECT_EQ(t.output, 3);
  EXPECT_EQ(outer->named_parameters().size(), 4u);  // block.fc.weight, ..., head.bias
  EXPECT_TRUE(outer->named_parameters().contains("block.fc.weight"));
}

TEST(Graph, BuilderErrorsNameTheNode) {
  nn::Graph g;
  g->call("fc", torch::nn::Linear(2, 2), g->input());
  expect_throw_with<std::invalid_argument>(
      [&] { g->call("fc", torch::nn::Linear(2, 2), g->input()); }, {"\"fc\"", "already exists"});
  expect_throw_with<std::invalid_argument>(
      [&] { g->call("a.b", torch::nn::Linear(2, 2), g->input()); }, {"a.b", "'.'"});
  expect_throw_with<std::invalid_argument>(
      [&] { g->call("x", torch::nn::Linear(2, 2), nn::Value{7}); }, {"\"x\"", "value 7"});
  expect_throw_with<std::invalid_argument>([&] { g->output(nn::Value{-1}); }, {"output"});
  expect_throw_with<std::invalid_argument>([&] { g->add({g->input()}, "sum"); },
                                           {"\"sum\"", "at least 2"});
  expect_throw_with<std::invalid_argument>([&] { g->concat({g->input()}, "cat"); },
                                           {"\"cat\"", "at least 2"});
  expect_throw_with<std::out_of_range>([&] { g->node("nope"); }, {"nope"});
  // Shape mismatches of merges are clear errors at run time.
  nn::Graph bad;
  nn::Value a = bad->call("a", torch::nn::Linear(2, 3), bad->input());
  bad->add({bad->input(), a}, "sum");
  expect_throw_with<std::invalid_argument>(
      [&] {
        bad->forward(torch::randn({1, 2}));
      },
      {"Add", "one shape", "[1, 2]", "[1, 3]"});
}

TEST(GraphZoo, BiRealSummaryTotalsAreTheHandComputedOnes) {
  const auto s = summary(zoo::build("bireal-mnist"), {1, 28, 28}, "bireal-mnist");
  // Binary 3x3 kernels: 2 x 32x32, 32x64, 64x64, 64x128, 128x128, times 9.
  const int64_t binary = 9 * (2 * 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128);
  // Float: stem 1x32x3x3, 1x1 shortcuts 32x64 and 64x128, dense 128x10 + 10 biases.
  const int64_t float_trainable = 288 + 2048 + 8192 + 1290;
  // Batch norm statistics, 2 per channel: 3 at 32, 3 at 64, 3 at 128 channels.
  const int64_t stats = 2 * 3 * (32 + 64 + 128);
  EXPECT_EQ(binary, 294912);
  EXPECT_EQ(s.param_bits(), std::vector<int>({1, 32}));
  EXPECT_EQ(s.total_params, binary + float_trainable + stats);
  EXPECT_EQ(s.trainable_params, binary + float_trainable);
  EXPECT_EQ(s.non_trainable_params, stats);
  EXPECT_EQ(s.memory_bits, binary + 32 * (float_trainable + stats));
  // Binary MACs: two blocks at 14x14, the strided one and the rest at 7x7.
  EXPECT_EQ(s.macs(1), 2 * 9216 * 196 + (18432 + 36864 + 73728 + 147456) * 49);
  // Float MACs: stem at 28x28, 1x1 shortcuts at 7x7, dense.
  EXPECT_EQ(s.macs(32), 288 * 784 + (2048 + 8192) * 49 + 1280);
  EXPECT_EQ(s.total_macs, s.macs(1) + s.macs(32));
  // One "?" row per add and for the global pooling, as Larq prints them.
  int adds = 0;
  for (const auto& l : s.layers) {
    if (l.name.find(":Add") != std::string::npos) {
      ++adds;
      EXPECT_FALSE(l.macs_by_bits.has_value()) << l.name;
      EXPECT_TRUE(l.params_by_bits.empty()) << l.name;
    }
  }
  EXPECT_EQ(adds, 6);
  const auto text = s.to_string();
  EXPECT_NE(text.find("| block1_add:Add "), std::string::npos) << text;
  EXPECT_NE(text.find("Ratio of MACs that are binarized  0.9593"), std::string::npos) << text;
}

TEST(GraphZoo, DenseNetSummaryTotalsAreTheHandComputedOnes) {
  const auto s = summary(zoo::build("densenet-mnist"), {1, 28, 28}, "densenet-mnist");
  // Each dense layer adds 32 maps from a 3x3 binary conv over all maps before it:
  // block 1 reads 32, 64, 96 channels; block 2 (after the 128 -> 64 transition) 64, 96, 128.
  const int64_t block1 = 9 * 32 * (32 + 64 + 96), block2 = 9 * 32 * (64 + 96 + 128);
  const int64_t float_trainable = 288 + 128 * 64 + (160 * 10 + 10);
  // Batch norms: stem 32, before each dense layer, the transition's 128, the head's 160.
  const int64_t stats = 2 * (32 + (32 + 64 + 96) + 128 + (64 + 96 + 128) + 160);
  EXPECT_EQ(block1 + block2, 138240);
  EXPECT_EQ(s.total_params, block1 + block2 + float_trainable + stats);
  EXPECT_EQ(s.non_trainable_params, stats);
  EXPECT_EQ(s.macs(1), block1 * 196 + block2 * 49);
  EXPECT_EQ(s.macs(32), 288 * 784 + 128 * 64 * 49 + 1600);
  std::vector<std::vector<int64_t>> concat_shapes;
  for (const auto& l : s.layers) {
    if (l.name.find(":Concat") != std::string::npos) concat_shapes.push_back(*l.output_shape);
  }
  EXPECT_EQ(concat_shapes, (std::vector<std::vector<int64_t>>{{-1, 64, 14, 14},
                                                              {-1, 96, 14, 14},
                                                              {-1, 128, 14, 14},
                                                              {-1, 96, 7, 7},
                                                              {-1, 128, 7, 7},
                                                              {-1, 160, 7, 7}}));
}

TEST(GraphZoo, FloatCopiesHaveNoBinaryWeights) {
  zoo::ModelOptions o;
  o.quantized = false;
  for (const char* name : {"bireal-mnist", "densenet-mnist"}) {
    const auto s = summary(zoo::build(name, o), {1, 28, 28});
    EXPECT_EQ(s.param_bits(), std::vector<int>({32})) << name;
    EXPECT_EQ(s.macs(1), 0) << name;
  }
  o.input_shape = {3, 32, 32};  // CIFAR-sized inputs work too
  EXPECT_EQ(zoo::build("bireal-mnist", o)->forward(torch::randn({2, 3, 32, 32})).sizes(),
            (std::vector<int64_t>{2, 10}));
}

TEST(GraphZoo, FlipRatioSeesEveryBinaryKernel) {
  auto model = zoo::build("bireal-mnist");
  const auto kernels = metrics::binary_kernels(*model);
  EXPECT_EQ(kernels.size(), 6u);
  EXPECT_EQ(kernels[0].first, "block1_conv");
}

TEST(GraphZoo, ResumedTrainingEqualsUninterruptedTraining) {
  // Synthetic 28x28 data: the class is the brightest quadrant.
  auto data = [](int64_t n, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    auto images = at::rand({n, 1, 28, 28}, gen) * 2 - 1;
    auto labels = at::randint(4, {n}, gen);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t q = labels[i].item<int64_t>();
      images[i]
          .slice(1, (q / 2) * 14, (q / 2) * 14 + 14)
          .slice(2, (q % 2) * 14, (q % 2) * 14 + 14) += 1.0;
    }
    return data::Dataset{images.clamp(-1, 1), labels, 10};
  };
  const auto train_set = data(128, 1), test_set = data(64, 2);
  auto options = [&](const std::string& out, int epochs) {
    train::TrainOptions o;
    o.model = "bireal-mnist";
    o.epochs = epochs;
    o.batch_size = 32;
    o.threads = 1;
    o.progress = false;
    o.out_dir = out;
    return o;
  };
  const auto full_dir = temp_dir("full"), part_dir = temp_dir("part");
  at::manual_seed(3);
  auto full = zoo::build("bireal-mnist");
  train::fit(full, train_set, test_set, options(full_dir, 2));
  at::manual_seed(3);
  auto part = zoo::build("bireal-mnist");
  train::fit(part, train_set, test_set, options(part_dir, 1));
  auto resumed_options = options(part_dir, 2);
  resumed_options.resume = part_dir;
  auto resumed = zoo::build("bireal-mnist");
  train::fit(resumed, train_set, test_set, resumed_options);
  for (const auto& p : full->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), resumed->named_parameters()[p.key()])) << p.key();
  }
  // The checkpoint rebuilds the graph from its stored architecture.
  auto ck = train::load_checkpoint(part_dir);
  EXPECT_EQ(ck.config.at("architecture").at("type"), "Graph");
  EXPECT_TRUE(torch::equal(ck.model->forward(test_set.images), [&] {
    resumed->eval();
    torch::NoGradGuard no_grad;
    return resumed->forward(test_set.images);
  }()));
  fs::remove_all(full_dir);
  fs::remove_all(part_dir);
}

// The README's graph example, as written there (with tiny data): it trains, summarizes, saves and
// converts.
TEST(Graph, ReadmeExampleWorks) {
  torch::manual_seed(5);
  nn::Graph g;
  nn::Value x = g->call(
      "stem", nn::QuantConv2d(nn::QuantConv2dOptions(1, 32, 3).padding(torch::kSame)), g->input());
  for (int i = 1; i <= 2; ++i) {
    const std::string n = "block" + std::to_string(i);
    nn::Value y = g->call(n + "_conv",
                          nn::QuantConv2d(nn::QuantConv2dOptions(32, 32, 3)
                                              .padding(torch::kSame)
                                              .pad_values(1.0)
                                              .bias(false)
                                              .input_quantizer("ste_sign")
                                              .kernel_quantizer("ste_sign")
                                              .kernel_constraint("weight_clip")),
                          x);
    y = g->call(n + "_bn", nn::BatchNorm(nn::BatchNormOptions(32).momentum(0.1)), y);
    x = g->add({x, y}, n + "_add");
  }
  x = g->call("pool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)), x);
  x = g->call("flatten", torch::nn::Flatten(), x);
  g->output(g->call("dense", nn::QuantDense(nn::QuantDenseOptions(32, 10)), x));

  const data::Dataset set = random_images(64, 12);
  const train::TrainOptions options = one_epoch("readme");
  auto r = train::fit(g, set, set, options);
  EXPECT_EQ(r.epochs, 1);
  const auto s = summary(g, {1, 12, 12});
  EXPECT_EQ(s.layers.size(), 10u);
  EXPECT_EQ(s.macs(1), 2 * 32 * 32 * 9 * 144);
  const std::string path = options.out_dir + "/block.onebit";
  save(g, path);
  auto loaded = load(path);
  torch::NoGradGuard no_grad;
  g->eval();
  EXPECT_TRUE(torch::equal(loaded->forward(set.images), g->forward(set.images)));
  const runtime::Model m = convert(g, {1, 12, 12});
  runtime::Interpreter net(m);
  const at::Tensor images = set.images.contiguous();
  const auto logits = net.run(images.data_ptr<float>(), images.numel(), 64);
  const at::Tensor got = torch::from_blob(const_cast<float*>(logits.data()), {64, 10});
  EXPECT_TRUE(got.argmax(1).equal(g->forward(images).argmax(1)));
  fs::remove_all(options.out_dir);
}

namespace {

// The seed's conv_with_shortcut written as a plain module: x + bn(conv(x)). onebit cannot see
// its forward pass, but it can still train it.
struct ShortcutBlockImpl : torch::nn::Module {
  ShortcutBlockImpl()
      : conv(register_module("conv", nn::QuantConv2d(nn::QuantConv2dOptions(4, 4, 3)
                                                         .padding(torch::kSame)
                                                         .bias(false)
                                                         .input_quantizer("ste_sign")
                                                         .kernel_quantizer("ste_sign")
                                                         .kernel_constraint("weight_clip")))),
        bn(register_module("bn", nn::BatchNorm(4))) {}
  at::Tensor forward(const at::Tensor& x) { return x + bn->forward(conv->forward(x)); }
  nn::QuantConv2d conv;
  nn::BatchNorm bn;
};
TORCH_MODULE(ShortcutBlock);

torch::nn::Sequential seed_block_model() {
  return torch::nn::Sequential(
      nn::QuantConv2d(nn::QuantConv2dOptions(1, 4, 3).padding(torch::kSame)), ShortcutBlock(),
      torch::nn::Flatten(), nn::QuantDense(nn::QuantDenseOptions(4 * 8 * 8, 10)));
}

}  // namespace

TEST(Graph, OpaqueModulesTrainButCheckpointsSayHowToReloadThem) {
  torch::manual_seed(6);
  auto model = seed_block_model();
  const data::Dataset set = random_images(32, 8);
  const train::TrainOptions o = one_epoch("opaque");
  train::fit(model, set, set, o);  // trains: fit only needs the forward pass
  expect_throw_with<std::runtime_error>(
      [&] { train::load_checkpoint(o.out_dir); },
      {"checkpoint.pt", "could not be stored", "node \"1\"", "ShortcutBlock", "load_model_state"});
  auto again = seed_block_model();
  train::load_model_state(o.out_dir, again);
  for (const auto& p : model->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), again->named_parameters()[p.key()])) << p.key();
  }
  expect_throw_with<std::invalid_argument>(
      [&] {
        summary(model, {1, 8, 8});
      },
      {"node \"1\"", "onebit::nn::Graph", "register_layer"});
  fs::remove_all(o.out_dir);
}
