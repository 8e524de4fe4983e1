// The published architectures of the zoo: each one builds at a small and at the ImageNet input
// size, trains (forward/backward), summarizes with Larq's rules, saves and loads, converts and
// agrees with LibTorch in the runtime. The summaries of QuickNet and Bi-Real Net are checked
// against totals computed by hand from the papers' layer lists.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "onebit/constraints.h"
#include "onebit/convert.h"
#include "onebit/nn.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/serialize.h"
#include "onebit/summary.h"
#include "onebit/train/checkpoint.h"
#include "onebit/zoo/models.h"

namespace onebit {
namespace {

const std::vector<std::string>& published() {
  static const std::vector<std::string> names = {
      "binary-alexnet",    "xnornet",           "dorefanet",          "birealnet",
      "binary-resnet-e18", "binary-densenet28", "binary-densenet37",  "binary-densenet37-dilated",
      "binary-densenet45", "meliusnet22",       "real-to-binary-net", "quicknet-small",
      "quicknet",          "quicknet-large",    "reactnet-a"};
  return names;
}

bool alexnet_family(const std::string& name) {
  return name == "binary-alexnet" || name == "xnornet" || name == "dorefanet";
}

/// The small input each model is tested at: 3x64x64 for the AlexNet family (three 3x3/2 max
/// pools), 3x32x32 for the rest.
std::vector<int64_t> small_shape(const std::string& name) {
  return alexnet_family(name) ? std::vector<int64_t>{3, 64, 64} : std::vector<int64_t>{3, 32, 32};
}

nn::Graph build_small(const std::string& name, int64_t classes = 10) {
  zoo::ModelOptions o;
  o.input_shape = small_shape(name);
  o.num_classes = classes;
  return zoo::build(name, o);
}

at::Tensor images(const std::vector<int64_t>& shape, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> s = {batch};
  s.insert(s.end(), shape.begin(), shape.end());
  return torch::randn(s);
}

/// A few Adam steps on random images and labels, so that batch-norm statistics and latent
/// weights are not at their initial values.
void train_steps(nn::Graph& model, const std::vector<int64_t>& shape, int64_t classes,
                 int steps = 3, int64_t batch = 8) {
  model->train();
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-2));
  for (int i = 0; i < steps; ++i) {
    const at::Tensor x = images(shape, batch, 100 + i);
    const at::Tensor y = torch::randint(classes, {batch}, torch::kLong);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    opt.step();
    apply_constraints(*model);
  }
  model->eval();
}

/// Converts `model`, runs `n` random images through LibTorch and the runtime, and compares the
/// logits image by image. An image matches when every logit agrees within float rounding
/// (1e-3 of the image's largest logit magnitude, plus 1e-3). The only other outcome the runtime
/// may produce is a sign flip: a float value that feeds a binary layer (a batch-norm output, a
/// shortcut sum) lies within rounding of zero, LibTorch's and the runtime's summation orders
/// give it different signs, and in a randomly initialized network the flip then spreads to an
/// arbitrary logit vector (which values round differently depends on LibTorch's thread count and
/// the CPU's BLAS and oneDNN kernels). Flips are rare and independent per image; a wrong kernel,
/// layer or conversion changes every image. So at least `min_matching` images must match, and every
/// image that matches picks LibTorch's class unless LibTorch's own top two are within rounding.
void expect_agreement(nn::Graph& model, const std::vector<int64_t>& shape, int64_t n,
                      const std::string& what, int64_t min_matching) {
  model->eval();
  const at::Tensor x = images(shape, n, 7);
  at::Tensor ref;
  {
    torch::NoGradGuard no_grad;
    ref = model->forward(x).contiguous();
  }
  const runtime::Interpreter net(convert(model, shape));
  const at::Tensor xc = x.contiguous();
  const std::vector<float> out =
      net.run(xc.data_ptr<float>(), static_cast<std::size_t>(xc.numel()), n);
  const int64_t classes = ref.size(1);
  ASSERT_EQ(out.size(), static_cast<std::size_t>(n * classes)) << what;
  const at::Tensor got = torch::from_blob(const_cast<float*>(out.data()), {n, classes}).clone();
  ASSERT_TRUE(got.isfinite().all().item<bool>()) << what;
  const at::Tensor diff = std::get<0>((got - ref).abs().max(1));
  const at::Tensor tolerance = std::get<0>(ref.abs().max(1)) * 1e-3 + 1e-3;
  const at::Tensor top2 = std::get<0>(ref.topk(2, 1));
  int64_t matching = 0;
  std::string flipped;
  for (int64_t i = 0; i < n; ++i) {
    const double tol = tolerance[i].item<double>();
    if (diff[i].item<double>() > tol) {
      flipped += " " + std::to_string(i) + " (max logit difference " +
                 std::to_string(diff[i].item<double>()) + ")";
      continue;
    }
    ++matching;
    const bool same = ref[i].argmax().item<int64_t>() == got[i].argmax().item<int64_t>();
    if ((top2[i][0] - top2[i][1]).item<double>() > 2 * tol) {
      EXPECT_TRUE(same) << what << ": image " << i << " LibTorch " << ref[i] << " runtime "
                        << got[i];
    }
  }
  EXPECT_GE(matching, min_matching)
      << what << ": only " << matching << " of " << n
      << " images match LibTorch within rounding; the others:" << flipped;
}

class ZooModel : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooModel, TrainsAtASmallInputSize) {
  const std::string name = GetParam();
  nn::Graph model = build_small(name);
  model->train();
  const at::Tensor x = images(small_shape(name), 4, 1);
  const at::Tensor out = model->forward(x);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{4, 10}));
  torch::nn::functional::cross_entropy(out, torch::tensor({0, 1, 2, 3})).backward();
  // Every trainable tensor gets a gradient, and the first layer's is non-zero (the gradient
  // crosses every binary layer thanks to the pseudo-gradients and the shortcuts).
  int64_t with_grad = 0, trainable = 0;
  at::Tensor first;
  for (const auto& p : model->named_parameters()) {
    if (!p.value().requires_grad()) continue;
    ++trainable;
    if (p.value().grad().defined()) ++with_grad;
    if (!first.defined()) first = p.value();
  }
  EXPECT_EQ(with_grad, trainable) << name;
  ASSERT_TRUE(first.grad().defined());
  EXPECT_GT(first.grad().abs().sum().item<double>(), 0.0) << name;
}

TEST_P(ZooModel, SummarizesWithBinaryMacs) {
  const std::string name = GetParam();
  const auto s = summary(build_small(name), small_shape(name), name);
  int64_t params = 0, macs = 0;
  for (const auto& l : s.layers) {
    params += l.params();
    if (l.macs_by_bits) {
      for (const auto& [bits, n] : *l.macs_by_bits) macs += n;
    }
  }
  EXPECT_EQ(s.total_params, params);
  EXPECT_EQ(s.total_macs, macs);
  if (name == "dorefanet") {
    // DoReFa-Net's binary kernels read 2-bit inputs: 2-bit MACs, no 1-bit ones.
    EXPECT_EQ(s.macs(1), 0);
    EXPECT_GT(s.macs(2), s.macs(32));
  } else {
    EXPECT_GT(s.binarized_mac_ratio, 0.5) << name;
  }
  const auto j = s.to_json();
  EXPECT_EQ(j.at("totals").at("total_params").get<int64_t>(), s.total_params);
}

TEST_P(ZooModel, SavesAndLoadsWithIdenticalOutputs) {
  const std::string name = GetParam();
  nn::Graph model = build_small(name);
  train_steps(model, small_shape(name), 10, 1, 4);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("onebit_zoo_" + name + ".onebit")).string();
  save(model, path);
  nn::Graph loaded = load(path);
  std::remove(path.c_str());
  const at::Tensor x = images(small_shape(name), 2, 3);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(x), loaded->forward(x))) << name;
}

TEST_P(ZooModel, ConvertsAndAgreesWithLibTorch) {
  const std::string name = GetParam();
  nn::Graph model = build_small(name);
  train_steps(model, small_shape(name), 10);
  // Measured flips on this test's 64 images: 0-4 per model, depending on the CPU's kernels.
  expect_agreement(model, small_shape(name), 64, name, 48);
}

INSTANTIATE_TEST_SUITE_P(Published, ZooModel, ::testing::ValuesIn(published()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s;
                           for (char c : info.param) s += c == '-' ? '_' : c;
                           return s;
                         });

TEST(Zoo, ListsEveryModelAndMatchesLarqNames) {
  const auto names = zoo::model_names();
  for (const auto& n : published()) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  EXPECT_EQ(zoo::canonical_name("QuickNetSmall"), "quicknet-small");
  EXPECT_EQ(zoo::canonical_name("binary_densenet37_dilated"), "binary-densenet37-dilated");
  EXPECT_EQ(zoo::canonical_name("BinaryResNetE18"), "binary-resnet-e18");
  try {
    zoo::build("quicknet-xl");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model \"quicknet-xl\""), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("reactnet-a"), std::string::npos) << e.what();
  }
  // ImageNet defaults; small inputs the AlexNet family cannot take are refused clearly.
  const zoo::ModelOptions o = zoo::resolve_options("quicknet", {});
  EXPECT_EQ(o.input_shape, (std::vector<int64_t>{3, 224, 224}));
  EXPECT_EQ(o.num_classes, 1000);
  zoo::ModelOptions tiny;
  tiny.input_shape = {3, 32, 32};
  try {
    zoo::build("binary-alexnet", tiny);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("H, W >= 57"), std::string::npos) << e.what();
  }
}

/// Larq's rule for a batch norm: its moving mean and variance, 2 per channel, 32 bits.
int64_t bn(int64_t c) { return 2 * c; }

TEST(Zoo, EveryModelSummarizesAtItsDefaultInputSize) {
  // What `onebit summary --model NAME --json` prints, at 3x224x224 and 1000 classes.
  for (const auto& name : published()) {
    const zoo::ModelOptions o = zoo::resolve_options(name, {});
    const auto j = summary(zoo::build(name), o.input_shape, name).to_json();
    const auto& t = j.at("totals");
    EXPECT_GT(t.at("total_params").get<int64_t>(), 1000000) << name;
    EXPECT_GT(t.at("total_macs").get<int64_t>(), 100000000) << name;
    EXPECT_EQ(j.at("layers").back().at("output_shape"), nlohmann::json({-1, 1000})) << name;
  }
}

TEST(Zoo, QuickNetSummaryIsTheHandComputedOne) {
  const auto s = summary(zoo::build("quicknet"), {3, 224, 224}, "quicknet");
  // Binary 3x3 kernels: 4 residual blocks per section at 64, 128, 256, 512 channels.
  int64_t binary = 0, binary_macs = 0;
  const int64_t filters[] = {64, 128, 256, 512}, sizes[] = {56, 28, 14, 7};
  for (int i = 0; i < 4; ++i) {
    binary += 4 * 9 * filters[i] * filters[i];
    binary_macs += 4 * 9 * filters[i] * filters[i] * sizes[i] * sizes[i];
  }
  // Float weights: stem conv 3->16 3x3, depthwise 16 3x3, pointwise 16->64; transitions
  // 1x1 64->128, 128->256, 256->512; dense 512->1000 with bias.
  const int64_t float_trainable =
      27 * 16 + 9 * 16 + 16 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1000 + 1000;
  // Non-trainable: the blur filters (9 per channel) and every batch norm's statistics.
  const int64_t blur = 9 * (64 + 128 + 256);
  const int64_t stats = bn(16) + bn(16) + bn(64) + 4 * bn(64) + 4 * bn(128) + 4 * bn(256) +
                        4 * bn(512) + bn(128) + bn(256) + bn(512);
  EXPECT_EQ(s.total_params, binary + float_trainable + blur + stats);
  EXPECT_EQ(s.trainable_params, binary + float_trainable);
  EXPECT_EQ(s.non_trainable_params, blur + stats);
  EXPECT_EQ(s.memory_bits, binary + 32 * (float_trainable + blur + stats));
  EXPECT_EQ(s.macs(1), binary_macs);
  // Float MACs: stem conv at 112x112, depthwise and pointwise at 56x56, the blur filters at the
  // new size, 1x1 convs at the new size, the dense layer.
  const int64_t float_macs = 27 * 16 * 112 * 112 + 9 * 16 * 56 * 56 + 16 * 64 * 56 * 56 +
                             9 * 64 * 28 * 28 + 64 * 128 * 28 * 28 + 9 * 128 * 14 * 14 +
                             128 * 256 * 14 * 14 + 9 * 256 * 7 * 7 + 256 * 512 * 7 * 7 + 512 * 1000;
  EXPECT_EQ(s.macs(32), float_macs);
  EXPECT_EQ(s.total_macs, binary_macs + float_macs);
}

TEST(Zoo, BiRealNetSummaryIsTheHandComputedOne) {
  const auto s = summary(zoo::build("birealnet"), {3, 224, 224}, "birealnet");
  // 16 binary 3x3 convs: 4 at 64 (56x56), then per stage one doubling (strided) and 3 more.
  int64_t binary = 4 * 9 * 64 * 64, binary_macs = 4 * 9 * 64 * 64 * 56 * 56;
  int64_t c = 64, hw = 56, shortcut = 0, shortcut_macs = 0;
  for (int stage = 0; stage < 3; ++stage) {
    hw /= 2;
    binary += 9 * c * 2 * c + 3 * 9 * 4 * c * c;
    binary_macs += (9 * c * 2 * c + 3 * 9 * 4 * c * c) * hw * hw;
    shortcut += c * 2 * c;
    shortcut_macs += c * 2 * c * hw * hw;
    c *= 2;
  }
  const int64_t float_trainable = 3 * 64 * 49 + shortcut + 512 * 1000 + 1000;
  // Batch norms (scale and center): stem, 16 blocks, 3 shortcuts; Larq counts the statistics.
  const int64_t stats =
      bn(64) + 4 * bn(64) + 4 * bn(128) + 4 * bn(256) + 4 * bn(512) + bn(128) + bn(256) + bn(512);
  EXPECT_EQ(s.total_params, binary + float_trainable + stats);
  EXPECT_EQ(s.macs(1), binary_macs);
  EXPECT_EQ(s.macs(32), 3 * 64 * 49 * 112 * 112 + shortcut_macs + 512 * 1000);
  EXPECT_EQ(s.param_bits(), std::vector<int>({1, 32}));
}

TEST(Zoo, DenseNetTransitionsRoundLikeLarqZoo) {
  // Larq Zoo: round(channels // reduction / 32) * 32 after each block of 64-channel layers.
  const auto s = summary(zoo::build("binary-densenet28"), {3, 224, 224}, "binary-densenet28");
  std::vector<int64_t> transition_channels;
  for (const auto& l : s.layers) {
    if (l.name.find("transition") != std::string::npos &&
        l.name.find("_conv:") != std::string::npos) {
      transition_channels.push_back((*l.output_shape)[1]);
    }
  }
  // 64 + 6*64 = 448 -> 448 // 2.7 = 165 -> 160; 160 + 384 = 544 -> 201 -> 192;
  // 192 + 384 = 576 -> 261 -> 256.
  EXPECT_EQ(transition_channels, (std::vector<int64_t>{160, 192, 256}));
}

TEST(Zoo, QuickNetAndBiRealNetAgreeWithLibTorchAt224) {
  for (const std::string name : {"quicknet", "birealnet"}) {
    nn::Graph model = zoo::build(name);
    train_steps(model, {3, 224, 224}, 1000, 2, 4);
    // At 224x224 every image has 50 times more values near zero: 0-3 of 8 images flipped in
    // runs with different BLAS and oneDNN kernels (Bi-Real Net; QuickNet none).
    expect_agreement(model, {3, 224, 224}, 8, name, 2);
  }
}

TEST(Zoo, BinaryWeightsAreStoredAsBitsInEveryLayerType) {
  // The .obnn of QuickNet (and of DoReFa-Net, whose 2-bit inputs run as thermometer planes)
  // stores its binary kernels as bits, once: the stored size follows the summary's model size
  // (which counts binary weights at 1 bit).
  for (const auto& [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"quicknet", {3, 224, 224}}, {"dorefanet", small_shape("dorefanet")}}) {
    zoo::ModelOptions o;
    o.input_shape = shape;
    nn::Graph model = zoo::build(name, o);
    model->eval();
    const auto s = summary(model, shape, name);
    const runtime::Model m = convert(model, shape);
    const ModelStorage st = storage_of(m);
    int64_t one_bit = 0;
    for (const auto& l : s.layers) {
      const auto it = l.params_by_bits.find(1);
      if (it != l.params_by_bits.end()) one_bit += it->second;
    }
    EXPECT_EQ(st.binary_weights, one_bit) << name;
    const double summary_bytes = static_cast<double>(s.memory_bits) / 8.0;
    EXPECT_LT(static_cast<double>(st.payload_bytes), 1.1 * summary_bytes) << name;
    EXPECT_GT(static_cast<double>(st.payload_bytes), 0.8 * summary_bytes) << name;
    if (name == "dorefanet") {
      // Float layers: the first conv and the logits only; every 2-bit layer is binary.
      int float_layers = 0, planes = 0;
      for (const auto& op : m.ops) {
        float_layers += op.type == runtime::OpType::kConv2d || op.type == runtime::OpType::kDense;
        planes += op.type == runtime::OpType::kThermometer;
      }
      EXPECT_EQ(float_layers, 2);
      EXPECT_EQ(planes, 6);
    }
  }
}

TEST(Zoo, WeightsLoadIntoZooModelsAndMismatchesAreListed) {
  nn::Graph trained = build_small("quicknet-small");
  train_steps(trained, small_shape("quicknet-small"), 10, 1, 4);
  const std::string path =
      (std::filesystem::temp_directory_path() / "onebit_zoo_weights.pt").string();
  train::save_checkpoint(path, trained, nullptr, {{"epoch", 1}});
  // Same architecture: identical outputs.
  nn::Graph fresh = build_small("quicknet-small");
  train::load_model_state(path, fresh);
  fresh->eval();
  const at::Tensor x = images(small_shape("quicknet-small"), 2, 5);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(trained->forward(x), fresh->forward(x)));
  }
  // Another class count: the head is named with both shapes, and nothing is changed.
  nn::Graph other = build_small("quicknet-small", 100);
  const at::Tensor before = other->named_parameters()["stem_conv.weight"].clone();
  try {
    train::load_model_state(path, other);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("head_dense.weight: model [100, 512], file [10, 512]"), std::string::npos)
        << what;
    EXPECT_NE(what.find("head_dense.bias: model [100], file [10]"), std::string::npos) << what;
  }
  EXPECT_TRUE(torch::equal(before, other->named_parameters()["stem_conv.weight"]));
  // Another architecture: missing and unexpected tensors are listed by name.
  nn::Graph bireal = build_small("birealnet");
  try {
    train::load_model_state(path, bireal);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("missing from the file"), std::string::npos) << what;
    EXPECT_NE(what.find("block1_conv.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("has no place for"), std::string::npos) << what;
  }
  std::remove(path.c_str());
}

TEST(Zoo, FloatCopiesOfPublishedModelsHaveNoQuantizers) {
  for (const auto& name : published()) {
    zoo::ModelOptions o;
    o.quantized = false;
    o.input_shape = small_shape(name);
    o.num_classes = 10;
    const auto s = summary(zoo::build(name, o), o.input_shape, name);
    EXPECT_EQ(s.param_bits(), std::vector<int>({32})) << name;
    EXPECT_EQ(s.macs(1), 0) << name;
  }
}

}  // namespace
}  // namespace onebit
