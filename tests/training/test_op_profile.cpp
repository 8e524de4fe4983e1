// OpProfile (per-op self times of a training step) and clear_gradients.

#include "onebit/train/op_profile.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

#include <chrono>
#include <map>
#include <stdexcept>
#include <string>

#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace onebit::train {
namespace {

std::map<std::string, OpProfile::Op> by_name(const OpProfile& p) {
  std::map<std::string, OpProfile::Op> m;
  for (const auto& op : p.ops()) m[op.name] = op;
  return m;
}

TEST(OpProfile, RecordsForwardOpsAndBackwardNodesWithSelfTimesThatAddUp) {
  torch::manual_seed(0);
  auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 16, 3).padding(1));
  const at::Tensor x = torch::randn({4, 8, 12, 12});
  double wall = 0;
  OpProfile profile;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    conv->forward(x).relu().sum().backward();
    wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const auto ops = by_name(profile);
  ASSERT_TRUE(ops.count("aten::convolution_backward")) << "no backward op recorded";
  ASSERT_TRUE(ops.count("aten::relu"));
  EXPECT_EQ(ops.at("aten::relu").calls, 3);
  EXPECT_EQ(ops.at("aten::convolution_backward").calls, 3);
  bool node = false;
  for (const auto& [name, op] : ops) node = node || name.find("Backward0") != std::string::npos;
  EXPECT_TRUE(node) << "no autograd node recorded";
  // Self times exclude what an op called: they add up to at most the wall time, and the
  // list comes largest first.
  double total = 0;
  const auto list = profile.ops();
  for (size_t i = 0; i < list.size(); ++i) {
    EXPECT_GE(list[i].self_seconds, 0.0);
    if (i > 0) EXPECT_LE(list[i].self_seconds, list[i - 1].self_seconds);
    total += list[i].self_seconds;
  }
  EXPECT_GT(total, 0.0);
  EXPECT_LE(total, wall * 1.05);
  profile.clear();
  EXPECT_TRUE(profile.ops().empty());
  (void)conv->forward(x);
  EXPECT_FALSE(profile.ops().empty()) << "recording stopped after clear()";
}

TEST(OpProfile, OneProfileAtATimeAndNothingRecordedAfterwards) {
  {
    OpProfile first;
    EXPECT_THROW(OpProfile second, std::logic_error);
  }
  OpProfile again;  // the first one's end freed the slot
  EXPECT_TRUE(again.ops().empty());
}

TEST(ClearGradients, LeavesNoGradientsAndTheNextBackwardHandsThemOver) {
  zoo::ModelOptions o;
  o.input_shape = {1, 28, 28};
  o.num_classes = 10;
  nn::Graph model = zoo::build("larq-mnist", o);
  const at::Tensor x = torch::randn({2, 1, 28, 28});
  model->forward(x).sum().backward();
  const auto params = model->parameters();
  ASSERT_FALSE(params.empty());
  for (const auto& p : params) ASSERT_TRUE(p.grad().defined());
  // The gradient of a second backward after clear_gradients is that backward's alone.
  const at::Tensor first = params.front().grad().clone();
  clear_gradients(model);
  for (const auto& p : params) EXPECT_FALSE(p.grad().defined());
  model->forward(x).sum().backward();
  EXPECT_TRUE(at::allclose(params.front().grad(), first, 1e-5, 1e-6))
      << "the gradient was added onto the old one";
}

}  // namespace
}  // namespace onebit::train
