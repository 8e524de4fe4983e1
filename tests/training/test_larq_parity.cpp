// Behaviour that must equal Larq's own (larq/quantizers.py, metrics.py, optimizers.py,
// layers_base.py, models.py and their tests), one test per difference that was found and fixed.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "ext_test_util.h"
#include "onebit/convert.h"
#include "onebit/metrics.h"
#include "onebit/nn.h"
#include "onebit/optim/bop.h"
#include "onebit/quantizers.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/summary.h"

using namespace onebit;
using quantizers::TensorRole;

namespace {

at::Tensor t(std::vector<float> v) { return torch::tensor(v); }

std::vector<float> values(const at::Tensor& x) {
  auto c = x.detach().contiguous().to(at::kFloat);
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

// Forward values and the gradient of sum(y * dy) with respect to x.
std::pair<at::Tensor, at::Tensor> forward_backward(const quantizers::Quantizer& q, at::Tensor x,
                                                   const TensorRole& role = TensorRole::kernel()) {
  x = x.detach().clone().requires_grad_(true);
  at::Tensor y = q(x, role);
  y.sum().backward();
  return {y.detach(), x.grad()};
}

}  // namespace

// 1. ste_tern: Larq computes sign(sign(x + D) + sign(x - D)) with sign(0) = 0.
TEST(LarqParity, SteTernMapsZeroToZeroWhenTheThresholdIsZero) {
  quantizers::SteTern zero(/*threshold_value=*/0.0);
  const auto [y, g] = forward_backward(zero, t({0.f, -0.f, 1e-3f, -1e-3f, 2.f}));
  EXPECT_EQ(values(y), std::vector<float>({0, 0, 1, -1, 1}));
  for (float v : values(y)) EXPECT_FALSE(std::signbit(v) && v == 0) << "-0.0 instead of 0";
  EXPECT_EQ(values(g), std::vector<float>({1, 1, 1, 1, 0}));  // STE(1)
  // Ternary weight networks on an all-zero tensor: D = 0 and every value stays 0 (Larq: all 0).
  quantizers::SteTern twn(0.05, /*ternary_weight_networks=*/true);
  EXPECT_TRUE(twn.quantize(torch::zeros({3, 4})).eq(0).all().item<bool>());
  // The boundaries for D > 0 are unchanged: |x| == D keeps its sign, NaN gives 0.
  quantizers::SteTern d(0.05);
  EXPECT_EQ(values(d.quantize(t({0.05f, -0.05f, 0.04f, -0.04f, 0.f, NAN}))),
            std::vector<float>({1, -1, 0, 0, 0, 0}));
}

// 2. DoReFa weights: Larq divides by max|tanh(x)| with divide-no-nan.
TEST(LarqParity, DoReFaWeightsOnAnAllZeroTensorHaveZeroGradient) {
  quantizers::DoReFa q(2, "weights");
  const auto [y, g] = forward_backward(q, torch::zeros({2, 3}));
  // tanh(0) / 0 -> 0 (divide-no-nan), + 0.5, round(1.5) = 2 (half to even), 2 * 2/3 - 1 = 1/3.
  for (float v : values(y)) EXPECT_FLOAT_EQ(v, 1.0f / 3);
  for (float v : values(g)) EXPECT_EQ(v, 0.0f);  // not 1e30
  // A tensor with one non-zero value is unaffected: gradient (1 - tanh^2 x) / max|tanh|.
  const auto [y2, g2] = forward_backward(q, t({0.f, 0.5f}));
  const double m = std::tanh(0.5);
  EXPECT_NEAR(values(g2)[0], 1.0 / m, 1e-5);
  EXPECT_NEAR(values(g2)[1], (1 - m * m) / m, 1e-5);
}

// 3a. magnitude_aware_sign on a depthwise kernel: one scale per depth-multiplier index.
TEST(LarqParity, MagnitudeAwareSignScalesADepthwiseKernelPerDepthMultiplier) {
  torch::manual_seed(1);
  const int64_t channels = 3, multiplier = 2;
  nn::QuantDepthwiseConv2d conv(nn::QuantDepthwiseConv2dOptions(channels, 3)
                                    .depth_multiplier(multiplier)
                                    .depthwise_quantizer("magnitude_aware_sign")
                                    .depthwise_constraint("weight_clip"));
  const at::Tensor w = conv->weight.detach();  // [channels * multiplier, 1, 3, 3]
  const at::Tensor q = conv->quantized_weight();
  for (int64_t o = 0; o < channels * multiplier; ++o) {
    // Keras' kernel [3, 3, channels, multiplier]: the mean over kh, kw and the input channels
    // of index k = o % multiplier, i.e. over torch's output channels c * multiplier + k.
    double sum = 0;
    for (int64_t c = 0; c < channels; ++c)
      sum += w[c * multiplier + o % multiplier].abs().sum().item<double>();
    const double want = sum / (channels * 9);
    const at::Tensor got = q[o].abs();
    EXPECT_NEAR(got.max().item<double>(), want, 1e-6) << "output channel " << o;
    EXPECT_NEAR(got.min().item<double>(), want, 1e-6) << "output channel " << o;
  }
  EXPECT_TRUE(q.sign().eq(w.ge(0).to(at::kFloat) * 2 - 1).all().item<bool>());

  // The converter stores the kernel as bits with those scales: the runtime agrees with LibTorch.
  nn::Graph g;
  g->output(g->call("dw", conv, g->input()));
  g->eval();
  const at::Tensor x = torch::randn({2, channels, 5, 5});
  at::Tensor ref;
  {
    torch::NoGradGuard no_grad;
    ref = g->forward(x).contiguous();
  }
  const runtime::Interpreter net(convert(g, {channels, 5, 5}));
  const std::vector<float> out = net.run(x.data_ptr<float>(), static_cast<size_t>(x.numel()), 2);
  ASSERT_EQ(out.size(), static_cast<size_t>(ref.numel()));
  const at::Tensor got = torch::from_blob(const_cast<float*>(out.data()), ref.sizes()).clone();
  EXPECT_TRUE(torch::allclose(got, ref, 1e-5, 1e-5)) << (got - ref).abs().max();
}

// 3b. magnitude_aware_sign on activations: one scale per channel over N, H, W.
TEST(LarqParity, MagnitudeAwareSignScalesActivationsPerChannel) {
  quantizers::MagnitudeAwareSign q;
  torch::manual_seed(2);
  const at::Tensor x = torch::randn({3, 2, 4, 4}) * 0.5;
  const auto [y, g] = forward_backward(q, x, TensorRole::activation());
  for (int64_t c = 0; c < 2; ++c) {
    const double a = x.select(1, c).abs().mean().item<double>();
    const at::Tensor yc = y.select(1, c);
    EXPECT_NEAR(yc.abs().max().item<double>(), a, 1e-6) << "channel " << c;
    EXPECT_NEAR(yc.abs().min().item<double>(), a, 1e-6) << "channel " << c;
    const at::Tensor inside = x.select(1, c).abs().le(1).to(at::kFloat);
    EXPECT_TRUE(torch::allclose(g.select(1, c), inside * a)) << "channel " << c;
  }
  // Dense activations [N, F]: per feature, over the batch.
  const at::Tensor d = t({1.f, -4.f, -3.f, 2.f}).reshape({2, 2});
  EXPECT_EQ(values(q.quantize_as(d, TensorRole::activation())), std::vector<float>({2, -3, -2, 3}));
  // As a layer's input quantizer and as a Quantizer layer, the activation role is used.
  nn::Quantizer layer("magnitude_aware_sign");
  EXPECT_TRUE(torch::equal(layer->forward(x), q.quantize_as(x, TensorRole::activation())));
  nn::QuantDense dense(nn::QuantDenseOptions(2, 1).bias(false).input_quantizer(
      std::make_shared<quantizers::MagnitudeAwareSign>()));
  {
    torch::NoGradGuard no_grad;
    dense->weight.fill_(1.0);
    // rows: [2, -3] -> -1 and [-2, 3] -> 1 (a kernel-role scale would give per-row means).
    EXPECT_EQ(values(dense->forward(d)), std::vector<float>({-1, 1}));
  }
}

// 3c. magnitude_aware_sign on a 1-D tensor: Larq reduces over no axis, so a = |x|.
TEST(LarqParity, MagnitudeAwareSignOnAOneDimensionalTensorReducesOverNoAxis) {
  quantizers::MagnitudeAwareSign q;
  for (const TensorRole& role : {TensorRole::kernel(), TensorRole::activation()}) {
    const auto [y, g] = forward_backward(q, t({-2.f, 0.5f, 0.f, 0.25f}), role);
    EXPECT_EQ(values(y), std::vector<float>({-2, 0.5f, 0, 0.25f}));
    EXPECT_EQ(values(g), std::vector<float>({0, 0.5f, 0, 0.25f}));  // a * STE(1)
  }
}

// 4. FlipRatio follows ternary and DoReFa kernels too.
TEST(LarqParity, FlipRatioFollowsTernaryAndDoReFaKernels) {
  torch::nn::Sequential model(
      nn::QuantDense(nn::QuantDenseOptions(4, 3)
                         .kernel_quantizer("ste_sign")
                         .kernel_constraint("weight_clip")),
      nn::QuantDense(nn::QuantDenseOptions(3, 2).kernel_quantizer("ste_tern")),
      nn::QuantDense(nn::QuantDenseOptions(2, 2).kernel_quantizer(
          std::make_shared<quantizers::DoReFa>(2, "weights"))),
      torch::nn::Linear(2, 2));
  const auto kernels = metrics::quantized_kernels(*model);
  ASSERT_EQ(kernels.size(), 3u);
  EXPECT_EQ(kernels[1].name, "1");
  EXPECT_EQ(kernels[1].precision, 2);
  EXPECT_EQ(kernels[2].name, "2");
  EXPECT_EQ(metrics::binary_kernels(*model).size(), 1u);

  train::Context ctx{model, nullptr, 1, 0, {}};
  metrics::FlipRatioCallback cb;
  cb.on_train_begin(ctx);
  cb.on_epoch_begin(ctx);
  cb.on_batch_end(ctx);  // the first step of the epoch only records (Larq resets per epoch)
  {
    torch::NoGradGuard no_grad;
    auto* tern = model[1]->as<nn::QuantDense>();
    tern->weight.fill_(0.0);    // ternary 0 everywhere ...
    tern->weight[0][0] = 1.0;   // ... but one +1
    tern->weight[1][1] = -1.0;  // and one -1
    auto* dorefa = model[2]->as<nn::QuantDense>();
    dorefa->weight.copy_(torch::tensor({{1.0f, -1.0f}, {0.0f, 0.0f}}));
  }
  const auto tern_before = metrics::quantized_kernels(*model)[1].values;
  cb.on_batch_end(ctx);
  {
    torch::NoGradGuard no_grad;
    model[1]->as<nn::QuantDense>()->weight[0][0] = 0.0;  // +1 -> 0: one of six changes
    // DoReFa levels [1, -1, 1/3, 1/3] -> [1, -1, 1, -1]: two of four change.
    model[2]->as<nn::QuantDense>()->weight[1].copy_(torch::tensor({1.0f, -1.0f}));
  }
  cb.on_batch_end(ctx);
  nlohmann::json m = nlohmann::json::object();
  cb.on_epoch_end(ctx, m);
  ASSERT_TRUE(m["flip_ratio"].contains("1")) << m.dump();
  ASSERT_TRUE(m["flip_ratio"].contains("2")) << m.dump();
  EXPECT_EQ(cb.ratios().at("1").last_changed(), 1);
  EXPECT_EQ(cb.ratios().at("1").count(), 2);
  EXPECT_GT(tern_before.abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(cb.ratios().at("2").last_changed(), 2);  // the scale max|tanh| is unchanged here
}

// 5. Transposed convolutions count MACs as Keras' Conv2DTranspose (a Conv2D) does in Larq.
TEST(LarqParity, TransposedConvolutionMacsAreCountedAsLarqCountsThem) {
  torch::nn::Sequential model(nn::QuantConvTranspose2d(nn::QuantConvTranspose2dOptions(4, 8, 3)
                                                           .input_quantizer("ste_sign")
                                                           .kernel_quantizer("ste_sign")
                                                           .kernel_constraint("weight_clip")));
  const auto s = summary(model, {4, 5, 5});
  ASSERT_EQ(s.layers.size(), 1u);
  ASSERT_TRUE(s.layers[0].macs_by_bits.has_value());
  EXPECT_EQ(s.macs(1), 14112);  // 3 * 3 * 8 * 4 weights x 7 * 7 output pixels
  EXPECT_EQ(s.total_macs, 14112);
  // A 3-D transposed convolution is not counted (Larq has no rule for Conv3D): "?".
  torch::nn::Sequential three_d(nn::QuantConvTranspose3d(nn::QuantConvTranspose3dOptions(2, 2, 3)
                                                             .kernel_quantizer("ste_sign")
                                                             .kernel_constraint("weight_clip")));
  EXPECT_FALSE(summary(three_d, {2, 3, 3, 3}).layers[0].macs_by_bits.has_value());
}

// 6. The constraint warning names Larq's option and skips NoOp.
TEST(LarqParity, ConstraintWarningNamesTheOptionAndSkipsNoOp) {
  {
    onebit::testing::CaptureWarnings w;
    nn::QuantDepthwiseConv2d(nn::QuantDepthwiseConv2dOptions(2, 3).depthwise_quantizer("ste_sign"));
    EXPECT_NE(w.text.find("`depthwise_constraint`"), std::string::npos) << w.text;
    EXPECT_EQ(w.text.find("kernel_constraint"), std::string::npos) << w.text;
  }
  {
    onebit::testing::CaptureWarnings w;
    nn::QuantSeparableConv2d(nn::QuantSeparableConv2dOptions(2, 4, 3)
                                 .depthwise_quantizer("ste_sign")
                                 .depthwise_constraint("weight_clip")
                                 .pointwise_quantizer("ste_sign"));
    EXPECT_NE(w.text.find("`pointwise_constraint`"), std::string::npos) << w.text;
    EXPECT_EQ(w.text.find("depthwise_constraint"), std::string::npos) << w.text;
  }
  {
    onebit::testing::CaptureWarnings w;
    nn::QuantDense(nn::QuantDenseOptions(2, 2).kernel_quantizer("ste_sign"));
    EXPECT_NE(w.text.find("`kernel_constraint`"), std::string::npos) << w.text;
  }
  {
    onebit::testing::CaptureWarnings w;  // NoOp(1) only tags a weight as binary (e.g. for Bop)
    nn::QuantDense(
        nn::QuantDenseOptions(2, 2).kernel_quantizer(std::make_shared<quantizers::NoOp>(1)));
    nn::QuantConv2d(
        nn::QuantConv2dOptions(1, 1, 3).kernel_quantizer(std::make_shared<quantizers::NoOp>(1)));
    EXPECT_TRUE(w.text.empty()) << w.text;
  }
}

// 7. Bop decides on real-valued starting weights and turns a tie into +1.
TEST(LarqParity, BopDecidesOnRealStartingWeightsAndTiesGivePlusOne) {
  auto w = t({0.3f, -0.2f, 0.0f, -0.0f, 5.0f, -1.0f, 1.0f}).requires_grad_(true);
  optim::Bop bop({w}, optim::BopOptions(/*threshold=*/0.2, /*gamma=*/0.5));
  EXPECT_EQ(values(w), std::vector<float>({0.3f, -0.2f, 0.0f, -0.0f, 5.0f, -1.0f, 1.0f}));
  w.mutable_grad() = t({2.f, 2.f, 0.f, 0.f, -2.f, -0.4f, 0.4f});
  bop.step();
  // m = [1, 1, 0, 0, -1, -0.2, 0.2]; w*m - 0.2 = [0.1, -0.4, -0.2, -0.2, -5.2, 0, 0]:
  // index 0 flips to -sign(0.3); 1 keeps sign(-0.2); 2, 3 keep sign(0) = +1; 4 keeps +1;
  // 5 and 6 are ties (w*m == threshold) and become +1.
  EXPECT_EQ(values(w), std::vector<float>({-1, -1, 1, 1, 1, 1, 1}));

  // binarize_at_start keeps onebit's earlier behaviour: sign(w) when built.
  auto v = t({0.3f, -0.2f, 0.0f}).requires_grad_(true);
  optim::Bop old({v}, optim::BopOptions(0.2, 0.5).binarize_at_start(true));
  EXPECT_EQ(values(v), std::vector<float>({1, -1, 1}));
}

// 8. FlipRatio drops the first update after reset_states.
TEST(LarqParity, FlipRatioDropsTheFirstUpdateAfterAReset) {
  metrics::FlipRatio m;  // Larq's documented sequence
  m.update(t({1, 1}));
  m.update(t({2, 2}));
  m.update(t({1, 2}));
  EXPECT_DOUBLE_EQ(m.result(), 0.75);
  m.reset_states();
  EXPECT_DOUBLE_EQ(m.result(), 0.0);
  EXPECT_FALSE(m.update(t({2, 2})).has_value());  // compared with [1, 2] but not counted
  EXPECT_EQ(m.last_changed(), 1);
  EXPECT_DOUBLE_EQ(m.result(), 0.0);
  EXPECT_EQ(m.count(), 0);
  EXPECT_DOUBLE_EQ(*m.update(t({2, 1})), 0.5);
  EXPECT_DOUBLE_EQ(m.result(), 0.5);
}

namespace {

// Larq's "model with no weights": a layer that returns zeros(2) whatever its input.
struct ZerosImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) { return torch::zeros({2}, x.options()); }
};
TORCH_MODULE(Zeros);

}  // namespace

// 9a. A weightless model's fixed-size output keeps its size: "(2,)".
TEST(LarqParity, WeightlessModelShowsItsFixedOutputShape) {
  torch::nn::Sequential model(Zeros{});
  const auto s = summary(model, {32, 32});
  ASSERT_EQ(s.layers.size(), 1u);
  EXPECT_EQ(*s.layers[0].output_shape, std::vector<int64_t>({2}));
  EXPECT_NE(s.to_string().find("(2,)"), std::string::npos) << s.to_string();
  EXPECT_EQ(s.total_params, 0);
}

// 9b. A nested model as one combined row (Larq's test_submodel_summary), same totals.
TEST(LarqParity, NestedModelCanBeSummarizedAsOneRow) {
  auto conv = [](int64_t in, int64_t out, const char* input_q) {
    return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 3)
                               .input_quantizer(input_q)
                               .kernel_quantizer("ste_sign")
                               .kernel_constraint("weight_clip"));
  };
  torch::nn::Sequential inner(conv(2, 4, "ste_sign"), nn::BatchNorm(4), torch::nn::ReLU(),
                              conv(4, 4, "ste_tern"));
  nn::Graph g;
  nn::Value x = g->call("stem", conv(1, 2, nullptr), g->input());
  x = g->call("block", inner, x);
  x = g->call("flatten", torch::nn::Flatten(), x);
  g->output(g->call("fc", torch::nn::Linear(4 * 4 * 4, 3), x));

  const auto flat = summary(g, {1, 10, 10}, "m");
  SummaryOptions o;
  o.combine_nested = true;
  const auto combined = summary(g, {1, 10, 10}, "m", o);
  ASSERT_EQ(flat.layers.size(), 7u);
  ASSERT_EQ(combined.layers.size(), 4u);
  const LayerSummary& row = combined.layers[1];
  EXPECT_EQ(row.name, "block:Graph");
  EXPECT_EQ(row.input_precision, std::optional<int>(1));              // the first layer's
  EXPECT_EQ(*row.output_shape, flat.layers[4].output_shape.value());  // the last layer's
  int64_t params = 0, memory = 0;
  for (std::size_t i = 1; i <= 4; ++i) {
    params += flat.layers[i].params();
    memory += flat.layers[i].memory_bits;
  }
  EXPECT_EQ(row.params(), params);
  EXPECT_EQ(row.memory_bits, memory);
  ASSERT_TRUE(row.macs_by_bits.has_value());  // the ReLU's "?" counts 0 inside
  EXPECT_EQ(row.macs_by_bits->at(1), flat.layers[1].macs_by_bits->at(1));
  EXPECT_EQ(row.macs_by_bits->at(2), flat.layers[4].macs_by_bits->at(2));
  // The totals agree.
  EXPECT_EQ(combined.total_params, flat.total_params);
  EXPECT_EQ(combined.memory_bits, flat.memory_bits);
  EXPECT_EQ(combined.total_macs, flat.total_macs);
  EXPECT_EQ(combined.binarized_mac_ratio, flat.binarized_mac_ratio);
  const std::string text = combined.to_string();
  EXPECT_NE(text.find("block:Graph"), std::string::npos) << text;
  EXPECT_EQ(text.find("block.0"), std::string::npos) << text;
}
