#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "onebit/nn.h"
#include "onebit/optim/bop.h"
#include "onebit/precision.h"

using namespace onebit;
using optim::Bop;
using optim::BopOptions;

namespace {

at::Tensor t(std::vector<float> v) { return torch::tensor(v); }

std::vector<float> values(const at::Tensor& x) {
  auto c = x.detach().contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

// One Bop step with a given gradient.
void step_with(Bop& bop, at::Tensor& w, const at::Tensor& g) {
  w.mutable_grad() = g.clone();
  bop.step();
}

torch::nn::Sequential small_model() {
  return torch::nn::Sequential(
      nn::QuantDense(nn::QuantDenseOptions(4, 3)
                         .bias(false)
                         .kernel_quantizer("ste_sign")
                         .kernel_constraint("weight_clip")),
      nn::BatchNorm(3), nn::QuantDense(nn::QuantDenseOptions(3, 2).kernel_quantizer("ste_tern")),
      nn::QuantDense(
          nn::QuantDenseOptions(2, 2).kernel_quantizer(std::make_shared<quantizers::NoOp>(1))),
      torch::nn::Linear(2, 2));
}

}  // namespace

TEST(Bop, FlipsExactlyWhereWeightTimesAverageExceedsThreshold) {
  auto w = t({1, -1, 1, -1, 1, -1, 1}).requires_grad_(true);
  Bop bop({w}, BopOptions(/*threshold=*/0.2, /*gamma=*/0.5));
  // m = 0.5 g: [0.5, 0.5, 0.05, -0.05, -0.5, -0.5, 0.2]; w*m = [.5, -.5, .05, .05, -.5, .5, .2]
  step_with(bop, w, t({1, 1, 0.1f, -0.1f, -1, -1, 0.4f}));
  EXPECT_EQ(values(bop.moving_average(w)),
            std::vector<float>({0.5f, 0.5f, 0.05f, -0.05f, -0.5f, -0.5f, 0.2f}));
  // Index 0 and 5 exceed the threshold; index 6 equals it and becomes +1 (it was +1 already;
  // LarqParity.BopDecidesOnRealStartingWeightsAndTiesGivePlusOne flips a -1 on a tie).
  EXPECT_EQ(values(w), std::vector<float>({-1, -1, 1, -1, 1, 1, 1}));
}

TEST(Bop, MovingAverageAfterSeveralSteps) {
  auto w = t({1, -1, 1}).requires_grad_(true);
  const double gamma = 0.1;
  Bop bop({w}, BopOptions(/*threshold=*/1e9, gamma));
  const std::vector<std::vector<float>> grads = {{1, 2, -3}, {0.5f, -1, 4}, {-2, 0, 1}};
  std::vector<double> m(3, 0.0);
  for (const auto& g : grads) {
    step_with(bop, w, t(g));
    for (size_t i = 0; i < 3; ++i) m[i] = m[i] + gamma * (g[i] - m[i]);
  }
  auto got = values(bop.moving_average(w));
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got[i], m[i], 1e-6) << i;
  EXPECT_EQ(values(w), std::vector<float>({1, -1, 1}));  // threshold never reached
}

TEST(Bop, LeavesStartingWeightsAloneAndKeepsThemBinaryFromTheFirstStep) {
  auto w = t({0.3f, -0.2f, 0.0f, -0.0f, 5.0f}).requires_grad_(true);
  Bop bop({w}, BopOptions(0.0, 0.3));
  EXPECT_EQ(values(w), std::vector<float>({0.3f, -0.2f, 0.0f, -0.0f, 5.0f}));  // as Larq
  auto b = t({0.3f, -0.2f, 0.0f, -0.0f, 5.0f}).requires_grad_(true);
  Bop binarizing({b}, BopOptions(0.0, 0.3).binarize_at_start(true));
  EXPECT_EQ(values(b), std::vector<float>({1, -1, 1, 1, 1}));
  auto gen = at::detail::createCPUGenerator(3);
  for (int s = 0; s < 20; ++s) {
    step_with(bop, w, at::randn({5}, gen));
    EXPECT_TRUE(w.abs().eq(1).all().item<bool>()) << "step " << s;
  }
}

TEST(Bop, SkipsParametersWithoutGradient) {
  auto a = t({1, -1}).requires_grad_(true);
  auto b = t({1, -1}).requires_grad_(true);
  Bop bop({a, b}, BopOptions(0.0, 1.0));
  a.mutable_grad() = t({1, -1});
  bop.step();
  EXPECT_EQ(values(a), std::vector<float>({-1, 1}));
  EXPECT_EQ(values(b), std::vector<float>({1, -1}));
  EXPECT_FALSE(bop.moving_average(b).defined());
}

TEST(Bop, RejectsBadOptionsAndTensors) {
  auto w = t({1, -1}).requires_grad_(true);
  EXPECT_THROW(Bop({w}, BopOptions(-1.0, 0.1)), std::invalid_argument);
  EXPECT_THROW(Bop({w}, BopOptions(0.0, 1.5)), std::invalid_argument);
  EXPECT_THROW(Bop({torch::tensor({1, 2})}, BopOptions()), std::invalid_argument);
}

TEST(Bop, StateSavesAndLoads) {
  auto w = t({1, -1, 1, -1}).requires_grad_(true);
  Bop bop({w}, BopOptions(0.5, 0.25));
  step_with(bop, w, t({0.1f, 0.2f, 0.3f, 0.4f}));
  step_with(bop, w, t({-0.1f, 0.5f, 0.3f, 0.0f}));
  std::stringstream buf;
  torch::serialize::OutputArchive out;
  bop.save(out);
  out.save_to(buf);

  auto w2 = w.detach().clone().requires_grad_(true);
  Bop restored({w2}, BopOptions(0.5, 0.25));
  torch::serialize::InputArchive in;
  in.load_from(buf);
  restored.load(in);
  EXPECT_TRUE(torch::equal(restored.moving_average(w2), bop.moving_average(w)));
  // Both continue identically.
  step_with(bop, w, t({1, 1, 1, 1}));
  step_with(restored, w2, t({1, 1, 1, 1}));
  EXPECT_TRUE(torch::equal(w, w2));
  EXPECT_TRUE(torch::equal(restored.moving_average(w2), bop.moving_average(w)));

  // A state for a different number of parameters is a clear error.
  auto x = t({1}).requires_grad_(true), y = t({1}).requires_grad_(true);
  Bop other({x, y}, BopOptions());
  torch::serialize::InputArchive in2;
  buf.seekg(0);
  in2.load_from(buf);
  EXPECT_THROW(other.load(in2), std::runtime_error);
}

TEST(Precision, KernelsHaveTheirQuantizersBitsOthers32) {
  auto model = small_model();
  auto bits = parameter_precision(*model);
  EXPECT_EQ(bits.at("0.weight"), 1);
  EXPECT_EQ(bits.at("1.bias"), 32);  // batch-norm beta
  EXPECT_EQ(bits.at("2.weight"), 2);
  EXPECT_EQ(bits.at("2.bias"), 32);
  EXPECT_EQ(bits.at("3.weight"), 1);  // NoOp(1) tags a binary variable
  EXPECT_EQ(bits.at("4.weight"), 32);
  EXPECT_EQ(parameter_precision(*model, model->named_parameters()["0.weight"]), 1);
  EXPECT_EQ(parameter_precision(*model, model->named_parameters()["0.weight"].clone()), 32);
}

TEST(Precision, IsBinaryMatchesLarqsIsBinaryVariable) {
  auto model = small_model();
  auto pred = optim::is_binary_in(*model);
  std::vector<std::string> binary;
  for (const auto& item : model->named_parameters()) {
    EXPECT_EQ(pred(item.key(), item.value()), optim::is_binary(item.value(), *model));
    if (pred(item.key(), item.value())) binary.push_back(item.key());
  }
  EXPECT_EQ(binary, std::vector<std::string>({"0.weight", "3.weight"}));
}
