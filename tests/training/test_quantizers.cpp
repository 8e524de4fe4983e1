#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "onebit/quantizers.h"

using namespace onebit::quantizers;

namespace {

at::Tensor t(std::vector<float> v) { return torch::tensor(v); }

/// Forward values and pseudo-gradients (through autograd, dy = 1) at the given points.
std::pair<std::vector<float>, std::vector<float>> run(const Quantizer& q, std::vector<float> xs) {
  auto x = t(xs).requires_grad_(true);
  auto y = q(x);
  y.backward(torch::ones_like(y));
  auto yc = y.detach().contiguous();
  auto gc = x.grad().contiguous();
  return {std::vector<float>(yc.data_ptr<float>(), yc.data_ptr<float>() + yc.numel()),
          std::vector<float>(gc.data_ptr<float>(), gc.data_ptr<float>() + gc.numel())};
}

void expect_near(const std::vector<float>& got, const std::vector<float>& want, float tol = 1e-6f) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at index " << i;
}

}  // namespace

TEST(SteSign, ForwardAndGradientAtBoundaries) {
  SteSign q;  // clip 1
  auto [y, g] = run(q, {-2.f, -1.f, -0.5f, -0.f, 0.f, 1e-7f, 0.5f, 1.f, 1.0001f, 3.f});
  expect_near(y, {-1, -1, -1, 1, 1, 1, 1, 1, 1, 1});
  expect_near(g, {0, 1, 1, 1, 1, 1, 1, 1, 0, 0});
  EXPECT_EQ(q.precision(), 1);
  EXPECT_EQ(q.id(), "ste_sign");
}

TEST(SteSign, CustomClipAndNoClip) {
  auto [y, g] = run(SteSign(0.5), {-0.6f, -0.5f, 0.5f, 0.6f});
  expect_near(g, {0, 1, 1, 0});
  auto [y2, g2] = run(SteSign(std::nullopt), {-100.f, 100.f});
  expect_near(y2, {-1, 1});
  expect_near(g2, {1, 1});
}

TEST(SteSign, UpstreamGradientIsScaled) {
  auto x = t({0.2f, -0.3f, 2.f}).requires_grad_(true);
  SteSign q;
  q(x).backward(t({3.f, -2.f, 5.f}));
  expect_near(std::vector<float>(x.grad().data_ptr<float>(), x.grad().data_ptr<float>() + 3),
              {3, -2, 0});
}

TEST(SteSign, OnePassKernelsEqualTheComposedOperationsInEveryLayout) {
  // sign and the straight-through mask run as one pass over float32 memory; they must give the
  // composed operations' values for every layout, non-finite values and a clip that float
  // cannot represent (0.1 rounds up in float: |x| == float(0.1) passes, as with x.abs().le()).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor base = torch::randn({3, 5, 4, 6}) * 0.3;
  base[0][0][0][0] = nan;
  base[0][0][0][1] = -inf;
  base[0][0][0][2] = 0.0f;
  base[0][0][0][3] = -0.0f;
  base[0][0][0][4] = static_cast<float>(0.1);
  base[0][0][0][5] = -1.0f;
  base[0][0][1][0] = 1.0f;
  base[0][0][1][1] = inf;
  at::Tensor dy = torch::randn({3, 5, 4, 6});
  dy[0][0][1][0] = inf;
  dy[0][0][1][1] = nan;
  // The mask compares bit patterns: zero clips of either sign, an infinite one and |x| equal to
  // the clip must behave as the float comparison does.
  for (const double clip : {1.0, 0.1, 0.0, -0.0, static_cast<double>(inf)}) {
    const SteSign q(clip);
    const std::vector<std::pair<std::string, std::pair<at::Tensor, at::Tensor>>> layouts = {
        {"NCHW", {base, dy}},
        {"channels-last",
         {base.contiguous(at::MemoryFormat::ChannelsLast),
          dy.contiguous(at::MemoryFormat::ChannelsLast)}},
        {"mixed", {base.contiguous(at::MemoryFormat::ChannelsLast), dy}},
        {"strided slice", {base.slice(1, 1, 4), dy.slice(1, 1, 4)}},
    };
    for (const auto& [name, pair] : layouts) {
      SCOPED_TRACE(name + ", clip " + std::to_string(clip));
      const auto& [x, d] = pair;
      const at::Tensor sign = x.ge(0).to(at::kFloat).mul(2).sub(1);
      const at::Tensor grad = d * x.abs().le(clip).to(at::kFloat);
      EXPECT_TRUE(at::equal(q.quantize(x), sign));
      const at::Tensor g = q.gradient(x, d);
      EXPECT_TRUE(at::equal(g.isnan(), grad.isnan()));
      EXPECT_TRUE(at::equal(g.nan_to_num(0), grad.nan_to_num(0)));
    }
  }
}

TEST(ApproxSign, Gradient) {
  auto [y, g] = run(ApproxSign(), {-1.5f, -1.f, -0.5f, 0.f, 0.25f, 1.f, 2.f});
  expect_near(y, {-1, -1, -1, 1, 1, 1, 1});
  expect_near(g, {0, 0, 1, 2, 1.5f, 0, 0});
}

TEST(ApproxSign, TheOnePassGradientEqualsTheComposedOperationsInEveryLayout) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor base = torch::randn({3, 5, 4, 6}) * 0.8;
  base[0][0][0][0] = nan;
  base[0][0][0][1] = -inf;
  base[0][0][0][2] = -0.0f;
  base[0][0][0][3] = 1.0f;
  base[0][0][0][4] = -1.0f;
  base[0][0][0][5] = std::nextafter(1.0f, 2.0f);
  at::Tensor dy = torch::randn({3, 5, 4, 6});
  dy[0][0][1][0] = inf;
  dy[0][0][1][1] = nan;
  const ApproxSign q;
  const std::vector<std::pair<std::string, std::pair<at::Tensor, at::Tensor>>> layouts = {
      {"NCHW", {base, dy}},
      {"channels-last",
       {base.contiguous(at::MemoryFormat::ChannelsLast),
        dy.contiguous(at::MemoryFormat::ChannelsLast)}},
      {"mixed", {base.contiguous(at::MemoryFormat::ChannelsLast), dy}},
  };
  for (const auto& [name, pair] : layouts) {
    SCOPED_TRACE(name);
    const auto& [x, d] = pair;
    const at::Tensor ax = x.abs();
    const at::Tensor grad = d * (2.0 - 2.0 * ax) * ax.le(1.0).to(at::kFloat);
    const at::Tensor g = q.gradient(x, d);
    EXPECT_TRUE(at::equal(g.isnan(), grad.isnan()));
    EXPECT_TRUE(at::equal(g.nan_to_num(0), grad.nan_to_num(0)));
  }
}

TEST(SteHeaviside, ForwardAndGradient) {
  auto [y, g] = run(SteHeaviside(), {-2.f, -1.f, 0.f, 0.5f, 1.f, 1.5f});
  expect_near(y, {0, 0, 0, 1, 1, 1});
  expect_near(g, {0, 1, 1, 1, 1, 0});
  EXPECT_EQ(SteHeaviside().precision(), 1);
}

TEST(SwishSign, GradientFormula) {
  const double beta = 5.0;
  std::vector<float> xs = {-3.f, -0.5f, 0.f, 0.1f, 0.7f, 10.f};
  auto [y, g] = run(SwishSign(), xs);
  expect_near(y, {-1, -1, 1, 1, 1, 1});
  std::vector<float> want;
  for (float x : xs) {
    want.push_back(static_cast<float>(beta * (2 - beta * x * std::tanh(beta * x / 2)) /
                                      (1 + std::cosh(beta * x))));
  }
  expect_near(g, want, 1e-5f);
  EXPECT_NEAR(g[2], 5.0f, 1e-6);  // beta * 2 / (1 + cosh 0) = beta at x = 0
  auto [y2, g2] = run(SwishSign(2.0), {0.f});
  expect_near(g2, {2.f});
}

TEST(MagnitudeAwareSign, PerOutputChannelScale) {
  auto x = t({0.5f, -0.25f, 2.f, -4.f}).reshape({2, 2}).requires_grad_(true);
  MagnitudeAwareSign q;
  auto y = q(x);
  // channel 0: a = 0.375; channel 1: a = 3.
  auto yc = y.detach();
  EXPECT_FLOAT_EQ(yc[0][0].item<float>(), 0.375f);
  EXPECT_FLOAT_EQ(yc[0][1].item<float>(), -0.375f);
  EXPECT_FLOAT_EQ(yc[1][0].item<float>(), 3.f);
  EXPECT_FLOAT_EQ(yc[1][1].item<float>(), -3.f);
  y.backward(torch::ones_like(y));
  auto g = x.grad();
  EXPECT_FLOAT_EQ(g[0][0].item<float>(), 0.375f);  // |x| <= 1: a * 1
  EXPECT_FLOAT_EQ(g[0][1].item<float>(), 0.375f);
  EXPECT_FLOAT_EQ(g[1][0].item<float>(), 0.f);  // |x| > 1: clipped
  EXPECT_FLOAT_EQ(g[1][1].item<float>(), 0.f);
}

TEST(SteTern, FixedThresholdBoundaries) {
  SteTern q(0.5);
  auto [y, g] = run(q, {-2.f, -0.5f, -0.49f, 0.f, 0.49f, 0.5f, 1.f, 1.5f});
  // |x| == threshold maps to sign(x) (Larq's code).
  expect_near(y, {-1, -1, 0, 0, 0, 1, 1, 1});
  expect_near(g, {0, 1, 1, 1, 1, 1, 1, 0});
  EXPECT_EQ(q.precision(), 2);
}

TEST(SteTern, TernaryWeightNetworksThreshold) {
  SteTern q(0.05, /*ternary_weight_networks=*/true);
  auto x = t({1.f, -1.f, 0.2f, -0.2f, 0.5f});  // mean |x| = 0.58, D = 0.406
  EXPECT_NEAR(q.threshold(x), 0.406, 1e-6);
  auto [y, g] = run(q, {1.f, -1.f, 0.2f, -0.2f, 0.5f});
  expect_near(y, {1, -1, 0, 0, 1});
}

TEST(DoReFa, ActivationsMode) {
  DoReFa q(2, "activations");  // n = 3
  auto [y, g] = run(q, {-0.5f, 0.f, 0.1f, 0.2f, 0.5f, 0.9f, 1.f, 1.5f});
  expect_near(y, {0, 0, 0, 1.f / 3, 2.f / 3, 1, 1, 1});  // round(1.5) = 2 (half to even)
  expect_near(g, {0, 1, 1, 1, 1, 1, 1, 0});
  EXPECT_EQ(q.precision(), 2);
}

TEST(DoReFa, WeightsMode) {
  DoReFa q(2, "weights");
  std::vector<float> xs = {-2.f, -0.3f, 0.f, 0.4f, 1.f};
  auto [y, g] = run(q, xs);
  double m = 0;
  for (float x : xs) m = std::max(m, std::abs(std::tanh(static_cast<double>(x))));
  for (size_t i = 0; i < xs.size(); ++i) {
    double v = std::tanh(static_cast<double>(xs[i])) / (2 * m) + 0.5;
    double want = 2 * std::nearbyint(3 * v) / 3 - 1;
    EXPECT_NEAR(y[i], want, 1e-6) << "x=" << xs[i];
    double t2 = std::tanh(static_cast<double>(xs[i]));
    EXPECT_NEAR(g[i], (1 - t2 * t2) / m, 1e-5) << "x=" << xs[i];
  }
  EXPECT_NEAR(y[0], -1.0, 1e-6);  // the max-magnitude value maps to the end of the range
}

TEST(DoReFa, BadArguments) {
  EXPECT_THROW(DoReFa(0), std::invalid_argument);
  EXPECT_THROW(DoReFa(2, "kernel"), std::invalid_argument);
}

TEST(NoOp, IdentityWithPrecision) {
  NoOp q(1);
  auto [y, g] = run(q, {-2.f, 0.3f});
  expect_near(y, {-2.f, 0.3f});
  expect_near(g, {1, 1});
  EXPECT_EQ(q.precision(), 1);
  EXPECT_THROW(NoOp(0), std::invalid_argument);
  EXPECT_THROW(NoOp(33), std::invalid_argument);
}

TEST(Registry, MakeByIdAndClassName) {
  for (const auto& id : {"ste_sign", "approx_sign", "ste_heaviside", "swish_sign",
                         "magnitude_aware_sign", "ste_tern", "dorefa_quantizer"}) {
    auto q = get(id);
    ASSERT_TRUE(q) << id;
    EXPECT_EQ(q->id(), id);
  }
  EXPECT_EQ(get("SteSign")->id(), "ste_sign");
  EXPECT_EQ(get("DoReFaQuantizer")->id(), "dorefa_quantizer");
}

TEST(Registry, ConfigsRoundTrip) {
  std::vector<QuantizerPtr> qs = {
      std::make_shared<NoOp>(3),
      std::make_shared<SteSign>(0.25),
      std::make_shared<SteSign>(std::nullopt),
      std::make_shared<ApproxSign>(),
      std::make_shared<SteHeaviside>(2.0),
      std::make_shared<SwishSign>(3.5),
      std::make_shared<MagnitudeAwareSign>(0.5),
      std::make_shared<SteTern>(0.2, true, 0.7),
      std::make_shared<DoReFa>(4, "weights"),
  };
  auto x = torch::linspace(-2, 2, 41);
  for (const auto& q : qs) {
    auto json = q->to_json();
    auto text = json.dump();
    auto back = from_json(onebit::Json::parse(text));
    EXPECT_EQ(back->to_json(), json) << text;
    EXPECT_EQ(back->precision(), q->precision()) << text;
    EXPECT_TRUE(torch::equal(back->quantize(x), q->quantize(x))) << text;
  }
}

TEST(Registry, ErrorsAreClear) {
  try {
    get("ste_sing");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ste_sing"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("ste_sign"), std::string::npos);  // lists known ids
  }
  try {
    from_json({{"class_name", "ste_sign"}, {"config", {{"clip", 1.0}}}});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("clip"), std::string::npos);
  }
  EXPECT_THROW(from_json({{"class_name", "dorefa_quantizer"}, {"config", {{"mode", "x"}}}}),
               std::invalid_argument);
  EXPECT_THROW(from_json({{"class_name", "ste_sign"}, {"config", {{"clip_value", "a"}}}}),
               std::invalid_argument);
  EXPECT_THROW(from_json(42), std::invalid_argument);
  EXPECT_THROW(get("noop"), std::invalid_argument);  // needs a precision
  EXPECT_THROW(SteSign(-1.0), std::invalid_argument);
  EXPECT_EQ(from_json(nullptr), nullptr);
}

TEST(Custom, IdentityGradientSignInAFewLines) {
  // The seed's mechanism: binary values forward, the identity gradient backward.
  auto q = std::make_shared<Custom>(
      "identity_sign", [](const at::Tensor& x) { return at::where(x >= 0, 1.0f, -1.0f); },
      [](const at::Tensor&, const at::Tensor& dy) { return dy; }, 1);
  auto [y, g] = run(*q, {-3.f, 0.f, 2.f});
  expect_near(y, {-1, 1, 1});
  expect_near(g, {1, 1, 1});
  EXPECT_EQ(q->precision(), 1);
  register_custom(q);
  auto back = from_json(q->to_json());
  EXPECT_EQ(back.get(), q.get());
  EXPECT_THROW(register_quantizer("ste_sign", [](const onebit::Json&) { return nullptr; }),
               std::invalid_argument);
}

TEST(Quantizer, NoAutogradWhenNotNeeded) {
  SteSign q;
  auto x = t({0.5f, -0.5f});
  EXPECT_FALSE(q(x).requires_grad());
  auto xg = x.clone().requires_grad_(true);
  torch::NoGradGuard guard;
  EXPECT_FALSE(q(xg).requires_grad());
}

TEST(Quantizer, StackAllocatedQuantizerStillDifferentiates) {
  SteSign q;  // not owned by a shared_ptr
  auto x = t({0.5f, 2.f}).requires_grad_(true);
  q(x).sum().backward();
  EXPECT_FLOAT_EQ(x.grad()[0].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(x.grad()[1].item<float>(), 0.f);
}
