#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "onebit/nn.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace fs = std::filesystem;
using namespace onebit;

#include "trainer_test_util.h"

using namespace onebit::testing;

TEST(Zoo, ModelsBuildAndProduceLogits) {
  // onebit's own models at their default 1x28x28 / 10 classes (the published ones: test_zoo).
  for (const char* name : {"larq-mnist", "bnn-mlp", "bireal-mnist", "densenet-mnist"}) {
    auto model = zoo::build(name);
    auto y = model->forward(torch::randn({3, 1, 28, 28}));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 10})) << name;
  }
  EXPECT_THROW(zoo::build("resnet"), std::invalid_argument);
  zoo::ModelOptions o;
  o.input_shape = {3, 32, 32};
  EXPECT_EQ(zoo::build("larq-mnist", o)->forward(torch::randn({2, 3, 32, 32})).size(1), 10);
  o.input_shape = {1, 10, 10};
  EXPECT_THROW(zoo::build("larq-mnist", o), std::invalid_argument);
}

TEST(Zoo, LarqMnistMatchesTheTutorial) {
  auto model = zoo::build("larq-mnist");
  int binary_kernels = 0, float_input_binary_kernels = 0, bns = 0;
  for (const auto& m : model->modules(false)) {
    if (auto* l = dynamic_cast<nn::QuantLayer*>(m.get())) {
      for (const auto& p : l->quantized_parameters()) {
        ASSERT_TRUE(p.quantizer);
        EXPECT_EQ(p.quantizer->id(), "ste_sign");
        ASSERT_TRUE(p.constraint);
        binary_kernels++;
        if (!l->input_quantizer()) float_input_binary_kernels++;
      }
    }
    if (auto* bn = dynamic_cast<nn::BatchNormImpl*>(m.get())) {
      EXPECT_FALSE(bn->options.scale());
      bns++;
    }
  }
  EXPECT_EQ(binary_kernels, 5);
  EXPECT_EQ(float_input_binary_kernels, 1);  // the first conv reads float pixels
  EXPECT_EQ(bns, 5);
  // No layer bias: the only biases are batch-norm betas.
  int64_t quant_bias = 0;
  for (const auto& m : model->modules(false)) {
    if (auto* d = dynamic_cast<nn::QuantDenseImpl*>(m.get())) quant_bias += d->bias.defined();
    if (auto* c = dynamic_cast<nn::QuantConv2dImpl*>(m.get())) quant_bias += c->bias.defined();
  }
  EXPECT_EQ(quant_bias, 0);
}

TEST(Zoo, FloatCopyHasNoQuantizers) {
  zoo::ModelOptions o;
  o.quantized = false;
  auto model = zoo::build("larq-mnist", o);
  for (const auto& m : model->modules(false)) {
    if (auto* l = dynamic_cast<nn::QuantLayer*>(m.get())) {
      EXPECT_FALSE(l->input_quantizer());
      for (const auto& p : l->quantized_parameters()) EXPECT_FALSE(p.quantizer);
    }
  }
  EXPECT_EQ(zoo::ModelOptions::from_json(o.to_json()).to_json(), o.to_json());
  EXPECT_THROW(zoo::ModelOptions::from_json({{"depth", 3}}), std::invalid_argument);
}

TEST(Trainer, LearnsAndWritesCheckpointMetricsConfig) {
  auto out = temp_dir("learns");
  nn::Graph model;
  auto r = run(small_options(out), &model);
  EXPECT_EQ(r.epochs, 2);
  EXPECT_GT(r.test_accuracy, 0.6);  // 4 classes: chance is 0.25
  EXPECT_GT(r.images_per_second, 0);
  EXPECT_TRUE(fs::exists(fs::path(out) / "checkpoint.pt"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "config.json"));
  std::ifstream metrics(fs::path(out) / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["epoch"], ++lines);
    EXPECT_TRUE(j.contains("test_accuracy"));
    EXPECT_TRUE(j.contains("images_per_second"));
  }
  EXPECT_EQ(lines, 2);
  // No temporary files are left behind.
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  }
  // The latent weights respect the constraint after training.
  for (const auto& m : model->modules(false)) {
    if (auto* l = dynamic_cast<nn::QuantLayer*>(m.get())) {
      for (const auto& p : l->quantized_parameters())
        EXPECT_LE(p.latent.abs().max().item<float>(), 1.0f);
    }
  }
  // The checkpoint reloads into a model with identical eval outputs.
  auto ck = train::load_checkpoint(out);
  model->eval();
  auto x = torch::randn({4, 1, 28, 28});
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(ck.model->forward(x), model->forward(x)));
  EXPECT_EQ(ck.config["epoch"], 2);
  fs::remove_all(out);
}

TEST(Trainer, SameSeedSameThreadsSameResult) {
  auto a_dir = temp_dir("det_a"), b_dir = temp_dir("det_b");
  nn::Graph a, b;
  auto ra = run(small_options(a_dir), &a);
  auto rb = run(small_options(b_dir), &b);
  EXPECT_EQ(ra.test_accuracy, rb.test_accuracy);
  auto pa = a->parameters(), pb = b->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << i;
  fs::remove_all(a_dir);
  fs::remove_all(b_dir);
}

TEST(Trainer, ResumeEqualsUninterruptedTraining) {
  auto full_dir = temp_dir("full"), part_dir = temp_dir("part");
  nn::Graph full, resumed;
  auto o = small_options(full_dir);
  run(o, &full);
  auto p = small_options(part_dir);
  p.epochs = 1;
  run(p, nullptr);
  p.epochs = 2;
  p.resume = part_dir;
  auto r = run(p, &resumed);
  EXPECT_EQ(r.epochs, 2);
  auto pf = full->parameters(), pr = resumed->parameters();
  for (size_t i = 0; i < pf.size(); ++i) EXPECT_TRUE(torch::equal(pf[i], pr[i])) << i;
  fs::remove_all(full_dir);
  fs::remove_all(part_dir);
}

TEST(Trainer, NanInputIsAClearError) {
  auto out = temp_dir("nan");
  auto o = small_options(out);
  auto bad = synthetic(64, 3);
  bad.images[5][0][3][3] = std::numeric_limits<float>::quiet_NaN();
  bad.images[9][0][0][0] = std::numeric_limits<float>::infinity();
  at::manual_seed(1);
  auto model = zoo::build("bnn-mlp");
  try {
    train::fit(model, bad, synthetic(32, 4), o);
    FAIL() << "expected the NaN input to be reported";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("training set has 2 image(s)"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("index 5"), std::string::npos) << e.what();
  }
  fs::remove_all(out);
}

TEST(Trainer, DivergenceIsAClearError) {
  // A weight that has overflowed to infinity makes the logits and the loss NaN at the first step.
  auto out = temp_dir("diverge");
  auto o = small_options(out);
  at::manual_seed(1);
  torch::nn::Linear linear(784, 10);
  {
    torch::NoGradGuard g;
    linear->weight[0][0] = std::numeric_limits<float>::infinity();
  }
  torch::nn::Sequential model(torch::nn::Flatten(), linear);
  try {
    train::fit(model, synthetic(256, 3), synthetic(32, 4), o);
    FAIL() << "expected divergence to be reported";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("training diverged"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("epoch 1"), std::string::npos) << e.what();
  }
  fs::remove_all(out);
}

TEST(Trainer, BadOptionsAreRejected) {
  auto o = small_options(temp_dir("bad"));
  auto model = zoo::build("bnn-mlp");
  auto d = synthetic(16, 5);
  o.epochs = 0;
  EXPECT_THROW(train::fit(model, d, d, o), std::invalid_argument);
  o.epochs = 1;
  o.lr = -1;
  EXPECT_THROW(train::fit(model, d, d, o), std::invalid_argument);
  o.lr = 1e-3;
  o.optimizer = "adagrad";
  EXPECT_THROW(train::fit(model, d, d, o), std::invalid_argument);
  EXPECT_EQ(train::TrainOptions::from_json(o.to_json()).to_json(), o.to_json());
  EXPECT_THROW(train::TrainOptions::from_json({{"epochz", 1}}), std::invalid_argument);
}

// Integers in configs must be written as integers within range: a float (6.4e67 once crashed
// the config fuzzer: converting it to int64 is undefined behaviour) or a fraction is an error
// that names the option, never a truncated value.
TEST(Trainer, IntegerOptionsRejectFloatsAndOutOfRangeValues) {
  const auto expect_error = [](const nlohmann::json& j, const std::string& text) {
    try {
      train::TrainOptions::from_json(j);
      ADD_FAILURE() << "no error for " << j.dump();
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error({{"batch_size", 6.4e67}},
               "train option \"batch_size\" has the wrong type: expected an integer");
  expect_error({{"epochs", 2.5}}, "train option \"epochs\" has the wrong type");
  expect_error({{"epochs", "many"}}, "train option \"epochs\" has the wrong type");
  expect_error({{"epochs", 4294967296LL}}, "train option \"epochs\" is out of range");
  expect_error({{"seed", -1}}, "train option \"seed\"");
  expect_error({{"threads", true}}, "train option \"threads\"");
  expect_error({{"model_options", {{"num_classes", 1e30}}}}, "model option \"num_classes\"");
  expect_error({{"model_options", {{"input_shape", {1, 28.0, 28}}}}},
               "model option \"input_shape\"");
  const auto o = train::TrainOptions::from_json(
      {{"batch_size", 32}, {"seed", 18446744073709551615ULL}, {"epochs", 3}});
  EXPECT_EQ(o.batch_size, 32);
  EXPECT_EQ(o.seed, 18446744073709551615ULL);
  EXPECT_EQ(o.epochs, 3);
}

TEST(Checkpoint, MissingAndCorruptFilesAreClearErrors) {
  auto dir = temp_dir("corrupt");
  fs::create_directories(dir);
  try {
    train::load_checkpoint(dir);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint.pt"), std::string::npos) << e.what();
  }
  std::ofstream(fs::path(dir) / "checkpoint.pt") << "this is not a checkpoint";
  try {
    train::load_checkpoint(dir);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Checkpoint, TruncatedCheckpointIsAClearError) {
  auto out = temp_dir("trunc");
  auto o = small_options(out);
  o.epochs = 1;
  run(o);
  auto file = fs::path(out) / "checkpoint.pt";
  auto size = fs::file_size(file);
  fs::resize_file(file, size / 2);
  EXPECT_THROW(train::load_checkpoint(out), std::runtime_error);
  fs::remove_all(out);
}
