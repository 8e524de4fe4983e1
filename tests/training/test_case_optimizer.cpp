#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "onebit/log.h"
#include "onebit/nn.h"
#include "onebit/optim/bop.h"
#include "onebit/optim/case_optimizer.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace fs = std::filesystem;
using namespace onebit;
using optim::CaseOptimizer;
using optim::OptimizerCase;

namespace {

torch::nn::Sequential model_with_binary_and_float() {
  return torch::nn::Sequential(nn::QuantDense(nn::QuantDenseOptions(4, 3)
                                                  .bias(false)
                                                  .kernel_quantizer("ste_sign")
                                                  .kernel_constraint("weight_clip")),
                               nn::BatchNorm(3),
                               nn::QuantDense(nn::QuantDenseOptions(3, 2)
                                                  .input_quantizer("ste_sign")
                                                  .kernel_quantizer("ste_sign")
                                                  .kernel_constraint("weight_clip")));
}

optim::OptimizerFactory bop_factory() {
  return [](std::vector<at::Tensor> ps) {
    return std::make_unique<optim::Bop>(std::move(ps), optim::BopOptions(0.0, 0.5));
  };
}

optim::OptimizerFactory adam_factory(double lr = 0.1) {
  return [lr](std::vector<at::Tensor> ps) {
    return std::make_unique<torch::optim::Adam>(std::move(ps), torch::optim::AdamOptions(lr));
  };
}

optim::OptimizerFactory sgd_factory() {
  return [](std::vector<at::Tensor> ps) {
    return std::make_unique<torch::optim::SGD>(std::move(ps),
                                               torch::optim::SGDOptions(0.1).momentum(0.9));
  };
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument thrown)";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

void one_step(torch::nn::Sequential& model, torch::optim::Optimizer& opt, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto x = at::randn({8, 4}, gen);
  opt.zero_grad();
  model->forward(x).pow(2).sum().backward();
  opt.step();
}

}  // namespace

TEST(CaseOptimizer, AssignsEachParameterToTheOptimizerThatClaimsIt) {
  auto model = model_with_binary_and_float();
  CaseOptimizer opt(model->named_parameters(),
                    {{optim::is_binary_in(*model), bop_factory(), "bop"}}, adam_factory(), "adam");
  ASSERT_EQ(opt.num_optimizers(), 2u);
  EXPECT_EQ(opt.optimizer_name(0), "bop");
  EXPECT_EQ(opt.optimizer_name(1), "adam");
  EXPECT_EQ(opt.parameter_names(0), std::vector<std::string>({"0.weight", "2.weight"}));
  EXPECT_EQ(opt.parameter_names(1), std::vector<std::string>({"1.weight", "1.bias", "2.bias"}));
  EXPECT_TRUE(opt.untrained_parameters().empty());
  EXPECT_NE(dynamic_cast<optim::Bop*>(&opt.optimizer("bop")), nullptr);
  EXPECT_NE(dynamic_cast<torch::optim::Adam*>(&opt.optimizer(1)), nullptr);
  EXPECT_THROW(opt.optimizer("sgd"), std::invalid_argument);
  EXPECT_THROW(opt.optimizer(2), std::out_of_range);

  auto before = model->named_parameters()["1.bias"].clone();
  one_step(model, opt, 1);
  // Binary kernels stay +-1; real parameters move.
  EXPECT_TRUE(model->named_parameters()["0.weight"].abs().eq(1).all().item<bool>());
  EXPECT_TRUE(model->named_parameters()["2.weight"].abs().eq(1).all().item<bool>());
  EXPECT_FALSE(torch::equal(before, model->named_parameters()["1.bias"]));
  // zero_grad clears every parameter's gradient.
  opt.zero_grad();
  for (const auto& p : model->parameters()) {
    EXPECT_TRUE(!p.grad().defined() || p.grad().abs().sum().item<double>() == 0);
  }
}

TEST(CaseOptimizer, NamePredicatesAndUnnamedOptimizers) {
  auto model = model_with_binary_and_float();
  CaseOptimizer opt(model->named_parameters(),
                    {{[](const std::string& name, const at::Tensor&) { return name == "1.weight"; },
                      sgd_factory()}},
                    adam_factory());
  EXPECT_EQ(opt.optimizer_name(0), "optimizer_0");
  EXPECT_EQ(opt.optimizer_name(1), "default");
  EXPECT_EQ(opt.parameter_names(0), std::vector<std::string>({"1.weight"}));
}

TEST(CaseOptimizer, ParameterClaimedTwiceIsAnErrorNamingIt) {
  auto model = model_with_binary_and_float();
  auto msg = message_of([&] {
    CaseOptimizer(model->named_parameters(),
                  {{optim::is_binary_in(*model), bop_factory(), "bop"},
                   {[](const std::string& n, const at::Tensor&) { return n == "2.weight"; },
                    adam_factory(), "adam"}});
  });
  EXPECT_TRUE(contains(msg, "\"2.weight\"")) << msg;
  EXPECT_TRUE(contains(msg, "bop") && contains(msg, "adam")) << msg;
}

TEST(CaseOptimizer, OptimizerClaimingNothingIsAnError) {
  auto model = model_with_binary_and_float();
  auto msg = message_of([&] {
    CaseOptimizer(model->named_parameters(),
                  {{optim::is_binary_in(*model), bop_factory(), "bop"},
                   {[](const at::Tensor&) { return false; }, sgd_factory(), "sgd"}},
                  adam_factory());
  });
  EXPECT_TRUE(contains(msg, "\"sgd\"") && contains(msg, "claims no parameter")) << msg;
}

TEST(CaseOptimizer, InvalidConstructionsAreErrors) {
  auto model = model_with_binary_and_float();
  EXPECT_THROW(CaseOptimizer(model->named_parameters(), {}), std::invalid_argument);
  EXPECT_THROW(CaseOptimizer(model->named_parameters(), {{optim::ParamPredicate(), bop_factory()}}),
               std::invalid_argument);
  EXPECT_THROW(
      CaseOptimizer(model->named_parameters(), {{optim::is_binary_in(*model), nullptr, "bop"}}),
      std::invalid_argument);
  EXPECT_THROW(
      CaseOptimizer(model->named_parameters(), {{optim::is_binary_in(*model), bop_factory(), "x"}},
                    adam_factory(), "x"),
      std::invalid_argument);
}

TEST(CaseOptimizer, NoDefaultLeavesUnclaimedParametersUntrainedWithAWarning) {
  auto model = model_with_binary_and_float();
  std::vector<std::string> warnings;
  auto previous = set_warning_handler([&](const std::string& m) { warnings.push_back(m); });
  CaseOptimizer opt(model->named_parameters(),
                    {{optim::is_binary_in(*model), bop_factory(), "bop"}});
  set_warning_handler(previous);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(contains(warnings[0], "1.weight") && contains(warnings[0], "2.bias")) << warnings[0];
  EXPECT_EQ(opt.untrained_parameters(), std::vector<std::string>({"1.weight", "1.bias", "2.bias"}));
  EXPECT_EQ(opt.num_optimizers(), 1u);
  auto bias = model->named_parameters()["2.bias"].clone();
  one_step(model, opt, 2);
  EXPECT_TRUE(torch::equal(bias, model->named_parameters()["2.bias"]));
}

TEST(CaseOptimizer, StateOfEveryInnerOptimizerSavesAndLoads) {
  auto make = [](torch::nn::Sequential& m) {
    return std::make_unique<CaseOptimizer>(
        m->named_parameters(),
        std::vector<OptimizerCase>{{optim::is_binary_in(*m), bop_factory(), "bop"}}, sgd_factory(),
        "sgd");
  };
  torch::manual_seed(5);
  auto a = model_with_binary_and_float();
  auto opt_a = make(a);
  one_step(a, *opt_a, 1);
  one_step(a, *opt_a, 2);
  std::stringstream model_buf, opt_buf;
  torch::save(a, model_buf);
  torch::serialize::OutputArchive out;
  opt_a->save(out);
  out.save_to(opt_buf);

  torch::manual_seed(6);  // different initial weights, replaced by the loaded ones
  auto b = model_with_binary_and_float();
  auto opt_b = make(b);
  torch::load(b, model_buf);
  torch::serialize::InputArchive in;
  in.load_from(opt_buf);
  opt_b->load(in);
  one_step(a, *opt_a, 3);
  one_step(b, *opt_b, 3);
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;
  auto& bop_a = static_cast<optim::Bop&>(opt_a->optimizer("bop"));
  auto& bop_b = static_cast<optim::Bop&>(opt_b->optimizer("bop"));
  EXPECT_TRUE(torch::equal(bop_a.moving_average(pa[0]), bop_b.moving_average(pb[0])));

  // An archive of a plain optimizer is rejected with a clear error.
  std::stringstream adam_buf;
  torch::optim::Adam adam(a->parameters());
  torch::serialize::OutputArchive adam_out;
  adam.save(adam_out);
  adam_out.save_to(adam_buf);
  torch::serialize::InputArchive adam_in;
  adam_in.load_from(adam_buf);
  EXPECT_THROW(opt_b->load(adam_in), std::runtime_error);
}

namespace {

data::Dataset tiny_images(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto images = (at::rand({n, 1, 28, 28}, gen) * 2 - 1);
  auto labels = at::randint(10, {n}, gen);
  return {images, labels, 10};
}

train::TrainOptions bop_options(const std::string& out, int epochs) {
  train::TrainOptions o;
  o.model = "larq-mnist";
  o.optimizer = "bop";
  o.optimizer_options = {{"threshold", 1e-7}, {"gamma", 1e-2}};
  // A 2-epoch run extended to 3 must equal a 3-epoch run: Bop's state carries over, and gamma
  // stays constant (the default cosine spans the run's epochs, so it would differ; resuming an
  // interrupted run with schedules is Resume.InterruptedMidEpochAndResumedEqualsUninterrupted).
  o.gamma_schedule = "constant";
  o.epochs = epochs;
  o.batch_size = 32;
  o.threads = 1;
  o.seed = 11;
  o.progress = false;
  o.out_dir = out;
  return o;
}

nn::Graph fit_bop(const train::TrainOptions& o) {
  at::manual_seed(o.seed);
  auto model = zoo::build(o.model, o.model_options);
  train::fit(model, tiny_images(96, 1), tiny_images(32, 2), o);
  return model;
}

std::string temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("onebit_case_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  return d.string();
}

}  // namespace

TEST(CaseOptimizer, TrainingWithBopResumesExactlyFromACheckpoint) {
  const auto full_dir = temp_dir("full"), part_dir = temp_dir("part");
  auto full = fit_bop(bop_options(full_dir, 3));
  fit_bop(bop_options(part_dir, 2));
  auto o = bop_options(part_dir, 3);
  o.resume = part_dir;
  auto resumed = fit_bop(o);
  auto pf = full->named_parameters(), pr = resumed->named_parameters();
  ASSERT_EQ(pf.size(), pr.size());
  for (const auto& item : pf) {
    EXPECT_TRUE(torch::equal(item.value(), pr[item.key()])) << item.key();
  }
  // The binary kernels hold exactly +-1 after training with Bop.
  for (const auto& name : {"0.weight", "3.weight", "6.weight", "9.weight", "11.weight"}) {
    EXPECT_TRUE(pf[name].abs().eq(1).all().item<bool>()) << name;
  }
  fs::remove_all(full_dir);
  fs::remove_all(part_dir);
}

TEST(CaseOptimizer, MakeOptimizerBopRejectsUnknownOptionsAndFloatModels) {
  train::TrainOptions o = bop_options("unused", 1);
  auto model = zoo::build("larq-mnist");
  auto opt = train::make_optimizer(o, model);
  auto* c = dynamic_cast<CaseOptimizer*>(opt.get());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->parameter_names(0).size(), 5u);  // the five binary kernels
  o.optimizer_options = {{"treshold", 1e-6}};
  EXPECT_THROW(train::make_optimizer(o, model), std::invalid_argument);
  o.optimizer_options = nlohmann::json::object();
  zoo::ModelOptions float_options;
  float_options.quantized = false;
  auto float_model = zoo::build("larq-mnist", float_options);
  EXPECT_THROW(train::make_optimizer(o, float_model), std::invalid_argument);
}
