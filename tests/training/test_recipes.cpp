// Training recipes and long-run features: exact resume after an interruption, config round trip,
// batch-norm re-estimation, best checkpoint, augmentation, label smoothing, weight decay groups,
// schedules with warm-up and one-cycle.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "ext_test_util.h"
#include "onebit/nn.h"
#include "onebit/optim/bop.h"
#include "onebit/optim/case_optimizer.h"
#include "onebit/optim/scheduler.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"
#include "trainer_test_util.h"

namespace fs = std::filesystem;
using namespace onebit;
using namespace onebit::testing;

namespace {

/// Calls train::request_stop() after optimizer step `at_step` (as Ctrl-C would).
class StopAt : public train::Callback {
 public:
  explicit StopAt(int64_t at_step) : at_step_(at_step) {}
  void on_batch_end(train::Context& ctx) override {
    if (ctx.step == at_step_) train::request_stop();
  }

 private:
  int64_t at_step_;
};

/// Every parameter and buffer of `a` and `b` bit-equal.
void expect_same_state(nn::Graph a, nn::Graph b) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  }
  auto ba = a->named_buffers(), bb = b->named_buffers();
  ASSERT_EQ(ba.size(), bb.size());
  for (const auto& item : ba) {
    EXPECT_TRUE(torch::equal(item.value(), bb[item.key()])) << item.key();
  }
}

/// Options that exercise everything a resume must restore: Bop's state, per-step lr and gamma
/// schedules with warm-up, augmentation, label smoothing, weight decay, BN re-estimation.
train::TrainOptions recipe_options(const std::string& out) {
  auto o = small_options(out);
  o.epochs = 3;
  o.optimizer = "bop";
  o.lr_schedule = "cosine";
  o.warmup_epochs = 0.5;
  o.gamma_schedule = "step";
  o.augment = true;
  o.crop_padding = 2;
  o.label_smoothing = 0.1;
  o.weight_decay = 1e-4;
  o.bn_reestimate_batches = 3;
  return o;
}

}  // namespace

TEST(Resume, InterruptedMidEpochAndResumedEqualsUninterrupted) {
  const auto full_dir = temp_dir("recipe_full"), part_dir = temp_dir("recipe_part");
  nn::Graph full{nullptr}, resumed{nullptr};
  const auto full_result = run(recipe_options(full_dir), &full);

  // 8 steps per epoch: stop after step 11 (epoch 2, batch 3).
  nn::Graph interrupted{nullptr};
  try {
    run(recipe_options(part_dir), &interrupted, {std::make_shared<StopAt>(11)});
    FAIL() << "expected train::Interrupted";
  } catch (const train::Interrupted& e) {
    EXPECT_NE(std::string(e.what()).find("epoch 2, batch 3 of 8"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(train::stop_requested());
  const auto ck = train::load_checkpoint(part_dir);
  EXPECT_EQ(ck.config.at("epoch"), 1);
  EXPECT_EQ(ck.config.at("step"), 11);
  EXPECT_EQ(ck.config.at("position").at("batch"), 3);

  auto o = recipe_options(part_dir);
  o.resume = part_dir;
  const auto r = run(o, &resumed);
  EXPECT_EQ(r.epochs, 3);
  expect_same_state(full, resumed);
  // The resumed epoch's totals continue those of its first batches.
  EXPECT_DOUBLE_EQ(r.history.front().at("train_loss").get<double>(),
                   full_result.history[1].at("train_loss").get<double>());
  EXPECT_EQ(r.history.back().at("test_accuracy"), full_result.history.back().at("test_accuracy"));
  // Interrupting between epochs also resumes exactly.
  const auto edge_dir = temp_dir("recipe_edge");
  EXPECT_THROW(run(recipe_options(edge_dir), nullptr, {std::make_shared<StopAt>(8)}),
               train::Interrupted);
  EXPECT_FALSE(train::load_checkpoint(edge_dir).config.contains("position"));
  auto e = recipe_options(edge_dir);
  e.resume = edge_dir;
  nn::Graph edge{nullptr};
  run(e, &edge);
  expect_same_state(full, edge);
  for (const auto& d : {full_dir, part_dir, edge_dir}) fs::remove_all(d);
}

TEST(Resume, APositionThatDoesNotFitTheRunIsAClearError) {
  const auto dir = temp_dir("recipe_misfit");
  EXPECT_THROW(run(recipe_options(dir), nullptr, {std::make_shared<StopAt>(3)}),
               train::Interrupted);
  auto o = recipe_options(dir);
  o.resume = dir;
  o.batch_size = 128;  // 2 batches per epoch: batch 3 of epoch 1 does not exist
  expect_throw_with<std::runtime_error>(
      [&] { run(o); }, {"checkpoint.pt", "position (epoch 1, batch 3)", "2 batches per epoch"});
  fs::remove_all(dir);
}

TEST(TrainConfig, EveryOptionRoundTripsThroughJson) {
  auto o = recipe_options("runs/x");
  o.val_split = 0.25;
  o.model_options.quantized = false;
  o.optimizer_options = {{"gamma", 2e-3}};
  o.data_dir = "/data";
  o.teacher = "runs/float";
  o.attention_weight = 5;
  o.attention_nodes = {"block1_add", "block2_add"};
  o.model_options.binary_weights = false;
  const auto j = o.to_json();
  EXPECT_EQ(train::TrainOptions::from_json(j).to_json(), j);
  for (const char* k :
       {"lr_schedule", "warmup_epochs", "gamma_schedule", "weight_decay", "label_smoothing",
        "augment", "crop_padding", "bn_reestimate_batches", "val_split", "teacher",
        "distill_weight", "distill_temperature", "attention_weight", "attention_nodes"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  expect_throw_with<std::invalid_argument>(
      [] {
        train::TrainOptions::from_json({{"augment", "yes"}});
      },
      {"augment", "wrong type"});
  expect_throw_with<std::invalid_argument>(
      [] {
        train::TrainOptions::from_json({{"lr_sched", 1}});
      },
      {"unknown train option \"lr_sched\""});
}

TEST(TrainConfig, BadRecipeOptionsAreRejected) {
  const auto dir = temp_dir("recipe_bad");
  const auto fails = [&](const std::function<void(train::TrainOptions&)>& change,
                         std::vector<std::string> parts) {
    auto o = small_options(dir);
    change(o);
    expect_throw_with<std::invalid_argument>([&] { run(o); }, parts);
  };
  fails([](auto& o) { o.label_smoothing = 1; }, {"label_smoothing must be in [0, 1)"});
  fails([](auto& o) { o.warmup_epochs = 2; }, {"warmup_epochs must be in [0, 2)"});
  fails([](auto& o) { o.val_split = 0.9; }, {"val_split"});
  fails([](auto& o) { o.weight_decay = -1; }, {"weight_decay"});
  fails([](auto& o) { o.gamma_schedule = "cosine"; }, {"gamma_schedule", "needs optimizer"});
  fails([](auto& o) { o.lr_schedule = "linear"; }, {"unknown schedule \"linear\""});
  fails([](auto& o) { o.attention_weight = 1; }, {"attention_weight needs a teacher"});
  fails([](auto& o) { o.distill_weight = 1.5; }, {"distill_weight must be in [0, 1]"});
  fails(
      [](auto& o) {
        o.lr_schedule = "one-cycle";
        o.warmup_epochs = 0.5;
      },
      {"one-cycle", "own warm-up"});
  fs::remove_all(dir);
}

TEST(BatchNormReestimation, RunningStatisticsBecomeTheMeanOfBatchStatistics) {
  // Only batch-norm layers: the statistics are those of the input itself.
  nn::Graph model(torch::nn::Sequential(
      nn::BatchNorm(nn::BatchNormOptions(3).momentum(0.01)),
      torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(3).momentum(0.2))));
  auto gen = at::detail::createCPUGenerator(3);
  auto images = at::randn({40, 3, 4, 4}, gen) * 2 + 0.5;
  auto order = at::randperm(40, gen, at::kLong);
  model->eval();
  train::reestimate_batch_norm(model, images, order, 8, 4);  // 32 of the 40 images
  EXPECT_FALSE(model->is_training());
  at::Tensor mean = at::zeros({3}), var = at::zeros({3});
  for (int64_t k = 0; k < 4; ++k) {
    auto x = images.index_select(0, order.slice(0, 8 * k, 8 * k + 8));
    mean += x.mean({0, 2, 3}) / 4;
    var += x.transpose(0, 1).reshape({3, -1}).var(1, /*unbiased=*/true) / 4;
  }
  auto ours = model->modules(false);
  auto* bn = dynamic_cast<nn::BatchNormImpl*>(ours[0].get());
  ASSERT_NE(bn, nullptr);
  EXPECT_TRUE(torch::allclose(bn->running_mean, mean, 1e-5, 1e-5)) << bn->running_mean << mean;
  EXPECT_TRUE(torch::allclose(bn->running_var, var, 1e-5, 1e-5)) << bn->running_var << var;
  EXPECT_DOUBLE_EQ(bn->options.momentum(), 0.01);  // restored
  // The second layer sees the first's (eval-mode-normalized, training-mode here) output.
  auto* torch_bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(ours[1].get());
  ASSERT_NE(torch_bn, nullptr);
  EXPECT_DOUBLE_EQ(torch_bn->options.momentum().value(), 0.2);
  EXPECT_TRUE(torch::allclose(torch_bn->running_mean, at::zeros({3}), 0, 1e-5));
  expect_throw_with<std::invalid_argument>(
      [&] { train::reestimate_batch_norm(model, images, order, 1, 4); }, {"batch_size"});
}

TEST(BatchNormReestimation, FitUsesItAndItCanBeTurnedOff) {
  const auto on_dir = temp_dir("bn_on"), off_dir = temp_dir("bn_off");
  nn::Graph on{nullptr}, off{nullptr};
  auto o = small_options(on_dir);
  o.epochs = 1;
  o.bn_reestimate_batches = 4;
  run(o, &on);
  auto f = small_options(off_dir);
  f.epochs = 1;
  f.bn_reestimate_batches = 0;
  run(f, &off);
  // Same training (running statistics do not affect it), different statistics.
  for (const auto& item : on->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), off->named_parameters()[item.key()])) << item.key();
  }
  bool differ = false;
  for (const auto& item : on->named_buffers()) {
    if (item.key().find("running_mean") != std::string::npos) {
      differ = differ || !torch::equal(item.value(), off->named_buffers()[item.key()]);
    }
  }
  EXPECT_TRUE(differ);
  fs::remove_all(on_dir);
  fs::remove_all(off_dir);
}

TEST(BestCheckpoint, KeepsTheEpochWithTheBestSelectionAccuracy) {
  const auto dir = temp_dir("best");
  auto o = small_options(dir);
  o.epochs = 3;
  o.val_split = 0.25;
  const auto r = run(o);
  ASSERT_EQ(r.history.size(), 3u);
  double best = -1;
  int best_epoch = 0;
  for (const auto& m : r.history) {
    ASSERT_TRUE(m.contains("val_accuracy"));
    if (m.at("val_accuracy").get<double>() > best) {
      best = m.at("val_accuracy").get<double>();
      best_epoch = m.at("epoch").get<int>();
    }
  }
  EXPECT_EQ(r.best_epoch, best_epoch);
  EXPECT_DOUBLE_EQ(r.best_accuracy, best);
  const auto ck = train::load_checkpoint(r.best_checkpoint);
  EXPECT_EQ(ck.config.at("epoch"), best_epoch);
  EXPECT_EQ(fs::path(r.best_checkpoint).filename(), "best.pt");
  // 64 of the 256 training images were held out.
  EXPECT_EQ(r.history[0].at("step"), 6);
  fs::remove_all(dir);
}

TEST(Augmentation, RandomCropAndFlipAreCropsOfThePaddedImage) {
  auto gen = at::detail::createCPUGenerator(5);
  const int64_t n = 2000, pad = 2;
  auto images = at::rand({n, 2, 5, 6}, gen);
  auto out = train::random_crop_flip(images, pad, at::detail::createCPUGenerator(9));
  ASSERT_EQ(out.sizes(), images.sizes());
  EXPECT_TRUE(
      torch::equal(out, train::random_crop_flip(images, pad, at::detail::createCPUGenerator(9))));
  auto padded = at::constant_pad_nd(images, {pad, pad, pad, pad}, -1.0);
  int64_t flips = 0;
  std::vector<int64_t> rows(2 * pad + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    int found = 0;
    for (int64_t dy = 0; dy <= 2 * pad && !found; ++dy) {
      for (int64_t dx = 0; dx <= 2 * pad && !found; ++dx) {
        auto crop = padded[i].slice(1, dy, dy + 5).slice(2, dx, dx + 6);
        if (torch::equal(out[i], crop)) {
          found = 1;
        } else if (torch::equal(out[i], crop.flip({2}))) {
          found = 2;
        }
        if (found) ++rows[static_cast<size_t>(dy)];
      }
    }
    ASSERT_NE(found, 0) << "image " << i << " is not a crop of its padded original";
    flips += found == 2;
  }
  // Binomial(2000, 1/2): mean 1000, sd 22; each of 5 offsets: mean 400, sd 18 (4.5 sd bounds).
  EXPECT_NEAR(static_cast<double>(flips), 1000.0, 100.0);
  for (int64_t c : rows) EXPECT_NEAR(static_cast<double>(c), 400.0, 80.0);
  expect_throw_with<std::invalid_argument>(
      [&] { train::random_crop_flip(images[0], 1, at::detail::createCPUGenerator(1)); },
      {"[N, C, H, W]"});
}

TEST(LabelSmoothing, LossAndGradientEqualCrossEntropyWithSoftTargets) {
  auto gen = at::detail::createCPUGenerator(2);
  auto logits = at::randn({6, 5}, gen).requires_grad_(true);
  auto labels = at::randint(5, {6}, gen);
  auto [loss, correct] = train::loss_and_correct(logits, labels, 0.2);
  auto soft = at::one_hot(labels, 5).to(at::kFloat) * 0.8 + 0.2 / 5;
  auto reference_logits = logits.detach().clone().requires_grad_(true);
  auto reference = -(soft * at::log_softmax(reference_logits, 1)).sum(1).mean();
  EXPECT_NEAR(loss.item<double>(), reference.item<double>(), 1e-6);
  loss.backward();
  reference.backward();
  EXPECT_TRUE(torch::allclose(logits.grad(), reference_logits.grad(), 1e-6, 1e-7));
  auto [plain, c2] = train::loss_and_correct(logits.detach(), labels, 0);
  EXPECT_NEAR(plain.item<double>(), at::cross_entropy_loss(logits.detach(), labels).item<double>(),
              1e-6);
  EXPECT_EQ(correct, c2);
}

TEST(WeightDecay, SkipsLatentBinaryWeightsBiasesAndBatchNorm) {
  auto o = small_options("unused");
  o.weight_decay = 0.05;
  for (const std::string optimizer : {"adam", "sgd", "bop"}) {
    o.optimizer = optimizer;
    at::manual_seed(1);
    nn::Graph model(torch::nn::Sequential(nn::QuantDense(nn::QuantDenseOptions(8, 8)
                                                             .input_quantizer("ste_sign")
                                                             .kernel_quantizer("ste_sign")
                                                             .kernel_constraint("weight_clip")),
                                          nn::BatchNorm(8), torch::nn::Linear(8, 4)));
    auto opt = train::make_optimizer(o, model);
    const auto binary = optim::is_binary_in(*model);
    std::vector<std::vector<torch::optim::OptimizerParamGroup>*> all{&opt->param_groups()};
    if (auto* c = dynamic_cast<optim::CaseOptimizer*>(opt.get())) {
      all.clear();
      for (size_t i = 0; i < c->num_optimizers(); ++i) {
        all.push_back(&c->optimizer(i).param_groups());
      }
    }
    int decayed = 0, kept = 0;
    for (auto* gs : all) {
      for (auto& g : *gs) {
        double wd = 0;
        if (auto* a = dynamic_cast<torch::optim::AdamWOptions*>(&g.options()))
          wd = a->weight_decay();
        if (auto* s = dynamic_cast<torch::optim::SGDOptions*>(&g.options())) wd = s->weight_decay();
        for (const auto& p : g.params()) {
          const bool should = p.dim() >= 2 && !binary("", p);
          EXPECT_EQ(wd, should ? 0.05 : 0.0) << optimizer << " " << p.sizes();
          (wd > 0 ? decayed : kept) += 1;
        }
      }
    }
    EXPECT_EQ(decayed, 1) << optimizer;  // the float head's weight
    EXPECT_GT(kept, 0) << optimizer;
  }
}

TEST(Schedules, OneCycleAndWarmUp) {
  using namespace optim::schedules;
  const auto oc = one_cycle(1.0, 100);
  EXPECT_NEAR(oc(0), 1.0 / 25, 1e-12);
  EXPECT_NEAR(oc(30), 1.0, 1e-12);
  EXPECT_NEAR(oc(100), 1.0 / 25 / 1e4, 1e-12);
  EXPECT_LT(oc(15), oc(29));
  EXPECT_GT(oc(50), oc(90));
  const auto w = warmup(constant(2.0), 3);
  EXPECT_NEAR(w(0), 0.5, 1e-12);
  EXPECT_NEAR(w(2), 1.5, 1e-12);
  EXPECT_NEAR(w(3), 2.0, 1e-12);
  // Cosine after 10 warm-up steps reaches 0 at the run's last step.
  const auto c = by_name("cosine", 1.0, 110, 10, 10);
  EXPECT_NEAR(c(10), 1.0, 1e-12);
  EXPECT_NEAR(c(110), 0.0, 1e-12);
  // "step" drops on epoch boundaries: 9 epochs of 10 steps -> x0.1 at steps 30 and 60.
  const auto s = by_name("step", 1.0, 90, 10);
  EXPECT_NEAR(s(29), 1.0, 1e-12);
  EXPECT_NEAR(s(30), 0.1, 1e-12);
  EXPECT_NEAR(s(60), 0.01, 1e-12);
  EXPECT_THROW(by_name("cosine", 1.0, 10, 1, 10), std::invalid_argument);
  EXPECT_THROW(one_cycle(1.0, 10, 1.5), std::invalid_argument);
}

/// Bop's gamma as the run logged it at the end of each epoch.
std::vector<double> logged_gamma(const train::TrainResult& r) {
  std::vector<double> out;
  for (const auto& m : r.history) {
    for (const auto& item : m.items()) {
      const std::string& k = item.key();
      if (k.size() >= 5 && k.compare(k.size() - 5, 5, "gamma") == 0) {
        out.push_back(item.value().get<double>());
      }
    }
  }
  return out;
}

TEST(Schedules, BopDecaysGammaWithACosineByDefault) {
  auto o = small_options(temp_dir("bop_auto"));
  o.optimizer = "bop";
  o.bn_reestimate_batches = 0;
  EXPECT_EQ(o.gamma_schedule, "auto");
  const auto gamma = logged_gamma(run(o));
  // 2 epochs: half-way down the cosine (1e-3 / 2) after the first, 0 at the last step.
  ASSERT_EQ(gamma.size(), 2u);
  EXPECT_NEAR(gamma[0], 0.5e-3, 1e-5);
  EXPECT_NEAR(gamma[1], 0.0, 1e-9);
  // "constant" keeps it; "auto" with another optimizer is accepted and schedules nothing.
  auto c = small_options(temp_dir("bop_constant"));
  c.optimizer = "bop";
  c.bn_reestimate_batches = 0;
  c.epochs = 1;
  c.gamma_schedule = "constant";
  EXPECT_TRUE(logged_gamma(run(c)).empty());
  auto a = small_options(temp_dir("adam_auto"));
  a.epochs = 1;
  EXPECT_TRUE(logged_gamma(run(a)).empty());
}

TEST(Distillation, LossIsTemperatureScaledKlWithItsGradient) {
  auto gen = at::detail::createCPUGenerator(4);
  auto student = at::randn({5, 7}, gen).requires_grad_(true);
  auto teacher = at::randn({5, 7}, gen);
  const double t = 3.0;
  auto loss = train::distillation_loss(student, teacher, t);
  // By hand: sum_k p_t (log p_t - log p_s), batch mean, times T^2.
  auto p_t = at::softmax(teacher / t, 1);
  auto manual_student = student.detach().clone().requires_grad_(true);
  auto manual = (p_t * (p_t.log() - at::log_softmax(manual_student / t, 1))).sum(1).mean() * t * t;
  EXPECT_NEAR(loss.item<double>(), manual.item<double>(), 1e-5);
  loss.backward();
  manual.backward();
  EXPECT_TRUE(torch::allclose(student.grad(), manual_student.grad(), 1e-5, 1e-6));
  // Gradient in closed form: T (p_s - p_t) / N.
  auto closed = (at::softmax(student.detach() / t, 1) - p_t) * t / 5;
  EXPECT_TRUE(torch::allclose(student.grad(), closed, 1e-5, 1e-6));
  EXPECT_NEAR(train::distillation_loss(teacher, teacher, t).item<double>(), 0.0, 1e-6);
  expect_throw_with<std::invalid_argument>(
      [&] { train::distillation_loss(student, teacher.slice(1, 0, 3), t); }, {"other classes"});
}

TEST(Distillation, AttentionLossMatchesNormalizedSpatialMaps) {
  auto gen = at::detail::createCPUGenerator(6);
  auto s = at::randn({2, 3, 4, 4}, gen), t = at::randn({2, 5, 4, 4}, gen);
  auto loss = train::attention_loss({s}, {t});
  double expected = 0;
  for (int64_t i = 0; i < 2; ++i) {
    auto a = s[i].pow(2).mean(0).flatten(), b = t[i].pow(2).mean(0).flatten();
    expected += (a / a.norm() - b / b.norm()).norm().item<double>() / 2;
  }
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5);
  // Scale does not matter; the same maps give 0.
  EXPECT_NEAR(train::attention_loss({s * 3}, {s}).item<double>(), 0.0, 1e-6);
  expect_throw_with<std::invalid_argument>([&] { train::attention_loss({s}, {t.slice(2, 0, 2)}); },
                                           {"pair 0", "same N, H, W"});
}

TEST(Distillation, GraphTapsReturnNamedNodeOutputs) {
  at::manual_seed(2);
  auto model = zoo::build("bireal-mnist");
  model->eval();
  auto x = synthetic(3, 9).images;
  const auto& nodes = model->nodes();
  ASSERT_GT(nodes.size(), 3u);
  ASSERT_EQ(nodes[0].inputs, std::vector<int>{0});  // the stem reads the graph input
  ASSERT_EQ(nodes[1].inputs, std::vector<int>{1});  // and the next node the stem's output
  std::vector<at::Tensor> tapped;
  auto out = model->forward_with_taps(x, {nodes[1].name, nodes[0].name}, tapped);
  EXPECT_TRUE(torch::equal(out, model->forward(x)));
  ASSERT_EQ(tapped.size(), 2u);
  auto stem = nodes[0].module, next = nodes[1].module;
  const auto first = stem.forward<at::Tensor>(x);
  EXPECT_TRUE(torch::equal(tapped[1], first));
  EXPECT_TRUE(torch::equal(tapped[0], next.forward<at::Tensor>(first)));
  expect_throw_with<std::out_of_range>(
      [&] { model->forward_with_taps(x, {"no_such_node"}, tapped); }, {"no_such_node", "nodes:"});
}

TEST(Distillation, TwoStageTrainingWithATeacher) {
  // Teacher: the float copy. Stage 1: binary activations, real weights, distilled with attention
  // matching. Stage 2: the full BNN from stage 1's weights.
  const auto teacher_dir = temp_dir("kd_teacher"), stage1 = temp_dir("kd_stage1"),
             stage2 = temp_dir("kd_stage2");
  auto t = small_options(teacher_dir);
  t.model = "bireal-mnist";
  t.epochs = 1;
  t.model_options.quantized = false;
  run(t);
  auto s1 = small_options(stage1);
  s1.model = "bireal-mnist";
  s1.epochs = 1;
  s1.model_options.binary_weights = false;
  s1.teacher = teacher_dir;
  s1.distill_weight = 0.7;
  s1.distill_temperature = 2;
  s1.attention_weight = 10;
  nn::Graph stage1_model{nullptr};
  at::manual_seed(s1.seed);
  stage1_model = zoo::build(s1.model, s1.model_options);
  std::vector<std::string> blocks;
  for (const auto& node : stage1_model->nodes()) {
    if (node.name.find("add") != std::string::npos) blocks.push_back(node.name);
  }
  ASSERT_FALSE(blocks.empty());
  s1.attention_nodes = blocks;
  const auto r1 = train::fit(stage1_model, synthetic(256, 1), synthetic(128, 2), s1);
  EXPECT_TRUE(std::isfinite(r1.history.back().at("train_loss").get<double>()));
  // Stage 1 has binary inputs but real kernels.
  int real_kernels = 0, binary_inputs = 0;
  for (const auto& m : stage1_model->modules(false)) {
    if (auto* q = dynamic_cast<nn::QuantLayer*>(m.get())) {
      binary_inputs += q->input_quantizer() != nullptr;
      for (const auto& k : q->quantized_parameters()) real_kernels += k.quantizer == nullptr;
    }
  }
  EXPECT_GT(real_kernels, 0);
  EXPECT_GT(binary_inputs, 0);
  auto s2 = small_options(stage2);
  s2.model = "bireal-mnist";
  s2.epochs = 1;
  s2.weights = stage1;
  at::manual_seed(s2.seed);
  auto model2 = zoo::build(s2.model, s2.model_options);
  train::load_model_state(stage1, model2);  // what --weights does
  for (const auto& item : stage1_model->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), model2->named_parameters()[item.key()])) << item.key();
  }
  const auto r2 = train::fit(model2, synthetic(256, 1), synthetic(128, 2), s2);
  EXPECT_TRUE(std::isfinite(r2.history.back().at("train_loss").get<double>()));
  for (const auto& d : {teacher_dir, stage1, stage2}) fs::remove_all(d);
}
