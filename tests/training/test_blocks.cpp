// The building blocks the published architectures add (Multiply, Slice, LearnableBias,
// BlurPool2d, PReLU/Sigmoid/Hardtanh kinds, ceil-mode pooling, depthwise convolution), the
// scaled-sign kernel quantizers of XNOR-Net and DoReFa-Net, and their conversion to the runtime.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "onebit/convert.h"
#include "onebit/nn.h"
#include "onebit/nn/graph.h"
#include "onebit/quantizers.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/serialize.h"
#include "onebit/summary.h"

namespace onebit {
namespace {

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Blocks, MultiplyBroadcastsPerChannelScales) {
  nn::Multiply mul;
  const at::Tensor x = torch::randn({2, 3, 4, 5});
  const at::Tensor s = torch::rand({2, 3});
  const at::Tensor want = x * s.view({2, 3, 1, 1});
  EXPECT_TRUE(torch::allclose(mul->forward({x, s}), want));
  EXPECT_TRUE(torch::allclose(mul->forward({x, s.view({2, 3, 1, 1})}), want));
  EXPECT_TRUE(torch::allclose(mul->forward({x, x}), x * x));
  const std::string e = error_of([&] { mul->forward({x, torch::rand({2, 4})}); });
  EXPECT_NE(e.find("per-channel scale [N, C] or [N, C, 1, 1], got [2, 4]"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { mul->forward({x}); }).find("exactly 2 inputs"), std::string::npos);
}

TEST(Blocks, SliceTakesAChannelRange) {
  nn::Slice slice(nn::SliceOptions(1, 3));
  const at::Tensor x = torch::randn({2, 4, 3, 3});
  EXPECT_TRUE(torch::equal(slice->forward(x), x.slice(1, 1, 3)));
  EXPECT_NE(error_of([] { nn::Slice(nn::SliceOptions(3, 3)); }).find("0 <= begin < end"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { nn::Slice(nn::SliceOptions(2, 6))->forward(x); }).find("at least 6 channels"),
      std::string::npos);
}

TEST(Blocks, LearnableBiasShiftsEachChannelAndLearns) {
  nn::LearnableBias bias(3);
  EXPECT_TRUE(torch::equal(bias->bias, torch::zeros({3})));
  {
    torch::NoGradGuard no_grad;
    bias->bias.copy_(torch::tensor({1.0f, -2.0f, 0.5f}));
  }
  const at::Tensor x = torch::randn({2, 3, 4, 4});
  const at::Tensor y = bias->forward(x);
  EXPECT_TRUE(torch::allclose(y, x + torch::tensor({1.0f, -2.0f, 0.5f}).view({1, 3, 1, 1})));
  y.sum().backward();
  EXPECT_TRUE(torch::allclose(bias->bias.grad(), torch::full({3}, 32.0f)));
  EXPECT_TRUE(torch::allclose(bias->forward(torch::zeros({2, 3})), bias->bias.expand({2, 3})));
  EXPECT_NE(error_of([&] {
              bias->forward(torch::zeros({2, 4}));
            }).find("expected input [N, 3"),
            std::string::npos);
}

TEST(Blocks, BlurPoolIsAFixedSameDepthwiseFilter) {
  nn::BlurPool2d blur(nn::BlurPool2dOptions(2).stride(2));
  EXPECT_FALSE(blur->weight.requires_grad());
  EXPECT_FLOAT_EQ(blur->weight[0][0][1][1].item<float>(), 4.0f / 16.0f);
  EXPECT_FLOAT_EQ(blur->weight.sum().item<float>(), 2.0f);
  for (int64_t n : {55, 56, 7}) {
    const at::Tensor x = torch::randn({1, 2, n, n});
    const at::Tensor y = blur->forward(x);
    const int64_t out = (n + 1) / 2;
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 2, out, out}));
    // Keras "same": total padding (out - 1) * 2 + 3 - n, the smaller half first.
    const int64_t total = (out - 1) * 2 + 3 - n, before = total / 2;
    const at::Tensor padded =
        torch::constant_pad_nd(x, {before, total - before, before, total - before}, 0);
    const std::vector<int64_t> stride = {2, 2}, pad = {0, 0}, dilation = {1, 1};
    const at::Tensor want =
        at::conv2d(padded, blur->weight, at::Tensor(), stride, pad, dilation, 2);
    EXPECT_TRUE(torch::allclose(y, want, 1e-6, 1e-6)) << n;
  }
  // Counted as non-trainable by the summary.
  nn::Graph g;
  g->output(g->call("blur", nn::BlurPool2d(4), g->input()));
  const auto s = summary(g, {4, 8, 8});
  EXPECT_EQ(s.non_trainable_params, 36);
  EXPECT_EQ(s.trainable_params, 0);
  EXPECT_EQ(s.macs(32), 36 * 16);
}

TEST(Quantizers, XnorWeightScaleGradientIncludesTheScale) {
  torch::manual_seed(0);
  const auto q = quantizers::get("xnor_weight_scale");
  EXPECT_EQ(q->precision(), 1);
  const at::Tensor w = torch::randn({4, 3, 3, 3}) * 0.8;
  // Reference: the same expression in autograd, with the STE of ste_sign (clip 1).
  at::Tensor ref_w = w.clone().requires_grad_(true);
  const at::Tensor c = ref_w.clamp(-1.0, 1.0);
  const at::Tensor alpha = c.abs().mean({1, 2, 3}, true);
  const at::Tensor sign = (torch::where(ref_w >= 0, 1.0, -1.0) - c).detach() + c;
  const at::Tensor ref = alpha * sign;
  const at::Tensor dy = torch::randn_like(w);
  ref.backward(dy);
  at::Tensor ours_w = w.clone().requires_grad_(true);
  const at::Tensor ours = (*q)(ours_w);
  ours.backward(dy);
  EXPECT_TRUE(torch::allclose(ours, ref.detach(), 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(ours_w.grad(), ref_w.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(q->sign_scale(w).flatten(), alpha.detach().flatten()));
}

TEST(Quantizers, UnclippedMagnitudeAwareSignUsesOneScaleAndIdentityGradient) {
  const auto q = quantizers::get("magnitude_aware_sign_unclipped");
  const at::Tensor w = torch::tensor({{-3.0f, 1.0f}, {0.5f, -0.5f}});
  const double a = (3.0 + 1.0 + 0.5 + 0.5) / 4.0;
  EXPECT_TRUE(torch::allclose(q->quantize(w), torch::tensor({{-a, a}, {a, -a}}).to(at::kFloat)));
  const at::Tensor dy = torch::randn({2, 2});
  EXPECT_TRUE(torch::equal(q->gradient(w, dy), dy));
  EXPECT_FALSE(quantizers::get("ste_sign")->sign_scale(w).defined());
}

/// Converts `g` and compares the runtime with LibTorch on random inputs.
}  // namespace
void expect_same_outputs(nn::Graph g, const std::vector<int64_t>& shape, double tol) {
  g->eval();
  torch::manual_seed(3);
  std::vector<int64_t> s = {3};
  s.insert(s.end(), shape.begin(), shape.end());
  const at::Tensor x = torch::randn(s);
  at::Tensor ref;
  {
    torch::NoGradGuard no_grad;
    ref = g->forward(x).contiguous();
  }
  const runtime::Interpreter net(convert(g, shape));
  const std::vector<float> out = net.run(x.data_ptr<float>(), static_cast<size_t>(x.numel()), 3);
  ASSERT_EQ(out.size(), static_cast<size_t>(ref.numel()));
  const at::Tensor got = torch::from_blob(const_cast<float*>(out.data()), ref.sizes()).clone();
  EXPECT_TRUE(torch::allclose(got, ref, tol, tol)) << (got - ref).abs().max();
}

namespace {
TEST(BlockConversion, FloatBlocksMatchLibTorch) {
  // Real-to-Binary scaling, MeliusNet's add-into-slice, ReActNet's RPReLU, QuickNet's blur pool,
  // ceil-mode pools, depthwise, grouped and dilated convolution, DoReFa's clip.
  nn::Graph g;
  nn::Value x = g->input();  // 8x7x7
  x = g->call(
      "dw",
      nn::QuantDepthwiseConv2d(
          nn::QuantDepthwiseConv2dOptions(8, 3).padding(torch::kSame).stride(2).bias(false)),
      x);  // 8x4x4
  x = g->call(
      "grouped",
      nn::QuantConv2d(nn::QuantConv2dOptions(8, 16, 3).groups(4).dilation(2).padding(torch::kSame)),
      x);
  nn::Value z =
      g->call("pool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)), x);
  z = g->call("flat", torch::nn::Flatten(), z);
  z = g->call("fc", nn::QuantDense(nn::QuantDenseOptions(16, 16).bias(false)), z);
  z = g->call("sig", torch::nn::Sigmoid(), z);
  x = g->call("scale", nn::Multiply(), {x, z});
  x = g->call("shift", nn::LearnableBias(16), x);
  x = g->call("prelu", torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(16)), x);
  const nn::Value keep = g->call("keep", nn::Slice(nn::SliceOptions(0, 10)), x);
  nn::Value tail = g->call("tail", nn::Slice(nn::SliceOptions(10, 16)), x);
  tail = g->add({tail, tail}, "twice");
  x = g->concat({keep, tail}, "merge");
  x = g->call("blur", nn::BlurPool2d(16), x);  // 16x2x2
  x = g->call("clip", torch::nn::Hardtanh(torch::nn::HardtanhOptions().min_val(0).max_val(1)), x);
  x = g->call("avg", torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(3).stride(2).ceil_mode(true)),
              x);
  g->output(x);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : g->parameters()) {
      if (p.requires_grad()) p.normal_(0, 0.5);
    }
  }
  expect_same_outputs(g, {8, 7, 7}, 1e-5);
}

TEST(BlockConversion, CeilModeMaxPoolMatchesLibTorch) {
  for (int64_t n : {7, 8, 9}) {
    nn::Graph g;
    g->output(g->call(
        "pool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).ceil_mode(true)),
        g->input()));
    expect_same_outputs(g, {2, n, n}, 0);
  }
}

TEST(BlockConversion, ScaledSignKernelsAndTwoBitInputsMatchLibTorch) {
  // XNOR-Net (per-channel scale) and Bi-Real (magnitude-aware sign) on a float, then a binary
  // input; DoReFa-Net (one scale per layer) on 2-bit inputs. (A sign right after 2-bit inputs
  // would see exact ties at 0 that float rounding breaks either way.)
  for (const char* kernel :
       {"xnor_weight_scale", "magnitude_aware_sign", "magnitude_aware_sign_unclipped"}) {
    const bool dorefa = std::string(kernel) == "magnitude_aware_sign_unclipped";
    const quantizers::QuantizerSpec two_bit(std::make_shared<quantizers::DoReFa>(2, "activations"));
    nn::Graph g;
    nn::Value x = g->call("conv",
                          nn::QuantConv2d(nn::QuantConv2dOptions(4, 8, 3)
                                              .padding(torch::kSame)
                                              .bias(false)
                                              .input_quantizer(dorefa ? two_bit : nullptr)
                                              .kernel_quantizer(kernel)
                                              .kernel_constraint("weight_clip")),
                          g->input());
    x = g->call("conv2",
                nn::QuantConv2d(nn::QuantConv2dOptions(8, 8, 3)
                                    .padding(torch::kSame)
                                    .bias(false)
                                    .input_quantizer(dorefa ? two_bit : "ste_sign")
                                    .kernel_quantizer(kernel)
                                    .kernel_constraint("weight_clip")),
                x);
    g->output(x);
    expect_same_outputs(g, {4, 6, 6}, 1e-4);
    const auto s = summary(g, {4, 6, 6});
    // Both convs read 2-bit inputs in DoReFa-Net; only the second reads signs otherwise.
    EXPECT_EQ(s.macs(dorefa ? 2 : 1), (dorefa ? 4 * 8 + 8 * 8 : 8 * 8) * 9 * 36) << kernel;
  }
}

TEST(BlockConversion, NewKindsSaveAndLoad) {
  nn::Graph g;
  nn::Value x = g->call("shift", nn::LearnableBias(4), g->input());
  x = g->call("blur", nn::BlurPool2d(nn::BlurPool2dOptions(4).stride(1)), x);
  x = g->call("prelu", torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(4).init(0.0)), x);
  nn::Value s = g->call("slice", nn::Slice(nn::SliceOptions(2, 4)), x);
  s = g->call("sig", torch::nn::Sigmoid(), s);
  x = g->call("mul", nn::Multiply(), {g->call("slice2", nn::Slice(nn::SliceOptions(0, 2)), x), s});
  g->output(g->call("clip", torch::nn::Hardtanh(), x));
  {
    torch::NoGradGuard no_grad;
    g->named_parameters()["shift.bias"].normal_();
  }
  const std::string path =
      (std::filesystem::temp_directory_path() / "onebit_blocks.onebit").string();
  save(g, path);
  nn::Graph loaded = load(path);
  std::remove(path.c_str());
  const at::Tensor in = torch::randn({2, 4, 5, 5});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(g->forward(in), loaded->forward(in)));
  EXPECT_FALSE(loaded->named_parameters()["blur.weight"].requires_grad());
}

}  // namespace
}  // namespace onebit

namespace onebit {
namespace {

/// Op type names of a converted model, in order.
std::vector<std::string> op_types(nn::Graph g, const std::vector<int64_t>& shape) {
  g->eval();
  std::vector<std::string> types;
  for (const auto& op : convert(g, shape).ops) types.push_back(runtime::op_name(op.type));
  return types;
}

TEST(BlockConversion, BinaryLayersRunOnBitsWhateverSitsBetweenSignAndLayer) {
  // A sign module, then a flatten, then a dense layer without an input quantizer: the dense
  // layer still reads packed bits (a binary dense op).
  nn::Graph dense;
  nn::Value x = dense->call("sign", nn::Quantizer("ste_sign"), dense->input());
  x = dense->call("flatten", torch::nn::Flatten(), x);
  x = dense->call("dense",
                  nn::QuantDense(nn::QuantDenseOptions(4 * 3 * 3, 5)
                                     .bias(false)
                                     .kernel_quantizer("ste_sign")
                                     .kernel_constraint("weight_clip")),
                  x);
  dense->output(x);
  auto types = op_types(dense, {4, 3, 3});
  EXPECT_NE(std::find(types.begin(), types.end(), "binary_dense"), types.end());
  EXPECT_EQ(std::find(types.begin(), types.end(), "dense"), types.end());
  expect_same_outputs(dense, {4, 3, 3}, 1e-5);
  // A grouped binary convolution (ResNeXt-style groups of 8 channels) runs on bits too.
  nn::Graph grouped;
  grouped->output(grouped->call("conv",
                                nn::QuantConv2d(nn::QuantConv2dOptions(32, 32, 3)
                                                    .groups(4)
                                                    .padding(torch::kSame)
                                                    .pad_values(1.0)
                                                    .bias(false)
                                                    .input_quantizer("ste_sign")
                                                    .kernel_quantizer("ste_sign")
                                                    .kernel_constraint("weight_clip")),
                                grouped->input()));
  types = op_types(grouped, {32, 5, 5});
  EXPECT_NE(std::find(types.begin(), types.end(), "binary_conv2d"), types.end());
  EXPECT_EQ(std::find(types.begin(), types.end(), "conv2d"), types.end());
  expect_same_outputs(grouped, {32, 5, 5}, 1e-5);
}

}  // namespace
}  // namespace onebit
