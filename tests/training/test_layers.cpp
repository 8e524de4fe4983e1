#include <gtest/gtest.h>
#include <torch/torch.h>

#include "onebit/log.h"
#include "onebit/nn.h"

using namespace onebit::nn;

namespace {

at::Tensor pm_sign(const at::Tensor& x) { return at::where(x >= 0, 1.0f, -1.0f); }

/// Captures library warnings for the lifetime of the object.
struct WarningCapture {
  std::vector<std::string> messages;
  onebit::WarningHandler previous;
  WarningCapture() {
    previous = onebit::set_warning_handler([this](const std::string& m) { messages.push_back(m); });
  }
  ~WarningCapture() { onebit::set_warning_handler(previous); }
};

}  // namespace

TEST(QuantDense, WithoutQuantizersEqualsLinear) {
  torch::manual_seed(1);
  QuantDense q(QuantDenseOptions(7, 5));
  torch::manual_seed(1);
  torch::nn::Linear ref(torch::nn::LinearOptions(7, 5));
  // Same seed, same initialization as torch::nn::Linear.
  EXPECT_TRUE(torch::equal(q->weight, ref->weight));
  EXPECT_TRUE(torch::equal(q->bias, ref->bias));
  auto x = torch::randn({3, 7});
  EXPECT_TRUE(torch::equal(q->forward(x), ref->forward(x)));
}

TEST(QuantDense, BinaryEqualsLinearOnSigns) {
  torch::manual_seed(2);
  QuantDense q(QuantDenseOptions(33, 4)
                   .input_quantizer("ste_sign")
                   .kernel_quantizer("ste_sign")
                   .kernel_constraint("weight_clip"));
  auto x = torch::randn({6, 33});
  auto expected = torch::linear(pm_sign(x), pm_sign(q->weight), q->bias);
  EXPECT_TRUE(torch::allclose(q->forward(x), expected, 0, 1e-5));
  // Binary dot products are integers (before the bias).
  auto dots = q->forward(x) - q->bias;
  EXPECT_TRUE(torch::allclose(dots, dots.round(), 0, 1e-4));
}

TEST(QuantDense, GradientReachesLatentWeightsThroughSte) {
  torch::manual_seed(3);
  QuantDense q(QuantDenseOptions(4, 2).bias(false).input_quantizer("ste_sign").kernel_quantizer(
                   "ste_sign").kernel_constraint("weight_clip"));
  {
    torch::NoGradGuard g;
    q->weight.copy_(torch::tensor({{0.5f, -0.2f, 1.5f, 0.0f}, {-0.7f, 0.3f, -2.0f, 0.9f}}));
  }
  auto x = torch::tensor({{0.3f, -2.0f, 0.8f, -0.1f}}).requires_grad_(true);
  q->forward(x).sum().backward();
  // d/dWq of sum(pm_sign(x) Wq^T) = pm_sign(x); STE masks |W| > 1.
  auto sx = pm_sign(x.detach());
  auto mask = q->weight.detach().abs().le(1).to(torch::kFloat);
  auto expected_w = sx.expand({2, 4}) * mask;
  EXPECT_TRUE(torch::equal(q->weight.grad(), expected_w));
  // d/dx: sum over outputs of pm_sign(W), masked where |x| > 1.
  auto expected_x = pm_sign(q->weight.detach()).sum(0, true) * x.detach().abs().le(1).to(torch::kFloat);
  EXPECT_TRUE(torch::equal(x.grad(), expected_x));
}

TEST(QuantDense, SeedMechanismLatentMovesForwardUsesBinary) {
  // Binary weights in the forward pass, latent real weights updated by the optimizer.
  torch::manual_seed(4);
  QuantDense q(QuantDenseOptions(8, 3).kernel_quantizer("ste_sign").kernel_constraint("weight_clip"));
  torch::optim::SGD opt(q->parameters(), torch::optim::SGDOptions(0.01));
  auto x = torch::randn({16, 8});
  auto y = torch::randn({16, 3});
  auto latent_before = q->weight.detach().clone();
  auto bias_before = q->bias.detach().clone();
  auto out_before = q->forward(x).detach();
  opt.zero_grad();
  torch::mse_loss(q->forward(x), y).backward();
  opt.step();
  onebit::apply_constraints(*q);
  // The latent weights moved by a small step...
  EXPECT_FALSE(torch::equal(q->weight, latent_before));
  EXPECT_LT((q->weight - latent_before).abs().max().item<float>(), 0.05f);
  // ...the forward pass still reads exact +-1 values.
  EXPECT_TRUE(q->quantized_weight().abs().eq(1).all().item<bool>());
  // The output changes only where a sign flipped (or the bias moved).
  auto flips = pm_sign(q->weight.detach()).ne(pm_sign(latent_before)).sum().item<int64_t>();
  auto expected = torch::linear(x, pm_sign(q->weight.detach()), q->bias.detach());
  EXPECT_TRUE(torch::allclose(q->forward(x).detach(), expected, 1e-5, 1e-5));
  if (flips == 0) {  // the kernel's forward values did not change at all
    EXPECT_TRUE(torch::allclose(out_before - bias_before, q->forward(x).detach() - q->bias.detach(),
                                1e-5, 1e-5));
  }
}

TEST(QuantDense, QuantizedWeightsAndStateDict) {
  torch::manual_seed(5);
  torch::nn::Sequential model(
      QuantDense(QuantDenseOptions(6, 4).kernel_quantizer("ste_sign").kernel_constraint("weight_clip")),
      BatchNorm(4));
  auto sd = quantized_state_dict(*model);
  ASSERT_TRUE(sd.contains("0.weight"));
  EXPECT_TRUE(sd["0.weight"].abs().eq(1).all().item<bool>());
  EXPECT_TRUE(torch::equal(sd["0.weight"], pm_sign(model->named_parameters()["0.weight"])));
  EXPECT_TRUE(sd.contains("0.bias"));
  EXPECT_TRUE(sd.contains("1.running_mean"));
  // The latent weights are untouched.
  EXPECT_FALSE(model->named_parameters()["0.weight"].abs().eq(1).all().item<bool>());
}

TEST(QuantDense, WarnsOnBinaryKernelWithoutConstraint) {
  WarningCapture w;
  QuantDense a(QuantDenseOptions(3, 3).kernel_quantizer("ste_sign"));
  ASSERT_EQ(w.messages.size(), 1u);
  EXPECT_NE(w.messages[0].find("weight_clip"), std::string::npos);
  QuantDense b(QuantDenseOptions(3, 3).kernel_quantizer("ste_sign").kernel_constraint("weight_clip"));
  QuantDense c(QuantDenseOptions(3, 3).kernel_quantizer("ste_tern"));  // not binary
  QuantDense d(QuantDenseOptions(3, 3));
  EXPECT_EQ(w.messages.size(), 1u);
}

TEST(QuantDense, ShapeErrorsAreClear) {
  QuantDense q(QuantDenseOptions(5, 2));
  try {
    q->forward(torch::randn({2, 4}));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("last dimension 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(QuantDense(QuantDenseOptions(0, 2)), std::invalid_argument);
}

TEST(QuantDense, AcceptsQuantizerObjects) {
  auto q = std::make_shared<onebit::quantizers::SteSign>(0.5);
  QuantDense d(QuantDenseOptions(3, 2).input_quantizer(q).kernel_quantizer(q).kernel_constraint(
      std::make_shared<onebit::constraints::WeightClip>(0.5)));
  EXPECT_EQ(d->input_quantizer().get(), q.get());
  std::ostringstream s;
  d->pretty_print(s);
  EXPECT_NE(s.str().find("kernel_quantizer=ste_sign"), std::string::npos);
}

TEST(QuantConv2d, WithoutQuantizersEqualsConv2d) {
  torch::manual_seed(6);
  QuantConv2d q(QuantConv2dOptions(3, 8, 3).stride(2).padding(1).dilation(1));
  torch::manual_seed(6);
  torch::nn::Conv2d ref(torch::nn::Conv2dOptions(3, 8, 3).stride(2).padding(1));
  EXPECT_TRUE(torch::equal(q->weight, ref->weight));
  EXPECT_TRUE(torch::equal(q->bias, ref->bias));
  auto x = torch::randn({2, 3, 11, 9});
  EXPECT_TRUE(torch::equal(q->forward(x), ref->forward(x)));
}

TEST(QuantConv2d, BinaryEqualsConvOnSignsAcrossOptions) {
  struct Case {
    int64_t in, out, k, stride, pad, dilation, groups;
  };
  for (const auto& c : std::vector<Case>{{3, 4, 3, 1, 0, 1, 1},
                                         {4, 6, 3, 2, 1, 1, 2},
                                         {2, 2, 5, 1, 2, 2, 1},
                                         {8, 8, 1, 1, 0, 1, 4},
                                         {5, 7, 2, 3, 1, 1, 1}}) {
    torch::manual_seed(7);
    QuantConv2d q(QuantConv2dOptions(c.in, c.out, c.k)
                      .stride(c.stride)
                      .padding(c.pad)
                      .dilation(c.dilation)
                      .groups(c.groups)
                      .input_quantizer("ste_sign")
                      .kernel_quantizer("ste_sign")
                      .kernel_constraint("weight_clip"));
    auto x = torch::randn({2, c.in, 13, 12});
    auto expected = torch::conv2d(pm_sign(x), pm_sign(q->weight), q->bias, c.stride, c.pad, c.dilation,
                                  c.groups);
    EXPECT_TRUE(torch::allclose(q->forward(x), expected, 0, 1e-5))
        << "in " << c.in << " k " << c.k << " stride " << c.stride;
  }
}

TEST(QuantConv2d, SamePaddingShapesFollowKeras) {
  for (int64_t stride : {1, 2, 3}) {
    for (int64_t k : {1, 2, 3, 4}) {
      for (int64_t size : {7, 8}) {
        QuantConv2d q(QuantConv2dOptions(1, 1, k).stride(stride).padding(torch::kSame).bias(false));
        auto y = q->forward(torch::randn({1, 1, size, size}));
        const int64_t want = (size + stride - 1) / stride;
        EXPECT_EQ(y.size(2), want) << "k " << k << " stride " << stride << " size " << size;
        EXPECT_EQ(y.size(3), want);
      }
    }
  }
}

TEST(QuantConv2d, OnePaddingEqualsConvOnInputPaddedWithOnes) {
  torch::manual_seed(8);
  QuantConv2d q(QuantConv2dOptions(3, 5, 3)
                    .padding(torch::kSame)
                    .pad_values(1.0)
                    .bias(false)
                    .input_quantizer("ste_sign")
                    .kernel_quantizer("ste_sign")
                    .kernel_constraint("weight_clip"));
  auto x = torch::randn({2, 3, 6, 6});
  auto padded = torch::constant_pad_nd(pm_sign(x), {1, 1, 1, 1}, 1.0);
  auto expected = torch::conv2d(padded, pm_sign(q->weight));
  EXPECT_TRUE(torch::equal(q->forward(x), expected));
  // Zero padding differs at the border.
  QuantConv2d z(QuantConv2dOptions(3, 5, 3).padding(torch::kSame).bias(false).input_quantizer(
                    "ste_sign").kernel_quantizer("ste_sign").kernel_constraint("weight_clip"));
  {
    torch::NoGradGuard g;
    z->weight.copy_(q->weight);
  }
  auto zy = z->forward(x);
  EXPECT_TRUE(torch::equal(zy, torch::conv2d(pm_sign(x), pm_sign(q->weight), {}, 1, 1)));
  EXPECT_FALSE(torch::equal(zy, q->forward(x)));
}

TEST(QuantConv2d, GradientReachesLatentWeights) {
  torch::manual_seed(9);
  QuantConv2d q(QuantConv2dOptions(2, 3, 3).bias(false).input_quantizer("ste_sign").kernel_quantizer(
                    "ste_sign").kernel_constraint("weight_clip"));
  {
    torch::NoGradGuard g;
    q->weight.mul_(10).clamp_(-1.5, 1.5);  // some latent weights outside the clip
  }
  auto x = torch::randn({2, 2, 5, 5});
  q->forward(x).sum().backward();
  // Reference: the same conv on signs with autograd on the quantized kernel.
  auto wq = pm_sign(q->weight.detach()).requires_grad_(true);
  torch::conv2d(pm_sign(x), wq).sum().backward();
  auto mask = q->weight.detach().abs().le(1).to(torch::kFloat);
  EXPECT_TRUE(torch::allclose(q->weight.grad(), wq.grad() * mask));
  EXPECT_GT(mask.sum().item<float>(), 0);
  EXPECT_LT(mask.sum().item<float>(), mask.numel());
}

TEST(QuantConv2d, ErrorsAreClear) {
  EXPECT_THROW(QuantConv2d(QuantConv2dOptions(3, 4, 3).groups(2)), std::invalid_argument);
  EXPECT_THROW(QuantConv2d(QuantConv2dOptions(3, 4, 0)), std::invalid_argument);
  QuantConv2d q(QuantConv2dOptions(3, 4, 3));
  try {
    q->forward(torch::randn({1, 2, 8, 8}));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[N, 3, *, *]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(q->forward(torch::randn({1, 3, 2, 2})), std::invalid_argument);
  EXPECT_THROW(ConvPadding<2>(std::string("full")), std::invalid_argument);
}

TEST(QuantConv1dAnd3d, BinaryEqualsConvOnSigns) {
  torch::manual_seed(10);
  QuantConv1d c1(QuantConv1dOptions(3, 4, 3).padding(1).input_quantizer("ste_sign").kernel_quantizer(
                     "ste_sign").kernel_constraint("weight_clip"));
  auto x1 = torch::randn({2, 3, 10});
  EXPECT_TRUE(torch::allclose(c1->forward(x1),
                              torch::conv1d(pm_sign(x1), pm_sign(c1->weight), c1->bias, 1, 1), 0, 1e-5));
  QuantConv3d c3(QuantConv3dOptions(2, 3, 2).input_quantizer("ste_sign").kernel_quantizer(
                     "ste_sign").kernel_constraint("weight_clip"));
  auto x3 = torch::randn({1, 2, 4, 5, 6});
  EXPECT_TRUE(torch::allclose(c3->forward(x3), torch::conv3d(pm_sign(x3), pm_sign(c3->weight), c3->bias),
                              0, 1e-5));
}

TEST(BatchNorm, MatchesTorchAndFolds) {
  torch::manual_seed(11);
  BatchNorm bn(BatchNormOptions(4).scale(false).momentum(0.1).eps(1e-5));
  torch::nn::BatchNorm2d ref(torch::nn::BatchNorm2dOptions(4).momentum(0.1).eps(1e-5));
  auto x = torch::randn({8, 4, 3, 3}) * 3 + 1;
  auto y = bn->forward(x);
  auto yr = ref->forward(x);
  EXPECT_TRUE(torch::allclose(y, yr, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(bn->running_mean, ref->running_mean));
  EXPECT_TRUE(torch::allclose(bn->running_var, ref->running_var));
  EXPECT_FALSE(bn->weight.defined());  // scale=false: no gamma
  EXPECT_EQ(bn->parameters().size(), 1u);
  bn->eval();
  auto [m, b] = bn->folded();
  auto folded = x * m.view({1, 4, 1, 1}) + b.view({1, 4, 1, 1});
  EXPECT_TRUE(torch::allclose(bn->forward(x), folded, 1e-5, 1e-5));
  EXPECT_THROW(bn->forward(torch::randn({2, 3})), std::invalid_argument);
}

TEST(Constraints, WeightClipAndApplyConstraints) {
  onebit::constraints::WeightClip clip(0.5);
  auto t = torch::tensor({-2.f, -0.5f, 0.f, 0.3f, 0.7f});
  clip.apply(t);
  EXPECT_TRUE(torch::equal(t, torch::tensor({-0.5f, -0.5f, 0.f, 0.3f, 0.5f})));
  EXPECT_THROW(onebit::constraints::WeightClip(0.0), std::invalid_argument);
  EXPECT_THROW(onebit::constraints::from_json("max_norm"), std::invalid_argument);
  auto c = onebit::constraints::from_json({{"class_name", "weight_clip"}, {"config", {{"clip_value", 2.0}}}});
  EXPECT_EQ(c->to_json()["config"]["clip_value"], 2.0);

  // Nested modules: only constrained kernels change; biases and unconstrained layers do not.
  auto inner = std::make_shared<torch::nn::Module>();
  inner->register_module("0", QuantDense(QuantDenseOptions(4, 4).kernel_quantizer("ste_sign").kernel_constraint(
                                  "weight_clip")));
  auto model = std::make_shared<torch::nn::Module>();
  model->register_module("0", inner);
  model->register_module("1", QuantDense(QuantDenseOptions(4, 2)));
  torch::NoGradGuard g;
  for (auto& p : model->parameters()) p.fill_(3.0);
  onebit::apply_constraints(*model);
  auto params = model->named_parameters();
  EXPECT_TRUE(params["0.0.weight"].eq(1.0).all().item<bool>());
  EXPECT_TRUE(params["0.0.bias"].eq(3.0).all().item<bool>());
  EXPECT_TRUE(params["1.weight"].eq(3.0).all().item<bool>());
}
