#pragma once
/// \file
/// `ModelBuilder`: the API a converter calls with plain float arrays in PyTorch's layouts. It
/// packs binary weights, validates shapes as ops are added, and fuses ops when the model is built
/// (batch norm into the previous layer; "binary layer -> batch norm -> sign" into a layer with
/// bit-packed output via integer thresholds; "binary conv -> max pool -> batch norm -> sign" into
/// a thresholded conv followed by a binary max pool). Fused and unfused models give identical
/// results because every threshold is derived from the runtime's own float formula. In graphs
/// (shortcuts, concatenation) a chain fuses only where each intermediate value has exactly one
/// consumer and is not the model output.
///
/// Example (Larq's MNIST CNN, weights in PyTorch OIHW / [out, in] order):
/// \code
///   using namespace onebit::runtime;
///   ModelBuilder b;
///   ValueRef x = b.input({1, 28, 28});
///   x = b.conv2d(x, Conv2dParams(32, 3).binary_kernel(true), w1);      // float input, +-1 kernel
///   x = b.max_pool2d(x, Pool2dParams(2));
///   x = b.batch_norm(x, bn1_multiplier, bn1_bias);                      // folded by the caller
///   x = b.sign(x);
///   x = b.conv2d(x, Conv2dParams(64, 3).binary_kernel(true), w2);       // binary conv
///   ...
///   x = b.flatten(x);                                                    // PyTorch C,H,W order
///   x = b.sign(x);
///   x = b.dense(x, DenseParams(64).binary_kernel(true), w4);            // w4: [64][576]
///   ...
///   b.output(x);
///   b.save("mnist.obnn");
/// \endcode

#include <cstdint>
#include <string>
#include <vector>

#include "onebit/runtime/model.h"

namespace onebit::runtime {

/// Handle of a value (an activation) in a model under construction.
struct ValueRef {
  std::int32_t id = -1;  ///< Value id: 0 is the input, op i produces i + 1.
};

/// How a conv or pool pads its input.
enum class PaddingMode {
  kValid,     ///< No padding.
  kSame,      ///< TensorFlow/Larq "same": output = ceil(input / stride), extra pad at the end.
  kExplicit,  ///< `pad_top/left/bottom/right` as given (PyTorch's `padding=(ph, pw)`).
};

/// Parameters of `ModelBuilder::conv2d`, with chainable setters:
/// `Conv2dParams(64, 3).stride(2).padding(PaddingMode::kSame).binary_kernel(true)`.
struct Conv2dParams {
  std::int64_t out_channels = 0;
  std::int64_t kernel_h = 1, kernel_w = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t groups = 1;
  PaddingMode padding_mode = PaddingMode::kValid;
  std::int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  /// Value of padded inputs: 0 (zero-padding, PyTorch's default) or 1 (one-padding, Larq's
  /// `pad_values=1`, binary inputs only; free on packed data).
  float pad_value = 0.0f;
  /// True when the weights are +-1 (a binary kernel quantizer); they are stored as bits.
  bool is_binary_kernel = false;

  Conv2dParams() = default;
  /// `out` output channels, square `kernel`.
  Conv2dParams(std::int64_t out, std::int64_t kernel)
      : out_channels(out), kernel_h(kernel), kernel_w(kernel) {}
  Conv2dParams& stride(std::int64_t s) {
    stride_h = stride_w = s;
    return *this;
  }
  Conv2dParams& dilation(std::int64_t d) {
    dilation_h = dilation_w = d;
    return *this;
  }
  Conv2dParams& groups_count(std::int64_t g) {
    groups = g;
    return *this;
  }
  Conv2dParams& padding(PaddingMode mode) {
    padding_mode = mode;
    return *this;
  }
  /// Symmetric explicit padding (PyTorch `padding=(ph, pw)`).
  Conv2dParams& padding(std::int64_t ph, std::int64_t pw) {
    padding_mode = PaddingMode::kExplicit;
    pad_top = pad_bottom = ph;
    pad_left = pad_right = pw;
    return *this;
  }
  Conv2dParams& padding_value(float v) {
    pad_value = v;
    return *this;
  }
  Conv2dParams& binary_kernel(bool b) {
    is_binary_kernel = b;
    return *this;
  }
};

/// Parameters of `ModelBuilder::dense`.
struct DenseParams {
  std::int64_t out_features = 0;
  bool is_binary_kernel = false;  ///< True when the weights are +-1.
  DenseParams() = default;
  explicit DenseParams(std::int64_t out) : out_features(out) {}
  DenseParams& binary_kernel(bool b) {
    is_binary_kernel = b;
    return *this;
  }
};

/// Parameters of pooling ops; stride defaults to the kernel size.
struct Pool2dParams {
  std::int64_t kernel_h = 2, kernel_w = 2;
  std::int64_t stride_h = 0, stride_w = 0;  ///< 0: same as the kernel.
  PaddingMode padding_mode = PaddingMode::kValid;
  std::int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool count_include_pad = true;  ///< Average pooling divisor (PyTorch default true).
  Pool2dParams() = default;
  explicit Pool2dParams(std::int64_t kernel) : kernel_h(kernel), kernel_w(kernel) {}
  Pool2dParams& stride(std::int64_t s) {
    stride_h = stride_w = s;
    return *this;
  }
  Pool2dParams& padding(std::int64_t ph, std::int64_t pw) {
    padding_mode = PaddingMode::kExplicit;
    pad_top = pad_bottom = ph;
    pad_left = pad_right = pw;
    return *this;
  }
  Pool2dParams& padding(PaddingMode mode) {
    padding_mode = mode;
    return *this;
  }
};

/// Options of a `ModelBuilder`.
struct BuilderOptions {
  bool fuse = true;  ///< Apply the fusions described in this header when building.
};

/// Builds a runtime `Model` from float arrays. All methods throw `std::invalid_argument` with a
/// message naming the op, the argument, the value and what was expected.
class ModelBuilder {
 public:
  explicit ModelBuilder(BuilderOptions options = {});

  /// Declares the model input, one image: {C, H, W} (or {features}). Call once, first.
  ValueRef input(const std::vector<std::int64_t>& chw);
  /// sign() quantizer: float -> bits (x >= 0 -> +1).
  ValueRef sign(ValueRef x);
  /// 2-D convolution. `weight` is PyTorch OIHW: [out][in/groups][kh][kw]; `bias` is empty or
  /// [out]. With a binary kernel the weights must be exactly +-1 and are stored as bits; the op
  /// is a binary conv when `x` is bits (after `sign`), a float conv with bit-stored weights
  /// otherwise.
  ValueRef conv2d(ValueRef x, const Conv2dParams& params, const std::vector<float>& weight,
                  const std::vector<float>& bias = {});
  /// conv2d with a +-1 kernel given packed (`params.is_binary_kernel` must be set):
  /// `weight_bits` holds the out x kh x kw x (in/groups) signs in that order (channels
  /// innermost; PyTorch's OIHW permuted to OHWI), bit set for -1, as `pack_signs` packs them:
  /// `words_for_bits(out * kh * kw * in/groups)` words. For callers that build a layer from
  /// new weights often (the training path: once per step) and pack them once.
  ValueRef conv2d_packed(ValueRef x, const Conv2dParams& params, std::vector<BitWord> weight_bits,
                         const std::vector<float>& bias = {});
  /// Dense layer. `weight` is PyTorch's [out][in] with `in` in the order of the input features
  /// (after `flatten`, PyTorch's C,H,W order). Binary when `x` is bits and the kernel is binary.
  ValueRef dense(ValueRef x, const DenseParams& params, const std::vector<float>& weight,
                 const std::vector<float>& bias = {});
  /// dense with a +-1 kernel given packed, as `conv2d_packed`: `weight_bits` holds the out x in
  /// signs of PyTorch's [out][in] in that order.
  ValueRef dense_packed(ValueRef x, const DenseParams& params, std::vector<BitWord> weight_bits,
                        const std::vector<float>& bias = {});
  /// Per-channel affine y = x * multiplier[c] + bias[c] (batch norm folded by the caller).
  ValueRef batch_norm(ValueRef x, const std::vector<float>& multiplier,
                      const std::vector<float>& bias);
  /// Batch norm from its statistics: multiplier = gamma / sqrt(var + eps),
  /// bias = beta - mean * multiplier (computed in double, stored as float). Empty gamma/beta
  /// mean 1/0 (Larq's `scale=False` / `center=False`).
  ValueRef batch_norm_stats(ValueRef x, const std::vector<float>& gamma,
                            const std::vector<float>& beta, const std::vector<float>& mean,
                            const std::vector<float>& var, float eps);
  /// Max pooling (float, or bits when `x` is bits).
  ValueRef max_pool2d(ValueRef x, const Pool2dParams& params);
  /// Average pooling (PyTorch `avg_pool2d`, floor mode); `x` float or bits (read as +-1), the
  /// output is float. Any stride (default: the kernel), pads up to half the kernel,
  /// `count_include_pad` as in PyTorch.
  ValueRef avg_pool2d(ValueRef x, const Pool2dParams& params);
  /// Global average pooling: (C,H,W) -> (C,1,1) float, the mean over H*W per channel (bits read
  /// as +-1). `flatten` after it gives C features in channel order.
  ValueRef global_avg_pool2d(ValueRef x);
  /// Elementwise sum a + b of two values of the same shape (Bi-Real shortcuts); either may be
  /// bits (read as +-1). The output is float.
  ValueRef add(ValueRef a, ValueRef b);
  /// Concatenation along channels (PyTorch `torch.cat(xs, 1)`) of 2 to 256 values with equal H
  /// and W, channels in the order of `xs` (DenseNet blocks). All bits: bits output, kept packed;
  /// all float or mixed: float output with bits read as +-1.
  /// Example: `ValueRef y = b.concat({x, b.sign(b.batch_norm(conv, m, bias))});`
  ValueRef concat(const std::vector<ValueRef>& xs);
  /// max(x, 0).
  ValueRef relu(ValueRef x);
  /// x >= 0 ? x : alpha * x, alpha per channel or a single value.
  ValueRef prelu(ValueRef x, const std::vector<float>& alpha);
  /// (C,H,W) -> features in PyTorch's C,H,W order, whatever the runtime's internal layout.
  ValueRef flatten(ValueRef x);
  /// Softmax over channels.
  ValueRef softmax(ValueRef x);
  /// 1 / (1 + exp(-x)), float -> float.
  ValueRef sigmoid(ValueRef x);
  /// Elementwise product a * b. b has a's shape, or b is (C,1,1) with a's C (a per-channel scale
  /// broadcast over H and W: squeeze-and-excite / Real-to-Binary scaling). Float inputs (bits read
  /// as +-1); float output.
  /// Example (squeeze-and-excite): `y = b.mul(x, b.sigmoid(b.dense(...)))` with the dense giving
  /// C features.
  ValueRef mul(ValueRef a, ValueRef b);
  /// Channels [begin, end) of x, like PyTorch x[:, begin:end]. Float -> float, bits -> bits.
  /// Bits stay packed for any begin and end. Requires 0 <= begin < end <= C.
  ValueRef slice_channels(ValueRef x, std::int64_t begin, std::int64_t end);
  /// min(max(x, lo), hi), float -> float (Keras clip_by_value / PyTorch hardtanh). lo <= hi,
  /// neither NaN (infinities are allowed: a one-sided clip).
  ValueRef clip(ValueRef x, float lo, float hi);
  /// DoReFa-Net's k-bit activation quantizer: round(clip(x, 0, 1) * n) / n with n = 2^k - 1 and
  /// round-half-to-even (std::nearbyint in the default rounding mode); float -> float, k in [1,
  /// 16].
  ValueRef quantize_levels(ValueRef x, int k_bit);
  /// The same k-bit levels as bit planes (format version 4): float (C,H,W) -> bits
  /// (C * n, H, W), n = 2^k - 1, channel c's planes at c * n .. c * n + n - 1, the low q of them
  /// set (-1) for level q = nearbyint(clip(x, 0, 1) * n). Only binary `conv2d` and `dense` read
  /// such a value: their binary kernel has C input channels, each applied to its n planes
  /// ("input_planes"), and they output the +-1 dot D over the planes, so that the k-bit layer
  /// is (n * sum(w) - D) / (2 n) with sum(w) the sum of the kernel's +-1 values per output
  /// channel (one-padding: padded taps are level 0). k in [1, 6].
  /// Example (2-bit input, +-1 kernel w, no bias): `y = b.batch_norm(b.conv2d(b.thermometer(x,
  /// 2), p.padding_value(1).binary_kernel(true), w), {-1/6 ...}, {sum_w / 2 ...})`.
  ValueRef thermometer(ValueRef x, int k_bit);
  /// Marks the model output.
  void output(ValueRef x);
  /// Sets a free-form metadata string stored in the file (e.g. "source", "classes").
  void set_metadata(const std::string& key, const std::string& value);
  /// Sets the name (`Op::name`) given to every op added afterwards, e.g. the training-side node
  /// name "block3_conv"; empty (the default) gives no name. At most 1024 bytes. Names appear in
  /// error messages, in the file (format version 3) and in `Interpreter::run_profiled`. When
  /// ops fuse, the fused op keeps the first op's name and appends "+name" of each op folded
  /// into it whose name is not empty and not already part of it: "block1_conv+block1_bn".
  /// Example: `b.set_name_scope("block1_conv"); x = b.conv2d(x, ...); b.set_name_scope("");`
  void set_name_scope(const std::string& name);
  /// The name given to ops added now (see `set_name_scope`).
  const std::string& name_scope() const { return name_scope_; }

  /// Shape {C, H, W} of a value.
  std::vector<std::int64_t> shape(ValueRef x) const;
  /// True when a value is bit-packed.
  bool is_bits(ValueRef x) const;

  /// The finished (and, with `fuse`, fused) model.
  Model build() const;
  /// Builds and writes an `.obnn` file atomically; returns its size in bytes.
  std::size_t save(const std::string& path) const;

 private:
  struct ValueShape {
    DType dtype;
    std::int64_t c, h, w;
    std::int64_t planes = 1;  // thermometer planes per channel (bits values only)
  };
  ValueRef add_op(Op op, const std::string& what);
  std::int32_t add_tensor(Tensor t);
  const ValueShape& value(ValueRef x, const std::string& what) const;
  static std::string shape_string(const ValueShape& s);
  std::vector<std::int64_t> pool_attrs(const Pool2dParams& p, const ValueShape& in, Op& op,
                                       const std::string& what) const;

  const ValueShape& float_value(ValueRef x, const std::string& what) const;
  // Input channels per group of a conv2d on `in`; fails on bad channel, group or kernel counts.
  std::int64_t conv2d_input_channels(const ValueShape& in, const Conv2dParams& p,
                                     const std::string& what) const;
  // Input features of a dense layer on `in`; fails on a spatial input or no outputs.
  std::int64_t dense_input_features(const ValueShape& in, const DenseParams& p,
                                    const std::string& what) const;
  // The parts of conv2d and dense that follow their weight tensor (OHWI / [out][in]).
  ValueRef conv2d_op(ValueRef x, const Conv2dParams& p, Tensor weight,
                     const std::vector<float>& bias);
  ValueRef dense_op(ValueRef x, const DenseParams& p, Tensor weight,
                    const std::vector<float>& bias);

  BuilderOptions options_;
  Model model_;
  std::vector<ValueShape> values_;
  bool has_output_ = false;
  std::string name_scope_;
};

}  // namespace onebit::runtime
