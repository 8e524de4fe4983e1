#include "onebit/convert.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "onebit/nn.h"
#include "onebit/runtime/builder.h"
#include "onebit/summary.h"
#include "onebit/train/checkpoint.h"

namespace onebit {
namespace {

namespace rt = onebit::runtime;

const char* const kSupported =
    "supported: onebit QuantConv2d, QuantDense, BatchNorm, Quantizer (sign or noop); torch "
    "Conv2d, Linear, BatchNorm1d, BatchNorm2d, MaxPool2d, AvgPool2d, Flatten, ReLU, Softmax";

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

std::vector<float> to_floats(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kFloat).contiguous();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

// Module type without namespaces and the "Impl" suffix, e.g. "QuantConv2d", "MaxPool2d".
std::string type_name(const torch::nn::Module& m) {
  std::string n = m.name();
  const auto colon = n.rfind("::");
  if (colon != std::string::npos) n = n.substr(colon + 2);
  if (n.size() > 4 && n.compare(n.size() - 4, 4, "Impl") == 0) n.resize(n.size() - 4);
  return n;
}

// Quantizers whose forward pass is sign(x) (+1 for x >= 0); their pseudo-gradients differ only.
bool is_sign(const quantizers::QuantizerPtr& q) {
  return dynamic_cast<const quantizers::SteSign*>(q.get()) != nullptr ||
         dynamic_cast<const quantizers::ApproxSign*>(q.get()) != nullptr ||
         dynamic_cast<const quantizers::SwishSign*>(q.get()) != nullptr;
}

bool is_identity(const quantizers::QuantizerPtr& q) {
  return !q || dynamic_cast<const quantizers::NoOp*>(q.get()) != nullptr;
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

Kernel kernel_of(const at::Tensor& latent, const quantizers::QuantizerPtr& q) {
  at::NoGradGuard no_grad;
  Kernel k;
  if (!q) {
    k.values = to_floats(latent);
    return k;
  }
  if (const auto* ma = dynamic_cast<const quantizers::MagnitudeAwareSign*>(q.get())) {
    k.values = to_floats(latent.ge(0).to(at::kFloat).mul(2.0).sub(1.0));
    k.binary = true;
    k.scale = to_floats(ma->scale(latent));
    if (static_cast<int64_t>(k.scale.size()) != latent.size(0)) {
      fail("magnitude_aware_sign gave " + std::to_string(k.scale.size()) + " scales, expected " +
           std::to_string(latent.size(0)) + " (one per output channel)");
    }
    return k;
  }
  k.values = to_floats(q->quantize(latent));
  k.binary = q->precision() == 1;
  for (float v : k.values) k.binary = k.binary && (v == 1.0f || v == -1.0f);
  return k;
}

struct Layer {
  std::string path;
  std::shared_ptr<torch::nn::Module> module;
};

void flatten_layers(const torch::nn::SequentialImpl& seq, const std::string& prefix,
                    std::vector<Layer>& out) {
  const auto children = seq.children();
  for (std::size_t i = 0; i < children.size(); ++i) {
    const std::string path = prefix + std::to_string(i);
    if (const auto* inner = dynamic_cast<const torch::nn::SequentialImpl*>(children[i].get())) {
      flatten_layers(*inner, path + ".", out);
    } else {
      out.push_back({path, children[i]});
    }
  }
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

class Converter {
 public:
  Converter(std::vector<Layer> layers, const std::vector<int64_t>& input_shape,
            const ConvertOptions& options)
      : layers_(std::move(layers)), options_(options), b_(rt::BuilderOptions{options.fuse}) {
    x_ = b_.input(input_shape);
  }

  rt::Model run() {
    for (i_ = 0; i_ < layers_.size(); ++i_) {
      const Layer& layer = layers_[i_];
      try {
        convert_layer(*layer.module);
      } catch (const std::exception& e) {
        fail("convert: layer " + layer.path + " (" + type_name(*layer.module) + "): " + e.what());
      }
    }
    b_.output(x_);
    for (const auto& [key, value] : options_.metadata) b_.set_metadata(key, value);
    b_.set_metadata("converter", "onebit::convert");
    return b_.build();
  }

 private:
  void convert_layer(torch::nn::Module& m) {
    if (auto* conv = dynamic_cast<nn::QuantConv2dImpl*>(&m)) return quant_conv(*conv);
    if (auto* dense = dynamic_cast<nn::QuantDenseImpl*>(&m)) return quant_dense(*dense);
    if (auto* bn = dynamic_cast<nn::BatchNormImpl*>(&m)) return onebit_batch_norm(*bn);
    if (auto* q = dynamic_cast<nn::QuantizerImpl*>(&m)) return quantize_input(q->quantizer());
    if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(&m)) return torch_conv(*conv);
    if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&m)) return torch_linear(*linear);
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm1dImpl*>(&m)) return torch_batch_norm(*bn, 1);
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(&m)) return torch_batch_norm(*bn, 2);
    if (auto* pool = dynamic_cast<torch::nn::MaxPool2dImpl*>(&m)) return max_pool(*pool);
    if (auto* pool = dynamic_cast<torch::nn::AvgPool2dImpl*>(&m)) return avg_pool(*pool);
    if (auto* flat = dynamic_cast<torch::nn::FlattenImpl*>(&m)) return flatten(*flat);
    if (dynamic_cast<torch::nn::ReLUImpl*>(&m) != nullptr) {
      x_ = b_.relu(x_);
      int_range_ = 0;
      return;
    }
    if (auto* softmax = dynamic_cast<torch::nn::SoftmaxImpl*>(&m)) {
      if (softmax->options.dim() != 1 && softmax->options.dim() != -1) {
        fail("dim " + std::to_string(softmax->options.dim()) + ", expected 1 (the classes)");
      }
      x_ = b_.softmax(x_);
      int_range_ = 0;
      return;
    }
    fail(std::string("layer type not supported; ") + kSupported);
  }

  // Applies an input quantizer: sign-like -> sign op (once), identity -> nothing.
  void quantize_input(const quantizers::QuantizerPtr& q) {
    if (is_identity(q)) return;
    if (!is_sign(q)) {
      fail("input quantizer " + describe(q) +
           " is not supported; expected a sign (ste_sign, approx_sign, swish_sign), noop or none");
    }
    if (!b_.is_bits(x_)) x_ = b_.sign(x_);
    int_range_ = 0;
  }

  // Adds the scale of a magnitude-aware kernel (and the layer's bias) as a per-channel affine
  // after the layer; the builder folds it into the layer's output transform.
  void apply_scale(const Kernel& k, const at::Tensor& bias) {
    std::vector<float> b = bias.defined() ? to_floats(bias) : std::vector<float>(k.scale.size());
    x_ = b_.batch_norm(x_, k.scale, b);
  }

  void quant_conv(nn::QuantConv2dImpl& conv) {
    const auto& o = conv.options;
    quantize_input(o.input_quantizer().get());
    const Kernel k = kernel_of(conv.weight, o.kernel_quantizer().get());
    if (o.pad_values() != 0.0 && o.pad_values() != 1.0) {
      std::ostringstream msg;
      msg << "pad_values " << o.pad_values() << " is not supported, expected 0 or 1";
      fail(msg.str());
    }
    rt::Conv2dParams p(o.out_channels(), 1);
    const auto ks = pair_of(o.kernel_size()), st = pair_of(o.stride()), di = pair_of(o.dilation());
    p.kernel_h = ks[0];
    p.kernel_w = ks[1];
    p.stride_h = st[0];
    p.stride_w = st[1];
    p.dilation_h = di[0];
    p.dilation_w = di[1];
    p.groups = o.groups();
    if (o.padding().same()) {
      p.padding(rt::PaddingMode::kSame);
    } else {
      const auto pad = pair_of(o.padding().amount());
      p.padding(pad[0], pad[1]);
    }
    p.pad_value = static_cast<float>(o.pad_values());
    p.is_binary_kernel = k.binary;
    check_channels(o.in_channels(), "in_channels");
    const bool integer = b_.is_bits(x_) && k.binary && k.scale.empty() && !conv.bias.defined();
    if (!k.binary && b_.is_bits(x_)) {
      fail("kernel quantizer " + describe(o.kernel_quantizer().get()) +
           " gives non-binary weights but the input is binary (sign); the runtime needs a +-1 "
           "kernel for a binary input");
    }
    const bool scaled = !k.scale.empty();
    x_ = b_.conv2d(x_, p, k.values,
                   scaled || !conv.bias.defined() ? std::vector<float>() : to_floats(conv.bias));
    if (scaled) apply_scale(k, conv.bias);
    int_range_ = integer ? o.in_channels() / o.groups() * ks[0] * ks[1] : 0;
  }

  void quant_dense(nn::QuantDenseImpl& dense) {
    const auto& o = dense.options;
    quantize_input(o.input_quantizer().get());
    const Kernel k = kernel_of(dense.weight, o.kernel_quantizer().get());
    check_flat();
    check_channels(o.in_features(), "in_features");
    if (!k.binary && b_.is_bits(x_)) {
      fail("kernel quantizer " + describe(o.kernel_quantizer().get()) +
           " gives non-binary weights but the input is binary (sign); the runtime needs a +-1 "
           "kernel for a binary input");
    }
    const bool integer = b_.is_bits(x_) && k.binary && k.scale.empty() && !dense.bias.defined();
    const bool scaled = !k.scale.empty();
    x_ = b_.dense(x_, rt::DenseParams(o.out_features()).binary_kernel(k.binary), k.values,
                  scaled || !dense.bias.defined() ? std::vector<float>() : to_floats(dense.bias));
    if (scaled) apply_scale(k, dense.bias);
    int_range_ = integer ? o.in_features() : 0;
  }

  void torch_conv(torch::nn::Conv2dImpl& conv) {
    const auto& o = conv.options;
    const std::string mode = torch::enumtype::get_enum_name(o.padding_mode());
    if (mode != "kZeros") fail("padding_mode " + mode + " is not supported, expected kZeros");
    check_channels(o.in_channels(), "in_channels");
    if (b_.is_bits(x_)) fail("float kernel on a binary (sign) input is not supported");
    rt::Conv2dParams p(o.out_channels(), 1);
    const auto ks = pair_of(o.kernel_size()), st = pair_of(o.stride()), di = pair_of(o.dilation());
    p.kernel_h = ks[0];
    p.kernel_w = ks[1];
    p.stride_h = st[0];
    p.stride_w = st[1];
    p.dilation_h = di[0];
    p.dilation_w = di[1];
    p.groups = o.groups();
    const auto pads = torch_conv_pads(o.padding(), ks, di);
    p.padding_mode = rt::PaddingMode::kExplicit;
    p.pad_top = pads[0];
    p.pad_left = pads[1];
    p.pad_bottom = pads[2];
    p.pad_right = pads[3];
    x_ = b_.conv2d(x_, p, to_floats(conv.weight),
                   conv.bias.defined() ? to_floats(conv.bias) : std::vector<float>());
    int_range_ = 0;
  }

  void torch_linear(torch::nn::LinearImpl& linear) {
    check_flat();
    check_channels(linear.options.in_features(), "in_features");
    if (b_.is_bits(x_)) fail("float kernel on a binary (sign) input is not supported");
    x_ = b_.dense(x_, rt::DenseParams(linear.options.out_features()), to_floats(linear.weight),
                  linear.bias.defined() ? to_floats(linear.bias) : std::vector<float>());
    int_range_ = 0;
  }

  void onebit_batch_norm(nn::BatchNormImpl& bn) {
    const int64_t c = bn.options.num_features();
    const std::vector<float> gamma =
        bn.weight.defined() ? to_floats(bn.weight) : std::vector<float>();
    const std::vector<float> beta = bn.bias.defined() ? to_floats(bn.bias) : std::vector<float>();
    const std::vector<int64_t> shape = b_.shape(x_);
    const bool spatial = shape[1] * shape[2] > 1;
    batch_norm(c, gamma, beta, to_floats(bn.running_mean), to_floats(bn.running_var),
               bn.options.eps(), spatial, [&](const at::Tensor& t) { return bn.forward(t); });
  }

  template <typename BatchNormModule>
  void torch_batch_norm(BatchNormModule& bn, int dims) {
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
    batch_norm(o.num_features(), gamma, beta, to_floats(bn.running_mean), to_floats(bn.running_var),
               o.eps(), dims == 2, [&](const at::Tensor& t) { return bn.forward(t); });
  }

  // A batch norm y = (x - mean) / sqrt(var + eps) * gamma + beta. See the file comment of
  // convert.h for the exact thresholds used when the input holds integer dots and a sign follows.
  void batch_norm(int64_t c, const std::vector<float>& gamma, const std::vector<float>& beta,
                  const std::vector<float>& mean, const std::vector<float>& var, double eps,
                  bool spatial, const std::function<at::Tensor(const at::Tensor&)>& forward) {
    check_channels(c, "num_features");
    if (b_.is_bits(x_)) fail("batch norm of a binary (sign) value is not supported");
    if (!(options_.exact_thresholds && int_range_ > 0 && sign_follows())) {
      x_ = b_.batch_norm_stats(x_, gamma, beta, mean, var, static_cast<float>(eps));
      int_range_ = 0;
      return;
    }
    // LibTorch's own sign decisions for every integer input d in [-K, K].
    const int64_t k = int_range_, n = 2 * k + 1;
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
        const bool runtime_positive =
            static_cast<float>(i - k) * mult[ch] + bias[ch] >= 0.0f;  // as the runtime computes
        if (runtime_positive != s[i]) {
          fail("channel " + std::to_string(ch) + ": cannot reproduce LibTorch's sign at input " +
               std::to_string(i - k));
        }
      }
    }
    x_ = b_.batch_norm(x_, mult, bias);
    int_range_ = 0;
  }

  // True when the value after the current layer reaches a sign through layers that keep the
  // sign of every element's batch-norm output (flatten, max pooling: sign is monotone).
  bool sign_follows() const {
    for (std::size_t j = i_ + 1; j < layers_.size(); ++j) {
      const torch::nn::Module* m = layers_[j].module.get();
      if (dynamic_cast<const torch::nn::FlattenImpl*>(m) != nullptr ||
          dynamic_cast<const torch::nn::MaxPool2dImpl*>(m) != nullptr) {
        continue;
      }
      if (const auto* q = dynamic_cast<const nn::QuantizerImpl*>(m)) return is_sign(q->quantizer());
      if (const auto* l = dynamic_cast<const nn::QuantConv2dImpl*>(m)) {
        return is_sign(l->options.input_quantizer().get());
      }
      if (const auto* l = dynamic_cast<const nn::QuantDenseImpl*>(m)) {
        return is_sign(l->options.input_quantizer().get());
      }
      return false;
    }
    return false;
  }

  void max_pool(torch::nn::MaxPool2dImpl& pool) {
    const auto& o = pool.options;
    if (o.ceil_mode()) fail("ceil_mode is not supported, expected false");
    const auto di = pair_of(o.dilation());
    if (di[0] != 1 || di[1] != 1) fail("dilation is not supported, expected 1");
    x_ = b_.max_pool2d(x_, pool_params(o.kernel_size(), o.stride(), o.padding()));
  }

  void avg_pool(torch::nn::AvgPool2dImpl& pool) {
    const auto& o = pool.options;
    if (o.ceil_mode()) fail("ceil_mode is not supported, expected false");
    if (o.divisor_override().has_value()) fail("divisor_override is not supported");
    rt::Pool2dParams p = pool_params(o.kernel_size(), o.stride(), o.padding());
    p.count_include_pad = o.count_include_pad();
    x_ = b_.avg_pool2d(x_, p);
    int_range_ = 0;
  }

  static rt::Pool2dParams pool_params(const torch::ExpandingArray<2>& kernel,
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

  void flatten(torch::nn::FlattenImpl& flat) {
    const auto& o = flat.options;
    if (o.start_dim() != 1 || o.end_dim() != -1) {
      fail("start_dim " + std::to_string(o.start_dim()) + ", end_dim " +
           std::to_string(o.end_dim()) + ": expected 1 and -1 (flatten each image)");
    }
    x_ = b_.flatten(x_);
  }

  void check_flat() const {
    const std::vector<int64_t> s = b_.shape(x_);
    if (s[1] * s[2] > 1) {
      fail("input has shape " + std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" +
           std::to_string(s[2]) + "; expected features (add a Flatten before this layer)");
    }
  }

  void check_channels(int64_t expected, const char* what) const {
    const std::vector<int64_t> s = b_.shape(x_);
    if (s[0] != expected) {
      fail(std::string(what) + " is " + std::to_string(expected) + " but its input has " +
           std::to_string(s[0]) + " channels (shape " + std::to_string(s[0]) + "x" +
           std::to_string(s[1]) + "x" + std::to_string(s[2]) + ")");
    }
  }

  std::vector<Layer> layers_;
  ConvertOptions options_;
  rt::ModelBuilder b_;
  rt::ValueRef x_;
  std::size_t i_ = 0;
  // K when the current value holds the exact integer dots of a binary layer (in [-K, K]).
  int64_t int_range_ = 0;
};

}  // namespace

runtime::Model convert(torch::nn::Sequential model, const std::vector<int64_t>& input_shape,
                       const ConvertOptions& options) {
  if (input_shape.size() != 1 && input_shape.size() != 3) {
    fail("convert: input_shape has " + std::to_string(input_shape.size()) +
         " dimensions, expected {C, H, W} or {features}");
  }
  std::vector<Layer> layers;
  flatten_layers(*model, "", layers);
  if (layers.empty()) fail("convert: the model has no layers");
  const bool was_training = model->is_training();
  model->eval();
  try {
    runtime::Model m = Converter(std::move(layers), input_shape, options).run();
    model->train(was_training);
    return m;
  } catch (...) {
    model->train(was_training);
    throw;
  }
}

ModelStorage storage_of(const runtime::Model& model) {
  ModelStorage s;
  for (const runtime::Op& op : model.ops) {
    for (const auto& [role, index] : op.tensors) {
      const runtime::Tensor& t = model.tensors.at(static_cast<std::size_t>(index));
      if (t.dtype == runtime::DType::kBits && role == "weight") s.binary_weights += t.numel();
    }
  }
  for (const runtime::Tensor& t : model.tensors) {
    if (t.dtype != runtime::DType::kBits) s.stored_numbers += t.numel();
    s.payload_bytes += t.storage_bytes();
  }
  return s;
}

ConvertResult convert_checkpoint(const std::string& checkpoint, const std::string& out_path,
                                 const ConvertOptions& options) {
  train::Checkpoint ck = train::load_checkpoint(checkpoint);
  std::vector<int64_t> input_shape{1, 28, 28};
  ConvertOptions opts = options;
  ConvertResult r;
  r.checkpoint = ck.path;
  r.out_path = out_path;
  if (ck.config.contains("train")) {
    const auto& t = ck.config.at("train");
    if (t.contains("model_options") && t.at("model_options").contains("input_shape")) {
      input_shape = t.at("model_options").at("input_shape").get<std::vector<int64_t>>();
    }
    r.model_name = t.value("model", std::string());
    opts.metadata.emplace("model", r.model_name);
    opts.metadata.emplace("dataset", t.value("dataset", std::string()));
  }
  opts.metadata.emplace("checkpoint", ck.path);
  if (ck.config.contains("epoch")) opts.metadata.emplace("epoch", ck.config.at("epoch").dump());
  if (ck.config.contains("test_accuracy")) {
    opts.metadata.emplace("test_accuracy", ck.config.at("test_accuracy").dump());
  }
  const runtime::Model m = convert(ck.model, input_shape, opts);
  r.file_bytes = runtime::save_model(m, out_path);
  r.storage = storage_of(m);
  const ModelSummary s =
      summary(ck.model, input_shape, r.model_name.empty() ? "model" : r.model_name);
  r.summary_bits = s.memory_bits;
  r.float32_bits = s.fp32_memory_bits;
  return r;
}

}  // namespace onebit
