// The binary training path (nn::TrainingKernels::kBinary): QuantConv2d and QuantDense on
// onebit's runtime kernels against LibTorch's float path, forward and backward.

#include <gtest/gtest.h>

#include <c10/core/CPUAllocator.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/torch.h>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ext_test_util.h"
#include "onebit/nn/conv.h"
#include "onebit/nn/dense.h"
#include "onebit/nn/training_kernels.h"
#include "onebit/runtime/kernels.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"
#include "trainer_test_util.h"

using namespace onebit;
using namespace onebit::nn;
using onebit::testing::expect_throw_with;

namespace {

struct Pass {
  at::Tensor y, grad_input, grad_weight, grad_bias;
};

// Forward and backward of `layer` on `x` with the given kernels; the upstream gradient is a
// fixed random tensor so that both paths see the same one.
// With `input_grad` false the input needs no gradient, as a first layer's (the binary path then
// computes the kernel gradient as one matrix product).
template <typename Layer>
Pass run(Layer& layer, const at::Tensor& x, TrainingKernels kernels, const at::Tensor& upstream,
         bool input_grad = true) {
  TrainingKernelsGuard guard(kernels);
  for (auto& p : layer->parameters()) p.mutable_grad() = at::Tensor();
  const at::Tensor input = x.detach().clone().requires_grad_(input_grad);
  Pass p;
  p.y = layer->forward(input);
  (p.y * upstream).sum().backward();
  p.grad_input = input.grad();
  p.grad_weight = layer->weight.grad();
  if (layer->bias.defined()) p.grad_bias = layer->bias.grad();
  return p;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  // Sums of thousands of products in another order: rounding relative to the largest entry.
  const double atol = 1e-5 * (1.0 + b.abs().max().item<double>());
  EXPECT_TRUE(at::allclose(a, b, 1e-4, atol))
      << what << ": max difference " << (a - b).abs().max().item<float>();
}

// Sets the binary path's convolution gradient for a scope (restores the automatic choice).
struct ConvGradientScope {
  explicit ConvGradientScope(nn::detail::ConvGradient g) { nn::detail::set_conv_gradient(g); }
  ~ConvGradientScope() { nn::detail::set_conv_gradient(nn::detail::ConvGradient::kAuto); }
  ConvGradientScope(const ConvGradientScope&) = delete;
  ConvGradientScope& operator=(const ConvGradientScope&) = delete;
};

// Both gradient implementations, whichever this CPU picks by default.
constexpr std::array<nn::detail::ConvGradient, 2> kBothConvGradients{
    nn::detail::ConvGradient::kLibTorch, nn::detail::ConvGradient::kProducts};

std::string describe(nn::detail::ConvGradient g) {
  return g == nn::detail::ConvGradient::kProducts ? "products gradient" : "LibTorch gradient";
}

struct ConvCase {
  int64_t in, out, kernel, stride, dilation, groups, size;
  bool same, one_padding, bias, binary_input;
};

std::string describe(const ConvCase& c) {
  return "in " + std::to_string(c.in) + " out " + std::to_string(c.out) + " k " +
         std::to_string(c.kernel) + " s " + std::to_string(c.stride) + " d " +
         std::to_string(c.dilation) + " g " + std::to_string(c.groups) + " size " +
         std::to_string(c.size) + (c.same ? (c.one_padding ? " same/1" : " same/0") : " valid") +
         (c.bias ? " bias" : "") + (c.binary_input ? " binary input" : " float input");
}

QuantConv2d make_conv(const ConvCase& c) {
  auto o = QuantConv2dOptions(c.in, c.out, c.kernel)
               .stride(c.stride)
               .dilation(c.dilation)
               .groups(c.groups)
               .bias(c.bias)
               .kernel_quantizer("ste_sign")
               .kernel_constraint("weight_clip");
  if (c.binary_input) o.input_quantizer("ste_sign");
  if (c.same) o.padding(torch::kSame).pad_values(c.one_padding ? 1.0 : 0.0);
  return QuantConv2d(o);
}

}  // namespace

TEST(TrainingKernels, BinaryConvEqualsTheFloatPathForwardAndBackward) {
  const std::vector<ConvCase> cases = {
      {32, 64, 3, 1, 1, 1, 13, false, false, false, true},  // larq-mnist's second conv
      {37, 70, 3, 1, 1, 1, 9, true, true, false, true},     // odd counts, one-padding
      {64, 64, 3, 2, 1, 1, 10, true, false, false, true},   // stride 2, zero padding
      {16, 24, 3, 1, 2, 1, 11, true, false, false, true},   // dilation
      {32, 64, 3, 1, 1, 4, 8, true, true, false, true},     // groups
      {3, 8, 1, 1, 1, 1, 7, false, false, false, true},     // 1x1
      {130, 96, 3, 1, 1, 1, 6, false, false, false, true},  // more than two words
      // Large patches; from 64 outputs on the backward pass is conv2d_backward_gemm.
      {128, 72, 3, 2, 1, 1, 9, true, false, false, true},  // stride 2, "same" zero padding
      {120, 64, 3, 1, 2, 1, 10, true, true, true, true},   // dilation, one-padding, bias
      {200, 24, 3, 1, 1, 1, 3, true, false, false, true},  // 3x3 map; 24 outputs: LibTorch
      {8, 16, 3, 1, 1, 1, 9, true, false, true, true},     // bias
      // Deep layers' small maps with one-padding (QuickNet's last stages at 32x32): 1x1 and 2x2
      // maps (per-tap products on AVX-512 from 64 outputs), stride 2 with the extra row and
      // column after (asymmetric "same" padding, 3 -> 2 and 2 -> 1).
      {64, 64, 3, 1, 1, 1, 1, true, true, false, true},
      {48, 96, 3, 1, 1, 1, 2, true, true, true, true},
      {40, 72, 3, 2, 1, 1, 4, true, true, false, true},
      {16, 64, 3, 2, 1, 1, 2, true, true, false, true},
      {16, 24, 3, 2, 1, 1, 7, true, true, false, true},
      {1, 32, 3, 1, 1, 1, 28, false, false, false, false},  // float input (larq-mnist's first)
      {3, 16, 3, 2, 1, 1, 15, true, false, true, false},    // float input, stride, bias
  };
  for (const nn::detail::ConvGradient gradient : kBothConvGradients) {
    const ConvGradientScope scope(gradient);
    for (const ConvCase& c : cases) {
      for (const bool cl_input : {false, true}) {
        SCOPED_TRACE(describe(c) + (cl_input ? ", channels-last input" : ", NCHW input") + ", " +
                     describe(gradient));
        torch::manual_seed(5);
        auto conv = make_conv(c);
        at::Tensor x = torch::randn({3, c.in, c.size, c.size});
        if (cl_input) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        at::Tensor upstream;
        {
          at::NoGradGuard no_grad;
          upstream = torch::randn_like(conv->forward(x));
        }
        const Pass f = run(conv, x, TrainingKernels::kFloat, upstream);
        const Pass b = run(conv, x, TrainingKernels::kBinary, upstream);
        // The output keeps the input's layout (channels-last for one input channel), and its values
        // are the float path's: bit for bit for integer sums, within rounding with a float input or
        // a bias.
        EXPECT_TRUE(b.y.is_contiguous(cl_input || c.in == 1 ? at::MemoryFormat::ChannelsLast
                                                            : at::MemoryFormat::Contiguous));
        ASSERT_EQ(b.y.sizes(), f.y.sizes());
        if (c.binary_input && !c.bias) {
          EXPECT_TRUE(at::equal(b.y, f.y))
              << "max difference " << (b.y - f.y).abs().max().item<float>();
        } else {
          expect_close(b.y, f.y, "output");
        }
        expect_close(b.grad_input, f.grad_input, "input gradient");
        expect_close(b.grad_weight, f.grad_weight, "kernel gradient");
        expect_close(b.grad_bias, f.grad_bias, "bias gradient");
        // The same without an input gradient.
        const Pass f1 = run(conv, x, TrainingKernels::kFloat, upstream, false);
        const Pass b1 = run(conv, x, TrainingKernels::kBinary, upstream, false);
        EXPECT_FALSE(b1.grad_input.defined());
        expect_close(b1.grad_weight, f1.grad_weight, "kernel gradient without input gradient");
        expect_close(b1.grad_bias, f1.grad_bias, "bias gradient without input gradient");
      }
    }
  }
}

// Scaled signs (Bi-Real's magnitude_aware_sign, XNOR-Net's xnor_weight_scale): the runtime's
// integer sums times each output channel's scale, plus the bias; the float path sums the scaled
// products, so the outputs agree within rounding, and the gradients (the float path's backward
// on the same scaled kernel, through the quantizer's own gradient) too.
TEST(TrainingKernels, ScaledSignKernelsRunOnTheRuntimeWithinRounding) {
  for (const std::string quantizer : {"magnitude_aware_sign", "xnor_weight_scale"}) {
    for (const bool bias : {false, true}) {
      for (const int64_t groups : {1, 4}) {
        SCOPED_TRACE(quantizer + (bias ? ", bias" : "") + ", groups " + std::to_string(groups));
        torch::manual_seed(9);
        QuantConv2d conv(QuantConv2dOptions(16, 64, 3)
                             .groups(groups)
                             .bias(bias)
                             .padding(torch::kSame)
                             .input_quantizer("ste_sign")
                             .kernel_quantizer(quantizer)
                             .kernel_constraint("weight_clip"));
        {
          TrainingKernelsGuard guard(TrainingKernels::kBinary);
          EXPECT_TRUE(uses_runtime_kernels(*conv));
        }
        const at::Tensor x = torch::randn({2, 16, 7, 7});
        at::Tensor upstream;
        {
          at::NoGradGuard no_grad;
          upstream = torch::randn_like(conv->forward(x));
        }
        const Pass f = run(conv, x, TrainingKernels::kFloat, upstream);
        const Pass b = run(conv, x, TrainingKernels::kBinary, upstream);
        ASSERT_EQ(b.y.sizes(), f.y.sizes());
        expect_close(b.y, f.y, "output");
        expect_close(b.grad_input, f.grad_input, "input gradient");
        expect_close(b.grad_weight, f.grad_weight, "kernel gradient");
        expect_close(b.grad_bias, f.grad_bias, "bias gradient");
        // Not the float path in disguise: the scaled sums are exact before one rounding, the
        // float path's are not, so some outputs differ in their last bits.
        if (!bias) EXPECT_FALSE(at::equal(b.y, f.y));
      }
    }
  }
  // A dense layer with a scaled kernel too.
  torch::manual_seed(10);
  QuantDense dense(QuantDenseOptions(100, 12)
                       .input_quantizer("ste_sign")
                       .kernel_quantizer("magnitude_aware_sign"));
  const at::Tensor x = torch::randn({3, 100});
  at::Tensor upstream = torch::randn({3, 12});
  const Pass f = run(dense, x, TrainingKernels::kFloat, upstream);
  const Pass b = run(dense, x, TrainingKernels::kBinary, upstream);
  expect_close(b.y, f.y, "dense output");
  expect_close(b.grad_weight, f.grad_weight, "dense kernel gradient");
}

// The kernel quantizer's gradient folded into the binary convolution's (ste_sign with and
// without a clip, magnitude_aware_sign): on latent weights that reach past the clip (so the
// masks matter), with zero and one padding, both gradient implementations and both layouts, the
// kernel gradient is the float path's (whose quantizer node masks it), exactly zero where the
// latent weight is outside the clip, and no quantizer node sits between the convolution and
// the weight.
namespace {

// True when the autograd node that made `y` hands its gradient straight to `weight` (no
// quantizer node between).
bool feeds_the_weight_directly(const at::Tensor& y, const at::Tensor& weight) {
  for (const auto& edge : y.grad_fn()->next_edges()) {
    const auto* acc = dynamic_cast<const torch::autograd::AccumulateGrad*>(edge.function.get());
    if (acc != nullptr && acc->variable.is_same(weight)) return true;
  }
  return false;
}

}  // namespace

TEST(TrainingKernels, TheKernelQuantizersGradientIsFoldedIntoTheBinaryConvolutions) {
  using quantizers::QuantizerPtr;
  const std::vector<std::pair<QuantizerPtr, std::optional<double>>> kernels = {
      {std::make_shared<quantizers::SteSign>(1.0), 1.0},
      {std::make_shared<quantizers::SteSign>(0.5), 0.5},
      {std::make_shared<quantizers::SteSign>(std::nullopt), std::nullopt},
      {std::make_shared<quantizers::SteSign>(std::numeric_limits<double>::infinity()),
       std::numeric_limits<double>::infinity()},
      {std::make_shared<quantizers::MagnitudeAwareSign>(0.75), 0.75},
  };
  for (const nn::detail::ConvGradient gradient : kBothConvGradients) {
    const ConvGradientScope scope(gradient);
    for (const auto& [quantizer, clip] : kernels) {
      for (const bool one_padding : {false, true}) {
        // 2x2 outputs with 64 outputs: per-tap products under kProducts and on AVX-512.
        for (const int64_t size : {2, 7}) {
          for (const bool cl_input : {false, true}) {
            SCOPED_TRACE(quantizer->to_json().dump() + (one_padding ? ", one-padding" : "") +
                         ", size " + std::to_string(size) + (cl_input ? ", channels-last" : "") +
                         ", " + describe(gradient));
            torch::manual_seed(21);
            QuantConv2d conv(QuantConv2dOptions(24, 64, 3)
                                 .padding(torch::kSame)
                                 .pad_values(one_padding ? 1.0 : 0.0)
                                 .input_quantizer("ste_sign")
                                 .kernel_quantizer(quantizer)
                                 .kernel_constraint("weight_clip"));
            {
              at::NoGradGuard no_grad;
              conv->weight.copy_(torch::randn_like(conv->weight) * 0.8);
            }
            at::Tensor x = torch::randn({3, 24, size, size});
            if (cl_input) x = x.contiguous(at::MemoryFormat::ChannelsLast);
            const at::Tensor upstream = torch::randn({3, 64, size, size});
            const Pass f = run(conv, x, TrainingKernels::kFloat, upstream);
            const Pass b = run(conv, x, TrainingKernels::kBinary, upstream);
            expect_close(b.y, f.y, "output");
            expect_close(b.grad_input, f.grad_input, "input gradient");
            expect_close(b.grad_weight, f.grad_weight, "kernel gradient");
            EXPECT_TRUE(b.grad_weight.is_contiguous());
            if (clip && std::isfinite(*clip)) {
              const at::Tensor outside = conv->weight.detach().abs().gt(*clip);
              ASSERT_GT(outside.sum().item<int64_t>(), 0);
              EXPECT_TRUE(at::equal(b.grad_weight.masked_select(outside),
                                    at::zeros({outside.sum().item<int64_t>()})));
              EXPECT_GT(
                  b.grad_weight.masked_select(outside.logical_not()).abs().min().item<float>(),
                  0.0f);
            }
            // The convolution's node hands its kernel gradient straight to the weight.
            TrainingKernelsGuard guard(TrainingKernels::kBinary);
            const at::Tensor y = conv->forward(x.detach().requires_grad_(false));
            EXPECT_TRUE(feeds_the_weight_directly(y, conv->weight));
          }
        }
      }
    }
  }
  // A quantizer without a FoldedGradient keeps its own node (xnor_weight_scale: its scale is
  // part of the gradient).
  {
    QuantConv2d conv(QuantConv2dOptions(24, 64, 3)
                         .input_quantizer("ste_sign")
                         .kernel_quantizer("xnor_weight_scale")
                         .kernel_constraint("weight_clip"));
    TrainingKernelsGuard guard(TrainingKernels::kBinary);
    ASSERT_TRUE(uses_runtime_kernels(*conv));
    EXPECT_FALSE(
        feeds_the_weight_directly(conv->forward(torch::randn({2, 24, 5, 5})), conv->weight));
  }
  // Dense layers the same way.
  for (const auto& [quantizer, clip] : kernels) {
    SCOPED_TRACE("dense, " + quantizer->to_json().dump());
    torch::manual_seed(23);
    QuantDense dense(QuantDenseOptions(100, 70)
                         .input_quantizer("ste_sign")
                         .kernel_quantizer(quantizer)
                         .kernel_constraint("weight_clip"));
    {
      at::NoGradGuard no_grad;
      dense->weight.copy_(torch::randn_like(dense->weight) * 0.8);
    }
    const at::Tensor x = torch::randn({5, 100});
    const at::Tensor upstream = torch::randn({5, 70});
    const Pass f = run(dense, x, TrainingKernels::kFloat, upstream);
    const Pass b = run(dense, x, TrainingKernels::kBinary, upstream);
    expect_close(b.y, f.y, "dense output");
    expect_close(b.grad_input, f.grad_input, "dense input gradient");
    expect_close(b.grad_weight, f.grad_weight, "dense kernel gradient");
    if (clip && std::isfinite(*clip)) {
      const at::Tensor outside = dense->weight.detach().abs().gt(*clip);
      ASSERT_GT(outside.sum().item<int64_t>(), 0);
      EXPECT_EQ(b.grad_weight.masked_select(outside).abs().max().item<float>(), 0.0f);
    }
    TrainingKernelsGuard guard(TrainingKernels::kBinary);
    EXPECT_TRUE(feeds_the_weight_directly(dense->forward(x), dense->weight));
  }
}

// fold_kernel_gradient against the composed operations it replaces, bit for bit: either
// layout of the gradient, with and without each of the padding's part, the mask (NaN and
// infinite latent weights included) and the scale.
TEST(TrainingKernels, FoldingTheKernelGradientGivesTheComposedOperationsValues) {
  torch::manual_seed(22);
  const double kInfinity = std::numeric_limits<double>::infinity();
  const at::Tensor gw = torch::randn({70, 13, 3, 3});
  at::Tensor latent = torch::randn({70, 13, 3, 3}) * 1.5;
  latent.view(-1)[5] = std::numeric_limits<float>::quiet_NaN();
  latent.view(-1)[6] = std::numeric_limits<float>::infinity();
  latent.view(-1)[7] = -0.0f;
  const at::Tensor padding = torch::randn({70, 3, 3});
  const at::Tensor scale = torch::rand({70});
  for (const bool cl : {false, true}) {
    for (const bool pad : {false, true}) {
      for (const std::optional<double> clip :
           {std::optional<double>(1.25), std::optional<double>(kInfinity),
            std::optional<double>()}) {
        for (const bool with_latent : {false, true}) {
          for (const bool scaled : {false, true}) {
            SCOPED_TRACE(std::string(cl ? "channels-last" : "contiguous") +
                         (pad ? ", padding" : "") + ", clip " +
                         (clip ? std::to_string(*clip) : "none") + (with_latent ? ", latent" : "") +
                         (scaled ? ", scaled" : ""));
            at::Tensor expected = pad ? gw + padding.unsqueeze(1) : gw.clone();
            if (with_latent && clip) expected = expected * latent.abs().le(*clip).to(at::kFloat);
            if (scaled) expected = scale.view({-1, 1, 1, 1}) * expected;
            const at::Tensor input =
                cl ? gw.contiguous(at::MemoryFormat::ChannelsLast) : gw.clone();
            const at::Tensor got = nn::detail::fold_kernel_gradient(
                input, pad ? padding : at::Tensor(), with_latent ? latent : at::Tensor(), clip,
                scaled ? scale : at::Tensor());
            EXPECT_TRUE(got.is_contiguous());
            EXPECT_TRUE(at::equal(got, expected))
                << "max difference " << (got - expected).abs().max().item<float>();
          }
        }
      }
    }
  }
  // A dense kernel's (O, I).
  const at::Tensor gd = torch::randn({70, 40}), ld = torch::randn({70, 40});
  EXPECT_TRUE(at::equal(nn::detail::fold_kernel_gradient(gd.clone(), {}, ld, 1.0, scale),
                        scale.view({-1, 1}) * (gd * ld.abs().le(1.0).to(at::kFloat))));
  expect_throw_with<c10::Error>(
      [&] {
        nn::detail::fold_kernel_gradient(gw, torch::randn({70, 3}), {}, 1.0, {});
      },
      {"padding's part needs 630 values"});
  expect_throw_with<c10::Error>(
      [&] {
        nn::detail::fold_kernel_gradient(gw, {}, torch::randn({70, 13, 3, 1}), 1.0, {});
      },
      {"latent kernel"});
  expect_throw_with<c10::Error>(
      [&] { nn::detail::fold_kernel_gradient(gw, {}, {}, 1.0, torch::rand({69})); }, {"70 scales"});
}

namespace {

// A one-group 2-D convolution for the gradient tests.
struct GradCase {
  int64_t n, c, o, h, w, kh, kw, sh, sw, ph, pw, dh, dw;
};

// Random input and kernel for `c` (after seeding with `seed`), its geometry and the output.
struct GradProblem {
  at::Tensor x, w, y;
  std::vector<int64_t> stride, padding, dilation;
};
GradProblem make_problem(const GradCase& c, uint64_t seed) {
  torch::manual_seed(seed);
  GradProblem p;
  p.x = torch::randn({c.n, c.c, c.h, c.w});
  p.w = torch::randn({c.o, c.c, c.kh, c.kw});
  p.stride = {c.sh, c.sw}, p.padding = {c.ph, c.pw}, p.dilation = {c.dh, c.dw};
  p.y = at::convolution(p.x, p.w, {}, p.stride, p.padding, p.dilation, false, {0, 0}, 1);
  return p;
}

}  // namespace

TEST(TrainingKernels, GemmConvolutionGradientEqualsLibTorchsInChunks) {
  // conv2d_backward_gemm against LibTorch's convolution_backward on random values: strides,
  // zero padding, dilation, non-square kernels and maps, either layout, and patch budgets that
  // split the batch into chunks of one, two and all images.
  const std::vector<GradCase> cases = {
      {3, 5, 7, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1},
      {2, 4, 6, 11, 10, 3, 2, 2, 1, 0, 1, 1, 1},
      {4, 3, 5, 12, 9, 3, 3, 1, 2, 2, 1, 2, 1},
      {5, 1, 8, 7, 7, 1, 1, 1, 1, 0, 0, 1, 1},
      {3, 6, 4, 5, 6, 5, 4, 1, 1, 2, 2, 1, 1},
      // Output channels past one 64-bit mask word (70: a four-float tail of two; 130: three
      // words) and more than 256 patch rows, so the sparse form is built in several blocks.
      {4, 3, 70, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1},
      {2, 2, 130, 20, 20, 3, 3, 1, 1, 0, 0, 1, 1},
      // Kernel taps that read only padding for every output are left out of the products: a
      // 3x3 kernel on 1x1 maps ("same": only the centre reads the input), on a 1x2 map (the
      // centre row), stride 2 on 2x2 maps (the first row and column), and dilation 2 on 2x1.
      {3, 6, 9, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1},
      {2, 5, 7, 1, 2, 3, 3, 1, 1, 1, 1, 1, 1},
      {2, 4, 6, 2, 2, 3, 3, 2, 2, 1, 1, 1, 1},
      {2, 3, 5, 2, 1, 3, 3, 1, 1, 2, 2, 2, 2},
  };
  for (const GradCase& c : cases) {
    const auto [x, w, y, stride, padding, dilation] = make_problem(c, 11);
    // A dense gradient, and one with about a quarter of its entries set (as behind a max pool;
    // some images' gradients all zero) on the dense and on the sparse products.
    for (const bool sparse_gradient : {false, true}) {
      at::Tensor g = torch::randn_like(y);
      if (sparse_gradient)
        g = g * torch::rand_like(g).lt(0.25) * torch::rand({c.n, 1, 1, 1}).lt(0.8);
      const auto [ref_gx, ref_gw, unused] =
          at::convolution_backward(g, x, w, at::OptionalIntArrayRef(), stride, padding, dilation,
                                   false, {0, 0}, 1, {true, true, false});
      const int64_t patch = c.kh * c.kw * c.c * y.size(2) * y.size(3);
      for (const int64_t budget : {patch, 2 * patch + 1, c.n * patch}) {
        for (const double density : {0.0, 1.0}) {
          for (const bool cl : {false, true}) {
            SCOPED_TRACE("case n " + std::to_string(c.n) + " c " + std::to_string(c.c) + " k " +
                         std::to_string(c.kh) + "x" + std::to_string(c.kw) + ", budget " +
                         std::to_string(budget) + (cl ? ", channels-last" : ", NCHW") +
                         (sparse_gradient ? ", sparse gradient" : ", dense gradient") +
                         (density > 0 ? " as a sparse matrix" : " as a dense matrix"));
            const auto format = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
            const auto [gx, gw] = nn::detail::conv2d_backward_gemm(
                g.contiguous(format), x.contiguous(format), w, stride, padding, dilation, true,
                true, budget, density);
            EXPECT_TRUE(gx.is_contiguous(at::MemoryFormat::ChannelsLast));
            expect_close(gx, ref_gx, "input gradient");
            expect_close(gw, ref_gw, "kernel gradient");
            const auto [no_gx, only_gw] = nn::detail::conv2d_backward_gemm(
                g, x, w, stride, padding, dilation, false, true, budget, density);
            EXPECT_FALSE(no_gx.defined());
            expect_close(only_gw, ref_gw, "kernel gradient alone");
            const auto [only_gx, no_gw] = nn::detail::conv2d_backward_gemm(
                g, x, w, stride, padding, dilation, true, false, budget, density);
            EXPECT_FALSE(no_gw.defined());
            expect_close(only_gx, ref_gx, "input gradient alone");
          }
        }
      }
    }
  }
}

TEST(TrainingKernels, PerTapConvolutionGradientEqualsLibTorchs) {
  // conv2d_backward_taps against LibTorch's convolution_backward: the small maps it is chosen
  // for (1x1, 1x2, 2x2 with taps that read only padding), larger maps, strides, dilation,
  // non-square kernels, 1x1 kernels, either layout, each gradient alone, and 1 or 2 threads
  // (the same values bit for bit).
  const std::vector<GradCase> cases = {
      {3, 6, 9, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1},   {2, 5, 7, 1, 2, 3, 3, 1, 1, 1, 1, 1, 1},
      {4, 8, 66, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1},  {2, 4, 6, 2, 2, 3, 3, 2, 2, 1, 1, 1, 1},
      {2, 3, 5, 2, 1, 3, 3, 1, 1, 2, 2, 2, 2},   {3, 5, 7, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1},
      {2, 4, 6, 11, 10, 3, 2, 2, 1, 0, 1, 1, 1}, {4, 3, 5, 12, 9, 3, 3, 1, 2, 2, 1, 2, 1},
      {5, 7, 8, 2, 2, 1, 1, 1, 1, 0, 0, 1, 1},   {3, 6, 4, 5, 6, 5, 4, 1, 1, 2, 2, 1, 1},
  };
  const int threads = at::get_num_threads();
  for (const GradCase& c : cases) {
    const auto [x, w, y, stride, padding, dilation] = make_problem(c, 13);
    const at::Tensor g = torch::randn_like(y);
    const auto [ref_gx, ref_gw, unused] =
        at::convolution_backward(g, x, w, at::OptionalIntArrayRef(), stride, padding, dilation,
                                 false, {0, 0}, 1, {true, true, false});
    std::pair<at::Tensor, at::Tensor> first;
    for (const int t : {1, 2}) {
      for (const bool cl : {false, true}) {
        SCOPED_TRACE("case n " + std::to_string(c.n) + " c " + std::to_string(c.c) + " o " +
                     std::to_string(c.o) + " map " + std::to_string(c.h) + "x" +
                     std::to_string(c.w) + " k " + std::to_string(c.kh) + "x" +
                     std::to_string(c.kw) + ", " + std::to_string(t) + " thread(s)" +
                     (cl ? ", channels-last" : ", NCHW"));
        at::set_num_threads(t);
        const auto format = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
        const auto r = nn::detail::conv2d_backward_taps(g.contiguous(format), x.contiguous(format),
                                                        w, stride, padding, dilation, true, true);
        EXPECT_TRUE(r.first.is_contiguous(at::MemoryFormat::ChannelsLast));
        EXPECT_TRUE(r.second.is_contiguous());
        expect_close(r.first, ref_gx, "input gradient");
        expect_close(r.second, ref_gw, "kernel gradient");
        if (!first.first.defined()) {
          first = r;
        } else {
          EXPECT_TRUE(at::equal(r.first, first.first)) << "the input gradient changed";
          EXPECT_TRUE(at::equal(r.second, first.second)) << "the kernel gradient changed";
        }
        const auto [no_gx, only_gw] =
            nn::detail::conv2d_backward_taps(g, x, w, stride, padding, dilation, false, true);
        EXPECT_FALSE(no_gx.defined());
        expect_close(only_gw, ref_gw, "kernel gradient alone");
        const auto [only_gx, no_gw] =
            nn::detail::conv2d_backward_taps(g, x, w, stride, padding, dilation, true, false);
        EXPECT_FALSE(no_gw.defined());
        expect_close(only_gx, ref_gx, "input gradient alone");
      }
    }
  }
  at::set_num_threads(threads);
  EXPECT_THROW(nn::detail::conv2d_backward_taps(
                   torch::randn({1, 2, 3, 3}), torch::randn({1, 3, 3, 3}),
                   torch::randn({2, 2, 1, 1}), {1, 1}, {0, 0}, {1, 1}, true, true),
               c10::Error);
}

TEST(TrainingKernels, ThePaddingsKernelGradientIsThePaddedConvolutionsLessTheZeroPaddedOnes) {
  // The kernel gradient of a convolution of x padded with v = that of x padded with zeros plus
  // padding_kernel_gradient (for every input channel): "same" 3x3, stride 2 with the extra row
  // after (asymmetric), dilation, a 5x3 kernel, and 1x1 and 2x2 maps.
  struct Case {
    int64_t h, w, kh, kw, s, d, top, bottom, left, right;
  };
  const std::vector<Case> cases = {{6, 5, 3, 3, 1, 1, 1, 1, 1, 1}, {6, 6, 3, 3, 2, 1, 0, 1, 0, 1},
                                   {7, 6, 3, 3, 1, 2, 2, 2, 2, 2}, {5, 4, 5, 3, 1, 1, 2, 2, 1, 1},
                                   {1, 1, 3, 3, 1, 1, 1, 1, 1, 1}, {2, 2, 3, 3, 1, 1, 1, 1, 1, 1}};
  for (const Case& c : cases) {
    for (const double value : {1.0, -0.5}) {
      SCOPED_TRACE("map " + std::to_string(c.h) + "x" + std::to_string(c.w) + " kernel " +
                   std::to_string(c.kh) + "x" + std::to_string(c.kw) + " stride " +
                   std::to_string(c.s) + " dilation " + std::to_string(c.d) + " pad value " +
                   std::to_string(value));
      torch::manual_seed(3);
      const at::Tensor x = torch::randn({3, 4, c.h, c.w}).to(at::kDouble);
      const at::Tensor w = torch::randn({5, 4, c.kh, c.kw}).to(at::kDouble);
      const std::vector<int64_t> stride{c.s, c.s}, dilation{c.d, c.d}, zero{0, 0};
      const std::vector<int64_t> pads{c.left, c.right, c.top, c.bottom};
      const at::Tensor xv = at::constant_pad_nd(x, pads, value);
      const at::Tensor x0 = at::constant_pad_nd(x, pads, 0.0);
      const at::Tensor y = at::convolution(xv, w, {}, stride, zero, dilation, false, zero, 1);
      const at::Tensor g = torch::randn_like(y);
      const auto gw = [&](const at::Tensor& input) {
        return std::get<1>(at::convolution_backward(g, input, w, at::OptionalIntArrayRef(), stride,
                                                    zero, dilation, false, zero, 1,
                                                    {false, true, false}));
      };
      const at::Tensor part = nn::detail::padding_kernel_gradient(
          g.to(at::kFloat), {c.h, c.w}, {c.kh, c.kw}, stride, dilation, {c.top, c.left}, value);
      ASSERT_EQ(part.sizes(), (std::vector<int64_t>{5, c.kh, c.kw}));
      const at::Tensor expected = (gw(xv) - gw(x0)).to(at::kFloat);
      expect_close(part.unsqueeze(1).expand_as(expected), expected, "padding's kernel gradient");
    }
  }
}

TEST(TrainingKernels, SparseGradientsBehindAMaxPoolMatchTheFloatPath) {
  // A binary conv followed by a 2x2 max pool: a quarter of the output gradient is nonzero, so
  // the binary path multiplies with it as a sparse matrix, also with 32 outputs (else LibTorch's
  // convolution gradient); and a first layer (float input, no input gradient). With the
  // products gradient (the default without AVX-512) and LibTorch's.
  for (const nn::detail::ConvGradient gradient : kBothConvGradients) {
    const ConvGradientScope scope(gradient);
    for (const ConvCase& c : {ConvCase{32, 32, 3, 1, 1, 1, 13, false, false, false, true},
                              ConvCase{48, 64, 3, 1, 1, 1, 10, true, true, true, true},
                              ConvCase{1, 32, 3, 1, 1, 1, 28, false, false, false, false}}) {
      SCOPED_TRACE(describe(c) + ", " + describe(gradient));
      torch::manual_seed(3);
      auto conv = make_conv(c);
      const at::Tensor x = torch::randn({8, c.in, c.size, c.size});
      auto pass = [&](TrainingKernels kernels, bool input_grad) {
        TrainingKernelsGuard guard(kernels);
        for (auto& p : conv->parameters()) p.mutable_grad() = at::Tensor();
        const at::Tensor input = x.detach().clone().requires_grad_(input_grad);
        // Binary sums tie often, and LibTorch's channels-last and NCHW pools may pick different
        // maxima among ties: a fixed offset below the sums' spacing of 2 makes every maximum
        // unique.
        const at::Tensor z = conv->forward(input);
        const at::Tensor y = at::max_pool2d(
            z + at::arange(z[0].numel()).view_as(z[0]).to(at::kFloat) * 1e-4f, {2, 2});
        y.pow(2).sum().backward();
        return std::make_pair(input.grad(), conv->weight.grad().clone());
      };
      for (const bool input_grad : {true, false}) {
        const auto [fx, fw] = pass(TrainingKernels::kFloat, input_grad);
        const auto [bx, bw] = pass(TrainingKernels::kBinary, input_grad);
        expect_close(bx, fx, "input gradient");
        expect_close(bw, fw, "kernel gradient");
      }
    }
  }
}

TEST(TrainingKernels, BinaryDenseEqualsTheFloatPathForwardAndBackward) {
  for (const bool binary_input : {true, false}) {
    for (const bool bias : {false, true}) {
      SCOPED_TRACE(std::string(binary_input ? "binary" : "float") + " input, bias " +
                   (bias ? "on" : "off"));
      torch::manual_seed(9);
      auto o = QuantDenseOptions(200, 37)
                   .bias(bias)
                   .kernel_quantizer("ste_sign")
                   .kernel_constraint("weight_clip");
      if (binary_input) o.input_quantizer("ste_sign");
      QuantDense dense(o);
      const at::Tensor x = torch::randn({5, 200});
      const at::Tensor upstream = torch::randn({5, 37});
      const Pass f = run(dense, x, TrainingKernels::kFloat, upstream);
      const Pass b = run(dense, x, TrainingKernels::kBinary, upstream);
      if (binary_input && !bias) {
        EXPECT_TRUE(at::equal(b.y, f.y));
      } else {
        expect_close(b.y, f.y, "output");
      }
      expect_close(b.grad_input, f.grad_input, "input gradient");
      expect_close(b.grad_weight, f.grad_weight, "kernel gradient");
      expect_close(b.grad_bias, f.grad_bias, "bias gradient");
    }
  }
}

TEST(TrainingKernels, ResultsDoNotDependOnTheThreadCount) {
  // Outputs and gradients, on every backward implementation (LibTorch's convolution gradient;
  // with the products gradient, 32 outputs: LibTorch's, 64: conv2d_backward_gemm, whose
  // products split over the threads; a sparse upstream gradient: its sparse products, also with
  // 32 outputs).
  for (const nn::detail::ConvGradient gradient : kBothConvGradients) {
    const ConvGradientScope scope(gradient);
    for (const auto [outputs, sparse] :
         {std::pair{32, false}, std::pair{64, false}, std::pair{32, true}, std::pair{64, true}}) {
      SCOPED_TRACE(std::to_string(outputs) + " output channels" +
                   (sparse ? ", sparse gradient, " : ", ") + describe(gradient));
      torch::manual_seed(2);
      auto conv = make_conv({64, outputs, 3, 1, 1, 1, 14, true, true, false, true});
      const at::Tensor x = torch::randn({4, 64, 14, 14});
      at::Tensor upstream;
      {
        at::NoGradGuard no_grad;
        upstream = torch::randn_like(conv->forward(x));
        if (sparse) upstream = upstream * torch::rand_like(upstream).lt(0.2);
      }
      const int before = at::get_num_threads();
      at::set_num_threads(1);
      const Pass one = run(conv, x, TrainingKernels::kBinary, upstream);
      at::set_num_threads(2);
      const Pass two = run(conv, x, TrainingKernels::kBinary, upstream);
      at::set_num_threads(before);
      EXPECT_TRUE(at::equal(one.y, two.y));
      EXPECT_TRUE(at::equal(one.grad_input, two.grad_input));
      EXPECT_TRUE(at::equal(one.grad_weight, two.grad_weight));
    }
  }
}

TEST(TrainingKernels, TheConvGradientFollowsTheCpuUnlessSet) {
  using nn::detail::conv_gradient_uses_products;
  using nn::detail::ConvGradient;
  EXPECT_EQ(nn::detail::conv_gradient(), ConvGradient::kAuto);
  for (const ConvGradient g : kBothConvGradients) {
    const ConvGradientScope scope(g);
    EXPECT_EQ(nn::detail::conv_gradient(), g);
  }
  EXPECT_EQ(nn::detail::conv_gradient(), ConvGradient::kAuto);
  // Output gradients: dense on 4x4 and 1x1 maps, and a max pool's quarter nonzero.
  const at::Tensor dense4 = torch::randn({2, 64, 4, 4}), dense1 = torch::randn({2, 512, 1, 1});
  const at::Tensor sparse4 = dense4 * (torch::arange(16).view({1, 1, 4, 4}) % 4 == 0);
  const at::Tensor narrow4 = torch::randn({2, 32, 4, 4});
  for (const ConvGradient g : {ConvGradient::kAuto, ConvGradient::kLibTorch}) {
    // With AVX-512, kAuto picks the products for maps of up to 2x2 pixels with 64 or more
    // outputs only.
    const bool auto_avx512 =
        g == ConvGradient::kAuto && runtime::isa_supported(runtime::Isa::kAvx512);
    if (g == ConvGradient::kLibTorch || auto_avx512) {
      EXPECT_FALSE(conv_gradient_uses_products(g, 64, dense4, true));
      EXPECT_FALSE(conv_gradient_uses_products(g, 64, dense4, false));
      EXPECT_FALSE(conv_gradient_uses_products(g, 64, sparse4, true));
      EXPECT_FALSE(conv_gradient_uses_products(g, 32, torch::randn({2, 32, 1, 1}), true));
      EXPECT_EQ(conv_gradient_uses_products(g, 512, dense1, true), auto_avx512);
      EXPECT_EQ(conv_gradient_uses_products(g, 256, torch::randn({2, 256, 2, 2}), true),
                auto_avx512);
      EXPECT_EQ(conv_gradient_uses_products(g, 128, torch::randn({2, 128, 1, 4}), false),
                auto_avx512);
      EXPECT_FALSE(conv_gradient_uses_products(g, 256, torch::randn({2, 256, 3, 2}), true));
    }
  }
  // The AVX2 rules: 64 or more outputs, no input gradient, or a sparse output gradient.
  for (const ConvGradient g : {ConvGradient::kProducts, ConvGradient::kAuto}) {
    if (g == ConvGradient::kAuto && runtime::isa_supported(runtime::Isa::kAvx512)) continue;
    EXPECT_TRUE(conv_gradient_uses_products(g, 64, dense4, true));
    EXPECT_TRUE(conv_gradient_uses_products(g, 32, narrow4, false));
    EXPECT_TRUE(conv_gradient_uses_products(g, 32, narrow4 * (sparse4.slice(1, 0, 32) != 0), true));
    EXPECT_FALSE(conv_gradient_uses_products(g, 32, narrow4, true));
  }
  // The two give different roundings of the same gradients: the kernel gradient of a layer with
  // 64 outputs (products there) is not bit-equal, so each setting really picks its own code.
  torch::manual_seed(4);
  auto conv = make_conv({96, 64, 3, 1, 1, 1, 12, true, false, false, true});
  const at::Tensor x = torch::randn({6, 96, 12, 12});
  at::Tensor upstream;
  {
    at::NoGradGuard no_grad;
    upstream = torch::randn_like(conv->forward(x));
  }
  std::vector<Pass> passes;
  for (const nn::detail::ConvGradient g : kBothConvGradients) {
    const ConvGradientScope scope(g);
    passes.push_back(run(conv, x, TrainingKernels::kBinary, upstream));
  }
  EXPECT_TRUE(at::equal(passes[0].y, passes[1].y));
  expect_close(passes[0].grad_weight, passes[1].grad_weight, "kernel gradient");
  EXPECT_FALSE(at::equal(passes[0].grad_weight, passes[1].grad_weight));
}

TEST(TrainingKernels, LayersThatDoNotQualifyKeepTheFloatPath) {
  torch::manual_seed(4);
  const at::Tensor x = torch::randn({2, 8, 9, 9});
  TrainingKernelsGuard guard(TrainingKernels::kBinary);
  // A multi-bit input, and no kernel quantizer.
  std::vector<QuantConv2d> layers = {
      QuantConv2d(QuantConv2dOptions(8, 8, 3)
                      .input_quantizer("dorefa_quantizer")
                      .kernel_quantizer("ste_sign")
                      .kernel_constraint("weight_clip")),
      QuantConv2d(QuantConv2dOptions(8, 8, 3).input_quantizer("ste_sign")),
  };
  for (auto& layer : layers) {
    const at::Tensor binary = layer->forward(x);
    at::Tensor reference;
    {
      TrainingKernelsGuard float_path(TrainingKernels::kFloat);
      reference = layer->forward(x);
    }
    EXPECT_TRUE(at::equal(binary, reference));
  }
}

TEST(TrainingKernels, AQuantizerThatOnlyClaimsToBeASignFallsBackToTheFloatPath) {
  // A custom kernel quantizer that declares ForwardKind::kSign but returns other values: the
  // runtime refuses the kernel, and the layer gives what the float path gives.
  auto halves = std::make_shared<onebit::quantizers::Custom>(
      "half_sign", [](const at::Tensor& x) { return at::where(x >= 0, 0.5, -0.5); },
      [](const at::Tensor&, const at::Tensor& dy) { return dy; }, 1,
      onebit::quantizers::ForwardKind::kSign);
  torch::manual_seed(6);
  QuantConv2d conv(QuantConv2dOptions(4, 4, 3)
                       .bias(false)
                       .input_quantizer("ste_sign")
                       .kernel_quantizer(halves)
                       .kernel_constraint("weight_clip"));
  const at::Tensor x = torch::randn({1, 4, 6, 6});
  at::Tensor reference;
  {
    TrainingKernelsGuard guard(TrainingKernels::kFloat);
    reference = conv->forward(x);
  }
  TrainingKernelsGuard guard(TrainingKernels::kBinary);
  EXPECT_TRUE(at::equal(conv->forward(x), reference));
}

TEST(TrainingKernels, BatchesAreChannelsLastWhenALayerRunsOnTheRuntimeEvenWithOneChannel) {
  const at::Tensor gray = torch::randn({4, 1, 5, 6}), rgb = torch::randn({4, 3, 5, 6});
  // A binary layer inside a container qualifies the model; layers with multi-bit inputs
  // (DoReFa) and float layers do not.
  torch::nn::Sequential binary(torch::nn::Conv2d(3, 3, 1),
                               make_conv({3, 8, 3, 1, 1, 1, 5, false, false, false, true}));
  torch::nn::Sequential scaled(QuantConv2d(QuantConv2dOptions(3, 8, 3)
                                               .input_quantizer("dorefa_quantizer")
                                               .kernel_quantizer("ste_sign")),
                               torch::nn::Conv2d(8, 8, 1));
  QuantDense dense(
      QuantDenseOptions(10, 4).input_quantizer("ste_sign").kernel_quantizer("ste_sign"));
  {
    TrainingKernelsGuard guard(TrainingKernels::kBinary);
    EXPECT_TRUE(uses_runtime_kernels(*binary));
    EXPECT_TRUE(uses_runtime_kernels(*dense));
    EXPECT_FALSE(uses_runtime_kernels(*scaled));
    for (const at::Tensor& x : {gray, rgb}) {
      const at::Tensor y = training_layout(x, uses_runtime_kernels(*binary));
      EXPECT_EQ(y.stride(1), 1);  // NHWC strides, which LibTorch's convolutions follow
      EXPECT_EQ(y.stride(3), x.size(1));
      EXPECT_TRUE(at::equal(y, x));
      EXPECT_TRUE(training_layout(x, uses_runtime_kernels(*scaled)).is_same(x));
    }
    const at::Tensor flat = torch::randn({4, 10});
    EXPECT_TRUE(training_layout(flat, uses_runtime_kernels(*dense)).is_same(flat));
  }
  TrainingKernelsGuard guard(TrainingKernels::kFloat);
  EXPECT_FALSE(uses_runtime_kernels(*binary));
  EXPECT_TRUE(training_layout(rgb, uses_runtime_kernels(*binary)).is_same(rgb));
}

TEST(TrainingKernels, NamesParseAndBadNamesAreExplained) {
  EXPECT_EQ(parse_training_kernels("binary"), TrainingKernels::kBinary);
  EXPECT_EQ(parse_training_kernels("float"), TrainingKernels::kFloat);
  EXPECT_STREQ(training_kernels_name(TrainingKernels::kBinary), "binary");
  expect_throw_with<std::invalid_argument>([] { parse_training_kernels("xnor"); },
                                           {"unknown training kernels \"xnor\""});
  train::TrainOptions o = onebit::testing::small_options(onebit::testing::temp_dir("kernels_bad"));
  o.training_kernels = "fast";
  expect_throw_with<std::invalid_argument>([&] { onebit::testing::run(o); },
                                           {"training_kernels \"fast\" is unknown"});
  using nn::detail::ConvGradient;
  for (const ConvGradient g :
       {ConvGradient::kAuto, ConvGradient::kLibTorch, ConvGradient::kProducts}) {
    EXPECT_EQ(nn::detail::parse_conv_gradient(nn::detail::conv_gradient_name(g)), g);
  }
  expect_throw_with<std::invalid_argument>([] { nn::detail::parse_conv_gradient("onednn"); },
                                           {"unknown convolution gradient \"onednn\"", "libtorch"});
}

TEST(TrainingKernels, TrainingOnTheBinaryPathLearnsLikeTheFloatPath) {
  // Same seed, same data: the binary path's forward values equal the float path's (up to the
  // float first layer's rounding), so both runs learn the synthetic task equally well.
  std::map<std::string, double> accuracy;
  for (const std::string kernels : {"float", "binary"}) {
    train::TrainOptions o =
        onebit::testing::small_options(onebit::testing::temp_dir("kernels_" + kernels));
    o.training_kernels = kernels;
    const train::TrainResult r = onebit::testing::run(o);
    accuracy[kernels] = r.test_accuracy;
    std::filesystem::remove_all(o.out_dir);
  }
  EXPECT_GT(accuracy["binary"], 0.5) << "float path: " << accuracy["float"];  // 4 classes
  EXPECT_NEAR(accuracy["binary"], accuracy["float"], 0.1);
}

TEST(TrainingKernels, EveryZooModelRunsTheSameOnBothPaths) {
  // Forward (eval, after one training step so that batch-norm statistics are not trivial) and
  // the kernel gradients of one training step, for every model of the zoo at a small input.
  for (const std::string& name : zoo::model_names()) {
    SCOPED_TRACE(name);
    const bool alexnet = name == "binary-alexnet" || name == "xnornet" || name == "dorefanet";
    const bool mnist = name.find("mnist") != std::string::npos || name == "bnn-mlp";
    zoo::ModelOptions o;
    o.input_shape = mnist     ? std::vector<int64_t>{1, 28, 28}
                    : alexnet ? std::vector<int64_t>{3, 64, 64}
                              : std::vector<int64_t>{3, 32, 32};
    o.num_classes = 10;
    torch::manual_seed(11);
    nn::Graph model = zoo::build(name, o);
    std::vector<int64_t> shape = {4};
    shape.insert(shape.end(), o.input_shape.begin(), o.input_shape.end());
    const at::Tensor x = torch::randn(shape);
    const at::Tensor labels = torch::randint(10, {4}, torch::kLong);
    // The float path twice (NCHW, and channels-last: another summation order) and the binary
    // path.
    std::vector<std::vector<at::Tensor>> grads(3);
    for (int run = 0; run < 3; ++run) {
      TrainingKernelsGuard guard(run == 2 ? TrainingKernels::kBinary : TrainingKernels::kFloat);
      model->train();
      model->zero_grad();
      const at::Tensor input = run == 1 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
      torch::nn::functional::cross_entropy(model->forward(input), labels).backward();
      for (const auto& p : model->parameters()) {
        grads[run].push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
      }
    }
    // Every parameter gradient equal within float rounding: the binary layers' outputs are
    // exact (scaled kernels: one rounding of the exact sum), but they are channels-last, so
    // batch norm and pooling after them sum in another order, and a batch-norm output within
    // rounding of 0 may then take the other sign in the next quantizer (measured: at most 1.4%
    // of a gradient's norm, in bireal-mnist). Where the float path itself moves more than that
    // when only its summation order changes (XNOR-Net at this size: its batch norms over four
    // images of 1x1 maps amplify rounding, 150% of the first kernel's gradient norm), the
    // binary path may move up to twice as much. A wrong kernel changes gradients by their whole
    // size in well-conditioned models.
    ASSERT_EQ(grads[0].size(), grads[2].size());
    for (std::size_t i = 0; i < grads[0].size(); ++i) {
      const at::Tensor& f = grads[0][i];
      const at::Tensor& b = grads[2][i];
      ASSERT_EQ(f.defined(), b.defined());
      if (!f.defined()) continue;
      const double norm = f.norm().item<double>() + 1e-6;
      const double jitter = (f - grads[1][i]).norm().item<double>();
      EXPECT_LE((f - b).norm().item<double>(), std::max(5e-2 * norm, 2 * jitter) + 1e-6)
          << "parameter " << i;
    }
    // Eval outputs likewise: within 1e-3 of the logits' scale, or twice how far the float path
    // is from itself in double precision (XNOR-Net at this size: 0.016 under LibTorch's AVX-512
    // kernels on a Zen 5, where its AVX2 kernels agree within 6e-4).
    model->eval();
    at::NoGradGuard no_grad;
    at::Tensor y_float, y_double, y_binary;
    {
      TrainingKernelsGuard guard(TrainingKernels::kFloat);
      y_float = model->forward(x);
      model->to(torch::kDouble);
      y_double = model->forward(x.to(torch::kDouble)).to(torch::kFloat);
      model->to(torch::kFloat);
    }
    {
      TrainingKernelsGuard guard(TrainingKernels::kBinary);
      y_binary = model->forward(x);
    }
    const double scale = y_float.abs().max().item<double>() + 1e-3;
    const double jitter = (y_float - y_double).abs().max().item<double>();
    EXPECT_LE((y_float - y_binary).abs().max().item<double>(), std::max(1e-3 * scale, 2 * jitter))
        << "float path vs double: " << jitter;
  }
}

TEST(TrainingKernels, FreedMemoryIsRetainedUnlessTheUserSetsMallocsThresholds) {
#if defined(__GLIBC__)
  ::setenv("MALLOC_TRIM_THRESHOLD_", "1000000", 1);
  EXPECT_FALSE(retain_freed_memory()) << "the user's MALLOC_TRIM_THRESHOLD_ must win";
  ::unsetenv("MALLOC_TRIM_THRESHOLD_");
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  const std::string saved = tunables != nullptr ? tunables : "";
  ::setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536", 1);
  EXPECT_FALSE(retain_freed_memory()) << "the user's GLIBC_TUNABLES must win";
  if (tunables != nullptr) {
    ::setenv("GLIBC_TUNABLES", saved.c_str(), 1);
  } else {
    ::unsetenv("GLIBC_TUNABLES");
  }
  if (saved.find("glibc.malloc.") == std::string::npos &&
      std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) {
    EXPECT_TRUE(retain_freed_memory());
    EXPECT_TRUE(retain_freed_memory());  // again: still fine
  }
#else
  EXPECT_FALSE(retain_freed_memory());
#endif
}

TEST(TrainingKernels, LargeTensorsReuseTheirBlocksOnceKept) {
  ASSERT_TRUE(keep_large_blocks());
  EXPECT_TRUE(keep_large_blocks());  // idempotent
  // Blocks that earlier tests left cached would serve the requests below.
  const std::size_t cached = large_block_stats().cached_bytes;
  EXPECT_EQ(release_large_blocks(), cached);
  EXPECT_EQ(large_block_stats().cached_bytes, 0u);
  const LargeBlockStats before = large_block_stats();
  // Two sizes above the threshold, rounded to 36 and 34 MiB blocks.
  const int64_t floats = static_cast<int64_t>(kLargeBlockBytes / sizeof(float)) + 1000;
  const int64_t big = floats + 600000;
  void* first = nullptr;
  {
    at::Tensor a = at::full({big}, 3.0f);
    first = a.data_ptr();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first) % 64, 0u);
    EXPECT_GE(large_block_stats().live_bytes, before.live_bytes + kLargeBlockBytes);
  }
  // Freed, the block is cached and serves the next request of its size, and smaller ones (up to
  // a fifth); a new tensor's values are its own (at::zeros fills the reused block).
  EXPECT_GE(large_block_stats().cached_bytes, kLargeBlockBytes);
  {
    at::Tensor b = at::zeros({big});
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_EQ(b.abs().max().item<float>(), 0.0f);  // a second block, for b.abs()
    at::Tensor c = at::ones({floats});             // reuses the second: b holds the first
    EXPECT_NE(c.data_ptr(), first);
    EXPECT_EQ(c.sum().item<double>(), static_cast<double>(floats));
  }
  {
    at::Tensor d = at::empty({floats});
    EXPECT_GE(large_block_stats().hits, before.hits + 3);
  }
  // Small tensors keep LibTorch's allocator; the raw interface (kernels' scratch buffers)
  // frees small and large blocks alike.
  const LargeBlockStats mid = large_block_stats();
  { at::Tensor small = at::ones({1000}); }
  EXPECT_EQ(large_block_stats().hits + large_block_stats().misses, mid.hits + mid.misses);
  c10::Allocator* cpu = c10::GetCPUAllocator();
  void* raw_small = cpu->raw_allocate(4096);
  void* raw_large = cpu->raw_allocate(kLargeBlockBytes);
  std::memset(raw_large, 1, kLargeBlockBytes);
  cpu->raw_deallocate(raw_small);
  cpu->raw_deallocate(raw_large);
  EXPECT_EQ(large_block_stats().live_bytes, mid.live_bytes);
  // The mapped total stays bounded: many sizes one after the other do not pile up.
  for (int i = 1; i <= 12; ++i) {
    at::Tensor t = at::empty({floats * i / 4 + floats});
  }
  const LargeBlockStats after = large_block_stats();
  EXPECT_LE(after.live_bytes + after.cached_bytes,
            after.peak_live_bytes / 4 * 5 + (std::size_t{64} << 20));
}
