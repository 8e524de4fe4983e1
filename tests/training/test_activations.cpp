// hard_tanh, leaky_tanh and quantizers as activation modules.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ext_test_util.h"
#include "onebit/nn/activations.h"
#include "onebit/quantizers.h"

using namespace onebit::nn;
using onebit::testing::expect_throw_with;

namespace {

std::vector<float> values(const at::Tensor& t) {
  auto c = t.detach().contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

void expect_values(const at::Tensor& t, const std::vector<float>& want) {
  auto got = values(t);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "index " << i;
}

}  // namespace

TEST(Activations, HardTanhValuesAndGradient) {
  auto x = torch::tensor({-3.f, -1.5f, -0.5f, 0.f, 0.25f, 2.f}).requires_grad_(true);
  auto y = hard_tanh(x);
  expect_values(y, {-1, -1, -0.5f, 0, 0.25f, 1});
  y.sum().backward();
  expect_values(x.grad(), {0, 0, 1, 1, 1, 0});
}

TEST(Activations, LeakyTanhValuesAndGradient) {
  auto x = torch::tensor({-3.f, -1.5f, -0.5f, 0.f, 0.25f, 2.f}).requires_grad_(true);
  auto y = leaky_tanh(x);  // alpha 0.2
  expect_values(y, {-1 - 0.2f * 2, -1 - 0.2f * 0.5f, -0.5f, 0, 0.25f, 1 + 0.2f});
  y.sum().backward();
  expect_values(x.grad(), {0.2f, 0.2f, 1, 1, 1, 0.2f});

  auto x2 = torch::tensor({-2.f, 3.f});
  expect_values(leaky_tanh(x2, 0.5), {-1.5f, 2.f});
  expect_values(leaky_tanh(x2, 0.0), values(hard_tanh(x2)));
}

TEST(Activations, ModulesInsideSequential) {
  torch::nn::Sequential model(torch::nn::Linear(4, 3), HardTanh(), LeakyTanh(0.3),
                              Quantizer("ste_sign"));
  auto x = torch::randn({5, 4}) * 3;
  auto* linear = model[0]->as<torch::nn::Linear>();
  auto h = leaky_tanh(hard_tanh(linear->forward(x)), 0.3);
  auto want = at::where(h >= 0, torch::ones_like(h), -torch::ones_like(h));
  EXPECT_TRUE(torch::equal(model->forward(x), want));
  std::ostringstream s;
  s << *model;
  EXPECT_NE(s.str().find("onebit::nn::LeakyTanh(alpha=0.3)"), std::string::npos) << s.str();
  EXPECT_NE(s.str().find("ste_sign"), std::string::npos);
}

TEST(Activations, QuantizerModuleForwardGradientAndAccessor) {
  Quantizer q(std::make_shared<onebit::quantizers::SteSign>(0.5));
  ASSERT_TRUE(q->quantizer());
  EXPECT_EQ(q->quantizer()->config()["clip_value"], 0.5);
  auto x = torch::tensor({-0.7f, -0.3f, 0.f, 0.4f, 0.6f}).requires_grad_(true);
  auto y = q(x);
  expect_values(y, {-1, -1, 1, 1, 1});
  y.sum().backward();
  expect_values(x.grad(), {0, 1, 1, 1, 0});

  Quantizer heaviside("ste_heaviside");
  expect_values(heaviside(torch::tensor({-1.f, 0.f, 2.f})), {0, 0, 1});
}

TEST(Activations, Errors) {
  expect_throw_with<std::invalid_argument>(
      [] { QuantizerImpl(onebit::quantizers::QuantizerSpec(nullptr)); }, {"quantizer is required"});
  expect_throw_with<std::invalid_argument>([] { Quantizer("no_such_quantizer"); },
                                           {"no_such_quantizer"});
  expect_throw_with<std::invalid_argument>([] { LeakyTanh(std::nan("")); }, {"alpha", "finite"});
}
