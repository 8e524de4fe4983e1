#include "onebit/quantizers.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>

#include "ste_mask.h"

namespace onebit::quantizers {
namespace {

/// Keeps the quantizer alive inside the autograd graph for the backward pass.
struct QuantizerHolder : torch::CustomClassHolder {
  explicit QuantizerHolder(QuantizerPtr owner, const Quantizer* raw, TensorRole role)
      : owner(std::move(owner)), raw(raw), role(role) {}
  QuantizerPtr owner;  // null when the quantizer is not owned by a shared_ptr
  const Quantizer* raw;
  TensorRole role;
};

class QuantizeFunction : public torch::autograd::Function<QuantizeFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const c10::intrusive_ptr<QuantizerHolder>& holder) {
    ctx->save_for_backward({x});
    ctx->saved_data["quantizer"] = c10::IValue::make_capsule(holder);
    return holder->raw->quantize_as(x, holder->role);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto capsule = ctx->saved_data["quantizer"].toCapsule();
    const auto* holder = static_cast<const QuantizerHolder*>(capsule.get());
    return {holder->raw->gradient_as(saved[0], grads[0], holder->role), at::Tensor()};
  }
};

// True when `f` can run as one pass over the raw float32 storage of tensors with `x`'s strides
// (CPU, dense, no overlap: any memory format, channels-last included).
bool one_pass(const at::Tensor& x, const at::Tensor& other = at::Tensor()) {
  if (x.scalar_type() != at::kFloat || !x.device().is_cpu() || !x.is_non_overlapping_and_dense()) {
    return false;
  }
  if (!other.defined()) return true;
  return other.scalar_type() == at::kFloat && other.device().is_cpu() &&
         other.sizes() == x.sizes() && other.strides() == x.strides();
}

/// dy * 1{|x| <= clip}; identity when clip is unset. One pass over memory for float32 CPU
/// tensors of one layout (the same values as the composed operations: a product with 1 or 0,
/// so a non-finite dy outside the mask still gives NaN).
at::Tensor ste(const at::Tensor& x, const at::Tensor& dy, const std::optional<double>& clip) {
  if (!clip) return dy;
  if (!one_pass(x, dy)) return dy * x.abs().le(*clip).to(dy.scalar_type());
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* dp = dy.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const detail::SteMask mask(*clip);
  at::parallel_for(0, x.numel(), 32768, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) op[i] = dp[i] * mask.factor(xp[i]);
  });
  return out;
}

at::Tensor sign_pm1(const at::Tensor& x) {
  // +1 for x >= 0 (sign(0) = +1), -1 otherwise (NaN too); one pass for float32 CPU tensors.
  if (!one_pass(x)) return x.ge(0).to(x.scalar_type()).mul_(2).sub_(1);
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, x.numel(), 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) op[i] = xp[i] >= 0.0f ? 1.0f : -1.0f;
  });
  return out;
}

// Mean over every axis but the output channel (axis 0), kept for broadcasting; the mean of all
// values for 0-d and 1-d tensors.
at::Tensor channel_mean(const at::Tensor& x) {
  if (x.dim() <= 1) return x.mean();
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  return x.mean(dims, /*keepdim=*/true);
}

Json clip_json(const std::optional<double>& clip) { return clip ? Json(*clip) : Json(nullptr); }

void check_clip(const std::optional<double>& clip, const char* who) {
  if (clip && !(*clip >= 0.0)) {
    std::ostringstream msg;
    msg << who << ": clip_value must be >= 0 or none, got " << *clip;
    throw std::invalid_argument(msg.str());
  }
}

}  // namespace

// ---- Quantizer ------------------------------------------------------------------------------

at::Tensor Quantizer::operator()(const at::Tensor& x, const TensorRole& role) const {
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return quantize_as(x, role);
  auto owner = weak_from_this().lock();
  auto holder = c10::make_intrusive<QuantizerHolder>(
      std::static_pointer_cast<const Quantizer>(owner), this, role);
  return QuantizeFunction::apply(x, holder);
}

at::Tensor Quantizer::sign_scale(const at::Tensor&) const { return {}; }

at::Tensor Quantizer::quantize_as(const at::Tensor& x, const TensorRole&) const {
  return quantize(x);
}

at::Tensor Quantizer::gradient_as(const at::Tensor& x, const at::Tensor& dy,
                                  const TensorRole&) const {
  return gradient(x, dy);
}

at::Tensor Quantizer::sign_scale_as(const at::Tensor& x, const TensorRole&) const {
  return sign_scale(x);
}

Json Quantizer::to_json() const { return {{"class_name", id()}, {"config", config()}}; }

Json to_json(const QuantizerPtr& q) { return q ? q->to_json() : Json(nullptr); }

// ---- NoOp -----------------------------------------------------------------------------------

NoOp::NoOp(int precision) : precision_(precision) {
  if (precision < 1 || precision > 32) {
    throw std::invalid_argument("noop: precision must be in [1, 32], got " +
                                std::to_string(precision));
  }
}
at::Tensor NoOp::quantize(const at::Tensor& x) const { return x; }
at::Tensor NoOp::gradient(const at::Tensor&, const at::Tensor& dy) const { return dy; }

// ---- SteSign --------------------------------------------------------------------------------

SteSign::SteSign(std::optional<double> clip_value) : clip_value_(clip_value) {
  check_clip(clip_value_, "ste_sign");
}
Json SteSign::config() const { return {{"clip_value", clip_json(clip_value_)}}; }
at::Tensor SteSign::quantize(const at::Tensor& x) const { return sign_pm1(x); }
at::Tensor SteSign::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  return ste(x, dy, clip_value_);
}
std::optional<FoldedGradient> SteSign::folded_gradient() const {
  return FoldedGradient{clip_value_, false};
}

// ---- ApproxSign -----------------------------------------------------------------------------

at::Tensor ApproxSign::quantize(const at::Tensor& x) const { return sign_pm1(x); }
at::Tensor ApproxSign::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  if (!one_pass(x, dy)) {
    auto ax = x.abs();
    return dy * (2.0 - 2.0 * ax) * ax.le(1.0).to(dy.scalar_type());
  }
  // One pass instead of five tensors (ReActNet's and Bi-Real Net's activations): the same float
  // operations in the same order (2|x| is exact, so a fused multiply-add rounds the same).
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* dp = dy.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const detail::SteMask mask(1.0);
  at::parallel_for(0, x.numel(), 32768, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      op[i] = dp[i] * (2.0f - 2.0f * std::fabs(xp[i])) * mask.factor(xp[i]);
    }
  });
  return out;
}

// ---- SteHeaviside ---------------------------------------------------------------------------

SteHeaviside::SteHeaviside(std::optional<double> clip_value) : clip_value_(clip_value) {
  check_clip(clip_value_, "ste_heaviside");
}
Json SteHeaviside::config() const { return {{"clip_value", clip_json(clip_value_)}}; }
at::Tensor SteHeaviside::quantize(const at::Tensor& x) const { return x.gt(0).to(x.scalar_type()); }
at::Tensor SteHeaviside::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  return ste(x, dy, clip_value_);
}

// ---- SwishSign ------------------------------------------------------------------------------

SwishSign::SwishSign(double beta) : beta_(beta) {
  if (!std::isfinite(beta) || beta <= 0) {
    throw std::invalid_argument("swish_sign: beta must be a positive number, got " +
                                std::to_string(beta));
  }
}
at::Tensor SwishSign::quantize(const at::Tensor& x) const { return sign_pm1(x); }
at::Tensor SwishSign::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  auto bx = x * beta_;
  auto num = (2.0 - bx * at::tanh(bx * 0.5)) * beta_;
  return dy * num / (1.0 + at::cosh(bx));
}

// ---- MagnitudeAwareSign ---------------------------------------------------------------------

MagnitudeAwareSign::MagnitudeAwareSign(std::optional<double> clip_value) : clip_value_(clip_value) {
  check_clip(clip_value_, "magnitude_aware_sign");
}
Json MagnitudeAwareSign::config() const { return {{"clip_value", clip_json(clip_value_)}}; }
at::Tensor MagnitudeAwareSign::scale(const at::Tensor& x, const TensorRole& role) const {
  const at::Tensor a = x.abs();
  if (x.dim() <= 1) return a;  // Larq reduces over no axis: every value is its own channel
  if (role.kind == TensorRole::Kind::kActivation) {
    // [N, C, ...]: one scale per channel, over the batch and the spatial axes.
    std::vector<int64_t> dims = {0};
    for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    return a.mean(dims, /*keepdim=*/true);
  }
  const int64_t m = role.depth_multiplier;
  if (m > 0) {
    // [C * m, 1, kh, kw], output channel c * m + k: one scale per k, over c, kh and kw.
    if (x.size(0) % m != 0) {
      throw std::invalid_argument(
          "magnitude_aware_sign: a depthwise kernel with " + std::to_string(x.size(0)) +
          " output channels is not a multiple of its depth multiplier " + std::to_string(m));
    }
    const int64_t c = x.size(0) / m;
    at::Tensor per_k = a.reshape({c, m, -1}).mean(std::vector<int64_t>{0, 2});  // [m]
    std::vector<int64_t> shape(static_cast<std::size_t>(x.dim()), 1);
    shape[0] = x.size(0);
    return per_k.unsqueeze(0).expand({c, m}).reshape(shape);
  }
  return channel_mean(a);
}
at::Tensor MagnitudeAwareSign::quantize(const at::Tensor& x) const {
  return quantize_as(x, TensorRole::kernel());
}
at::Tensor MagnitudeAwareSign::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  return gradient_as(x, dy, TensorRole::kernel());
}
std::optional<FoldedGradient> MagnitudeAwareSign::folded_gradient() const {
  return FoldedGradient{clip_value_, true};
}
at::Tensor MagnitudeAwareSign::quantize_as(const at::Tensor& x, const TensorRole& role) const {
  return scale(x, role) * sign_pm1(x);
}
at::Tensor MagnitudeAwareSign::gradient_as(const at::Tensor& x, const at::Tensor& dy,
                                           const TensorRole& role) const {
  return scale(x, role) * ste(x, dy, clip_value_);
}

// ---- XnorWeightScale -----------------------------------------------------------------------

at::Tensor XnorWeightScale::sign_scale(const at::Tensor& x) const {
  return channel_mean(x.clamp(-1.0, 1.0).abs());
}
at::Tensor XnorWeightScale::quantize(const at::Tensor& x) const {
  return sign_scale(x) * sign_pm1(x);
}
at::Tensor XnorWeightScale::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  // y = a(x) * s(x), a = mean(|clip(x)|) per channel, s = sign with STE (clip 1):
  // dL/dx_j = a * dy_j * 1{|x_j| <= 1} + sign(x_j) * 1{|x_j| <= 1} / n * sum_i dy_i s_i.
  const at::Tensor inside = x.abs().le(1.0).to(dy.scalar_type());
  const at::Tensor s = sign_pm1(x);
  const at::Tensor through_scale = channel_mean(dy * s);  // sum_i dy_i s_i / n
  return inside * (sign_scale(x) * dy + s * through_scale);
}

// ---- MagnitudeAwareSignUnclipped -------------------------------------------------------------

at::Tensor MagnitudeAwareSignUnclipped::sign_scale(const at::Tensor& x) const {
  return x.abs().mean();
}
at::Tensor MagnitudeAwareSignUnclipped::quantize(const at::Tensor& x) const {
  return sign_scale(x) * sign_pm1(x);
}
at::Tensor MagnitudeAwareSignUnclipped::gradient(const at::Tensor&, const at::Tensor& dy) const {
  return dy;
}

// ---- SteTern --------------------------------------------------------------------------------

SteTern::SteTern(double threshold_value, bool ternary_weight_networks,
                 std::optional<double> clip_value)
    : threshold_value_(threshold_value),
      ternary_weight_networks_(ternary_weight_networks),
      clip_value_(clip_value) {
  if (!(threshold_value >= 0)) {
    throw std::invalid_argument("ste_tern: threshold_value must be >= 0, got " +
                                std::to_string(threshold_value));
  }
  check_clip(clip_value_, "ste_tern");
}
Json SteTern::config() const {
  return {{"threshold_value", threshold_value_},
          {"ternary_weight_networks", ternary_weight_networks_},
          {"clip_value", clip_json(clip_value_)}};
}
double SteTern::threshold(const at::Tensor& x) const {
  if (!ternary_weight_networks_) return threshold_value_;
  return 0.7 * x.abs().mean().item<double>();
}
at::Tensor SteTern::quantize(const at::Tensor& x) const {
  // Larq: sign(sign(x + D) + sign(x - D)) with sign(0) = 0, i.e. +1 for x >= D and x > 0, -1 for
  // x <= -D and x < 0, else 0 (x = 0 gives 0 even when D = 0).
  const double d = threshold(x);
  const at::Tensor up = x.ge(d).logical_and(x.gt(0));
  const at::Tensor down = x.le(-d).logical_and(x.lt(0));
  return up.to(x.scalar_type()) - down.to(x.scalar_type());
}
at::Tensor SteTern::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  return ste(x, dy, clip_value_);
}

// ---- DoReFa ---------------------------------------------------------------------------------

DoReFa::DoReFa(int k_bit, std::string mode) : k_bit_(k_bit), mode_(std::move(mode)) {
  if (k_bit < 1 || k_bit > 31) {
    throw std::invalid_argument("dorefa_quantizer: k_bit must be in [1, 31], got " +
                                std::to_string(k_bit));
  }
  if (mode_ != "activations" && mode_ != "weights") {
    throw std::invalid_argument(
        "dorefa_quantizer: mode must be \"activations\" or \"weights\", got \"" + mode_ + "\"");
  }
}
at::Tensor DoReFa::quantize(const at::Tensor& x) const {
  const double n = std::pow(2.0, k_bit_) - 1.0;
  if (mode_ == "activations") return at::round(x.clamp(0.0, 1.0) * n) / n;
  auto t = at::tanh(x);
  auto m = t.abs().max();
  // Larq's divide-no-nan: t / (2 m) is 0 where m is 0 (an all-zero tensor).
  auto v = at::where(m.eq(0), at::zeros_like(t), t / (2.0 * m)) + 0.5;
  return 2.0 * (at::round(v * n) / n) - 1.0;
}
at::Tensor DoReFa::gradient(const at::Tensor& x, const at::Tensor& dy) const {
  if (mode_ == "activations") {
    return dy * (x.ge(0.0) & x.le(1.0)).to(dy.scalar_type());
  }
  auto t = at::tanh(x);
  auto m = t.abs().max();
  // d/dx of t / (2 m) (m a constant), times 2; 0 where m is 0, as Larq's divide-no-nan.
  return at::where(m.eq(0), at::zeros_like(dy), dy * (1.0 - t * t) / m);
}

// ---- Custom ---------------------------------------------------------------------------------

Custom::Custom(std::string name, ForwardFn forward, GradientFn gradient, int precision,
               ForwardKind forward_kind)
    : name_(std::move(name)),
      forward_(std::move(forward)),
      gradient_(std::move(gradient)),
      precision_(precision),
      forward_kind_(forward_kind) {
  if (name_.empty()) throw std::invalid_argument("custom quantizer: name must not be empty");
  if (!forward_ || !gradient_) {
    throw std::invalid_argument("custom quantizer \"" + name_ +
                                "\": forward and gradient functions are required");
  }
  if (precision < 1 || precision > 32) {
    throw std::invalid_argument("custom quantizer \"" + name_ +
                                "\": precision must be in [1, 32], got " +
                                std::to_string(precision));
  }
}

// ---- registry -------------------------------------------------------------------------------
namespace {

/// Reads the config's arguments, rejecting unknown keys and wrong types with clear messages.
class Args {
 public:
  Args(const std::string& id, const Json& config) : id_(id), config_(config) {
    if (!config_.is_object()) {
      throw std::invalid_argument("quantizer \"" + id_ + "\": config must be a JSON object, got " +
                                  config_.dump());
    }
  }
  double number(const std::string& key, double fallback) {
    used_.insert(key);
    if (!config_.contains(key)) return fallback;
    const auto& v = config_.at(key);
    if (!v.is_number()) fail(key, "a number", v);
    return v.get<double>();
  }
  std::optional<double> clip(const std::string& key, std::optional<double> fallback) {
    used_.insert(key);
    if (!config_.contains(key)) return fallback;
    const auto& v = config_.at(key);
    if (v.is_null()) return std::nullopt;
    if (!v.is_number()) fail(key, "a number or null", v);
    return v.get<double>();
  }
  int integer(const std::string& key, std::optional<int> fallback) {
    used_.insert(key);
    if (!config_.contains(key)) {
      if (!fallback) {
        throw std::invalid_argument("quantizer \"" + id_ + "\": missing required argument \"" +
                                    key + "\"");
      }
      return *fallback;
    }
    const auto& v = config_.at(key);
    if (!v.is_number_integer()) fail(key, "an integer", v);
    return v.get<int>();
  }
  bool boolean(const std::string& key, bool fallback) {
    used_.insert(key);
    if (!config_.contains(key)) return fallback;
    const auto& v = config_.at(key);
    if (!v.is_boolean()) fail(key, "true or false", v);
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) {
    used_.insert(key);
    if (!config_.contains(key)) return fallback;
    const auto& v = config_.at(key);
    if (!v.is_string()) fail(key, "a string", v);
    return v.get<std::string>();
  }
  /// Throws if the config has keys no getter asked for.
  void finish() const {
    for (const auto& item : config_.items()) {
      if (!used_.count(item.key())) {
        std::string known;
        for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
        throw std::invalid_argument("quantizer \"" + id_ + "\": unknown argument \"" + item.key() +
                                    "\" (known: " + (known.empty() ? "none" : known) + ")");
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& key, const char* expected, const Json& v) const {
    throw std::invalid_argument("quantizer \"" + id_ + "\": argument \"" + key + "\" must be " +
                                expected + ", got " + v.dump());
  }
  std::string id_;
  const Json& config_;
  std::set<std::string> used_;
};

struct Registry {
  std::mutex mutex;
  std::map<std::string, Factory> factories;
  std::map<std::string, std::string> aliases;  // Larq class name -> id
  std::set<std::string> builtin;
};

template <typename Build>
Factory checked(std::string id, Build build) {
  return [id, build](const Json& config) -> QuantizerPtr {
    Args args(id, config);
    QuantizerPtr q = build(args);
    args.finish();
    return q;
  };
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    auto& f = reg->factories;
    f["noop"] = checked("noop", [](Args& a) {
      return std::make_shared<NoOp>(a.integer("precision", std::nullopt));
    });
    f["ste_sign"] = checked(
        "ste_sign", [](Args& a) { return std::make_shared<SteSign>(a.clip("clip_value", 1.0)); });
    f["approx_sign"] = checked("approx_sign", [](Args&) { return std::make_shared<ApproxSign>(); });
    f["ste_heaviside"] = checked("ste_heaviside", [](Args& a) {
      return std::make_shared<SteHeaviside>(a.clip("clip_value", 1.0));
    });
    f["swish_sign"] = checked(
        "swish_sign", [](Args& a) { return std::make_shared<SwishSign>(a.number("beta", 5.0)); });
    f["magnitude_aware_sign"] = checked("magnitude_aware_sign", [](Args& a) {
      return std::make_shared<MagnitudeAwareSign>(a.clip("clip_value", 1.0));
    });
    f["xnor_weight_scale"] =
        checked("xnor_weight_scale", [](Args&) { return std::make_shared<XnorWeightScale>(); });
    f["magnitude_aware_sign_unclipped"] = checked("magnitude_aware_sign_unclipped", [](Args&) {
      return std::make_shared<MagnitudeAwareSignUnclipped>();
    });
    f["ste_tern"] = checked("ste_tern", [](Args& a) {
      double t = a.number("threshold_value", 0.05);
      bool twn = a.boolean("ternary_weight_networks", false);
      return std::make_shared<SteTern>(t, twn, a.clip("clip_value", 1.0));
    });
    f["dorefa_quantizer"] = checked("dorefa_quantizer", [](Args& a) {
      int k = a.integer("k_bit", 2);
      return std::make_shared<DoReFa>(k, a.string("mode", "activations"));
    });
    reg->aliases = {{"NoOpQuantizer", "noop"},
                    {"NoOp", "noop"},
                    {"SteSign", "ste_sign"},
                    {"ApproxSign", "approx_sign"},
                    {"SteHeaviside", "ste_heaviside"},
                    {"SwishSign", "swish_sign"},
                    {"MagnitudeAwareSign", "magnitude_aware_sign"},
                    {"SteTern", "ste_tern"},
                    {"DoReFaQuantizer", "dorefa_quantizer"},
                    {"DoReFa", "dorefa_quantizer"},
                    {"dorefa", "dorefa_quantizer"}};
    for (const auto& kv : f) reg->builtin.insert(kv.first);
    return reg;
  }();
  return *r;
}

QuantizerPtr make(const std::string& name, const Json& config) {
  auto& reg = registry();
  Factory factory;
  {
    std::lock_guard<std::mutex> lock(reg.mutex);
    std::string id = name;
    if (auto a = reg.aliases.find(name); a != reg.aliases.end()) id = a->second;
    auto it = reg.factories.find(id);
    if (it == reg.factories.end()) {
      std::string known;
      for (const auto& kv : reg.factories) known += (known.empty() ? "" : ", ") + kv.first;
      throw std::invalid_argument("unknown quantizer \"" + name + "\" (known: " + known + ")");
    }
    factory = it->second;
  }
  return factory(config);
}

}  // namespace

QuantizerPtr get(const std::string& id) {
  if (id == "noop" || id == "NoOpQuantizer" || id == "NoOp") {
    throw std::invalid_argument(
        "quantizer \"noop\" needs a precision: use {\"class_name\": \"noop\", \"config\": "
        "{\"precision\": 1}} or std::make_shared<onebit::quantizers::NoOp>(1)");
  }
  return make(id, Json::object());
}

QuantizerPtr from_json(const Json& spec) {
  if (spec.is_null()) return nullptr;
  if (spec.is_string()) return get(spec.get<std::string>());
  if (!spec.is_object() || !spec.contains("class_name") || !spec.at("class_name").is_string()) {
    throw std::invalid_argument(
        "quantizer spec must be a string id or {\"class_name\": id, \"config\": {...}}, got " +
        spec.dump());
  }
  for (const auto& item : spec.items()) {
    if (item.key() != "class_name" && item.key() != "config") {
      throw std::invalid_argument("quantizer spec: unknown key \"" + item.key() + "\" in " +
                                  spec.dump());
    }
  }
  Json config = spec.contains("config") ? spec.at("config") : Json::object();
  return make(spec.at("class_name").get<std::string>(), config);
}

void register_quantizer(const std::string& id, Factory factory) {
  if (id.empty() || !factory) {
    throw std::invalid_argument("register_quantizer: id and factory must be non-empty");
  }
  auto& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  if (reg.builtin.count(id) || reg.aliases.count(id)) {
    throw std::invalid_argument("register_quantizer: \"" + id +
                                "\" is a built-in quantizer and cannot be replaced");
  }
  reg.factories[id] = std::move(factory);
}

void register_custom(const std::shared_ptr<const Custom>& quantizer) {
  if (!quantizer) throw std::invalid_argument("register_custom: null quantizer");
  std::string id = quantizer->id();
  register_quantizer(id, [quantizer, id](const Json& config) -> QuantizerPtr {
    if (!config.is_object() || !config.empty()) {
      throw std::invalid_argument("custom quantizer \"" + id + "\" takes no arguments, got " +
                                  config.dump());
    }
    return quantizer;
  });
}

std::vector<std::string> known_ids() {
  auto& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  std::vector<std::string> ids;
  for (const auto& kv : reg.factories) ids.push_back(kv.first);
  return ids;
}

QuantizerSpec::QuantizerSpec(const char* id) : ptr_(id ? quantizers::get(id) : nullptr) {}
QuantizerSpec::QuantizerSpec(const std::string& id) : ptr_(quantizers::get(id)) {}

}  // namespace onebit::quantizers
