// The converter: LibTorch Sequential -> onebit_runtime model, checked against LibTorch's eval
// mode layer combination by layer combination.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "onebit/convert.h"
#include "onebit/nn.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/summary.h"
#include "onebit/zoo/models.h"

using namespace onebit;

namespace {

nn::QuantConv2dOptions bconv(int64_t in, int64_t out, int64_t k, bool binary_input) {
  return nn::QuantConv2dOptions(in, out, k)
      .bias(false)
      .input_quantizer(binary_input ? quantizers::QuantizerSpec("ste_sign") : nullptr)
      .kernel_quantizer("ste_sign")
      .kernel_constraint("weight_clip");
}

nn::QuantDenseOptions bdense(int64_t in, int64_t out, bool binary_input) {
  return nn::QuantDenseOptions(in, out)
      .bias(false)
      .input_quantizer(binary_input ? quantizers::QuantizerSpec("ste_sign") : nullptr)
      .kernel_quantizer("ste_sign")
      .kernel_constraint("weight_clip");
}

// Random running statistics (and affine parameters) for every batch norm, so that signs after
// them are mixed and some multipliers are negative.
void randomize_batch_norms(nn::Graph model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model->modules(/*include_self=*/false)) {
    at::Tensor mean, var, weight, bias;
    if (auto* bn = dynamic_cast<nn::BatchNormImpl*>(m.get())) {
      mean = bn->running_mean, var = bn->running_var, weight = bn->weight, bias = bn->bias;
    } else if (auto* bn1 = dynamic_cast<torch::nn::BatchNorm1dImpl*>(m.get())) {
      mean = bn1->running_mean, var = bn1->running_var, weight = bn1->weight, bias = bn1->bias;
    } else if (auto* bn2 = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
      mean = bn2->running_mean, var = bn2->running_var, weight = bn2->weight, bias = bn2->bias;
    } else {
      continue;
    }
    mean.copy_(torch::randn_like(mean) * 3);
    var.copy_(torch::rand_like(var) * 20 + 0.5);
    if (weight.defined()) weight.copy_(torch::randn_like(weight));
    if (bias.defined()) bias.copy_(torch::randn_like(bias));
  }
}

// Images whose values are multiples of 1/8 in [-1, 1]: float sums of them with +-1 weights are
// exact in any order, so float first layers agree with LibTorch bit for bit too.
at::Tensor test_images(std::vector<int64_t> shape) {
  return torch::round(torch::randn(shape) * 4).clamp(-8, 8) / 8;
}

std::vector<float> run_runtime(const runtime::Model& m, const at::Tensor& x, int threads = 1) {
  runtime::InterpreterOptions o;
  o.threads = threads;
  const runtime::Interpreter net(m, o);
  const at::Tensor c = x.contiguous();
  return net.run(c.data_ptr<float>(), static_cast<size_t>(c.numel()),
                 static_cast<size_t>(c.size(0)));
}

std::vector<float> run_torch(nn::Graph model, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  model->eval();
  const at::Tensor y = model->forward(x).contiguous();
  return std::vector<float>(y.data_ptr<float>(), y.data_ptr<float>() + y.numel());
}

// Converts `model` (fused and unfused) and checks the runtime against LibTorch; `exact` demands
// equality, else a relative float tolerance.
void expect_matches_torch(nn::Graph model, const std::vector<int64_t>& input_shape, bool exact,
                          int64_t batch = 3) {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  const at::Tensor x = test_images(shape);
  const std::vector<float> expected = run_torch(model, x);
  for (bool fuse : {true, false}) {
    ConvertOptions opts;
    opts.fuse = fuse;
    const std::vector<float> got = run_runtime(convert(model, input_shape, opts), x);
    ASSERT_EQ(got.size(), expected.size()) << "fuse=" << fuse;
    for (size_t i = 0; i < got.size(); ++i) {
      if (exact) {
        ASSERT_EQ(got[i], expected[i]) << "element " << i << " fuse=" << fuse;
      } else {
        ASSERT_NEAR(got[i], expected[i], 1e-4 * std::max(1.0f, std::fabs(expected[i])))
            << "element " << i << " fuse=" << fuse;
      }
    }
  }
}

}  // namespace

TEST(Convert, LarqMnistStyleCnnMatchesLibTorch) {
  torch::manual_seed(1);
  auto model = torch::nn::Sequential(
      nn::QuantConv2d(bconv(1, 8, 3, false)), torch::nn::MaxPool2d(2), nn::BatchNorm(8),
      nn::QuantConv2d(bconv(8, 16, 3, true)), torch::nn::MaxPool2d(2), nn::BatchNorm(16),
      nn::QuantConv2d(bconv(16, 16, 3, true)), nn::BatchNorm(16), torch::nn::Flatten(),
      nn::QuantDense(bdense(64, 12, true)), nn::BatchNorm(12), nn::QuantDense(bdense(12, 10, true)),
      nn::BatchNorm(10));
  randomize_batch_norms(model);
  expect_matches_torch(model, {1, 22, 22}, /*exact=*/false);
}

TEST(Convert, ZooModelsMatchLibTorch) {
  torch::manual_seed(2);
  for (const char* name : {"larq-mnist", "bnn-mlp"}) {
    SCOPED_TRACE(name);
    auto model = zoo::build(name);
    randomize_batch_norms(model);
    expect_matches_torch(model, {1, 28, 28}, /*exact=*/false, 4);
  }
}

TEST(Convert, BinaryConvIntegerResultsAreExact) {
  torch::manual_seed(3);
  struct Case {
    const char* name;
    nn::QuantConv2dOptions options;
    std::vector<int64_t> input;
  };
  std::vector<Case> cases = {
      {"zero padding", bconv(8, 16, 3, true).padding(1), {8, 9, 9}},
      {"same one-padding", bconv(8, 16, 3, true).padding(torch::kSame).pad_values(1.0), {8, 9, 9}},
      {"same zero-padding stride 2",
       bconv(70, 9, 3, true).padding(torch::kSame).stride(2),
       {70, 9, 8}},
      {"dilation 2", bconv(8, 5, 3, true).dilation(2).padding(2), {8, 10, 10}},
      {"groups 2", bconv(130, 6, 3, true).groups(2).padding(1), {130, 6, 6}},
      {"5x3 valid",
       nn::QuantConv2dOptions(3, 4, {5, 3})
           .bias(false)
           .input_quantizer("ste_sign")
           .kernel_quantizer("ste_sign")
           .kernel_constraint("weight_clip"),
       {3, 9, 7}},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto model = torch::nn::Sequential(nn::QuantConv2d(c.options));
    expect_matches_torch(model, c.input, /*exact=*/true, 2);
  }
  auto dense = torch::nn::Sequential(torch::nn::Flatten(), nn::QuantDense(bdense(100, 7, true)));
  expect_matches_torch(dense, {4, 5, 5}, /*exact=*/true, 2);
}

TEST(Convert, SignAfterBatchNormOnIntegersIsExact) {
  // Means exactly on integer dots put LibTorch's batch norm output at (or within rounding of)
  // 0; the converted thresholds must reproduce LibTorch's sign for every one of them.
  torch::manual_seed(4);
  auto model = torch::nn::Sequential(nn::QuantConv2d(bconv(16, 64, 3, true).padding(1)),
                                     nn::BatchNorm(nn::BatchNormOptions(64).eps(1e-3)),
                                     nn::Quantizer("ste_sign"));
  {
    torch::NoGradGuard no_grad;
    auto* bn = model[1]->as<nn::BatchNormImpl>();
    bn->running_mean.copy_(torch::randint(-20, 21, {64}).to(torch::kFloat));
    bn->running_var.copy_(torch::rand({64}) * 50 + 0.01);
    bn->weight.copy_(torch::randn({64}));  // negative multipliers too
    bn->bias.zero_();
  }
  expect_matches_torch(model, {16, 8, 8}, /*exact=*/true, 4);
}

TEST(Convert, FloatLayersMatchLibTorch) {
  torch::manual_seed(5);
  auto model = torch::nn::Sequential(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 6, 3).padding(1)), torch::nn::ReLU(),
      torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2).stride(2)), torch::nn::BatchNorm2d(6),
      torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 4, 3).padding(torch::kSame).bias(false)),
      torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)),
      torch::nn::Flatten(), torch::nn::Linear(4 * 3 * 3, 20), torch::nn::BatchNorm1d(20),
      torch::nn::ReLU(), torch::nn::Linear(20, 5), torch::nn::Softmax(1));
  randomize_batch_norms(model);
  expect_matches_torch(model, {3, 10, 10}, /*exact=*/false);
}

TEST(Convert, QuantizerModulesAndSignLikeInputQuantizers) {
  torch::manual_seed(6);
  nn::Graph model(torch::nn::Sequential(
      torch::nn::Flatten(), nn::Quantizer("ste_sign"), nn::QuantDense(bdense(48, 32, false)),
      torch::nn::BatchNorm1d(32),
      nn::QuantDense(bdense(32, 24, false).input_quantizer("approx_sign")), nn::BatchNorm(24),
      nn::QuantDense(bdense(24, 16, false).input_quantizer("swish_sign")), nn::BatchNorm(16)));
  // A Sequential called as one node of the graph: its layers are inlined.
  model->call("block",
              torch::nn::Sequential(nn::Quantizer("ste_sign"),
                                    nn::QuantDense(bdense(16, 6, true).bias(true))),
              nn::Value{8});
  randomize_batch_norms(model);
  expect_matches_torch(model, {3, 4, 4}, /*exact=*/false);
}

TEST(Convert, MagnitudeAwareSignFoldsItsScale) {
  torch::manual_seed(7);
  auto model = torch::nn::Sequential(nn::QuantConv2d(nn::QuantConv2dOptions(2, 8, 3)
                                                         .kernel_quantizer("magnitude_aware_sign")
                                                         .kernel_constraint("weight_clip")),
                                     nn::BatchNorm(8),
                                     nn::QuantConv2d(nn::QuantConv2dOptions(8, 6, 3)
                                                         .padding(1)
                                                         .input_quantizer("ste_sign")
                                                         .kernel_quantizer("magnitude_aware_sign")
                                                         .kernel_constraint("weight_clip")),
                                     torch::nn::Flatten(),
                                     nn::QuantDense(nn::QuantDenseOptions(6 * 6 * 6, 5)
                                                        .input_quantizer("ste_sign")
                                                        .kernel_quantizer("magnitude_aware_sign")
                                                        .kernel_constraint("weight_clip")));
  randomize_batch_norms(model);
  expect_matches_torch(model, {2, 8, 8}, /*exact=*/false);
}

TEST(Convert, MultiBitKernelsBecomeFloatWeights) {
  torch::manual_seed(8);
  auto model = torch::nn::Sequential(
      nn::QuantConv2d(nn::QuantConv2dOptions(1, 4, 3).kernel_quantizer("ste_tern")),
      torch::nn::Flatten(),
      nn::QuantDense(nn::QuantDenseOptions(4 * 4 * 4, 3).kernel_quantizer("dorefa_quantizer")));
  expect_matches_torch(model, {1, 6, 6}, /*exact=*/false);
  const runtime::Model m = convert(model, {1, 6, 6});
  EXPECT_EQ(storage_of(m).binary_weights, 0);
}

int count_ops(const runtime::Model& m, runtime::OpType type) {
  int n = 0;
  for (const auto& op : m.ops) n += op.type == type ? 1 : 0;
  return n;
}

// DoReFa-Net's layers: k-bit activations into a +-1 (scaled) kernel run as a binary layer over
// thermometer planes, with the same outputs as LibTorch's float layer; the kernel is stored
// once, as bits. Above ConvertOptions::max_thermometer_bits they stay float levels and a float
// layer; one-padding (a padded level 1: every plane -1) has neither form and is an error.
TEST(Convert, KBitActivationsRunAsThermometerPlanesOnPackedBits) {
  torch::manual_seed(13);
  const auto dorefa = [](int k) {
    return quantizers::QuantizerSpec(std::make_shared<quantizers::DoReFa>(k, "activations"));
  };
  auto model = torch::nn::Sequential(nn::QuantConv2d(nn::QuantConv2dOptions(3, 8, 3)
                                                         .padding(torch::kSame)
                                                         .bias(false)
                                                         .input_quantizer(dorefa(2))
                                                         .kernel_quantizer("magnitude_aware_sign")),
                                     nn::BatchNorm(8),
                                     nn::QuantConv2d(nn::QuantConv2dOptions(8, 12, 3)
                                                         .stride(2)
                                                         .groups(2)
                                                         .padding(torch::kSame)
                                                         .input_quantizer(dorefa(3))
                                                         .kernel_quantizer("ste_sign")),
                                     nn::BatchNorm(12), torch::nn::Flatten(),
                                     nn::QuantDense(nn::QuantDenseOptions(12 * 4 * 4, 5)
                                                        .input_quantizer(dorefa(2))
                                                        .kernel_quantizer("magnitude_aware_sign")));
  randomize_batch_norms(model);
  {
    torch::NoGradGuard no_grad;  // levels spread over [0, 1] after each batch norm
    for (const auto& m : model->modules(false)) {
      if (auto* bn = dynamic_cast<nn::BatchNormImpl*>(m.get())) {
        bn->running_mean.uniform_(-0.5, 0.5);
        bn->bias.fill_(0.5);
      }
    }
  }
  expect_matches_torch(model, {3, 8, 8}, /*exact=*/false, 6);
  const runtime::Model m = convert(model, {3, 8, 8});
  EXPECT_EQ(count_ops(m, runtime::OpType::kThermometer), 3);
  EXPECT_EQ(count_ops(m, runtime::OpType::kBinaryConv2d), 2);
  EXPECT_EQ(count_ops(m, runtime::OpType::kBinaryDense), 1);
  EXPECT_EQ(count_ops(m, runtime::OpType::kConv2d) + count_ops(m, runtime::OpType::kDense) +
                count_ops(m, runtime::OpType::kQuantizeLevels),
            0);
  EXPECT_EQ(storage_of(m).binary_weights, 8 * 3 * 9 + 12 * 4 * 9 + 5 * 12 * 16);

  ConvertOptions two_bits;
  two_bits.max_thermometer_bits = 2;  // the 3-bit layer stays float
  const runtime::Model m2 = convert(model, {3, 8, 8}, two_bits);
  EXPECT_EQ(count_ops(m2, runtime::OpType::kThermometer), 2);
  EXPECT_EQ(count_ops(m2, runtime::OpType::kQuantizeLevels), 1);
  EXPECT_EQ(count_ops(m2, runtime::OpType::kConv2d), 1);
  const at::Tensor x = test_images({4, 3, 8, 8});
  const std::vector<float> want = run_torch(model, x), got = run_runtime(m2, x);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-4 * std::max(1.0f, std::fabs(want[i]))) << i;
  }

  auto one_padded = torch::nn::Sequential(nn::QuantConv2d(nn::QuantConv2dOptions(3, 4, 3)
                                                              .padding(torch::kSame)
                                                              .pad_values(1.0)
                                                              .input_quantizer(dorefa(2))
                                                              .kernel_quantizer("ste_sign")));
  try {
    convert(one_padded, {3, 5, 5});
    ADD_FAILURE() << "a one-padded k-bit layer converted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("one-padding needs a binary input"), std::string::npos)
        << e.what();
  }
}

TEST(Convert, UnsupportedLayersAndQuantizersAreClearErrors) {
  auto expect_error = [](nn::Graph model, const std::vector<int64_t>& shape,
                         const std::vector<std::string>& parts) {
    try {
      convert(model, shape);
      FAIL() << "expected an error";
    } catch (const std::invalid_argument& e) {
      for (const auto& p : parts)
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
            << "'" << p << "' missing in: " << e.what();
    }
  };
  expect_error(torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Tanh()), {4},
               {"convert", "node \"1\"", "Tanh", "not a registered layer kind", "register_layer"});
  expect_error(torch::nn::Sequential(torch::nn::MaxPool1d(2)), {4},
               {"node \"0\"", "torch.MaxPool1d", "cannot be converted", "QuantConv2d"});
  expect_error(torch::nn::Sequential(torch::nn::Flatten(),
                                     nn::QuantDense(nn::QuantDenseOptions(4, 2)
                                                        .input_quantizer("ste_heaviside")
                                                        .kernel_quantizer("ste_sign")
                                                        .kernel_constraint("weight_clip"))),
               {4}, {"node \"1\"", "QuantDense", "ste_heaviside", "expected a sign"});
  expect_error(torch::nn::Sequential(torch::nn::Flatten(),
                                     nn::QuantDense(nn::QuantDenseOptions(4, 2)
                                                        .input_quantizer("ste_sign")
                                                        .kernel_quantizer("ste_tern"))),
               {4}, {"node \"1\"", "non-binary weights", "binary"});
  expect_error(torch::nn::Sequential(nn::QuantConv2d(nn::QuantConv2dOptions(3, 2, 3))), {1, 5, 5},
               {"node \"0\"", "QuantConv2d", "expected input of shape [N, 3"});
  // Ceil mode converts, except where PyTorch's divisor mixes counted and uncounted padding.
  expect_error(torch::nn::Sequential(torch::nn::AvgPool2d(
                   torch::nn::AvgPool2dOptions(3).stride(2).padding(1).ceil_mode(true))),
               {1, 6, 6}, {"node \"0\"", "ceil_mode with explicit padding and count_include_pad"});
  expect_error(torch::nn::Sequential(torch::nn::Linear(5, 2)), {1, 5, 5},
               {"node \"0\"", "Linear", "add a Flatten"});
}

TEST(Convert, FileRoundTripKeepsResultsAndMetadata) {
  torch::manual_seed(9);
  auto model = zoo::build("larq-mnist");
  randomize_batch_norms(model);
  ConvertOptions opts;
  opts.metadata["model"] = "larq-mnist";
  const runtime::Model m = convert(model, {1, 28, 28}, opts);
  const std::string path = ::testing::TempDir() + "onebit_convert_roundtrip.obnn";
  const size_t bytes = runtime::save_model(m, path);
  const runtime::Model loaded = runtime::load_model(path);
  std::remove(path.c_str());
  EXPECT_EQ(bytes, runtime::serialize_model(m).size());
  EXPECT_EQ(loaded.metadata.at("model"), "larq-mnist");
  EXPECT_EQ(loaded.metadata.at("converter"), "onebit::convert");
  const at::Tensor x = test_images({5, 1, 28, 28});
  EXPECT_EQ(run_runtime(loaded, x), run_runtime(m, x));
  EXPECT_EQ(run_runtime(loaded, x, 2), run_runtime(m, x));
}

// The file against Larq's summary size (1 bit per binary weight, 32 bits per other number, batch
// norm counted as 2 numbers per channel). The payload differs from it only by what fusion
// changes: a batch norm fused into the thresholds of a binary layer stores 1 int32 per channel
// instead of 2 numbers (so the file may be smaller by 4 bytes per threshold), a binary max pool
// after such a fusion adds 1 bit per channel, and each tensor is padded to 8 bytes. On top come
// the 64-byte header, the metadata section and at most 63 alignment bytes per tensor.
TEST(Convert, FileSizeIsTheSummarySizePlusAHeader) {
  for (const char* name : {"larq-mnist", "bnn-mlp"}) {
    SCOPED_TRACE(name);
    auto model = zoo::build(name);
    const runtime::Model m = convert(model, {1, 28, 28});
    const ModelSummary s = summary(model, {1, 28, 28});
    const double summary_bytes = static_cast<double>(s.memory_bits) / 8.0;
    const ModelStorage st = storage_of(m);
    int64_t thresholds = 0;
    for (const auto& t : m.tensors) thresholds += t.dtype == runtime::DType::kInt32 ? t.numel() : 0;
    EXPECT_GT(thresholds, 0);
    const double payload = static_cast<double>(st.payload_bytes);
    EXPECT_LE(payload, 1.05 * summary_bytes);
    EXPECT_GE(payload, summary_bytes - 4.0 * static_cast<double>(thresholds));
    const size_t file = runtime::serialize_model(m).size();
    const size_t header = 64 + 4096 + 64 * m.tensors.size();
    EXPECT_LE(file - st.payload_bytes, header);
    EXPECT_LE(static_cast<double>(file), 1.05 * summary_bytes + static_cast<double>(header));
    // Every binary kernel weight is stored as one bit.
    int64_t binary = 0;
    for (const auto& l : s.layers) {
      auto it = l.params_by_bits.find(1);
      if (it != l.params_by_bits.end()) binary += it->second;
    }
    EXPECT_EQ(st.binary_weights, binary);
  }
}

TEST(Convert, GraphZooModelsMatchLibTorch) {
  torch::manual_seed(12);
  for (const char* name : {"bireal-mnist", "densenet-mnist"}) {
    SCOPED_TRACE(name);
    auto model = zoo::build(name);
    randomize_batch_norms(model);
    expect_matches_torch(model, {1, 28, 28}, /*exact=*/false, 4);
    const runtime::Model m = convert(model, {1, 28, 28});
    int64_t binary_params = 0;
    for (const auto& l : summary(model, {1, 28, 28}).layers) {
      auto it = l.params_by_bits.find(1);
      if (it != l.params_by_bits.end()) binary_params += it->second;
    }
    EXPECT_EQ(storage_of(m).binary_weights, binary_params);
    int binary_convs = 0, merges = 0;
    for (const auto& op : m.ops) {
      binary_convs += op.type == runtime::OpType::kBinaryConv2d;
      merges += op.type == runtime::OpType::kAdd || op.type == runtime::OpType::kConcat;
    }
    EXPECT_EQ(binary_convs, 6);
    EXPECT_EQ(merges, 6);
  }
}

// A batch norm whose output only feeds signs (here two binary convolutions) gets exact
// thresholds and fuses into the binary convolution before it; both readers share one sign.
TEST(Convert, BatchNormReadOnlyBySignsFusesIntoThresholdsInAGraph) {
  torch::manual_seed(13);
  nn::Graph g;
  nn::Value x = g->call("sign", nn::Quantizer("ste_sign"), g->input());
  x = g->call("conv", nn::QuantConv2d(bconv(8, 16, 3, true).padding(1)), x);
  x = g->call("bn", nn::BatchNorm(16), x);
  nn::Value a = g->call("a", nn::QuantConv2d(bconv(16, 8, 3, true).padding(1)), x);
  nn::Value b = g->call("b", nn::QuantConv2d(bconv(16, 8, 1, true)), x);
  g->output(g->concat({a, b}, "cat"));
  randomize_batch_norms(g);
  expect_matches_torch(g, {8, 6, 6}, /*exact=*/true);
  const runtime::Model m = convert(g, {8, 6, 6});
  int signs = 0;
  for (const auto& op : m.ops) signs += op.type == runtime::OpType::kQuantize;
  EXPECT_EQ(signs, 1) << "only the model input is signed by its own op";
}

// The Bi-Real pattern: the batch norm output feeds both the shortcut add (float) and the next
// block's sign, so it stays float; the sign is a separate op.
TEST(Convert, BatchNormFeedingAShortcutStaysFloat) {
  torch::manual_seed(14);
  nn::Graph g;
  nn::Value x =
      g->call("stem", nn::QuantConv2d(nn::QuantConv2dOptions(2, 8, 3).padding(1)), g->input());
  for (int i = 1; i <= 2; ++i) {
    const std::string n = "b" + std::to_string(i);
    nn::Value y = g->call(n + "_conv", nn::QuantConv2d(bconv(8, 8, 3, true).padding(1)), x);
    y = g->call(n + "_bn", nn::BatchNorm(8), y);
    x = g->add({x, y}, n + "_add");
  }
  g->call("flatten", torch::nn::Flatten(), x);
  randomize_batch_norms(g);
  expect_matches_torch(g, {2, 7, 7}, /*exact=*/false);
}
