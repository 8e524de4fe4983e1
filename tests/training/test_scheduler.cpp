#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "onebit/nn.h"
#include "onebit/optim/bop.h"
#include "onebit/optim/case_optimizer.h"
#include "onebit/optim/scheduler.h"
#include "onebit/zoo/models.h"

namespace fs = std::filesystem;
using namespace onebit;
using namespace onebit::optim;

TEST(Schedules, ValuesAtGivenTimes) {
  auto cosine = schedules::cosine_decay(2.0, 10);
  EXPECT_DOUBLE_EQ(cosine(0), 2.0);
  EXPECT_NEAR(cosine(5), 1.0, 1e-12);
  EXPECT_NEAR(cosine(10), 0.0, 1e-12);
  EXPECT_NEAR(cosine(20), 0.0, 1e-12);
  EXPECT_NEAR(schedules::cosine_decay(1.0, 4, 0.5)(4), 0.5, 1e-12);
  auto step = schedules::step_decay(1.0, 0.1, 2);
  EXPECT_DOUBLE_EQ(step(0), 1.0);
  EXPECT_DOUBLE_EQ(step(1), 1.0);
  EXPECT_NEAR(step(2), 0.1, 1e-12);
  EXPECT_NEAR(step(5), 0.01, 1e-12);
  EXPECT_NEAR(schedules::exponential_decay(1.0, 0.5, 2)(3), std::pow(0.5, 1.5), 1e-12);
  EXPECT_DOUBLE_EQ(schedules::constant(3.0)(100), 3.0);
  EXPECT_NEAR(schedules::by_name("step", 1.0, 6)(2), 0.1, 1e-12);
  EXPECT_THROW(schedules::by_name("linear", 1.0, 6), std::invalid_argument);
  EXPECT_THROW(schedules::cosine_decay(1.0, 0), std::invalid_argument);
}

TEST(Schedules, SetAndGetHyperparameters) {
  auto w = torch::ones({3}).requires_grad_(true);
  auto v = torch::ones({3}).requires_grad_(true);
  torch::optim::Adam adam({v}, torch::optim::AdamOptions(0.1));
  set_hyperparameter(adam, "lr", 0.25);
  EXPECT_DOUBLE_EQ(get_hyperparameter(adam, "lr"), 0.25);
  EXPECT_THROW(set_hyperparameter(adam, "gamma", 0.1), std::invalid_argument);
  EXPECT_THROW(set_hyperparameter(adam, "beta", 0.1), std::invalid_argument);

  Bop bop({w}, BopOptions(1e-6, 1e-3));
  set_hyperparameter(bop, "gamma", 0.5);
  set_hyperparameter(bop, "threshold", 0.125);
  EXPECT_DOUBLE_EQ(get_hyperparameter(bop, "gamma"), 0.5);
  EXPECT_DOUBLE_EQ(get_hyperparameter(bop, "threshold"), 0.125);
  EXPECT_THROW(set_hyperparameter(bop, "lr", 0.1), std::invalid_argument);

  torch::OrderedDict<std::string, at::Tensor> params;
  params.insert("w", w);
  params.insert("v", v);
  CaseOptimizer c(
      params,
      {{[](const std::string& n, const at::Tensor&) { return n == "w"; },
        [](std::vector<at::Tensor> ps) {
          return std::make_unique<Bop>(std::move(ps), BopOptions());
        },
        "bop"}},
      [](std::vector<at::Tensor> ps) {
        return std::make_unique<torch::optim::SGD>(std::move(ps), torch::optim::SGDOptions(0.1));
      },
      "sgd");
  set_hyperparameter(c, "gamma", 0.01);  // only Bop has it
  set_hyperparameter(c, "lr", 0.02);     // only SGD has it
  set_hyperparameter(c, "momentum", 0.9);
  EXPECT_DOUBLE_EQ(get_hyperparameter(c.optimizer("bop"), "gamma"), 0.01);
  EXPECT_DOUBLE_EQ(get_hyperparameter(c.optimizer("sgd"), "lr"), 0.02);
  EXPECT_DOUBLE_EQ(get_hyperparameter(c, "momentum"), 0.9);
}

namespace {

data::Dataset tiny(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return {at::rand({n, 1, 28, 28}, gen) * 2 - 1, at::randint(10, {n}, gen), 10};
}

std::vector<nlohmann::json> read_metrics(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST(HyperparameterScheduler, SetsAndLogsPerEpochAndPerStep) {
  const auto dir =
      (fs::temp_directory_path() / ("onebit_sched_" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  train::TrainOptions o;
  o.model = "bnn-mlp";
  o.optimizer = "bop";
  o.epochs = 3;
  o.batch_size = 16;
  o.threads = 1;
  o.progress = false;
  o.out_dir = dir;
  auto gamma = std::make_shared<HyperparameterScheduler>(schedules::step_decay(1e-2, 0.5, 1),
                                                         "gamma", UpdateFreq::kEpoch, "bop");
  auto lr = std::make_shared<HyperparameterScheduler>(
      [](int64_t t) { return 1e-3 / static_cast<double>(t + 1); }, "lr", UpdateFreq::kStep);
  at::manual_seed(1);
  auto model = zoo::build(o.model, o.model_options);
  train::fit(model, tiny(64, 1), tiny(16, 2), o, {gamma, lr});
  auto metrics = read_metrics(dir);
  ASSERT_EQ(metrics.size(), 3u);
  for (int e = 0; e < 3; ++e) {
    EXPECT_DOUBLE_EQ(metrics[e].at("bop/gamma").get<double>(), 1e-2 * std::pow(0.5, e));
    // 4 steps per epoch; the value set after the last step of epoch e is for step 4 (e + 1).
    EXPECT_DOUBLE_EQ(metrics[e].at("lr").get<double>(), 1e-3 / (4.0 * (e + 1) + 1));
  }
  EXPECT_DOUBLE_EQ(gamma->value(), 2.5e-3);
  EXPECT_EQ(gamma->log_key(), "bop/gamma");
  fs::remove_all(dir);
}

TEST(HyperparameterScheduler, UnknownTargetsAreErrors) {
  EXPECT_THROW(HyperparameterScheduler(schedules::constant(1), "beta"), std::invalid_argument);
  EXPECT_THROW(HyperparameterScheduler(nullptr, "lr"), std::invalid_argument);
  auto w = torch::ones({2}).requires_grad_(true);
  torch::optim::Adam adam({w});
  train::Context ctx{torch::nn::Sequential(), &adam, 1, 0, {}};
  HyperparameterScheduler named(schedules::constant(1e-3), "lr", UpdateFreq::kEpoch, "bop");
  EXPECT_THROW(named.on_epoch_begin(ctx), std::invalid_argument);
  HyperparameterScheduler gamma(schedules::constant(1e-3), "gamma");
  EXPECT_THROW(gamma.on_epoch_begin(ctx), std::invalid_argument);
}
