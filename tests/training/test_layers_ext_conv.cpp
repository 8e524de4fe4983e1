// QuantDepthwiseConv2d and QuantSeparableConv1d/2d against torch's float convolutions.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ext_test_util.h"
#include "onebit/nn/depthwise.h"
#include "onebit/nn/separable.h"
#include "onebit/registry.h"

using namespace onebit::nn;
using onebit::testing::copy_into;
using onebit::testing::expect_throw_with;
using onebit::testing::randomize;
using onebit::testing::sign_ref;

namespace {

at::Tensor depthwise_ref(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                         int64_t stride, int64_t padding, int64_t dilation) {
  return at::conv2d(x, w, b, stride, padding, dilation, x.size(1));
}

}  // namespace

TEST(QuantDepthwiseConv2d, FloatEqualsTorchGroupedConv) {
  QuantDepthwiseConv2d dw(
      QuantDepthwiseConv2dOptions(4, 3).depth_multiplier(2).stride(2).padding(1).dilation(2));
  torch::nn::Conv2d ref(
      torch::nn::Conv2dOptions(4, 8, 3).groups(4).stride(2).padding(1).dilation(2));
  copy_into(ref->weight, dw->weight);
  copy_into(ref->bias, dw->bias);
  auto x = torch::randn({2, 4, 9, 10});
  auto y = dw(x);
  EXPECT_EQ(y.sizes(), ref(x).sizes());
  EXPECT_TRUE(torch::allclose(y, ref(x), 1e-5, 1e-6));
}

TEST(QuantDepthwiseConv2d, InitializationMatchesTorch) {
  torch::manual_seed(3);
  QuantDepthwiseConv2d dw(QuantDepthwiseConv2dOptions(3, 3).depth_multiplier(2));
  torch::manual_seed(3);
  torch::nn::Conv2d ref(torch::nn::Conv2dOptions(3, 6, 3).groups(3));
  EXPECT_TRUE(torch::equal(dw->weight, ref->weight));
  EXPECT_TRUE(torch::equal(dw->bias, ref->bias));
}

TEST(QuantDepthwiseConv2d, BinaryForwardAndSteGradient) {
  QuantDepthwiseConv2d dw(QuantDepthwiseConv2dOptions(3, {3, 2})
                              .depth_multiplier(2)
                              .padding(1)
                              .input_quantizer("ste_sign")
                              .depthwise_quantizer("ste_sign")
                              .depthwise_constraint("weight_clip"));
  randomize(dw);
  auto x = torch::randn({2, 3, 6, 5});
  auto y = dw(x);
  auto wq = sign_ref(dw->weight.detach()).requires_grad_(true);
  auto want = depthwise_ref(sign_ref(x), wq, dw->bias.detach(), 1, 1, 1);
  EXPECT_TRUE(torch::equal(y.detach(), want.detach()));
  // Gradient w.r.t. the latent kernel: the float layer's gradient through sign(W), masked by
  // the STE (|W| <= 1).
  auto dy = torch::randn(y.sizes());
  y.backward(dy);
  want.backward(dy);
  auto mask = dw->weight.detach().abs().le(1).to(torch::kFloat);
  EXPECT_GT(mask.sum().item<float>(), 0);
  EXPECT_LT(mask.sum().item<float>(), mask.numel());
  EXPECT_TRUE(torch::allclose(dw->weight.grad(), wq.grad() * mask, 1e-5, 1e-6));
}

TEST(QuantDepthwiseConv2d, SamePaddingShapes) {
  for (int64_t in : {5, 6, 7}) {
    for (int64_t stride : {1, 2, 3}) {
      for (int64_t dilation : {1, 2}) {
        for (int64_t k : {1, 2, 3}) {
          QuantDepthwiseConv2d dw(QuantDepthwiseConv2dOptions(2, k)
                                      .padding(torch::kSame)
                                      .stride(stride)
                                      .dilation(dilation));
          auto y = dw(torch::randn({1, 2, in, in + 1}));
          EXPECT_EQ(y.size(2), (in + stride - 1) / stride) << in << " " << stride << " " << k;
          EXPECT_EQ(y.size(3), (in + stride) / stride);
          // "valid" on the same input: (in - span) / stride + 1
          QuantDepthwiseConv2d v(QuantDepthwiseConv2dOptions(2, k)
                                     .padding(torch::kValid)
                                     .stride(stride)
                                     .dilation(dilation));
          const int64_t span = (k - 1) * dilation + 1;
          EXPECT_EQ(v(torch::randn({1, 2, in, in})).size(2), (in - span) / stride + 1);
        }
      }
    }
  }
}

TEST(QuantDepthwiseConv2d, OnePaddingEqualsConvOnOnePaddedInput) {
  QuantDepthwiseConv2d dw(QuantDepthwiseConv2dOptions(3, 4)
                              .depth_multiplier(2)
                              .padding(torch::kSame)
                              .pad_values(1.0)
                              .stride(2));
  auto x = torch::randn({2, 3, 7, 8});
  // Keras "same" for k = 4, stride 2: H 7 -> total 3 (1 before, 2 after); W 8 -> total 2 (1, 1).
  auto padded = at::constant_pad_nd(x, {1, 1, 1, 2}, 1.0);
  auto want = depthwise_ref(padded, dw->weight, dw->bias, 2, 0, 1);
  EXPECT_TRUE(torch::allclose(dw(x), want, 1e-5, 1e-6));
  // and differs from zero-padding
  QuantDepthwiseConv2d zero(
      QuantDepthwiseConv2dOptions(3, 4).depth_multiplier(2).padding(torch::kSame).stride(2));
  copy_into(zero->weight, dw->weight);
  copy_into(zero->bias, dw->bias);
  EXPECT_FALSE(torch::allclose(zero(x), want, 1e-5, 1e-6));
}

TEST(QuantDepthwiseConv2d, Errors) {
  expect_throw_with<std::invalid_argument>(
      [] { QuantDepthwiseConv2d(QuantDepthwiseConv2dOptions(3, 3).depth_multiplier(0)); },
      {"depth_multiplier", "0"});
  QuantDepthwiseConv2d dw(QuantDepthwiseConv2dOptions(3, 3));
  expect_throw_with<std::invalid_argument>(
      [&] {
        dw(torch::randn({1, 4, 5, 5}));
      },
      {"QuantDepthwiseConv2d", "[1, 4, 5, 5]", "[N, 3"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        dw(torch::randn({1, 3, 2, 5}));
      },
      {"smaller than the kernel"});
}

TEST(QuantDepthwiseConv2d, ExposesKernelAndWarnsWithoutConstraint) {
  onebit::testing::CaptureWarnings warnings;
  QuantDepthwiseConv2d dw(QuantDepthwiseConv2dOptions(2, 3).depthwise_quantizer("ste_sign"));
  EXPECT_NE(warnings.text.find("QuantDepthwiseConv2d"), std::string::npos);
  auto params = dw->quantized_parameters();
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params[0].quantizer->id(), "ste_sign");
  EXPECT_EQ(onebit::find_layer_kind(*dw)->macs, onebit::MacRule::kWeights);
  EXPECT_TRUE(torch::equal(dw->quantized_weight(), sign_ref(dw->weight.detach())));
}

// ---- separable --------------------------------------------------------------------------------

TEST(QuantSeparableConv2d, FloatEqualsDepthwiseThenPointwise) {
  QuantSeparableConv2d sep(QuantSeparableConv2dOptions(3, 5, {3, 2})
                               .depth_multiplier(2)
                               .stride({2, 1})
                               .padding(torch::kSame)
                               .dilation({1, 2}));
  randomize(sep, 0.5);
  torch::nn::Conv2d pw(torch::nn::Conv2dOptions(6, 5, 1));
  copy_into(pw->weight, sep->pointwise_weight);
  copy_into(pw->bias, sep->bias);
  // torch's "same" only supports stride 1: pad as Keras does (H: k 3 s 2 on 7 -> 1, 1).
  auto x = torch::randn({2, 3, 7, 6});
  torch::nn::Conv2d dw_valid(
      torch::nn::Conv2dOptions(3, 6, {3, 2}).groups(3).stride({2, 1}).dilation({1, 2}).bias(false));
  copy_into(dw_valid->weight, sep->depthwise_weight);
  auto want = pw(dw_valid(at::constant_pad_nd(x, {1, 1, 1, 1}, 0.0)));
  auto y = sep(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 4, 6}));
  EXPECT_TRUE(torch::allclose(y, want, 1e-5, 1e-5));
}

TEST(QuantSeparableConv1d, BinaryForwardAndSteGradients) {
  QuantSeparableConv1d sep(QuantSeparableConv1dOptions(4, 3, 3)
                               .depth_multiplier(2)
                               .padding(torch::kSame)
                               .pad_values(1.0)
                               .input_quantizer("ste_sign")
                               .depthwise_quantizer("ste_sign")
                               .pointwise_quantizer("ste_sign")
                               .depthwise_constraint("weight_clip")
                               .pointwise_constraint("weight_clip"));
  randomize(sep);
  auto x = torch::randn({2, 4, 9});
  auto y = sep(x);
  auto wd = sign_ref(sep->depthwise_weight.detach()).requires_grad_(true);
  auto wp = sign_ref(sep->pointwise_weight.detach()).requires_grad_(true);
  auto xp = at::constant_pad_nd(sign_ref(x), {1, 1}, 1.0);
  const std::vector<int64_t> one = {1}, zero = {0};  // not literal 0: ambiguous in LibTorch 2
  auto want = at::conv1d(at::conv1d(xp, wd, {}, one, zero, one, 4), wp, sep->bias.detach());
  EXPECT_TRUE(torch::equal(y.detach(), want.detach()));
  auto dy = torch::randn(y.sizes());
  y.backward(dy);
  want.backward(dy);
  auto md = sep->depthwise_weight.detach().abs().le(1).to(torch::kFloat);
  auto mp = sep->pointwise_weight.detach().abs().le(1).to(torch::kFloat);
  EXPECT_TRUE(torch::allclose(sep->depthwise_weight.grad(), wd.grad() * md, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(sep->pointwise_weight.grad(), wp.grad() * mp, 1e-4, 1e-5));
  auto params = sep->quantized_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].name, "depthwise_weight");
  EXPECT_EQ(params[1].name, "pointwise_weight");
  EXPECT_TRUE(params[1].constraint);
}

TEST(QuantSeparableConv1d, ShapesForStridesAndDilations) {
  for (int64_t in : {6, 7, 8}) {
    for (int64_t stride : {1, 2, 3}) {
      for (int64_t dilation : {1, 2}) {
        QuantSeparableConv1d same(QuantSeparableConv1dOptions(2, 3, 3)
                                      .padding(torch::kSame)
                                      .stride(stride)
                                      .dilation(dilation));
        EXPECT_EQ(same(torch::randn({1, 2, in})).size(2), (in + stride - 1) / stride);
        QuantSeparableConv1d expl(
            QuantSeparableConv1dOptions(2, 3, 3).padding(1).stride(stride).dilation(dilation));
        EXPECT_EQ(expl(torch::randn({1, 2, in})).size(2), (in + 2 - 2 * dilation - 1) / stride + 1);
      }
    }
  }
}

TEST(QuantSeparableConv2d, InitializationMatchesTorchConvs) {
  torch::manual_seed(11);
  QuantSeparableConv2d sep(QuantSeparableConv2dOptions(2, 4, 3).depth_multiplier(3));
  torch::manual_seed(11);
  torch::nn::Conv2d dw(torch::nn::Conv2dOptions(2, 6, 3).groups(2).bias(false));
  torch::nn::Conv2d pw(torch::nn::Conv2dOptions(6, 4, 1));
  EXPECT_TRUE(torch::equal(sep->depthwise_weight, dw->weight));
  EXPECT_TRUE(torch::equal(sep->pointwise_weight, pw->weight));
  EXPECT_TRUE(torch::equal(sep->bias, pw->bias));
}

TEST(QuantSeparableConv2d, Errors) {
  expect_throw_with<std::invalid_argument>(
      [] { QuantSeparableConv2d(QuantSeparableConv2dOptions(0, 4, 3)); }, {"channel"});
  QuantSeparableConv2d sep(QuantSeparableConv2dOptions(2, 4, 3));
  expect_throw_with<std::invalid_argument>(
      [&] {
        sep(torch::randn({2, 5, 5}));
      },
      {"QuantSeparableConv2d", "[2, 5, 5]"});
}
