// QuantConvTranspose2d/3d against torch's transposed convolutions.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ext_test_util.h"
#include "onebit/nn/transpose.h"
#include "onebit/registry.h"

using namespace onebit::nn;
using onebit::testing::copy_into;
using onebit::testing::expect_throw_with;
using onebit::testing::randomize;
using onebit::testing::sign_ref;

TEST(QuantConvTranspose2d, FloatEqualsTorch) {
  QuantConvTranspose2d q(QuantConvTranspose2dOptions(4, 6, {3, 2})
                             .stride({2, 3})
                             .padding({1, 0})
                             .output_padding({1, 2})
                             .dilation({2, 1})
                             .groups(2));
  torch::nn::ConvTranspose2d ref(torch::nn::ConvTranspose2dOptions(4, 6, {3, 2})
                                     .stride({2, 3})
                                     .padding({1, 0})
                                     .output_padding({1, 2})
                                     .dilation({2, 1})
                                     .groups(2));
  copy_into(ref->weight, q->weight);
  copy_into(ref->bias, q->bias);
  auto x = torch::randn({2, 4, 5, 4});
  auto y = q(x);
  EXPECT_EQ(y.sizes(), ref(x).sizes());
  EXPECT_TRUE(torch::allclose(y, ref(x), 1e-5, 1e-6));
}

TEST(QuantConvTranspose2d, InitializationMatchesTorch) {
  torch::manual_seed(5);
  QuantConvTranspose2d q(QuantConvTranspose2dOptions(4, 6, 3).groups(2));
  torch::manual_seed(5);
  torch::nn::ConvTranspose2d ref(torch::nn::ConvTranspose2dOptions(4, 6, 3).groups(2));
  EXPECT_TRUE(torch::equal(q->weight, ref->weight));
  EXPECT_TRUE(torch::equal(q->bias, ref->bias));
}

TEST(QuantConvTranspose2d, BinaryForwardAndSteGradient) {
  QuantConvTranspose2d q(QuantConvTranspose2dOptions(3, 4, 3)
                             .stride(2)
                             .padding(1)
                             .input_quantizer("ste_sign")
                             .kernel_quantizer("ste_sign")
                             .kernel_constraint("weight_clip"));
  randomize(q);
  auto x = torch::randn({2, 3, 4, 5});
  auto y = q(x);
  auto wq = sign_ref(q->weight.detach()).requires_grad_(true);
  auto want = at::conv_transpose2d(sign_ref(x), wq, q->bias.detach(), 2, 1);
  EXPECT_TRUE(torch::equal(y.detach(), want.detach()));
  auto dy = torch::randn(y.sizes());
  y.backward(dy);
  want.backward(dy);
  auto mask = q->weight.detach().abs().le(1).to(torch::kFloat);
  EXPECT_GT(mask.sum().item<float>(), 0);
  EXPECT_LT(mask.sum().item<float>(), mask.numel());
  EXPECT_TRUE(torch::allclose(q->weight.grad(), wq.grad() * mask, 1e-5, 1e-6));
  // Keras' Conv2DTranspose is a Conv2D: Larq counts its MACs (weights x output pixels).
  EXPECT_EQ(onebit::find_layer_kind(*q)->macs, onebit::MacRule::kWeights);
}

// Keras "same": output = input * stride, cropped from the full ("valid") output starting at
// total / 2, or padded at the end (bias only) when the kernel is shorter than the stride.
TEST(QuantConvTranspose2d, SameAndValidShapesAndValues) {
  for (int64_t in : {3, 4}) {
    for (int64_t stride : {1, 2, 3}) {
      for (int64_t k : {1, 2, 3, 4}) {
        for (int64_t dilation : {1, 2}) {
          if (k == 1 && dilation == 2) continue;
          auto make = [&](ConvPadding<2> padding) {
            return QuantConvTranspose2d(
                QuantConvTranspose2dOptions(2, 3, k).stride(stride).dilation(dilation).padding(
                    padding));
          };
          auto same = make(torch::kSame);
          auto valid = make(torch::kValid);
          copy_into(valid->weight, same->weight);
          copy_into(valid->bias, same->bias);
          auto x = torch::randn({1, 2, in, in});
          auto y = same(x);
          auto full = valid(x);
          const int64_t span = (k - 1) * dilation + 1;
          ASSERT_EQ(full.size(2), (in - 1) * stride + span);
          ASSERT_EQ(y.size(2), in * stride) << "k " << k << " s " << stride << " d " << dilation;
          ASSERT_EQ(y.size(3), in * stride);
          const int64_t total = full.size(2) - in * stride;
          at::Tensor want;
          if (total >= 0) {
            want = full.slice(2, total / 2, total / 2 + in * stride)
                       .slice(3, total / 2, total / 2 + in * stride);
          } else {
            auto b = same->bias.view({1, 3, 1, 1});
            want = (at::constant_pad_nd(full - b, {0, -total, 0, -total}, 0.0) + b);
          }
          EXPECT_TRUE(torch::allclose(y, want, 1e-5, 1e-6))
              << "k " << k << " s " << stride << " d " << dilation;
        }
      }
    }
  }
}

TEST(QuantConvTranspose3d, FloatAndBinaryEqualTorch) {
  QuantConvTranspose3d q(
      QuantConvTranspose3dOptions(2, 4, {2, 3, 2}).stride({1, 2, 2}).padding({0, 1, 0}));
  torch::nn::ConvTranspose3d ref(
      torch::nn::ConvTranspose3dOptions(2, 4, {2, 3, 2}).stride({1, 2, 2}).padding({0, 1, 0}));
  copy_into(ref->weight, q->weight);
  copy_into(ref->bias, q->bias);
  auto x = torch::randn({2, 2, 3, 4, 3});
  EXPECT_TRUE(torch::allclose(q(x), ref(x), 1e-5, 1e-6));

  QuantConvTranspose3d b(QuantConvTranspose3dOptions(2, 4, 2)
                             .stride(2)
                             .padding(torch::kSame)
                             .input_quantizer("ste_sign")
                             .kernel_quantizer("ste_sign")
                             .kernel_constraint("weight_clip"));
  auto want = at::conv_transpose3d(sign_ref(x), sign_ref(b->weight.detach()), b->bias.detach(), 2);
  auto y = b(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 4, 6, 8, 6}));
  EXPECT_TRUE(torch::equal(y.detach(), want));
}

TEST(QuantConvTranspose2d, Errors) {
  expect_throw_with<std::invalid_argument>(
      [] { QuantConvTranspose2d(QuantConvTranspose2dOptions(4, 6, 3).groups(4)); },
      {"groups (4)", "out_channels (6)"});
  expect_throw_with<std::invalid_argument>(
      [] { QuantConvTranspose2d(QuantConvTranspose2dOptions(4, 6, 3).output_padding(1)); },
      {"output_padding (1)"});
  expect_throw_with<std::invalid_argument>(
      [] {
        QuantConvTranspose2d(
            QuantConvTranspose2dOptions(4, 6, 3).stride(2).output_padding(1).padding(torch::kSame));
      },
      {"output_padding", "same"});
  QuantConvTranspose2d q(QuantConvTranspose2dOptions(4, 6, 3).padding(3));
  expect_throw_with<std::invalid_argument>(
      [&] {
        q(torch::randn({1, 4, 2, 2}));
      },
      {"QuantConvTranspose2d", "empty output"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        q(torch::randn({1, 3, 2, 2}));
      },
      {"[N, 4, *, *]", "[1, 3, 2, 2]"});
}
