#pragma once
/// \file
/// Quantizers: the forward mapping of a full-precision tensor to a low-precision one, and the
/// pseudo-gradient used in its place on the backward pass (Larq's quantizer family).
///
/// ```
/// auto q = onebit::quantizers::get("ste_sign");      // by string id
/// torch::Tensor y = (*q)(x);                           // sign(x), STE gradient
/// auto q2 = std::make_shared<onebit::quantizers::SteSign>(0.5);  // by object
/// ```

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace onebit {

/// JSON value type used for configs throughout onebit.
using Json = nlohmann::json;

namespace quantizers {

/// What a quantizer's forward pass computes, as far as the converter needs to know: the runtime
/// runs `kSign` quantizers as bit-packing (+1 for x >= 0, -1 otherwise) and skips `kIdentity`
/// ones; anything else (`kOther`) cannot run on a binary path.
enum class ForwardKind { kOther, kIdentity, kSign };

/// Where a tensor handed to a quantizer comes from, for quantizers with per-channel statistics
/// (`magnitude_aware_sign`). Larq works channels-last and reduces over every axis but the last;
/// in LibTorch's layouts that last axis is axis 0 of a kernel ([out, in, kh, kw], or
/// [in, out, ...] for a transposed convolution, as in Keras), axis 1 of an activation
/// ([N, C, ...] or [N, F]), and the depth-multiplier index of a depthwise kernel
/// ([C * depth_multiplier, 1, kh, kw]). Quantizers without such statistics ignore the role.
struct TensorRole {
  /// A layer's kernel or an activation.
  enum class Kind { kKernel, kActivation };
  /// What the tensor is.
  Kind kind = Kind::kKernel;
  /// For a depthwise kernel, its depth multiplier (> 0); 0 for every other tensor.
  int64_t depth_multiplier = 0;

  /// A layer's kernel with the channel on axis 0 (the default role).
  static TensorRole kernel() { return {}; }
  /// An activation [N, C, ...] (e.g. what an input quantizer sees).
  static TensorRole activation() { return {Kind::kActivation, 0}; }
  /// A depthwise kernel [C * depth_multiplier, 1, kh, kw].
  static TensorRole depthwise_kernel(int64_t depth_multiplier) {
    return {Kind::kKernel, depth_multiplier};
  }
};

/// A sign quantizer's pseudo-gradient in the form that the binary training path applies inside
/// its own last pass over a kernel gradient instead of as a separate one (see
/// Quantizer::folded_gradient): dy * 1{|x| <= clip}, times the quantizer's `sign_scale_as(x)`
/// (a constant on the backward pass) when `scaled`.
struct FoldedGradient {
  /// The clip; nullopt for none (the gradient is then dy, also where x is NaN).
  std::optional<double> clip;
  /// Whether the gradient is multiplied by the forward pass's scale.
  bool scaled = false;
};

/// A quantizer: forward value, pseudo-gradient, precision in bits, string id and config.
///
/// Subclasses implement `quantize` (forward values, no autograd) and `gradient` (pseudo-gradient
/// given the input and the upstream gradient). `operator()` combines both into an autograd
/// operation. Quantizers are immutable and shared between layers through `QuantizerPtr`.
class Quantizer : public std::enable_shared_from_this<Quantizer> {
 public:
  virtual ~Quantizer() = default;

  /// The string id, e.g. "ste_sign"; `get(id)` makes a quantizer with default arguments.
  virtual std::string id() const = 0;
  /// Bits of the quantized values: 1 for binary, 2 for ternary, k for k-bit.
  virtual int precision() const = 0;
  /// The arguments, e.g. {"clip_value": 1.0}; `from_json(to_json())` rebuilds an equal quantizer.
  virtual Json config() const { return Json::object(); }
  /// Forward values of the quantizer, without autograd.
  virtual at::Tensor quantize(const at::Tensor& x) const = 0;
  /// The pseudo-gradient with respect to `x`, given the gradient `dy` of the output.
  virtual at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const = 0;
  /// What the forward pass computes (see ForwardKind); the converter relies on this declaration,
  /// not on the concrete class, so user-defined sign quantizers convert.
  virtual ForwardKind forward_kind() const { return ForwardKind::kOther; }
  /// For kernel quantizers whose forward value is `scale * sign(x)` (+1 for x >= 0): the
  /// scale, one value or one per output channel (axis 0), shaped to broadcast against `x`.
  /// Undefined for every other quantizer. The converter stores such kernels as bits and applies
  /// the scale after the layer (XNOR-Net, Bi-Real Net, DoReFa-Net, ReActNet weights).
  virtual at::Tensor sign_scale(const at::Tensor& x) const;

  /// For kernel quantizers whose forward value is `sign(x)` or `sign_scale(x) * sign(x)` and
  /// whose pseudo-gradient is exactly a FoldedGradient (ste_sign, magnitude_aware_sign): that
  /// description, so that the binary training path folds the gradient into its own pass over the
  /// kernel gradient. Nullopt (the default) for every other quantizer, whose `gradient_as` then
  /// runs as its own autograd node; a subclass that overrides `gradient` must keep this nullopt
  /// unless the two agree.
  virtual std::optional<FoldedGradient> folded_gradient() const { return std::nullopt; }

  /// `quantize` for a tensor in `role` (see TensorRole); the default ignores the role.
  virtual at::Tensor quantize_as(const at::Tensor& x, const TensorRole& role) const;
  /// `gradient` for a tensor in `role`; the default ignores the role.
  virtual at::Tensor gradient_as(const at::Tensor& x, const at::Tensor& dy,
                                 const TensorRole& role) const;
  /// `sign_scale` for a kernel in `role`, one value or one per output channel; the default
  /// ignores the role.
  virtual at::Tensor sign_scale_as(const at::Tensor& x, const TensorRole& role) const;

  /// Applies the quantizer with autograd: forward `quantize_as(x, role)`, backward
  /// `gradient_as(x, dy, role)`. Without grad mode or when `x` does not require grad, this is
  /// `quantize_as(x, role)`. Layers pass TensorRole::activation() for their inputs.
  at::Tensor operator()(const at::Tensor& x, const TensorRole& role = TensorRole::kernel()) const;

  /// {"class_name": id(), "config": config()}.
  Json to_json() const;
};

/// Shared, immutable handle to a quantizer. Null means "no quantizer" (identity, 32 bits).
using QuantizerPtr = std::shared_ptr<const Quantizer>;

/// The identity with a precision tag (Larq's NoOpQuantizer): marks a variable as k-bit, e.g. for
/// Bop, without changing it. Gradient: identity.
class NoOp : public Quantizer {
 public:
  ForwardKind forward_kind() const override { return ForwardKind::kIdentity; }
  /// `precision` in [1, 32].
  explicit NoOp(int precision);
  std::string id() const override { return "noop"; }
  int precision() const override { return precision_; }
  Json config() const override { return {{"precision", precision_}}; }
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;

 private:
  int precision_;
};

/// sign(x) (+1 for x >= 0) with the straight-through estimator dy * 1{|x| <= clip_value}.
/// `clip_value` = std::nullopt gives the unclipped identity gradient.
class SteSign : public Quantizer {
 public:
  ForwardKind forward_kind() const override { return ForwardKind::kSign; }
  explicit SteSign(std::optional<double> clip_value = 1.0);
  std::string id() const override { return "ste_sign"; }
  int precision() const override { return 1; }
  Json config() const override;
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;
  /// The clip value, or nullopt for none.
  std::optional<double> clip_value() const { return clip_value_; }
  std::optional<FoldedGradient> folded_gradient() const override;

 private:
  std::optional<double> clip_value_;
};

/// sign(x) with the ApproxSign pseudo-gradient dy * (2 - 2|x|) for |x| <= 1, else 0.
class ApproxSign : public Quantizer {
 public:
  ForwardKind forward_kind() const override { return ForwardKind::kSign; }
  std::string id() const override { return "approx_sign"; }
  int precision() const override { return 1; }
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;
};

/// heaviside(x) (1 for x > 0, else 0) with the straight-through estimator STE(clip_value).
class SteHeaviside : public Quantizer {
 public:
  explicit SteHeaviside(std::optional<double> clip_value = 1.0);
  std::string id() const override { return "ste_heaviside"; }
  int precision() const override { return 1; }
  Json config() const override;
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;

 private:
  std::optional<double> clip_value_;
};

/// sign(x) with the SwishSign pseudo-gradient
/// dy * beta * (2 - beta * x * tanh(beta * x / 2)) / (1 + cosh(beta * x)).
class SwishSign : public Quantizer {
 public:
  ForwardKind forward_kind() const override { return ForwardKind::kSign; }
  explicit SwishSign(double beta = 5.0);
  std::string id() const override { return "swish_sign"; }
  int precision() const override { return 1; }
  Json config() const override { return {{"beta", beta_}}; }
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;

 private:
  double beta_;
};

/// a * sign(x) with a = mean |x| per channel, the scaling of XNOR-Net / Bi-Real Net, reduced
/// over the axes Larq reduces over (every axis but Keras' last; see TensorRole): per output
/// channel (axis 0) of a kernel, per depth-multiplier index of a depthwise kernel (over kh, kw
/// and input channels), per channel (axis 1, over N, H, W) of an activation, and over no axis
/// for a 0-d or 1-d tensor (a = |x|). a is a constant on the backward pass:
/// gradient a * STE(clip_value). The role-free calls treat `x` as a kernel.
class MagnitudeAwareSign : public Quantizer {
 public:
  explicit MagnitudeAwareSign(std::optional<double> clip_value = 1.0);
  std::string id() const override { return "magnitude_aware_sign"; }
  int precision() const override { return 1; }
  Json config() const override;
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;
  at::Tensor quantize_as(const at::Tensor& x, const TensorRole& role) const override;
  at::Tensor gradient_as(const at::Tensor& x, const at::Tensor& dy,
                         const TensorRole& role) const override;
  /// The scale a for `x` in `role`, shaped to broadcast against x.
  at::Tensor scale(const at::Tensor& x, const TensorRole& role = TensorRole::kernel()) const;
  at::Tensor sign_scale(const at::Tensor& x) const override { return scale(x); }
  at::Tensor sign_scale_as(const at::Tensor& x, const TensorRole& role) const override {
    return scale(x, role);
  }
  std::optional<FoldedGradient> folded_gradient() const override;

 private:
  std::optional<double> clip_value_;
};

/// XNOR-Net's weight quantizer (Larq Zoo's `xnor_weight_scale`): a * sign(clip(x, -1, 1)) with
/// a = mean |clip(x, -1, 1)| per output channel (axis 0). Unlike magnitude_aware_sign, a is part
/// of the backward pass: the gradient is that of a(x) * STE(sign)(x), including d a / d x.
class XnorWeightScale : public Quantizer {
 public:
  std::string id() const override { return "xnor_weight_scale"; }
  int precision() const override { return 1; }
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;
  at::Tensor sign_scale(const at::Tensor& x) const override;
};

/// DoReFa-Net's weight binarization (Larq Zoo's `magnitude_aware_sign_unclipped`):
/// a * sign(x) with a = mean |x| over the whole tensor (one value per layer), a constant on the
/// backward pass, and the identity pseudo-gradient dy (no clipping, no scaling).
class MagnitudeAwareSignUnclipped : public Quantizer {
 public:
  std::string id() const override { return "magnitude_aware_sign_unclipped"; }
  int precision() const override { return 1; }
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;
  at::Tensor sign_scale(const at::Tensor& x) const override;
};

/// Ternarization as Larq computes it, sign(sign(x + D) + sign(x - D)) with sign(0) = 0: +1 for
/// x >= D, -1 for x <= -D, 0 in between, and 0 for x = 0 (also -0.0) when D = 0 (so an all-zero
/// tensor stays all zero, with or without ternary_weight_networks). D = threshold_value, or
/// 0.7 * mean |x| over the whole tensor when ternary_weight_networks is true. NaN maps to 0.
/// Gradient: STE(clip_value).
class SteTern : public Quantizer {
 public:
  explicit SteTern(double threshold_value = 0.05, bool ternary_weight_networks = false,
                   std::optional<double> clip_value = 1.0);
  std::string id() const override { return "ste_tern"; }
  int precision() const override { return 2; }
  Json config() const override;
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;
  /// The threshold D used for `x`.
  double threshold(const at::Tensor& x) const;

 private:
  double threshold_value_;
  bool ternary_weight_networks_;
  std::optional<double> clip_value_;
};

/// DoReFa-Net's k-bit quantizer. n = 2^k - 1, q(v) = round(n v) / n (round half to even).
/// mode "activations": q(clip(x, 0, 1)), gradient dy * 1{0 <= x <= 1}.
/// mode "weights": 2 q(tanh(x) / (2 max|tanh(x)|) + 0.5) - 1 with the max a constant; gradient
/// of that expression with round() replaced by the identity: dy (1 - tanh^2 x) / max|tanh x|.
/// Divisions by a zero max (an all-zero tensor) give 0, as Larq's divide-no-nan: forward
/// 2 q(0.5) - 1, gradient 0.
class DoReFa : public Quantizer {
 public:
  /// `k_bit` in [1, 31]; `mode` is "activations" or "weights".
  explicit DoReFa(int k_bit = 2, std::string mode = "activations");
  std::string id() const override { return "dorefa_quantizer"; }
  int precision() const override { return k_bit_; }
  Json config() const override { return {{"k_bit", k_bit_}, {"mode", mode_}}; }
  at::Tensor quantize(const at::Tensor& x) const override;
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override;
  /// Bits k.
  int k_bit() const { return k_bit_; }
  /// "activations" or "weights".
  const std::string& mode() const { return mode_; }

 private:
  int k_bit_;
  std::string mode_;
};

/// A user-defined quantizer from a forward function, a gradient function and a precision.
///
/// ```
/// // The seed's binarization: sign in the forward pass, identity gradient.
/// auto q = std::make_shared<onebit::quantizers::Custom>(
///     "identity_sign", [](const at::Tensor& x) { return at::where(x >= 0, 1.0, -1.0); },
///     [](const at::Tensor&, const at::Tensor& dy) { return dy; }, /*precision=*/1);
/// ```
/// Register it with `register_custom` so that saved models can name it.
class Custom : public Quantizer {
 public:
  using ForwardFn = std::function<at::Tensor(const at::Tensor&)>;
  using GradientFn = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& dy)>;
  /// `forward_kind` declares what `forward` computes: pass ForwardKind::kSign for a sign
  /// (+1 for x >= 0, else -1) so that layers using it convert to binary runtime ops.
  Custom(std::string name, ForwardFn forward, GradientFn gradient, int precision,
         ForwardKind forward_kind = ForwardKind::kOther);
  std::string id() const override { return name_; }
  ForwardKind forward_kind() const override { return forward_kind_; }
  int precision() const override { return precision_; }
  at::Tensor quantize(const at::Tensor& x) const override { return forward_(x); }
  at::Tensor gradient(const at::Tensor& x, const at::Tensor& dy) const override {
    return gradient_(x, dy);
  }

 private:
  std::string name_;
  ForwardFn forward_;
  GradientFn gradient_;
  int precision_;
  ForwardKind forward_kind_;
};

/// Makes a quantizer by string id with default arguments: "noop" needs a precision and so is
/// only available through `from_json`. Larq's class names ("SteSign") are accepted too.
/// Throws std::invalid_argument naming the id and listing the known ids.
QuantizerPtr get(const std::string& id);

/// Makes a quantizer from a string id or {"class_name": id, "config": {...}}. Unknown ids,
/// unknown arguments and out-of-range values throw std::invalid_argument.
QuantizerPtr from_json(const Json& spec);

/// Factory for a registered quantizer: builds one from its config object.
using Factory = std::function<QuantizerPtr(const Json& config)>;

/// Registers a quantizer id so that `get` and `from_json` can make it (e.g. a custom quantizer
/// used in saved models). Re-registering an id replaces it; built-in ids cannot be replaced.
void register_quantizer(const std::string& id, Factory factory);

/// Registers a `Custom` quantizer under its name (it has no config).
void register_custom(const std::shared_ptr<const Custom>& quantizer);

/// All ids `get`/`from_json` know, sorted.
std::vector<std::string> known_ids();

/// A quantizer argument: a string id, a quantizer object, or nothing (nullptr).
/// Used by layer options so that `.kernel_quantizer("ste_sign")` and
/// `.kernel_quantizer(std::make_shared<SteSign>(0.5))` both work.
class QuantizerSpec {
 public:
  QuantizerSpec() = default;
  QuantizerSpec(std::nullptr_t) {}       // NOLINT(google-explicit-constructor)
  QuantizerSpec(const char* id);         // NOLINT(google-explicit-constructor)
  QuantizerSpec(const std::string& id);  // NOLINT(google-explicit-constructor)
  template <typename Q, typename = std::enable_if_t<std::is_base_of_v<Quantizer, Q>>>
  QuantizerSpec(std::shared_ptr<Q> q)  // NOLINT(google-explicit-constructor)
      : ptr_(std::move(q)) {}
  /// The quantizer, or null.
  const QuantizerPtr& get() const { return ptr_; }
  explicit operator bool() const { return static_cast<bool>(ptr_); }

 private:
  QuantizerPtr ptr_;
};

/// Applies `q` if set (to a tensor in `role`), else returns `x` unchanged.
inline at::Tensor apply(const QuantizerPtr& q, const at::Tensor& x,
                        const TensorRole& role = TensorRole::kernel()) {
  return q ? (*q)(x, role) : x;
}

/// Bits of values produced by `q`: its precision, or 32 for none.
inline int precision_of(const QuantizerPtr& q) { return q ? q->precision() : 32; }

/// The JSON of `q`, or null for none.
Json to_json(const QuantizerPtr& q);

}  // namespace quantizers
}  // namespace onebit
