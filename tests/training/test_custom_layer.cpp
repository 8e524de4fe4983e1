// A user-defined layer kind, end to end: the `Scale` layer of docs/graph.md ("Adding a layer
// kind: a worked example") is registered once and then trains, summarizes, saves/loads and
// converts. Also the errors for modules no kind describes, and custom sign quantizers in the
// converter. The code between the "docs/graph.md" markers is shown verbatim in the guide.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "onebit/convert.h"
#include "onebit/data/datasets.h"
#include "onebit/nn.h"
#include "onebit/nn/graph.h"
#include "onebit/registry.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/serialize.h"
#include "onebit/summary.h"
#include "onebit/trace.h"
#include "onebit/train/trainer.h"

using namespace onebit;
namespace fs = std::filesystem;

namespace {

// --- docs/graph.md: the Scale layer (begin) ---
/// A learnable per-channel scale: y[n, c, ...] = x[n, c, ...] * weight[c].
class ScaleImpl : public torch::nn::Cloneable<ScaleImpl> {
 public:
  explicit ScaleImpl(int64_t channels) : channels(channels) { reset(); }
  void reset() override { weight = register_parameter("weight", torch::ones({channels})); }
  at::Tensor forward(const at::Tensor& x) {
    std::vector<int64_t> shape(static_cast<std::size_t>(x.dim()), 1);
    shape[1] = channels;
    return x * weight.view(shape);
  }

  int64_t channels;
  at::Tensor weight;
};
TORCH_MODULE(Scale);

/// Registers the layer kind "Scale": one entry that save/load, the summary and the converter
/// all read. Call it once, before saving or loading models that use the layer.
void register_scale() {
  onebit::LayerKind kind;
  kind.name = "Scale";  // stored in files, shown in errors
  // Options: what `build` needs to make an equal module (the weights are stored separately).
  kind.describe = onebit::describer<ScaleImpl>([](const ScaleImpl& m) {
    return nlohmann::json{{"channels", m.channels}};
  });
  kind.build = [](const nlohmann::json& options) {
    if (!options.is_object() || options.size() != 1 || !options.contains("channels") ||
        !options.at("channels").is_number_integer() || options.at("channels").get<int64_t>() < 1) {
      throw std::invalid_argument(
          "Scale: expected options {\"channels\": a positive integer}, got " + options.dump());
    }
    return torch::nn::AnyModule(Scale(options.at("channels").get<int64_t>()));
  };
  kind.macs = onebit::MacRule::kNone;  // a per-channel multiply: 0 MACs, like batch norm
  // A per-channel affine with zero bias is the runtime's batch_norm op (the runtime builder
  // folds it into the layer before it where it can).
  kind.lower = [](onebit::Lowering& l, const torch::nn::Module& m) {
    const auto& scale = dynamic_cast<const ScaleImpl&>(m);
    const at::Tensor w = scale.weight.detach().to(at::kFloat).contiguous();
    const std::vector<float> weights(w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
    const std::vector<float> zeros(weights.size(), 0.0f);
    return onebit::Lowered{l.builder().batch_norm(l.input(), weights, zeros)};
  };
  onebit::register_layer(std::move(kind));
}
// --- docs/graph.md: the Scale layer (end) ---

void ensure_scale_registered() {
  static const bool registered = [] {
    register_scale();
    return true;
  }();
  (void)registered;
}

// --- docs/graph.md: a graph using Scale (begin) ---
/// A binary 3x3 convolution, scaled per channel, around a float shortcut; then global average
/// pooling and a float dense layer to two classes. Input: 4 channels.
nn::Graph scaled_block() {
  nn::Graph g;
  nn::Value x = g->input();
  nn::Value y = g->call("conv",
                        nn::QuantConv2d(nn::QuantConv2dOptions(4, 4, 3)
                                            .padding(torch::kSame)
                                            .bias(false)
                                            .input_quantizer("ste_sign")
                                            .kernel_quantizer("ste_sign")
                                            .kernel_constraint("weight_clip")),
                        x);
  y = g->call("scale", Scale(4), y);
  x = g->add({x, y}, "add");
  x = g->call("pool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)), x);
  x = g->call("flatten", torch::nn::Flatten(), x);
  x = g->call("dense", nn::QuantDense(nn::QuantDenseOptions(4, 2)), x);
  g->output(x);
  return g;
}
// --- docs/graph.md: a graph using Scale (end) ---

// --- docs/graph.md: Bi-Real and DenseNet blocks (begin) ---
/// Larq's binary 3x3 convolution: sign of the input, sign of the kernel (latent weights clipped
/// to [-1, 1]), no bias, "same" padding with +1 so that the padded input stays binary.
nn::QuantConv2d binary_conv(int64_t in, int64_t out) {
  return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 3)
                             .padding(torch::kSame)
                             .pad_values(1.0)
                             .bias(false)
                             .input_quantizer("ste_sign")
                             .kernel_quantizer("ste_sign")
                             .kernel_constraint("weight_clip"));
}

/// Bi-Real Net: a float shortcut around every binary convolution, x + BN(conv(sign(x))).
nn::Value bireal_block(nn::Graph& g, nn::Value x, int64_t channels, const std::string& name) {
  nn::Value y = g->call(name + "_conv", binary_conv(channels, channels), x);
  y = g->call(name + "_bn", nn::BatchNorm(channels), y);
  return g->add({x, y}, name + "_add");
}

/// DenseNet: append `growth` binary feature maps to everything before, concat(x, conv(BN(x))).
nn::Value densenet_layer(nn::Graph& g, nn::Value x, int64_t channels, int64_t growth,
                         const std::string& name) {
  nn::Value y = g->call(name + "_bn", nn::BatchNorm(channels), x);
  y = g->call(name + "_conv", binary_conv(channels, growth), y);
  return g->concat({x, y}, name + "_concat");
}

/// A Bi-Real block as a graph of its own, to be called as one node of another graph.
nn::Graph bireal_block_graph(int64_t channels) {
  nn::Graph block;
  nn::Value y = block->call("conv", binary_conv(channels, channels), block->input());
  y = block->call("bn", nn::BatchNorm(channels), y);
  block->add({block->input(), y}, "add");
  return block;
}

/// 1x28x28 images to 10 classes: a float stem, two Bi-Real blocks (the second a nested graph:
/// nodes "block2.conv", "block2.bn", "block2.add"), one DenseNet layer, and a Sequential head
/// called as one node (nodes "head.0", "head.1", "head.2").
nn::Graph guide_model() {
  nn::Graph g;
  nn::Value x = g->call(
      "stem", nn::QuantConv2d(nn::QuantConv2dOptions(1, 16, 3).padding(torch::kSame).bias(false)),
      g->input());
  x = g->call("stem_pool", torch::nn::MaxPool2d(2), x);  // 16 x 14 x 14
  x = g->call("stem_bn", nn::BatchNorm(16), x);
  x = bireal_block(g, x, 16, "block1");
  x = g->call("block2", bireal_block_graph(16), x);
  x = densenet_layer(g, x, 16, 16, "dense1");  // 16 + 16 = 32 channels
  torch::nn::Sequential head(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)),
                             torch::nn::Flatten(), nn::QuantDense(nn::QuantDenseOptions(32, 10)));
  x = g->call("head", head, x);
  g->output(x);
  return g;
}
// --- docs/graph.md: Bi-Real and DenseNet blocks (end) ---

/// Random batch-norm statistics and affine parameters: signs after them are mixed, and no
/// value sits exactly on 0 where float rounding could decide a sign.
void randomize_batch_norms(const nn::Graph& model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model->modules(/*include_self=*/false)) {
    if (auto* bn = dynamic_cast<nn::BatchNormImpl*>(m.get())) {
      bn->running_mean.copy_(torch::randn_like(bn->running_mean));
      bn->running_var.copy_(torch::rand_like(bn->running_var) * 4 + 0.5);
      bn->weight.copy_(torch::randn_like(bn->weight));
      bn->bias.copy_(torch::randn_like(bn->bias));
    }
  }
}

/// The marked regions ("// --- docs/graph.md: NAME (begin) ---" to "(end) ---") of this file.
std::map<std::string, std::string> doc_regions(const std::string& source) {
  std::map<std::string, std::string> out;
  const std::string open = "// --- docs/graph.md: ", begin = " (begin) ---\n";
  for (std::size_t at = source.find(open); at != std::string::npos;
       at = source.find(open, at + 1)) {
    const std::size_t name_end = source.find(begin, at);
    if (name_end == std::string::npos || source.find('\n', at) < name_end) continue;
    const std::string name = source.substr(at + open.size(), name_end - at - open.size());
    const std::size_t body = name_end + begin.size();
    const std::size_t end = source.find(open + name + " (end) ---", body);
    if (end != std::string::npos) out[name] = source.substr(body, end - body);
  }
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot read");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

ScaleImpl& scale_of(const nn::Graph& model) {
  auto* s = model->node("scale")->as<ScaleImpl>();
  if (s == nullptr) throw std::runtime_error("node \"scale\" is not a Scale");
  return *s;
}

/// Scales away from their initial ones (and negative ones among them), so that a converter or
/// loader that dropped them would change the outputs.
void randomize_scale(const nn::Graph& model) {
  torch::NoGradGuard no_grad;
  scale_of(model).weight.uniform_(-2.0, 2.0);
}

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("onebit_test_custom_layer_" + name)).string();
}

at::Tensor eval_forward(nn::Graph model, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(x).contiguous();
}

std::vector<float> run_runtime(const runtime::Model& m, const at::Tensor& x) {
  const runtime::Interpreter net(m);
  const at::Tensor c = x.contiguous();
  return net.run(c.data_ptr<float>(), static_cast<std::size_t>(c.numel()),
                 static_cast<std::size_t>(c.size(0)));
}

/// Converts `model` with and without fusion and expects the runtime to give LibTorch's eval
/// output within 1e-4 (relative above 1) on `x`.
void expect_runtime_matches_torch(const nn::Graph& model, const at::Tensor& x,
                                  const std::vector<int64_t>& input_shape) {
  const at::Tensor want = eval_forward(model, x);
  const float* expected = want.data_ptr<float>();
  for (bool fuse : {true, false}) {
    ConvertOptions options;
    options.fuse = fuse;
    const std::vector<float> got = run_runtime(convert(model, input_shape, options), x);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(want.numel())) << "fuse=" << fuse;
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], expected[i], 1e-4 * std::max(1.0f, std::fabs(expected[i])))
          << "element " << i << ", fuse=" << fuse;
    }
  }
}

int count_ops(const runtime::Model& m, runtime::OpType type) {
  return static_cast<int>(std::count_if(m.ops.begin(), m.ops.end(),
                                        [&](const runtime::Op& op) { return op.type == type; }));
}

const LayerSummary* row_named(const ModelSummary& s, const std::string& name) {
  for (const auto& row : s.layers) {
    if (row.name == name) return &row;
  }
  return nullptr;
}

/// Runs `f`, expects std::invalid_argument, and expects every part in its message.
void expect_invalid_argument(const std::function<void()>& f, const std::string& what,
                             const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << what << ": expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    for (const auto& p : parts) {
      EXPECT_NE(message.find(p), std::string::npos)
          << what << ": '" << p << "' missing in: " << message;
    }
  }
}

}  // namespace

TEST(CustomLayer, RegisteredOnceUnderItsName) {
  ensure_scale_registered();
  const auto kind = layer_kind("Scale");
  ASSERT_NE(kind, nullptr);
  EXPECT_EQ(kind->macs, MacRule::kNone);
  EXPECT_TRUE(static_cast<bool>(kind->lower));
  const auto names = layer_kind_names();
  EXPECT_EQ(std::count(names.begin(), names.end(), "Scale"), 1);
  nlohmann::json options;
  EXPECT_EQ(find_layer_kind(*Scale(3), &options), kind);
  EXPECT_EQ(options, (nlohmann::json{{"channels", 3}}));
  EXPECT_THROW(kind->build(nlohmann::json{{"channels", 3}, {"bias", true}}), std::invalid_argument);
  EXPECT_THROW(kind->build(nlohmann::json{{"channels", "3"}}), std::invalid_argument);
}

TEST(CustomLayer, GraphWithScaleTrainsAndSummarizes) {
  ensure_scale_registered();
  torch::manual_seed(1);
  nn::Graph model = scaled_block();
  // Labels that the float shortcut can carry to the head: the sign of channel 0's mean.
  data::Dataset set;
  set.images = torch::randn({64, 4, 6, 6});
  set.labels = (set.images.select(1, 0).mean({1, 2}) > 0).to(torch::kLong);
  set.num_classes = 2;
  train::TrainOptions options;
  options.optimizer = "sgd";
  options.lr = 0.01;
  options.epochs = 3;
  options.batch_size = 16;
  options.progress = false;
  options.out_dir = temp_path("train");
  const at::Tensor scale_before = scale_of(model).weight.detach().clone();
  const double loss_before = train::evaluate(model, set).loss;
  const train::TrainResult result = train::fit(model, set, set, options);
  fs::remove_all(options.out_dir);
  EXPECT_EQ(result.history.size(), 3u);
  EXPECT_LT(result.test_loss, loss_before);
  EXPECT_FALSE(torch::equal(scale_of(model).weight.detach(), scale_before))
      << "SGD did not change the Scale weights";

  const ModelSummary s = summary(model, {4, 6, 6});
  const LayerSummary* scale = row_named(s, "scale:Scale");
  ASSERT_NE(scale, nullptr) << s.to_string();
  ASSERT_TRUE(scale->macs_by_bits.has_value()) << "MacRule::kNone must count 0 MACs, not \"?\"";
  EXPECT_TRUE(scale->macs_by_bits->empty());
  EXPECT_EQ(scale->params_by_bits, (std::map<int, int64_t>{{32, 4}}));
  EXPECT_EQ(scale->trainable_params, 4);
  EXPECT_EQ(scale->output_shape, (std::vector<int64_t>{-1, 4, 6, 6}));
  const LayerSummary* add = row_named(s, "add:Add");
  ASSERT_NE(add, nullptr) << s.to_string();
  EXPECT_FALSE(add->macs_by_bits.has_value()) << "Add shows \"?\" MACs, as in Larq";
  EXPECT_EQ(s.total_params, 4 * 4 * 9 + 4 + 4 * 2 + 2);
  EXPECT_EQ(s.macs(1), 4 * 4 * 9 * 6 * 6);
}

TEST(CustomLayer, SaveLoadRoundTripIsBitIdentical) {
  ensure_scale_registered();
  torch::manual_seed(2);
  nn::Graph model = scaled_block();
  randomize_scale(model);
  const nlohmann::json architecture = serialize::describe(model);
  const nlohmann::json& node = architecture.at("nodes").at(1);
  EXPECT_EQ(node.at("name"), "scale");
  EXPECT_EQ(node.at("type"), "Scale");
  EXPECT_EQ(node.at("options"), (nlohmann::json{{"channels", 4}}));
  EXPECT_EQ(node.at("inputs"), (nlohmann::json{1}));
  EXPECT_EQ(architecture.at("nodes").at(2).at("inputs"), (nlohmann::json{0, 2}));

  const at::Tensor x = torch::randn({5, 4, 6, 6});
  const at::Tensor want = eval_forward(model, x);
  for (bool quantized : {false, true}) {
    const std::string path = temp_path(quantized ? "model.bits" : "model.onebit");
    save(model, path, quantized);
    nn::Graph loaded = load(path);
    fs::remove(path);
    EXPECT_EQ(serialize::describe(loaded), architecture) << "quantized=" << quantized;
    EXPECT_TRUE(torch::equal(scale_of(loaded).weight, scale_of(model).weight))
        << "quantized=" << quantized;
    EXPECT_TRUE(torch::equal(eval_forward(loaded, x), want)) << "quantized=" << quantized;
  }
}

TEST(CustomLayer, ConvertsAndMatchesLibTorch) {
  ensure_scale_registered();
  torch::manual_seed(3);
  nn::Graph model = scaled_block();
  randomize_scale(model);
  expect_runtime_matches_torch(model, torch::randn({3, 4, 6, 6}), {4, 6, 6});
  // Unfused, the Scale is the runtime's batch_norm op behind the binary convolution.
  ConvertOptions unfused;
  unfused.fuse = false;
  const runtime::Model m = convert(model, {4, 6, 6}, unfused);
  EXPECT_EQ(count_ops(m, runtime::OpType::kBatchNorm), 1);
  EXPECT_EQ(count_ops(m, runtime::OpType::kBinaryConv2d), 1);
  EXPECT_EQ(count_ops(m, runtime::OpType::kAdd), 1);
}

namespace {

// The seed's kind of composite module: a shortcut hidden in forward, y = x + fc(x).
class DenseShortcutImpl : public torch::nn::Module {
 public:
  explicit DenseShortcutImpl(int64_t n) : fc(register_module("fc", torch::nn::Linear(n, n))) {}
  at::Tensor forward(const at::Tensor& x) { return x + fc->forward(x); }

  torch::nn::Linear fc;
};
TORCH_MODULE(DenseShortcut);

}  // namespace

TEST(CustomLayer, UnregisteredCompositeModuleNamesTheNodeAndTheWayOut) {
  nn::Graph model;
  nn::Value x = model->call("flatten", torch::nn::Flatten(), model->input());
  x = model->call("shortcut", DenseShortcut(12), x);
  model->output(x);
  ASSERT_EQ(eval_forward(model, torch::randn({2, 3, 2, 2})).sizes().vec(),
            (std::vector<int64_t>{2, 12}));
  const std::vector<std::string> parts = {"node \"shortcut\"", "DenseShortcut", "onebit::nn::Graph",
                                          "register_layer"};
  expect_invalid_argument([&] { summary(model, {3, 2, 2}); }, "summary", parts);
  const std::string path = temp_path("unregistered.onebit");
  expect_invalid_argument([&] { save(model, path); }, "save", parts);
  EXPECT_FALSE(fs::exists(path)) << "save wrote a file it cannot load";
  expect_invalid_argument([&] { convert(model, {3, 2, 2}); }, "convert", parts);
}

namespace {

/// A custom 1-bit input quantizer: forward sign (or the identity), STE gradient, declared as
/// `kind`.
quantizers::QuantizerPtr custom_quantizer(const std::string& name, quantizers::ForwardKind kind,
                                          bool forward_is_sign = true) {
  return std::make_shared<quantizers::Custom>(
      name,
      [forward_is_sign](const at::Tensor& x) {
        return forward_is_sign ? at::where(x >= 0, 1.0, -1.0).to(x.scalar_type()) : x;
      },
      [](const at::Tensor& x, const at::Tensor& dy) {
        return dy * (x.abs() <= 1).to(dy.scalar_type());
      },
      /*precision=*/1, kind);
}

/// Two binary convolutions whose inputs go through `q`, with a batch norm between them (whose
/// output only feeds the second convolution's sign: the exact-threshold rule applies).
nn::Graph custom_sign_model(const quantizers::QuantizerPtr& q) {
  auto conv = [&](int64_t in, int64_t out) {
    return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 3)
                               .bias(false)
                               .input_quantizer(q)
                               .kernel_quantizer("ste_sign")
                               .kernel_constraint("weight_clip"));
  };
  nn::Graph g;
  nn::Value x = g->call("conv1", conv(2, 8), g->input());
  x = g->call("bn", nn::BatchNorm(8), x);
  x = g->call("conv2", conv(8, 4), x);
  x = g->call("flatten", torch::nn::Flatten(), x);
  g->output(x);
  torch::NoGradGuard no_grad;
  auto* bn = g->node("bn")->as<nn::BatchNormImpl>();
  bn->running_mean.copy_(torch::randn({8}) * 3);
  bn->running_var.copy_(torch::rand({8}) * 20 + 0.5);
  bn->weight.copy_(torch::randn({8}));
  bn->bias.copy_(torch::randn({8}));
  return g;
}

}  // namespace

TEST(CustomLayer, CustomSignQuantizerDeclaredAsSignConvertsToBinaryConv) {
  torch::manual_seed(4);
  nn::Graph model =
      custom_sign_model(custom_quantizer("test_custom_sign", quantizers::ForwardKind::kSign));
  expect_runtime_matches_torch(model, torch::randn({3, 2, 7, 7}), {2, 7, 7});
  for (bool fuse : {true, false}) {
    ConvertOptions options;
    options.fuse = fuse;
    const runtime::Model m = convert(model, {2, 7, 7}, options);
    EXPECT_EQ(count_ops(m, runtime::OpType::kBinaryConv2d), 2) << "fuse=" << fuse;
    EXPECT_EQ(count_ops(m, runtime::OpType::kConv2d), 0) << "fuse=" << fuse;
    EXPECT_GE(count_ops(m, runtime::OpType::kQuantize), 1) << "fuse=" << fuse;
  }
}

TEST(CustomLayer, CustomQuantizerNotDeclaredAsSignIsRefused) {
  torch::manual_seed(5);
  nn::Graph other =
      custom_sign_model(custom_quantizer("test_custom_other", quantizers::ForwardKind::kOther));
  expect_invalid_argument(
      [&] {
        convert(other, {2, 7, 7});
      },
      "kOther", {"node \"conv1\"", "test_custom_other", "expected a sign"});
  nn::Graph liar = custom_sign_model(custom_quantizer(
      "test_custom_identity", quantizers::ForwardKind::kSign, /*forward_is_sign=*/false));
  expect_invalid_argument(
      [&] {
        convert(liar, {2, 7, 7});
      },
      "identity declared kSign", {"node \"conv1\"", "test_custom_identity", "declares a sign"});
}

TEST(CustomLayer, GuideBlocksTraceAndConvert) {
  torch::manual_seed(6);
  nn::Graph model = guide_model();
  randomize_batch_norms(model);
  const ModelTrace t = trace(model, {1, 28, 28});
  std::map<std::string, const TracedNode*> by_name;
  for (const auto& n : t.nodes) by_name[n.name] = &n;
  ASSERT_EQ(by_name.count("block1_add"), 1u);
  EXPECT_EQ(by_name.at("block1_add")->type, "Add");
  EXPECT_EQ(by_name.at("block1_add")->inputs.size(), 2u);
  ASSERT_EQ(by_name.count("block2.add"), 1u) << "the nested graph is not inlined";
  const std::vector<int>& shortcut = by_name.at("block2.add")->inputs;
  ASSERT_EQ(shortcut.size(), 2u);
  ASSERT_GE(shortcut[0], 1);
  EXPECT_EQ(t.nodes.at(static_cast<std::size_t>(shortcut[0] - 1)).name, "block1_add")
      << "the nested graph's input is not the value it was called on";
  ASSERT_EQ(by_name.count("dense1_concat"), 1u);
  EXPECT_EQ(by_name.at("dense1_concat")->output_shape, (std::vector<int64_t>{-1, 32, 14, 14}));
  ASSERT_EQ(by_name.count("head.2"), 1u) << "the nested Sequential is not inlined";
  EXPECT_EQ(by_name.at("head.2")->type, "QuantDense");
  EXPECT_EQ(by_name.at("head.2")->output_shape, (std::vector<int64_t>{-1, 10}));
  expect_runtime_matches_torch(model, torch::randn({2, 1, 28, 28}), {1, 28, 28});
}

TEST(CustomLayer, GuideShowsTheCodeOfThisTest) {
  const fs::path root = fs::path(ONEBIT_TEST_DATA_DIR).parent_path().parent_path();
  const auto regions = doc_regions(read_text(root / "tests/training/test_custom_layer.cpp"));
  const std::string guide = read_text(root / "docs/graph.md");
  ASSERT_EQ(regions.size(), 3u);
  for (const auto& [name, code] : regions) {
    EXPECT_NE(guide.find(code), std::string::npos)
        << "docs/graph.md does not show region \"" << name << "\" of this test verbatim:\n"
        << code;
  }
}
