// QuantLocallyConnected1d/2d against a direct per-position computation and against convolution.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ext_test_util.h"
#include "onebit/nn/locally_connected.h"

using namespace onebit::nn;
using onebit::testing::copy_into;
using onebit::testing::expect_throw_with;
using onebit::testing::randomize;
using onebit::testing::sign_ref;

namespace {

/// The definition, one output position at a time: y[n, o, i, j] = <patch(i, j), W[o, p]> + b.
at::Tensor lc2d_ref(const at::Tensor& xp, const at::Tensor& w, const at::Tensor& b,
                    std::array<int64_t, 2> k, std::array<int64_t, 2> s, std::array<int64_t, 2> d,
                    std::array<int64_t, 2> out) {
  const int64_t n = xp.size(0), o = w.size(0);
  std::vector<at::Tensor> columns;
  for (int64_t i = 0; i < out[0]; ++i) {
    for (int64_t j = 0; j < out[1]; ++j) {
      auto patch = xp.slice(2, i * s[0], i * s[0] + (k[0] - 1) * d[0] + 1, d[0])
                       .slice(3, j * s[1], j * s[1] + (k[1] - 1) * d[1] + 1, d[1])
                       .reshape({n, -1});                                     // (c, kh, kw) order
      columns.push_back(at::matmul(patch, w.select(1, i * out[1] + j).t()));  // [N, O]
    }
  }
  auto y = at::stack(columns, 2).reshape({n, o, out[0], out[1]});
  return b.defined() ? y + b : y;
}

}  // namespace

TEST(QuantLocallyConnected2d, FloatEqualsPerPositionDefinition) {
  QuantLocallyConnected2d lc(
      QuantLocallyConnected2dOptions(3, 4, {3, 2}, {7, 6}).stride({2, 1}).dilation({1, 2}));
  auto x = torch::randn({2, 3, 7, 6});
  auto y = lc(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 4, 3, 4}));
  EXPECT_EQ(lc->weight.sizes(), (std::vector<int64_t>{4, 12, 18}));
  auto want = lc2d_ref(x, lc->weight, lc->bias, {3, 2}, {2, 1}, {1, 2}, {3, 4});
  EXPECT_TRUE(torch::allclose(y, want, 1e-5, 1e-6));
}

TEST(QuantLocallyConnected2d, SharedWeightsEqualConvolution) {
  QuantLocallyConnected2d lc(QuantLocallyConnected2dOptions(3, 5, 3, {6, 7}).stride(2));
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 5, 3).stride(2));
  const int64_t positions = lc->weight.size(1);
  copy_into(lc->weight, conv->weight.reshape({5, 1, 27}).expand({5, positions, 27}));
  copy_into(lc->bias, conv->bias.view({5, 1, 1}).expand(lc->bias.sizes()));
  auto x = torch::randn({2, 3, 6, 7});
  EXPECT_TRUE(torch::allclose(lc(x), conv(x), 1e-5, 1e-5));
}

TEST(QuantLocallyConnected2d, BinaryForwardAndSteGradient) {
  QuantLocallyConnected2d lc(QuantLocallyConnected2dOptions(2, 3, 2, {4, 5})
                                 .input_quantizer("ste_sign")
                                 .kernel_quantizer("ste_sign")
                                 .kernel_constraint("weight_clip"));
  randomize(lc);
  auto x = torch::randn({2, 2, 4, 5});
  auto y = lc(x);
  auto wq = sign_ref(lc->weight.detach()).requires_grad_(true);
  auto want = lc2d_ref(sign_ref(x), wq, lc->bias.detach(), {2, 2}, {1, 1}, {1, 1}, {3, 4});
  EXPECT_TRUE(torch::equal(y.detach(), want.detach()));
  auto dy = torch::randn(y.sizes());
  y.backward(dy);
  want.backward(dy);
  auto mask = lc->weight.detach().abs().le(1).to(torch::kFloat);
  EXPECT_GT(mask.sum().item<float>(), 0);
  EXPECT_LT(mask.sum().item<float>(), mask.numel());
  EXPECT_TRUE(torch::allclose(lc->weight.grad(), wq.grad() * mask, 1e-5, 1e-6));
  // The bias gradient is the plain sum over the batch.
  EXPECT_TRUE(torch::allclose(lc->bias.grad(), dy.sum(0), 1e-5, 1e-6));
}

TEST(QuantLocallyConnected2d, SameOnePadding) {
  QuantLocallyConnected2d lc(QuantLocallyConnected2dOptions(2, 3, 3, {5, 6})
                                 .padding(torch::kSame)
                                 .pad_values(1.0)
                                 .stride(2));
  auto x = torch::randn({2, 2, 5, 6});
  auto y = lc(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 3, 3}));
  // Keras "same", k 3, stride 2: H 5 -> total 2 (1, 1); W 6 -> total 1 (0, 1).
  auto xp = at::constant_pad_nd(x, {0, 1, 1, 1}, 1.0);
  auto want = lc2d_ref(xp, lc->weight, lc->bias, {3, 3}, {2, 2}, {1, 1}, {3, 3});
  EXPECT_TRUE(torch::allclose(y, want, 1e-5, 1e-6));
}

TEST(QuantLocallyConnected2d, OutputShapes) {
  for (int64_t in : {5, 6, 7}) {
    for (int64_t stride : {1, 2, 3}) {
      for (int64_t dilation : {1, 2}) {
        QuantLocallyConnected2d same(QuantLocallyConnected2dOptions(1, 2, 2, in)
                                         .padding(torch::kSame)
                                         .stride(stride)
                                         .dilation(dilation));
        EXPECT_EQ(same(torch::randn({1, 1, in, in})).size(2), (in + stride - 1) / stride);
        QuantLocallyConnected2d valid(
            QuantLocallyConnected2dOptions(1, 2, 2, in).stride(stride).dilation(dilation));
        EXPECT_EQ(valid(torch::randn({1, 1, in, in})).size(3), (in - dilation - 1) / stride + 1);
      }
    }
  }
}

TEST(QuantLocallyConnected1d, FloatAndBinaryEqualDefinition) {
  for (bool binary : {false, true}) {
    QuantLocallyConnected1dOptions o(3, 4, 3, 9);
    o.stride(2);
    if (binary) {
      o.input_quantizer("ste_sign").kernel_quantizer("ste_sign").kernel_constraint("weight_clip");
    }
    QuantLocallyConnected1d lc(o);
    auto x = torch::randn({2, 3, 9});
    auto y = lc(x);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 4, 4}));
    auto xr = binary ? sign_ref(x) : x;
    auto w = binary ? sign_ref(lc->weight.detach()) : lc->weight.detach();
    auto want = lc2d_ref(xr.unsqueeze(-1), w, lc->bias.detach().unsqueeze(-1), {3, 1}, {2, 1},
                         {1, 1}, {4, 1})
                    .squeeze(-1);
    EXPECT_TRUE(torch::allclose(y, want, 1e-5, 1e-6)) << "binary " << binary;
  }
}

TEST(QuantLocallyConnected1d, InitializationBoundsAndErrors) {
  QuantLocallyConnected1d lc(QuantLocallyConnected1dOptions(4, 2, 4, 10));
  const double bound = 1.0 / std::sqrt(16.0);
  EXPECT_LE(lc->weight.abs().max().item<double>(), bound);
  EXPECT_GT(lc->weight.abs().max().item<double>(), 0.5 * bound);
  expect_throw_with<std::invalid_argument>(
      [&] {
        lc(torch::randn({1, 4, 11}));
      },
      {"QuantLocallyConnected1d", "[N, 4, 10]", "[1, 4, 11]"});
  expect_throw_with<std::invalid_argument>(
      [] { QuantLocallyConnected1d(QuantLocallyConnected1dOptions(4, 2, 5, 3)); },
      {"larger than the padded input"});
}
