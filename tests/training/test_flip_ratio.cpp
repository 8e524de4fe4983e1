// FlipRatio (Larq's reference semantics) and the per-layer FlipRatioCallback.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "ext_test_util.h"
#include "onebit/metrics.h"
#include "onebit/nn.h"
#include "onebit/quantizers.h"
#include "onebit/train/trainer.h"

using namespace onebit;
using onebit::testing::expect_throw_with;

TEST(FlipRatio, ReferenceSequence) {
  metrics::FlipRatio m;
  EXPECT_FALSE(m.update(torch::tensor({1, 1})).has_value());
  EXPECT_DOUBLE_EQ(m.result(), 0.0);
  EXPECT_DOUBLE_EQ(*m.update(torch::tensor({2, 2})), 1.0);
  EXPECT_DOUBLE_EQ(m.result(), 1.0);
  EXPECT_DOUBLE_EQ(*m.update(torch::tensor({1, 2})), 0.5);
  EXPECT_DOUBLE_EQ(m.result(), 0.75);
  EXPECT_EQ(m.last_changed(), 1);
  EXPECT_EQ(m.count(), 2);
}

TEST(FlipRatio, ResetKeepsThePreviousValues) {
  metrics::FlipRatio m;
  m.update(torch::tensor({1, 1, 1, 1}));
  m.update(torch::tensor({-1, 1, 1, 1}));
  m.reset_states();
  EXPECT_DOUBLE_EQ(m.result(), 0.0);
  // Compared with the last values, but not counted (Larq drops the first update after a reset).
  EXPECT_FALSE(m.update(torch::tensor({-1, -1, -1, 1})).has_value());
  EXPECT_EQ(m.last_changed(), 2);
  EXPECT_DOUBLE_EQ(*m.update(torch::tensor({1, -1, -1, 1})), 0.25);
  EXPECT_DOUBLE_EQ(m.result(), 0.25);
}

TEST(FlipRatio, ShapeMismatchThrows) {
  metrics::FlipRatio m;
  m.update(torch::ones({2, 3}));
  expect_throw_with<std::invalid_argument>(
      [&] {
        m.update(torch::ones({3, 2}));
      },
      {"FlipRatio", "[3, 2]", "[2, 3]"});
}

namespace {

torch::nn::Sequential flip_model() {
  auto binary = [](int64_t in, int64_t out) {
    return nn::QuantDense(nn::QuantDenseOptions(in, out)
                              .kernel_quantizer("ste_sign")
                              .kernel_constraint("weight_clip"));
  };
  return torch::nn::Sequential(
      binary(4, 5),
      nn::QuantDense(nn::QuantDenseOptions(5, 5).kernel_quantizer("ste_tern")),  // 2 bits
      nn::QuantSeparableConv1d(nn::QuantSeparableConv1dOptions(1, 2, 3)
                                   .depthwise_quantizer("ste_sign")
                                   .depthwise_constraint("weight_clip")
                                   .pointwise_quantizer("ste_sign")
                                   .pointwise_constraint("weight_clip")),
      binary(3, 2));
}

void flip_first(at::Tensor& latent, int64_t count) {
  torch::NoGradGuard no_grad;
  auto flat = latent.view(-1);
  for (int64_t i = 0; i < count; ++i) {
    // move across zero so the sign changes (latent 0 has sign +1)
    flat[i] = flat[i].item<float>() >= 0 ? -0.5f : 0.5f;
  }
}

}  // namespace

TEST(FlipRatio, BinaryKernelsAreNamedPerLayer) {
  auto model = flip_model();
  auto kernels = metrics::binary_kernels(*model);
  std::vector<std::string> names;
  for (const auto& k : kernels) names.push_back(k.first);
  EXPECT_EQ(names,
            (std::vector<std::string>{"0", "2.depthwise_weight", "2.pointwise_weight", "3"}));
  for (const auto& k : kernels) EXPECT_TRUE(k.second.abs().eq(1).all().item<bool>());
}

TEST(FlipRatio, CallbackCountsLayerFlips) {
  auto model = flip_model();
  train::Context ctx{model, nullptr, 1, 0, {}};
  metrics::FlipRatioCallback cb;
  cb.on_train_begin(ctx);
  cb.on_epoch_begin(ctx);
  cb.on_batch_end(ctx);  // step 0: the first step of an epoch only records (Larq)
  // step 1: flip 4 of the 20 weights of layer 0 and all 3 depthwise weights of layer 2
  auto* first = model[0]->as<nn::QuantDense>();
  auto* sep = model[2]->as<nn::QuantSeparableConv1d>();
  flip_first(first->weight, 4);
  flip_first(sep->depthwise_weight, 3);
  cb.on_batch_end(ctx);
  // step 2: flip nothing
  cb.on_batch_end(ctx);
  nlohmann::json metrics_json = nlohmann::json::object();
  cb.on_epoch_end(ctx, metrics_json);
  const auto& fr = metrics_json.at("flip_ratio");
  EXPECT_DOUBLE_EQ(fr.at("0").get<double>(), (4.0 / 20 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(fr.at("2.depthwise_weight").get<double>(), (1.0 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(fr.at("2.pointwise_weight").get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(fr.at("3").get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(fr.at("1").get<double>(), 0.0);  // ternary kernels are followed too (Larq)
  EXPECT_DOUBLE_EQ(ctx.progress.at("flip"), (0.1 + 0.5) / 5);
  EXPECT_EQ(cb.ratios().at("0").last_changed(), 0);

  // next epoch: the metric restarts; its first step compares with the last one but only records
  cb.on_epoch_begin(ctx);
  flip_first(first->weight, 2);
  cb.on_batch_end(ctx);
  EXPECT_EQ(cb.ratios().at("0").last_changed(), 2);
  EXPECT_EQ(cb.ratios().at("0").count(), 0);
  flip_first(first->weight, 20);
  cb.on_batch_end(ctx);
  nlohmann::json second = nlohmann::json::object();
  cb.on_epoch_end(ctx, second);
  EXPECT_DOUBLE_EQ(second["flip_ratio"]["0"].get<double>(), 1.0);
}

TEST(FlipRatio, EpochModeComparesEpochEnds) {
  auto model = flip_model();
  train::Context ctx{model, nullptr, 1, 0, {}};
  metrics::FlipRatioCallback cb(metrics::FlipRatioOptions{/*every_step=*/false});
  cb.on_train_begin(ctx);
  cb.on_epoch_begin(ctx);
  auto* last = model[3]->as<nn::QuantDense>();
  flip_first(last->weight, 3);
  cb.on_batch_end(ctx);         // ignored in epoch mode
  flip_first(last->weight, 1);  // flips the first one back: 2 of 6 differ from the start
  nlohmann::json m = nlohmann::json::object();
  cb.on_epoch_end(ctx, m);
  EXPECT_DOUBLE_EQ(m["flip_ratio"]["3"].get<double>(), 2.0 / 6);
}

TEST(FlipRatio, FitLogsFlipRatiosToMetricsFile) {
  torch::manual_seed(0);
  data::Dataset set;
  set.images = torch::randn({32, 1, 2, 2});
  set.labels = torch::randint(0, 2, {32}, torch::kLong);
  set.num_classes = 2;
  torch::nn::Sequential model(torch::nn::Flatten(),
                              nn::QuantDense(nn::QuantDenseOptions(4, 2)
                                                 .input_quantizer("ste_sign")
                                                 .kernel_quantizer("ste_sign")
                                                 .kernel_constraint("weight_clip")));
  train::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 8;
  o.lr = 0.05;
  o.progress = false;
  o.out_dir = (std::filesystem::temp_directory_path() / "onebit_test_flip_fit").string();
  auto result = train::fit(model, set, set, o, {std::make_shared<metrics::FlipRatioCallback>()});
  ASSERT_EQ(result.history.size(), 2u);
  for (const auto& h : result.history) {
    ASSERT_TRUE(h.contains("flip_ratio")) << h.dump();
    const double r = h["flip_ratio"]["1"].get<double>();
    EXPECT_GE(r, 0.0);
    EXPECT_LE(r, 1.0);
  }
  std::ifstream in(std::filesystem::path(o.out_dir) / "metrics.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_NE(line.find("flip_ratio"), std::string::npos);
  std::filesystem::remove_all(o.out_dir);
}
