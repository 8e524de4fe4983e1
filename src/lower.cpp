#include "lower.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "onebit/nn.h"

namespace onebit::lower {
namespace {

namespace rt = onebit::runtime;

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

template <typename T>
const T& as(const torch::nn::Module& m) {
  const auto* p = dynamic_cast<const T*>(&m);
  if (p == nullptr) fail("internal: lower function called with a " + short_type_name(m));
  return *p;
}

std::vector<float> to_floats(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kFloat).contiguous();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

std::string describe(const quantizers::QuantizerPtr& q) {
  return q ? quantizers::to_json(q).dump() : std::string("none");
}

// A kernel as the runtime stores it: +-1 values (binary) or floats, and an optional
// per-output-channel scale applied after the layer (magnitude_aware_sign).
struct Kernel {
  std::vector<float> values;
  bool binary = false;
  std::vector<float> scale;
};

Kernel kernel_of(const at::Tensor& latent, const quantizers::QuantizerPtr& q,
                 const quantizers::TensorRole& role = quantizers::TensorRole::kernel()) {
  at::NoGradGuard no_grad;
  Kernel k;
  if (!q) {
    k.values = to_floats(latent);
    return k;
  }
  const at::Tensor scale = q->sign_scale_as(latent, role);
  if (scale.defined()) {
    // scale * sign(w): +-1 bits, and the scale (one value or one per output channel) after the
    // layer.
    k.values = to_floats(latent.ge(0).to(at::kFloat).mul(2.0).sub(1.0));
    k.binary = true;
    at::Tensor flat = scale.reshape({-1});
    if (flat.numel() == 1) flat = flat.expand({latent.size(0)});
    if (flat.numel() != latent.size(0)) {
      fail("kernel quantizer \"" + q->id() + "\" gave " + std::to_string(flat.numel()) +
           " scales, expected 1 or " + std::to_string(latent.size(0)) +
           " (one per output channel)");
    }
    k.scale = to_floats(flat);
    const at::Tensor check = scale * latent.ge(0).to(scale.scalar_type()).mul(2.0).sub(1.0);
    if (!at::allclose(check, q->quantize_as(latent, role))) {
      fail("kernel quantizer \"" + q->id() +
           "\" declares sign_scale() but its forward is not scale * sign(w)");
    }
    return k;
  }
  k.values = to_floats(q->quantize_as(latent, role));
  k.binary = q->precision() == 1;
  for (float v : k.values) k.binary = k.binary && (v == 1.0f || v == -1.0f);
  return k;
}

std::array<int64_t, 2> pair_of(const torch::ExpandingArray<2>& a) { return {(*a)[0], (*a)[1]}; }

// Pads {top, left, bottom, right} of torch::nn::Conv2d's padding option. The option is a
// c10::variant in LibTorch 1.x and a std::variant in 2.x; the unqualified `visit` finds the
// matching function by argument-dependent lookup in both.
template <typename Padding>
std::array<int64_t, 4> torch_conv_pads(const Padding& padding, const std::array<int64_t, 2>& k,
                                       const std::array<int64_t, 2>& d) {
  return visit(
      [&](const auto& p) -> std::array<int64_t, 4> {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, torch::enumtype::kValid>) {
          return {0, 0, 0, 0};
        } else if constexpr (std::is_same_v<P, torch::enumtype::kSame>) {
          // PyTorch's "same" (stride 1): total = dilation * (k - 1), the smaller half before.
          const int64_t th = d[0] * (k[0] - 1), tw = d[1] * (k[1] - 1);
          return {th / 2, tw / 2, th - th / 2, tw - tw / 2};
        } else {
          return {(*p)[0], (*p)[1], (*p)[0], (*p)[1]};
        }
      },
      padding);
}

void check_channels(Lowering& l, int64_t expected, const char* what) {
  const std::vector<int64_t> s = l.builder().shape(l.input());
  if (s[0] != expected) {
    fail(std::string(what) + " is " + std::to_string(expected) + " but its input has " +
         std::to_string(s[0]) + " channels (shape " + std::to_string(s[0]) + "x" +
         std::to_string(s[1]) + "x" + std::to_string(s[2]) + ")");
  }
}

void check_flat(Lowering& l) {
  const std::vector<int64_t> s = l.builder().shape(l.input());
  if (s[1] * s[2] > 1) {
    fail("input has shape " + std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" +
         std::to_string(s[2]) + "; expected features (add a Flatten before this layer)");
  }
}

void check_binary_input(Lowering& l, rt::ValueRef x, const Kernel& k,
                        const quantizers::QuantizerPtr& q) {
  if (!k.binary && l.builder().is_bits(x)) {
    fail("kernel quantizer " + describe(q) +
         " gives non-binary weights but the input is binary (sign); the runtime needs a +-1 "
         "kernel for a binary input");
  }
}

// A binary layer's output: the scale of a magnitude-aware kernel (and the layer's bias) becomes
// a per-channel affine after the layer, which the builder folds into the layer's output.
Lowered finish_layer(Lowering& l, rt::ValueRef y, const Kernel& k, const at::Tensor& bias,
                     int64_t integer_range) {
  if (!k.scale.empty()) {
    std::vector<float> b = bias.defined() ? to_floats(bias) : std::vector<float>(k.scale.size());
    return {l.builder().batch_norm(y, k.scale, b), 0};
  }
  return {y, integer_range};
}

// The k of a layer whose k-bit DoReFa activations run as thermometer planes into its +-1
// kernel (ConvertOptions::max_thermometer_bits); 0 when the layer stays float.
int thermometer_bits(Lowering& l, const quantizers::QuantizerPtr& input_quantizer,
                     const Kernel& k) {
  const auto* dorefa = dynamic_cast<const quantizers::DoReFa*>(input_quantizer.get());
  if (dorefa == nullptr || dorefa->mode() != "activations" || !k.binary) return 0;
  if (dorefa->k_bit() > l.options().max_thermometer_bits || l.builder().is_bits(l.input())) {
    return 0;
  }
  return dorefa->k_bit();
}

// A binary layer over thermometer planes outputs the planes' +-1 dot D; the k-bit layer is
// (n sum(w) - D) / (2 n) per output channel (n = 2^k - 1, sum(w) over the whole +-1 kernel row:
// padded taps are level-0 planes, +1 each, which add w to D and n w to n sum(w)), then the
// kernel scale and the bias. Computed in double, stored as one float affine.
Lowered finish_thermometer(Lowering& l, rt::ValueRef y, const Kernel& k, const at::Tensor& bias,
                           int bits, int64_t out) {
  const double n = static_cast<double>((int64_t{1} << bits) - 1);
  const std::vector<float> b = bias.defined() ? to_floats(bias) : std::vector<float>();
  const auto per = k.values.size() / static_cast<std::size_t>(out);
  std::vector<float> multiplier(static_cast<std::size_t>(out)), offset(multiplier.size());
  for (std::size_t o = 0; o < multiplier.size(); ++o) {
    double sum = 0;
    for (std::size_t i = o * per; i < (o + 1) * per; ++i) sum += k.values[i];
    const double s = k.scale.empty() ? 1.0 : k.scale[o];
    multiplier[o] = static_cast<float>(-s / (2 * n));
    offset[o] = static_cast<float>(s * sum / 2 + (b.empty() ? 0.0 : b[o]));
  }
  return {l.builder().batch_norm(y, multiplier, offset), 0};
}

std::vector<float> layer_bias(const Kernel& k, const at::Tensor& bias) {
  return !k.scale.empty() || !bias.defined() ? std::vector<float>() : to_floats(bias);
}

// Output channels, kernel, stride, dilation and groups of a torch or onebit Conv2d's options.
// `out_channels` and `groups` are given because depthwise options name them differently.
template <typename Options>
rt::Conv2dParams conv_params(const Options& o, int64_t out_channels, int64_t groups) {
  rt::Conv2dParams p(out_channels, 1);
  const auto ks = pair_of(o.kernel_size()), st = pair_of(o.stride()), di = pair_of(o.dilation());
  p.kernel_h = ks[0];
  p.kernel_w = ks[1];
  p.stride_h = st[0];
  p.stride_w = st[1];
  p.dilation_h = di[0];
  p.dilation_w = di[1];
  p.groups = groups;
  return p;
}

template <typename Options>
rt::Conv2dParams conv_params(const Options& o) {
  return conv_params(o, o.out_channels(), o.groups());
}

rt::Pool2dParams pool_params(const torch::ExpandingArray<2>& kernel,
                             const torch::ExpandingArray<2>& stride,
                             const torch::ExpandingArray<2>& padding) {
  rt::Pool2dParams p;
  const auto k = pair_of(kernel), s = pair_of(stride), pad = pair_of(padding);
  p.kernel_h = k[0];
  p.kernel_w = k[1];
  p.stride_h = s[0];
  p.stride_w = s[1];
  p.padding(pad[0], pad[1]);
  return p;
}

// A batch norm y = (x - mean) / sqrt(var + eps) * gamma + beta. When its input holds the exact
// integer dots of a binary layer and only signs read its output, the runtime multiplier/bias
// reproduce LibTorch's own sign decision for every integer input in [-K, K] (see convert.h).
Lowered lower_batch_norm(Lowering& l, int64_t c, const std::vector<float>& gamma,
                         const std::vector<float>& beta, const std::vector<float>& mean,
                         const std::vector<float>& var, double eps, bool spatial,
                         const std::function<at::Tensor(const at::Tensor&)>& forward) {
  check_channels(l, c, "num_features");
  rt::ModelBuilder& b = l.builder();
  const rt::ValueRef x = l.input();
  if (b.is_bits(x)) fail("batch norm of a binary (sign) value is not supported");
  const int64_t k = l.integer_range();
  if (!(l.options().exact_thresholds && k > 0 && l.sign_follows())) {
    return {b.batch_norm_stats(x, gamma, beta, mean, var, static_cast<float>(eps)), 0};
  }
  const int64_t n = 2 * k + 1;
  at::Tensor grid;
  {
    at::NoGradGuard no_grad;
    const at::Tensor d = at::arange(-k, k + 1, at::kFloat);
    grid = spatial ? d.view({1, 1, n, 1}).expand({1, c, n, 1}).contiguous()
                   : d.view({n, 1}).expand({n, c}).contiguous();
    grid = forward(grid).ge(0).reshape(spatial ? std::vector<int64_t>{c, n}
                                               : std::vector<int64_t>{n, c});
    if (!spatial) grid = grid.t();
    grid = grid.contiguous().to(at::kBool);
  }
  const bool* positive = grid.data_ptr<bool>();
  std::vector<float> mult(static_cast<std::size_t>(c)), bias(static_cast<std::size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    const bool* s = positive + ch * n;
    const double m =
        (gamma.empty() ? 1.0 : gamma[ch]) / std::sqrt(static_cast<double>(var[ch]) + eps);
    // With m > 0 the +1 set must be {d >= t}; with m < 0 it must be {d <= t}.
    int64_t first = n, last = -1, count = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (s[i]) {
        first = std::min(first, i);
        last = i;
        ++count;
      }
    }
    double mo = m, bo = 0;
    if (count == 0 || count == n || m == 0.0) {
      if (count != 0 && count != n) {
        fail("channel " + std::to_string(ch) + " has multiplier 0 but a non-constant sign");
      }
      mo = 0.0;
      bo = count == n ? 1.0 : -1.0;
    } else if (m > 0 && last == n - 1 && count == n - first) {
      bo = -m * (static_cast<double>(first - k) - 0.5);
    } else if (m < 0 && first == 0 && count == last + 1) {
      bo = -m * (static_cast<double>(last - k) + 0.5);
    } else {
      fail("channel " + std::to_string(ch) + ": LibTorch's batch norm is not monotone in its " +
           "integer input (multiplier " + std::to_string(m) + ")");
    }
    mult[ch] = static_cast<float>(mo);
    bias[ch] = static_cast<float>(bo);
    // The runtime's own expression must reproduce every decision.
    for (int64_t i = 0; i < n; ++i) {
      const bool runtime_positive = static_cast<float>(i - k) * mult[ch] + bias[ch] >= 0.0f;
      if (runtime_positive != s[i]) {
        fail("channel " + std::to_string(ch) + ": cannot reproduce LibTorch's sign at input " +
             std::to_string(i - k));
      }
    }
  }
  return {b.batch_norm(x, mult, bias), 0};
}

template <typename BatchNormImpl>
Lowered lower_torch_batch_norm(Lowering& l, const torch::nn::Module& m, bool spatial) {
  auto& bn = const_cast<BatchNormImpl&>(as<BatchNormImpl>(m));
  const auto& o = bn.options;
  if (!o.track_running_stats() || !bn.running_mean.defined()) {
    fail(
        "track_running_stats is false; eval mode then uses batch statistics, which a "
        "converted model cannot; expected running statistics");
  }
  const std::vector<float> gamma =
      o.affine() && bn.weight.defined() ? to_floats(bn.weight) : std::vector<float>();
  const std::vector<float> beta =
      o.affine() && bn.bias.defined() ? to_floats(bn.bias) : std::vector<float>();
  return lower_batch_norm(l, o.num_features(), gamma, beta, to_floats(bn.running_mean),
                          to_floats(bn.running_var), o.eps(), spatial,
                          [&](const at::Tensor& t) { return bn.forward(t); });
}

}  // namespace

namespace {

// A onebit convolution (QuantConv2d, QuantDepthwiseConv2d): quantized input, kernel bits or
// floats, Keras "same" or explicit padding with pad value 0 or 1, the kernel scale after it.
template <typename Options>
Lowered lower_quant_conv(Lowering& l, rt::Conv2dParams p, const Options& o,
                         const quantizers::QuantizerPtr& kernel_quantizer, const at::Tensor& latent,
                         const at::Tensor& bias, int64_t in_channels,
                         const quantizers::TensorRole& role = quantizers::TensorRole::kernel()) {
  const Kernel k = kernel_of(latent, kernel_quantizer, role);
  // Thermometer planes pad with level 0 (+1 planes): Larq's pad_values=0.
  const int planes_bits =
      o.pad_values() == 0.0 ? thermometer_bits(l, o.input_quantizer().get(), k) : 0;
  const rt::ValueRef x = planes_bits > 0 ? l.builder().thermometer(l.input(), planes_bits)
                                         : l.quantize_input(l.input(), o.input_quantizer().get());
  if (o.pad_values() != 0.0 && o.pad_values() != 1.0) {
    std::ostringstream msg;
    msg << "pad_values " << o.pad_values() << " is not supported, expected 0 or 1";
    fail(msg.str());
  }
  if (o.padding().same()) {
    p.padding(rt::PaddingMode::kSame);
  } else {
    const auto pad = pair_of(o.padding().amount());
    p.padding(pad[0], pad[1]);
  }
  p.pad_value = planes_bits > 0 ? 1.0f : static_cast<float>(o.pad_values());
  p.is_binary_kernel = k.binary;
  check_channels(l, in_channels, "in_channels");
  check_binary_input(l, x, k, kernel_quantizer);
  if (planes_bits > 0) {
    return finish_thermometer(l, l.builder().conv2d(x, p, k.values), k, bias, planes_bits,
                              p.out_channels);
  }
  const bool integer = l.builder().is_bits(x) && k.binary && !bias.defined();
  const rt::ValueRef y = l.builder().conv2d(x, p, k.values, layer_bias(k, bias));
  return finish_layer(l, y, k, bias,
                      integer ? in_channels / p.groups * p.kernel_h * p.kernel_w : 0);
}

}  // namespace

Lowered quant_conv2d(Lowering& l, const torch::nn::Module& m) {
  const auto& conv = as<nn::QuantConv2dImpl>(m);
  const auto& o = conv.options;
  return lower_quant_conv(l, conv_params(o), o, o.kernel_quantizer().get(), conv.weight, conv.bias,
                          o.in_channels());
}

Lowered quant_depthwise_conv2d(Lowering& l, const torch::nn::Module& m) {
  const auto& conv = as<nn::QuantDepthwiseConv2dImpl>(m);
  const auto& o = conv.options;
  const rt::Conv2dParams p =
      conv_params(o, o.in_channels() * o.depth_multiplier(), o.in_channels());
  return lower_quant_conv(l, p, o, o.depthwise_quantizer().get(), conv.weight, conv.bias,
                          o.in_channels(), conv.kernel_role());
}

Lowered blur_pool2d(Lowering& l, const torch::nn::Module& m) {
  const auto& blur = as<nn::BlurPool2dImpl>(m);
  const int64_t c = blur.options.channels();
  check_channels(l, c, "channels");
  if (l.builder().is_bits(l.input()))
    fail("blur pooling of a binary (sign) value is not supported");
  rt::Conv2dParams p(c, 3);
  p.stride(blur.options.stride()).groups_count(c).padding(rt::PaddingMode::kSame);
  return {l.builder().conv2d(l.input(), p, to_floats(blur.weight)), 0};
}

Lowered quant_dense(Lowering& l, const torch::nn::Module& m) {
  const auto& dense = as<nn::QuantDenseImpl>(m);
  const auto& o = dense.options;
  const Kernel k = kernel_of(dense.weight, o.kernel_quantizer().get());
  const int planes_bits = thermometer_bits(l, o.input_quantizer().get(), k);
  check_flat(l);
  check_channels(l, o.in_features(), "in_features");
  const rt::ValueRef x = planes_bits > 0 ? l.builder().thermometer(l.input(), planes_bits)
                                         : l.quantize_input(l.input(), o.input_quantizer().get());
  check_binary_input(l, x, k, o.kernel_quantizer().get());
  if (planes_bits > 0) {
    return finish_thermometer(
        l, l.builder().dense(x, rt::DenseParams(o.out_features()).binary_kernel(true), k.values), k,
        dense.bias, planes_bits, o.out_features());
  }
  const bool integer = l.builder().is_bits(x) && k.binary && !dense.bias.defined();
  const rt::ValueRef y =
      l.builder().dense(x, rt::DenseParams(o.out_features()).binary_kernel(k.binary), k.values,
                        layer_bias(k, dense.bias));
  return finish_layer(l, y, k, dense.bias, integer ? o.in_features() : 0);
}

Lowered batch_norm(Lowering& l, const torch::nn::Module& m) {
  auto& bn = const_cast<nn::BatchNormImpl&>(as<nn::BatchNormImpl>(m));
  const std::vector<float> gamma =
      bn.weight.defined() ? to_floats(bn.weight) : std::vector<float>();
  const std::vector<float> beta = bn.bias.defined() ? to_floats(bn.bias) : std::vector<float>();
  const std::vector<int64_t> shape = l.builder().shape(l.input());
  return lower_batch_norm(l, bn.options.num_features(), gamma, beta, to_floats(bn.running_mean),
                          to_floats(bn.running_var), bn.options.eps(), shape[1] * shape[2] > 1,
                          [&](const at::Tensor& t) { return bn.forward(t); });
}

Lowered torch_batch_norm1d(Lowering& l, const torch::nn::Module& m) {
  return lower_torch_batch_norm<torch::nn::BatchNorm1dImpl>(l, m, false);
}

Lowered torch_batch_norm2d(Lowering& l, const torch::nn::Module& m) {
  return lower_torch_batch_norm<torch::nn::BatchNorm2dImpl>(l, m, true);
}

Lowered quantizer(Lowering& l, const torch::nn::Module& m) {
  const auto& q = as<nn::QuantizerImpl>(m);
  return {l.quantize_input(l.input(), q.quantizer()), 0};
}

Lowered add(Lowering& l, const torch::nn::Module&) {
  rt::ValueRef sum = l.builder().add(l.input(0), l.input(1));
  for (std::size_t i = 2; i < l.num_inputs(); ++i) sum = l.builder().add(sum, l.input(i));
  return {sum, 0};
}

Lowered concat(Lowering& l, const torch::nn::Module&) {
  std::vector<rt::ValueRef> xs;
  for (std::size_t i = 0; i < l.num_inputs(); ++i) xs.push_back(l.input(i));
  return {l.builder().concat(xs), 0};
}

Lowered torch_conv2d(Lowering& l, const torch::nn::Module& m) {
  const auto& conv = as<torch::nn::Conv2dImpl>(m);
  const auto& o = conv.options;
  const std::string mode = torch::enumtype::get_enum_name(o.padding_mode());
  if (mode != "kZeros") fail("padding_mode " + mode + " is not supported, expected kZeros");
  check_channels(l, o.in_channels(), "in_channels");
  if (l.builder().is_bits(l.input()))
    fail("float kernel on a binary (sign) input is not supported");
  rt::Conv2dParams p = conv_params(o);
  const auto ks = pair_of(o.kernel_size()), di = pair_of(o.dilation());
  const auto pads = torch_conv_pads(o.padding(), ks, di);
  p.padding_mode = rt::PaddingMode::kExplicit;
  p.pad_top = pads[0];
  p.pad_left = pads[1];
  p.pad_bottom = pads[2];
  p.pad_right = pads[3];
  return {l.builder().conv2d(l.input(), p, to_floats(conv.weight),
                             conv.bias.defined() ? to_floats(conv.bias) : std::vector<float>()),
          0};
}

Lowered torch_linear(Lowering& l, const torch::nn::Module& m) {
  const auto& linear = as<torch::nn::LinearImpl>(m);
  check_flat(l);
  check_channels(l, linear.options.in_features(), "in_features");
  if (l.builder().is_bits(l.input()))
    fail("float kernel on a binary (sign) input is not supported");
  return {l.builder().dense(l.input(), rt::DenseParams(linear.options.out_features()),
                            to_floats(linear.weight),
                            linear.bias.defined() ? to_floats(linear.bias) : std::vector<float>()),
          0};
}

namespace {

// PyTorch's ceil_mode adds windows that start inside the (padded) input but end past it; they
// become extra padding at the bottom/right that no window counts. Returns whether any was added.
bool add_ceil_pads(rt::Pool2dParams& p, const std::vector<int64_t>& shape) {
  bool added = false;
  auto extra = [&](int64_t in, int64_t k, int64_t s, int64_t pad_before, int64_t& pad_after) {
    // PyTorch's pooling_output_shape with ceil_mode (dilation 1).
    const int64_t numerator = in + 2 * pad_before - k + (s - 1);
    if (numerator < 0) return;
    int64_t out = numerator / s + 1;
    if ((out - 1) * s >= in + pad_before) --out;  // PyTorch: the last window must start inside
    const int64_t more = (out - 1) * s + k - (in + 2 * pad_before);
    if (more > 0) {
      pad_after += more;
      added = true;
    }
  };
  extra(shape[1], p.kernel_h, p.stride_h, p.pad_top, p.pad_bottom);
  extra(shape[2], p.kernel_w, p.stride_w, p.pad_left, p.pad_right);
  return added;
}

}  // namespace

Lowered max_pool2d(Lowering& l, const torch::nn::Module& m) {
  const auto& o = as<torch::nn::MaxPool2dImpl>(m).options;
  const auto di = pair_of(o.dilation());
  if (di[0] != 1 || di[1] != 1) fail("dilation is not supported, expected 1");
  rt::Pool2dParams p = pool_params(o.kernel_size(), o.stride(), o.padding());
  // Padded positions never win a max: ceil mode is more padding at the end.
  if (o.ceil_mode()) add_ceil_pads(p, l.builder().shape(l.input()));
  // Max pooling keeps exact integers integers: a batch norm after it may still use exact
  // thresholds.
  return {l.builder().max_pool2d(l.input(), p), l.integer_range()};
}

Lowered avg_pool2d(Lowering& l, const torch::nn::Module& m) {
  const auto& o = as<torch::nn::AvgPool2dImpl>(m).options;
  if (o.divisor_override().has_value()) fail("divisor_override is not supported");
  rt::Pool2dParams p = pool_params(o.kernel_size(), o.stride(), o.padding());
  p.count_include_pad = o.count_include_pad();
  if (o.ceil_mode() && add_ceil_pads(p, l.builder().shape(l.input()))) {
    // PyTorch divides the extra windows by their part inside the padded input: the same as
    // excluding padding when there is no explicit padding (Keras "same" average pooling).
    const auto pad = pair_of(o.padding());
    if (o.count_include_pad() && (pad[0] != 0 || pad[1] != 0)) {
      fail(
          "ceil_mode with explicit padding and count_include_pad is not supported; use "
          "padding 0 (Keras \"same\" pooling) or count_include_pad false");
    }
    p.count_include_pad = false;
  }
  return {l.builder().avg_pool2d(l.input(), p), 0};
}

Lowered adaptive_avg_pool2d(Lowering& l, const torch::nn::Module& m) {
  const auto& size = *as<torch::nn::AdaptiveAvgPool2dImpl>(m).options.output_size();
  for (const auto& v : size) {
    if (!v || *v != 1) {
      fail("only an output size of 1x1 (global average pooling) is supported");
    }
  }
  return {l.builder().global_avg_pool2d(l.input()), 0};
}

Lowered flatten(Lowering& l, const torch::nn::Module& m) {
  const auto& o = as<torch::nn::FlattenImpl>(m).options;
  if (o.start_dim() != 1 || o.end_dim() != -1) {
    fail("start_dim " + std::to_string(o.start_dim()) + ", end_dim " + std::to_string(o.end_dim()) +
         ": expected 1 and -1 (flatten each image)");
  }
  return {l.builder().flatten(l.input()), l.integer_range()};
}

Lowered relu(Lowering& l, const torch::nn::Module&) { return {l.builder().relu(l.input()), 0}; }

Lowered softmax(Lowering& l, const torch::nn::Module& m) {
  const auto& o = as<torch::nn::SoftmaxImpl>(m).options;
  if (o.dim() != 1 && o.dim() != -1) {
    fail("dim " + std::to_string(o.dim()) + ", expected 1 (the classes)");
  }
  return {l.builder().softmax(l.input()), 0};
}

Lowered identity(Lowering& l, const torch::nn::Module&) { return {l.input(), l.integer_range()}; }

Lowered multiply(Lowering& l, const torch::nn::Module&) {
  return {l.builder().mul(l.input(0), l.input(1)), 0};
}

Lowered slice(Lowering& l, const torch::nn::Module& m) {
  const auto& o = as<nn::SliceImpl>(m).options;
  return {l.builder().slice_channels(l.input(), o.begin(), o.end()), l.integer_range()};
}

Lowered learnable_bias(Lowering& l, const torch::nn::Module& m) {
  const auto& b = as<nn::LearnableBiasImpl>(m);
  check_channels(l, b.options.channels(), "channels");
  if (l.builder().is_bits(l.input())) fail("a bias on a binary (sign) value is not supported");
  const std::vector<float> ones(static_cast<std::size_t>(b.options.channels()), 1.0f);
  return {l.builder().batch_norm(l.input(), ones, to_floats(b.bias)), 0};
}

Lowered torch_prelu(Lowering& l, const torch::nn::Module& m) {
  const auto& prelu = as<torch::nn::PReLUImpl>(m);
  const int64_t n = prelu.options.num_parameters();
  if (n != 1) check_channels(l, n, "num_parameters");
  return {l.builder().prelu(l.input(), to_floats(prelu.weight)), 0};
}

Lowered sigmoid(Lowering& l, const torch::nn::Module&) {
  return {l.builder().sigmoid(l.input()), 0};
}

Lowered torch_hardtanh(Lowering& l, const torch::nn::Module& m) {
  const auto& o = as<torch::nn::HardtanhImpl>(m).options;
  return {
      l.builder().clip(l.input(), static_cast<float>(o.min_val()), static_cast<float>(o.max_val())),
      0};
}

Lowered hard_tanh(Lowering& l, const torch::nn::Module&) {
  return {l.builder().clip(l.input(), -1.0f, 1.0f), 0};
}

}  // namespace onebit::lower
