// FusedAdam / FusedAdamW against LibTorch's Adam / AdamW: the same trajectory to float rounding
// over many steps (plain, L2 weight decay, AMSGrad, decoupled decay), LibTorch's own operations
// for parameters the fused loop does not take (double), results independent of the thread count,
// and state that LibTorch's optimizers load and continue from (and the reverse).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/archive.h>

#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../../src/optim/state_key.h"
#include "onebit/optim/case_optimizer.h"
#include "onebit/optim/fused_adam.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace onebit::optim {
namespace {

// Parameters of several sizes, including one past the loop's parallel grain (16384).
std::vector<at::Tensor> make_params(at::ScalarType dtype = at::kFloat) {
  at::manual_seed(3);
  std::vector<at::Tensor> ps;
  for (std::int64_t n : {std::int64_t{7}, std::int64_t{300}, std::int64_t{40000}}) {
    ps.push_back(at::randn({n}, at::TensorOptions().dtype(dtype)).set_requires_grad(true));
  }
  ps.push_back(at::randn({5, 6}, at::TensorOptions().dtype(dtype)).set_requires_grad(true));
  return ps;
}

std::vector<at::Tensor> clone_params(const std::vector<at::Tensor>& ps) {
  std::vector<at::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().set_requires_grad(true));
  return out;
}

// Same random gradients for both sets; every third step leaves the last parameter without one.
void set_grads(std::vector<at::Tensor>& a, std::vector<at::Tensor>& b, int step) {
  at::manual_seed(100 + step);
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (i + 1 == a.size() && step % 3 == 2) {
      a[i].mutable_grad() = at::Tensor();
      b[i].mutable_grad() = at::Tensor();
      continue;
    }
    const at::Tensor g = at::randn(a[i].sizes(), a[i].options()).mul_(0.1 * (1 + step % 4));
    a[i].mutable_grad() = g.clone();
    b[i].mutable_grad() = g.clone();
  }
}

// Largest |a - b| / max(1, |b|) over all parameters.
double max_rel_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const at::Tensor d = (a[i] - b[i]).abs() / b[i].abs().clamp_min(1.0);
    worst = std::max(worst, d.max().item<double>());
  }
  return worst;
}

template <typename Optimizer>
struct StateOf;
template <>
struct StateOf<torch::optim::Adam> {
  using type = torch::optim::AdamParamState;
};
template <>
struct StateOf<torch::optim::AdamW> {
  using type = torch::optim::AdamWParamState;
};
template <typename Optimizer>
using ParamState = typename StateOf<Optimizer>::type;

template <typename Fused, typename Reference, typename Options>
void expect_same_trajectory(const Options& options, const std::string& what,
                            at::ScalarType dtype = at::kFloat, double tolerance = 1e-5) {
  std::vector<at::Tensor> a = make_params(dtype), b = clone_params(a);
  Fused fused(a, options);
  Reference reference(b, options);
  for (int step = 0; step < 40; ++step) {
    set_grads(a, b, step);
    fused.step();
    reference.step();
  }
  const double diff = max_rel_diff(a, b);
  EXPECT_LE(diff, tolerance) << what;
  if (dtype != at::kFloat) EXPECT_EQ(diff, 0.0) << what << ": LibTorch's own operations";
  // The parameters moved (the comparison is not of two unchanged sets).
  EXPECT_GT(max_rel_diff(a, make_params(dtype)), 1e-3) << what;
  // One state per parameter in both, with the same step counts and moments.
  ASSERT_EQ(fused.state().size(), reference.state().size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto fi = fused.state().find(detail::state_key(a[i]));
    const auto ri = reference.state().find(detail::state_key(b[i]));
    ASSERT_NE(fi, fused.state().end()) << what;
    ASSERT_NE(ri, reference.state().end()) << what;
    const auto& r = static_cast<const ParamState<Reference>&>(*ri->second);
    const auto& f = static_cast<const ParamState<Reference>&>(*fi->second);
    EXPECT_EQ(f.step(), r.step()) << what;
    EXPECT_TRUE(at::allclose(f.exp_avg(), r.exp_avg(), 1e-5, 1e-7)) << what;
    EXPECT_TRUE(at::allclose(f.exp_avg_sq(), r.exp_avg_sq(), 1e-5, 1e-9)) << what;
  }
}

TEST(FusedAdam, FollowsLibTorchsAdamToFloatRounding) {
  using torch::optim::Adam;
  using torch::optim::AdamOptions;
  expect_same_trajectory<FusedAdam, Adam>(AdamOptions(1e-2), "adam");
  expect_same_trajectory<FusedAdam, Adam>(AdamOptions(1e-2).weight_decay(0.01), "adam + L2");
  expect_same_trajectory<FusedAdam, Adam>(AdamOptions(3e-3).amsgrad(true).betas({0.8, 0.99}),
                                          "adam, amsgrad");
  expect_same_trajectory<FusedAdam, Adam>(AdamOptions(1e-2).weight_decay(0.01), "adam, double",
                                          at::kDouble);
}

TEST(FusedAdam, FusedAdamWFollowsLibTorchsAdamW) {
  using torch::optim::AdamW;
  using torch::optim::AdamWOptions;
  expect_same_trajectory<FusedAdamW, AdamW>(AdamWOptions(1e-2).weight_decay(0.05), "adamw");
  expect_same_trajectory<FusedAdamW, AdamW>(AdamWOptions(1e-2).weight_decay(0).amsgrad(true),
                                            "adamw, amsgrad, no decay");
  expect_same_trajectory<FusedAdamW, AdamW>(AdamWOptions(1e-2), "adamw, double", at::kDouble);
}

TEST(FusedAdam, ResultsDoNotDependOnTheThreadCount) {
  const int before = at::get_num_threads();
  std::vector<std::vector<at::Tensor>> results;
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    std::vector<at::Tensor> a = make_params(), unused = clone_params(a);
    FusedAdam opt(a, torch::optim::AdamOptions(1e-2).weight_decay(0.01));
    for (int step = 0; step < 5; ++step) {
      set_grads(a, unused, step);
      opt.step();
    }
    results.push_back(a);
  }
  at::set_num_threads(before);
  for (std::size_t r = 1; r < results.size(); ++r) {
    for (std::size_t i = 0; i < results[0].size(); ++i) {
      EXPECT_TRUE(at::equal(results[0][i], results[r][i]))
          << "threads run " << r << ", param " << i;
    }
  }
}

TEST(FusedAdam, StateLoadsIntoLibTorchsAdamAndBack) {
  std::vector<at::Tensor> a = make_params(), b = clone_params(a);
  const auto options = torch::optim::AdamOptions(1e-2).amsgrad(true);
  FusedAdam fused(a, options);
  for (int step = 0; step < 4; ++step) {
    set_grads(a, b, step);
    fused.step();
  }
  std::stringstream buf;
  torch::serialize::OutputArchive out;
  fused.save(out);
  out.save_to(buf);
  // LibTorch's Adam continues from the fused optimizer's state, on a copy of its parameters.
  std::vector<at::Tensor> c = clone_params(a);
  torch::optim::Adam reference(c, options);
  torch::serialize::InputArchive in;
  in.load_from(buf);
  reference.load(in);
  // And a fused optimizer from LibTorch's state (saved after loading).
  std::stringstream buf2;
  torch::serialize::OutputArchive out2;
  reference.save(out2);
  out2.save_to(buf2);
  std::vector<at::Tensor> d = clone_params(a);
  FusedAdam fused2(d, options);
  torch::serialize::InputArchive in2;
  in2.load_from(buf2);
  fused2.load(in2);
  for (int step = 4; step < 10; ++step) {
    set_grads(a, c, step);
    set_grads(d, b, step);
    fused.step();
    reference.step();
    fused2.step();
  }
  EXPECT_LE(max_rel_diff(c, a), 1e-5);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i], d[i])) << "a fused optimizer restored from LibTorch's state, " << i;
  }
  // A fresh LibTorch Adam (step 0) would differ: the loaded step counts were used.
  std::vector<at::Tensor> e = clone_params(make_params());
  EXPECT_GT(max_rel_diff(e, a), 1e-3);
}

TEST(FusedAdam, ClosureLossAndSparseGradients) {
  at::Tensor w = at::ones({3}).set_requires_grad(true);
  FusedAdam opt({w}, torch::optim::AdamOptions(0.1));
  const at::Tensor loss = opt.step([&] {
    opt.zero_grad();
    at::Tensor l = (w * w).sum();
    l.backward();
    return l;
  });
  EXPECT_FLOAT_EQ(loss.item<float>(), 3.0f);
  EXPECT_LT(w.max().item<float>(), 1.0f);  // moved against the gradient
  w.mutable_grad() = at::ones({3}).to_sparse();
  EXPECT_THROW(opt.step(), std::invalid_argument);
}

// The trainer's Adam (and Bop's Adam for the real-valued parameters) is the fused one unless
// optimizer_options says "fused": false; other values and unknown options are errors.
TEST(FusedAdam, TheTrainerUsesItUnlessToldOtherwise) {
  nn::Graph model = zoo::build("larq-mnist");
  train::TrainOptions o;
  o.optimizer = "adam";
  EXPECT_NE(dynamic_cast<FusedAdam*>(train::make_optimizer(o, model).get()), nullptr);
  o.weight_decay = 0.01;
  EXPECT_NE(dynamic_cast<FusedAdamW*>(train::make_optimizer(o, model).get()), nullptr);
  o.optimizer_options = {{"fused", false}};
  auto plain = train::make_optimizer(o, model);
  EXPECT_NE(dynamic_cast<torch::optim::AdamW*>(plain.get()), nullptr);
  EXPECT_EQ(dynamic_cast<FusedAdamW*>(plain.get()), nullptr);
  o.weight_decay = 0;
  plain = train::make_optimizer(o, model);
  EXPECT_NE(dynamic_cast<torch::optim::Adam*>(plain.get()), nullptr);
  EXPECT_EQ(dynamic_cast<FusedAdam*>(plain.get()), nullptr);
  o.optimizer = "bop";
  o.optimizer_options = {{"fused", false}, {"threshold", 1e-6}};
  EXPECT_NE(dynamic_cast<CaseOptimizer*>(train::make_optimizer(o, model).get()), nullptr);
  const auto expect_error = [&](const nlohmann::json& extra, const std::string& text) {
    o.optimizer_options = extra;
    try {
      train::make_optimizer(o, model);
      ADD_FAILURE() << "no error for " << extra.dump();
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  o.optimizer = "adam";
  expect_error({{"fused", "yes"}}, "must be true or false");
  expect_error({{"fusd", true}}, "unknown option \"fusd\" (known: fused)");
}

}  // namespace
}  // namespace onebit::optim
