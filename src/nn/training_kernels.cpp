#include "onebit/nn/training_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"

namespace onebit::nn {
namespace {

namespace rt = onebit::runtime;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per thread, like LibTorch's grad mode: data-parallel ranks that run as threads of one process
// set and restore it independently.
thread_local TrainingKernels g_kernels = TrainingKernels::kFloat;

// Custom autograd functions take no undefined tensor (LibTorch 1.13 asks it for its device), so
// a layer without bias passes this empty one.
at::Tensor no_bias(const at::Tensor& x) { return at::empty({0}, x.options()); }
at::Tensor bias_or_undefined(const at::Tensor& bias) {
  return bias.numel() != 0 ? bias : at::Tensor();
}

std::vector<float> floats_of(const at::Tensor& t) {
  const at::Tensor c = t.detach().contiguous();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

// True when a layer keeps its tensors channels-last: its input is, or has one channel (the same
// memory either way; a first layer then starts the network's channels-last layout). A
// network whose tensors are NCHW stays NCHW: mixing layouts makes LibTorch copy in every op.
bool channels_last(const at::Tensor& x) {
  return x.dim() == 4 &&
         (x.size(1) == 1 || x.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
}

rt::InterpreterOptions interpreter_options(bool channels_last_io) {
  rt::InterpreterOptions o;
  o.threads = at::get_num_threads();
  o.channels_last = channels_last_io;
  // The float path lets NaN run through; so does this one (the trainer checks the loss).
  o.non_finite = rt::NonFiniteInput::kPropagate;
  return o;
}

// Runs `net` (built with `interpreter_options(channels_last(x))`) on `x` into a new tensor of
// `shape` (N, C, H, W, or N, F), NHWC when `channels_last(x)`.
at::Tensor run_net(const rt::Interpreter& net, const at::Tensor& x, std::vector<int64_t> shape) {
  const at::MemoryFormat format =
      channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = x.contiguous(format);
  const auto batch = static_cast<std::size_t>(x.size(0));
  at::Tensor y = shape.size() == 4 ? at::empty(shape, x.options().memory_format(format))
                                   : at::empty(shape, x.options());
  net.run(input.data_ptr<float>(), static_cast<std::size_t>(input.numel()), batch,
          y.data_ptr<float>());
  return y;
}

// The float path's convolution of the same values (used when the runtime refuses them).
at::Tensor float_conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                        const detail::Conv2dGeometry& g) {
  return at::convolution(x, w, bias, g.stride, g.padding, g.dilation, /*transposed=*/false, {0, 0},
                         g.groups);
}

at::Tensor runtime_conv2d_values(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                 const detail::Conv2dGeometry& g, bool binary_input) {
  rt::ModelBuilder b(rt::BuilderOptions{/*fuse=*/false});
  rt::ValueRef v = b.input({x.size(1), x.size(2), x.size(3)});
  if (binary_input) v = b.sign(v);
  rt::Conv2dParams p(w.size(0), w.size(2));
  p.kernel_w = w.size(3);
  p.stride_h = g.stride[0], p.stride_w = g.stride[1];
  p.dilation_h = g.dilation[0], p.dilation_w = g.dilation[1];
  p.groups = g.groups;
  if (g.same) {
    p.padding(rt::PaddingMode::kSame);
  } else {
    p.padding(g.pads[0], g.pads[1]);
  }
  p.pad_value = static_cast<float>(g.pad_value);
  p.binary_kernel(true);
  v = b.conv2d(v, p, floats_of(w), bias.defined() ? floats_of(bias) : std::vector<float>{});
  b.output(v);
  const std::vector<int64_t> out = b.shape(v);
  const rt::Interpreter net(b.build(), interpreter_options(channels_last(x)));
  return run_net(net, x, {x.size(0), out[0], out[1], out[2]});
}

// dL/dw of a convolution (one group) from the output gradient `g` (N, O, OH, OW) and the input
// `x` (N, C, H, W, before the convolution's zero `padding`), any layout: the
// product of g as an (N*OH*OW) x O matrix with the input patches as an (N*OH*OW) x (kh*kw*C)
// matrix, equal to LibTorch's weight gradient within float rounding. LibTorch's
// convolution_backward is several times slower for a first layer's few input channels.
at::Tensor weight_gradient(const at::Tensor& g, const at::Tensor& x, at::IntArrayRef w_sizes,
                           const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                           const std::vector<int64_t>& dilation) {
  const int64_t n = g.size(0), o = g.size(1), oh = g.size(2), ow = g.size(3);
  const int64_t c = w_sizes[1], kh = w_sizes[2], kw = w_sizes[3];
  at::Tensor xp = x;
  if (padding[0] != 0 || padding[1] != 0) {
    xp = at::constant_pad_nd(x, {padding[1], padding[1], padding[0], padding[0]}, 0.0)
             .contiguous(at::MemoryFormat::ChannelsLast);
  }
  const at::Tensor nhwc = xp.permute({0, 2, 3, 1});
  at::Tensor cols = at::empty({n, oh, ow, kh, kw, c}, x.options());
  for (int64_t ky = 0; ky < kh; ++ky) {
    for (int64_t kx = 0; kx < kw; ++kx) {
      const int64_t y0 = ky * dilation[0], x0 = kx * dilation[1];
      cols.select(3, ky).select(3, kx).copy_(
          nhwc.slice(1, y0, y0 + (oh - 1) * stride[0] + 1, stride[0])
              .slice(2, x0, x0 + (ow - 1) * stride[1] + 1, stride[1]));
    }
  }
  const at::Tensor g2 = g.permute({0, 2, 3, 1}).reshape({n * oh * ow, o});
  return at::mm(g2.t(), cols.view({n * oh * ow, kh * kw * c}))
      .view({o, kh, kw, c})
      .permute({0, 3, 1, 2})
      .contiguous();
}

class RuntimeConv2dFunction : public torch::autograd::Function<RuntimeConv2dFunction> {
 public:
  // `geometry` travels as a pointer: the caller's object outlives the forward call, and the
  // backward pass reads only the copies in saved_data.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& padded, const at::Tensor& w,
                            const at::Tensor& bias_or_empty, const at::Tensor& x,
                            const detail::Conv2dGeometry* geometry, bool binary_input) {
    const detail::Conv2dGeometry& g = *geometry;
    const at::Tensor bias = bias_or_undefined(bias_or_empty);
    ctx->save_for_backward({padded, w});
    ctx->saved_data["stride"] = g.stride;
    ctx->saved_data["padding"] = g.padding;
    ctx->saved_data["dilation"] = g.dilation;
    ctx->saved_data["groups"] = g.groups;
    ctx->saved_data["bias"] = bias.defined();
    ctx->saved_data["channels_last"] = channels_last(x);
    try {
      return runtime_conv2d_values(x, w, bias, g, binary_input);
    } catch (const std::invalid_argument&) {
      // Kernel entries that are not +-1 (a quantizer that declares a sign but is not one): the
      // float path gives the result.
      return float_conv2d(padded, w, bias, g);
    }
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["bias"].toBool();
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data["padding"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    // The layout of the forward pass (see channels_last) for both: mixing layouts makes
    // LibTorch copy.
    const at::MemoryFormat format = ctx->saved_data["channels_last"].toBool()
                                        ? at::MemoryFormat::ChannelsLast
                                        : at::MemoryFormat::Contiguous;
    const at::Tensor g = grads[0].contiguous(format);
    const at::Tensor x = saved[0].contiguous(format);
    if (!ctx->needs_input_grad(0) && groups == 1) {
      // A first layer (its input needs no gradient): one matrix product (see weight_gradient).
      return {at::Tensor(),
              ctx->needs_input_grad(1)
                  ? weight_gradient(g, x, saved[1].sizes(), stride, padding, dilation)
                  : at::Tensor(),
              has_bias && ctx->needs_input_grad(2) ? g.sum({0, 2, 3}) : at::Tensor(),
              at::Tensor(),
              at::Tensor(),
              at::Tensor()};
    }
    const std::vector<int64_t> bias_sizes{saved[1].size(0)};
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   has_bias && ctx->needs_input_grad(2)};
    auto [gx, gw, gb] = at::convolution_backward(
        g, x, saved[1], has_bias ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(),
        stride, padding, dilation, /*transposed=*/false, {0, 0}, groups, mask);
    return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor runtime_dense_values(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                bool binary_input) {
  rt::ModelBuilder b(rt::BuilderOptions{/*fuse=*/false});
  rt::ValueRef v = b.input({x.size(1)});
  if (binary_input) v = b.sign(v);
  v = b.dense(v, rt::DenseParams(w.size(0)).binary_kernel(true), floats_of(w),
              bias.defined() ? floats_of(bias) : std::vector<float>{});
  b.output(v);
  const rt::Interpreter net(b.build(), interpreter_options(false));
  return run_net(net, x, {x.size(0), w.size(0)});
}

class RuntimeDenseFunction : public torch::autograd::Function<RuntimeDenseFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& bias_or_empty, bool binary_input) {
    const at::Tensor bias = bias_or_undefined(bias_or_empty);
    ctx->save_for_backward({x, w});
    ctx->saved_data["bias"] = bias.defined();
    try {
      return runtime_dense_values(x, w, bias, binary_input);
    } catch (const std::invalid_argument&) {
      return at::linear(x, w, bias);  // see RuntimeConv2dFunction::forward
    }
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grads[0];
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = g.mm(saved[1]);
    if (ctx->needs_input_grad(1)) gw = g.t().mm(saved[0]);
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = g.sum(0);
    return {gx, gw, gb, at::Tensor()};
  }
};

}  // namespace

const char* training_kernels_name(TrainingKernels kernels) {
  return kernels == TrainingKernels::kBinary ? "binary" : "float";
}

TrainingKernels parse_training_kernels(const std::string& name) {
  if (name == "binary") return TrainingKernels::kBinary;
  if (name == "float") return TrainingKernels::kFloat;
  throw std::invalid_argument("unknown training kernels \"" + name +
                              "\": expected \"binary\" (onebit's runtime kernels) or \"float\" "
                              "(LibTorch's float operations)");
}

TrainingKernels training_kernels() { return g_kernels; }

void set_training_kernels(TrainingKernels kernels) { g_kernels = kernels; }

TrainingKernelsGuard::TrainingKernelsGuard(TrainingKernels kernels) : previous_(g_kernels) {
  g_kernels = kernels;
}

TrainingKernelsGuard::~TrainingKernelsGuard() { g_kernels = previous_; }

at::Tensor training_layout(const at::Tensor& batch) {
  if (training_kernels() != TrainingKernels::kBinary || batch.dim() != 4) return batch;
  // `contiguous(ChannelsLast)` keeps NCHW strides when C == 1 (both layouts are contiguous):
  // allocate with NHWC strides instead.
  return at::empty(batch.sizes(), batch.options().memory_format(at::MemoryFormat::ChannelsLast))
      .copy_(batch);
}

void set_intra_op_threads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
  using SetThreads = void (*)(int);
  // Looked up at run time: present only when the process loaded OpenBLAS (Debian's LibTorch).
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
}

namespace detail {

bool use_runtime_kernels(const quantizers::QuantizerPtr& input_quantizer,
                         const quantizers::QuantizerPtr& kernel_quantizer, const at::Tensor& input,
                         const at::Tensor& weight, double pad_value) {
  using quantizers::ForwardKind;
  if (training_kernels() != TrainingKernels::kBinary || kernel_quantizer == nullptr) return false;
  if (kernel_quantizer->forward_kind() != ForwardKind::kSign) return false;
  if (input_quantizer != nullptr ? input_quantizer->forward_kind() != ForwardKind::kSign
                                 : pad_value != 0) {
    return false;
  }
  if (pad_value != 0 && pad_value != 1) return false;
  if (input.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat ||
      !input.device().is_cpu() || !weight.device().is_cpu() || input.size(0) == 0) {
    return false;
  }
  at::NoGradGuard no_grad;
  return !kernel_quantizer->sign_scale_as(weight, quantizers::TensorRole::kernel()).defined();
}

at::Tensor runtime_conv2d(const at::Tensor& x, const at::Tensor& padded, const at::Tensor& w,
                          const at::Tensor& bias, const Conv2dGeometry& geometry,
                          bool binary_input) {
  // `x` enters as a detached value: its gradient flows through `padded`.
  return RuntimeConv2dFunction::apply(padded, w, bias.defined() ? bias : no_bias(x), x.detach(),
                                      &geometry, binary_input);
}

at::Tensor runtime_dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                         bool binary_input) {
  return RuntimeDenseFunction::apply(x, w, bias.defined() ? bias : no_bias(x), binary_input);
}

}  // namespace detail
}  // namespace onebit::nn
