#include "onebit/registry.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "lower.h"
#include "onebit/nn.h"
#include "onebit/nn/graph.h"
#include "onebit/serialize.h"

namespace onebit {
namespace {

using Json = nlohmann::json;

// ---- reading options ------------------------------------------------------------------------

/// Reads one layer's options, remembering which keys were used so that unknown ones are errors.
class Options {
 public:
  Options(const Json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail("options must be a JSON object, got " + j_.dump());
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw std::invalid_argument(where_ + ": " + what);
  }
  const Json* find(const std::string& key) {
    used_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  const Json& required(const std::string& key) {
    const Json* v = find(key);
    if (!v) fail("missing option \"" + key + "\"");
    return *v;
  }
  int64_t integer(const std::string& key, std::optional<int64_t> def = std::nullopt) {
    const Json* v = def ? find(key) : &required(key);
    if (!v) return *def;
    if (!v->is_number_integer())
      fail("option \"" + key + "\" must be an integer, got " + v->dump());
    note_size(key, v->get<int64_t>(), 1);
    return v->get<int64_t>();
  }
  double number(const std::string& key, std::optional<double> def = std::nullopt) {
    const Json* v = def ? find(key) : &required(key);
    if (!v) return *def;
    if (!v->is_number()) fail("option \"" + key + "\" must be a number, got " + v->dump());
    return v->get<double>();
  }
  bool boolean(const std::string& key, bool def) {
    const Json* v = find(key);
    if (!v) return def;
    if (!v->is_boolean()) fail("option \"" + key + "\" must be true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string string(const std::string& key, const std::string& def) {
    const Json* v = find(key);
    if (!v) return def;
    if (!v->is_string()) fail("option \"" + key + "\" must be a string, got " + v->dump());
    return v->get<std::string>();
  }
  std::optional<int64_t> optional_integer(const std::string& key) {
    const Json* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    return integer(key);
  }
  std::optional<double> optional_number(const std::string& key) {
    const Json* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    return number(key);
  }
  template <size_t D>
  torch::ExpandingArray<D> array(const std::string& key,
                                 std::optional<int64_t> def = std::nullopt) {
    const Json* v = def ? find(key) : &required(key);
    if (!v) return torch::ExpandingArray<D>(*def);
    return parse_array<D>(key, *v);
  }
  template <size_t D>
  nn::ConvPadding<D> padding(const std::string& key, nn::ConvPadding<D> def) {
    const Json* v = find(key);
    if (!v) return def;
    if (v->is_string()) {
      const auto mode = v->get<std::string>();
      if (mode != "same" && mode != "valid") {
        fail("option \"" + key + "\" must be \"same\", \"valid\" or amounts, got " + v->dump());
      }
      return nn::ConvPadding<D>(mode);
    }
    return nn::ConvPadding<D>(parse_array<D>(key, *v));
  }
  quantizers::QuantizerSpec quantizer(const std::string& key) {
    const Json* v = find(key);
    if (!v) return nullptr;
    try {
      return quantizers::QuantizerSpec(quantizers::from_json(*v));
    } catch (const std::exception& e) {
      fail("option \"" + key + "\": " + e.what());
    }
  }
  constraints::ConstraintSpec constraint(const std::string& key) {
    const Json* v = find(key);
    if (!v) return nullptr;
    try {
      return constraints::ConstraintSpec(constraints::from_json(*v));
    } catch (const std::exception& e) {
      fail("option \"" + key + "\": " + e.what());
    }
  }
  /// Throws for any key that no reader asked for, and for a layer whose size options (channels,
  /// features, kernel size, ...) multiply to more parameters than `serialize::build_limits()`
  /// allows: checked here, before the build function makes the layer and allocates them.
  void finish() const {
    const int64_t limit = serialize::build_limits().max_parameters;
    if (size_bound_ > limit) {
      fail("its size options (" + size_keys_ + ") allow up to " +
           (size_bound_ == kSaturated ? std::string("more than 2^62")
                                      : std::to_string(size_bound_)) +
           " parameters, more than the limit of " + std::to_string(limit) +
           " (onebit::serialize::set_build_limits); the description is corrupt or the model "
           "needs a higher limit");
    }
    for (const auto& item : j_.items()) {
      if (!used_.count(item.key())) {
        std::string known;
        for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
        fail("unknown option \"" + item.key() + "\" (known: " + known + ")");
      }
    }
  }

 private:
  template <size_t D>
  torch::ExpandingArray<D> parse_array(const std::string& key, const Json& v) {
    if (v.is_number_integer()) {
      note_size(key, v.get<int64_t>(), D);
      return torch::ExpandingArray<D>(v.get<int64_t>());
    }
    if (!v.is_array() || v.size() != D) {
      fail("option \"" + key + "\" must be an integer or a list of " + std::to_string(D) +
           " integers, got " + v.dump());
    }
    std::vector<int64_t> values;
    for (const auto& e : v) {
      if (!e.is_number_integer()) {
        fail("option \"" + key + "\" must hold integers, got " + v.dump());
      }
      values.push_back(e.get<int64_t>());
    }
    for (int64_t x : values) note_size(key, x, 1);
    return torch::ExpandingArray<D>(at::IntArrayRef(values));
  }

  // Options whose values multiply into a layer's parameter count; their product (each at least
  // 1) bounds the parameters of every built-in layer kind.
  static bool is_size_key(const std::string& key) {
    static const std::set<std::string> keys{
        "in_channels", "out_channels",     "in_features", "out_features", "num_features",
        "channels",    "depth_multiplier", "kernel_size", "input_size",   "num_parameters"};
    return keys.count(key) != 0;
  }
  void note_size(const std::string& key, int64_t value, size_t times) {
    if (!is_size_key(key)) return;
    if (size_keys_.find(key) == std::string::npos) {
      size_keys_ += (size_keys_.empty() ? "" : ", ") + key;
    }
    const int64_t v = std::max<int64_t>(1, value);
    for (size_t i = 0; i < times; ++i) {
      size_bound_ = size_bound_ > kSaturated / v ? kSaturated : size_bound_ * v;
    }
  }

  static constexpr int64_t kSaturated = int64_t{1} << 62;
  int64_t size_bound_ = 1;
  std::string size_keys_;
  const Json& j_;
  std::string where_;
  std::set<std::string> used_;
};

// ---- writing options ------------------------------------------------------------------------

template <size_t D>
Json array_json(const torch::ExpandingArray<D>& a) {
  return Json(std::vector<int64_t>(a->begin(), a->end()));
}

template <size_t D>
Json padding_json(const nn::ConvPadding<D>& p) {
  return p.same() ? Json("same") : array_json<D>(p.amount());
}

/// torch's convolution padding: amounts, kValid or kSame (a c10:: or std:: variant; the
/// unqualified visit finds the right one by argument-dependent lookup).
template <size_t D, typename Variant>
Json torch_padding_json(const Variant& padding) {
  Json out;
  visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, torch::enumtype::kSame>) {
          out = "same";
        } else if constexpr (std::is_same_v<P, torch::enumtype::kValid>) {
          out = "valid";
        } else {
          out = array_json<D>(p);
        }
      },
      padding);
  return out;
}

Json quantizer_json(const quantizers::QuantizerSpec& q) { return quantizers::to_json(q.get()); }
Json constraint_json(const constraints::ConstraintSpec& c) { return constraints::to_json(c.get()); }

// ---- the registry -----------------------------------------------------------------------------

/// Sets the summary rule and the lowering of the kind added last, so that each kind's entry
/// below is complete where it is written.
void rules(std::vector<LayerKind>& r, MacRule macs, LowerFn lower = {}) {
  r.back().macs = macs;
  r.back().lower = std::move(lower);
}

// Each `add_*` registers describe and build for one family; the build functions read every key
// the describe functions write, so `build(describe(m))` reproduces m's options exactly.

template <size_t D, typename Holder, typename Impl>
void add_quant_conv(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 return Json{{"in_channels", o.in_channels()},
                             {"out_channels", o.out_channels()},
                             {"kernel_size", array_json<D>(o.kernel_size())},
                             {"stride", array_json<D>(o.stride())},
                             {"padding", padding_json<D>(o.padding())},
                             {"dilation", array_json<D>(o.dilation())},
                             {"groups", o.groups()},
                             {"bias", o.bias()},
                             {"pad_values", o.pad_values()},
                             {"input_quantizer", quantizer_json(o.input_quantizer())},
                             {"kernel_quantizer", quantizer_json(o.kernel_quantizer())},
                             {"kernel_constraint", constraint_json(o.kernel_constraint())}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 nn::QuantConvOptions<D> o(r.integer("in_channels"), r.integer("out_channels"),
                                           r.array<D>("kernel_size"));
                 o.stride(r.array<D>("stride", 1))
                     .padding(r.padding<D>("padding", 0))
                     .dilation(r.array<D>("dilation", 1))
                     .groups(r.integer("groups", 1))
                     .bias(r.boolean("bias", true))
                     .pad_values(r.number("pad_values", 0.0))
                     .input_quantizer(r.quantizer("input_quantizer"))
                     .kernel_quantizer(r.quantizer("kernel_quantizer"))
                     .kernel_constraint(r.constraint("kernel_constraint"));
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

template <size_t D, typename Holder, typename Impl>
void add_quant_transpose(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 return Json{{"in_channels", o.in_channels()},
                             {"out_channels", o.out_channels()},
                             {"kernel_size", array_json<D>(o.kernel_size())},
                             {"stride", array_json<D>(o.stride())},
                             {"padding", padding_json<D>(o.padding())},
                             {"output_padding", array_json<D>(o.output_padding())},
                             {"dilation", array_json<D>(o.dilation())},
                             {"groups", o.groups()},
                             {"bias", o.bias()},
                             {"input_quantizer", quantizer_json(o.input_quantizer())},
                             {"kernel_quantizer", quantizer_json(o.kernel_quantizer())},
                             {"kernel_constraint", constraint_json(o.kernel_constraint())}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 nn::QuantConvTransposeOptions<D> o(r.integer("in_channels"),
                                                    r.integer("out_channels"),
                                                    r.array<D>("kernel_size"));
                 o.stride(r.array<D>("stride", 1))
                     .padding(r.padding<D>("padding", 0))
                     .output_padding(r.array<D>("output_padding", 0))
                     .dilation(r.array<D>("dilation", 1))
                     .groups(r.integer("groups", 1))
                     .bias(r.boolean("bias", true))
                     .input_quantizer(r.quantizer("input_quantizer"))
                     .kernel_quantizer(r.quantizer("kernel_quantizer"))
                     .kernel_constraint(r.constraint("kernel_constraint"));
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

template <size_t D, typename Holder, typename Impl>
void add_quant_separable(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 return Json{{"in_channels", o.in_channels()},
                             {"out_channels", o.out_channels()},
                             {"kernel_size", array_json<D>(o.kernel_size())},
                             {"depth_multiplier", o.depth_multiplier()},
                             {"stride", array_json<D>(o.stride())},
                             {"padding", padding_json<D>(o.padding())},
                             {"dilation", array_json<D>(o.dilation())},
                             {"bias", o.bias()},
                             {"pad_values", o.pad_values()},
                             {"input_quantizer", quantizer_json(o.input_quantizer())},
                             {"depthwise_quantizer", quantizer_json(o.depthwise_quantizer())},
                             {"pointwise_quantizer", quantizer_json(o.pointwise_quantizer())},
                             {"depthwise_constraint", constraint_json(o.depthwise_constraint())},
                             {"pointwise_constraint", constraint_json(o.pointwise_constraint())}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 nn::QuantSeparableConvOptions<D> o(r.integer("in_channels"),
                                                    r.integer("out_channels"),
                                                    r.array<D>("kernel_size"));
                 o.depth_multiplier(r.integer("depth_multiplier", 1))
                     .stride(r.array<D>("stride", 1))
                     .padding(r.padding<D>("padding", 0))
                     .dilation(r.array<D>("dilation", 1))
                     .bias(r.boolean("bias", true))
                     .pad_values(r.number("pad_values", 0.0))
                     .input_quantizer(r.quantizer("input_quantizer"))
                     .depthwise_quantizer(r.quantizer("depthwise_quantizer"))
                     .pointwise_quantizer(r.quantizer("pointwise_quantizer"))
                     .depthwise_constraint(r.constraint("depthwise_constraint"))
                     .pointwise_constraint(r.constraint("pointwise_constraint"));
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

template <size_t D, typename Holder, typename Impl>
void add_quant_local(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 return Json{{"in_channels", o.in_channels()},
                             {"out_channels", o.out_channels()},
                             {"kernel_size", array_json<D>(o.kernel_size())},
                             {"input_size", array_json<D>(o.input_size())},
                             {"stride", array_json<D>(o.stride())},
                             {"padding", padding_json<D>(o.padding())},
                             {"dilation", array_json<D>(o.dilation())},
                             {"bias", o.bias()},
                             {"pad_values", o.pad_values()},
                             {"input_quantizer", quantizer_json(o.input_quantizer())},
                             {"kernel_quantizer", quantizer_json(o.kernel_quantizer())},
                             {"kernel_constraint", constraint_json(o.kernel_constraint())}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 nn::QuantLocallyConnectedOptions<D> o(
                     r.integer("in_channels"), r.integer("out_channels"), r.array<D>("kernel_size"),
                     r.array<D>("input_size"));
                 o.stride(r.array<D>("stride", 1))
                     .padding(r.padding<D>("padding", torch::kValid))
                     .dilation(r.array<D>("dilation", 1))
                     .bias(r.boolean("bias", true))
                     .pad_values(r.number("pad_values", 0.0))
                     .input_quantizer(r.quantizer("input_quantizer"))
                     .kernel_quantizer(r.quantizer("kernel_quantizer"))
                     .kernel_constraint(r.constraint("kernel_constraint"));
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

void add_onebit_types(std::vector<LayerKind>& r) {
  r.push_back({"QuantDense", describer<nn::QuantDenseImpl>([](const nn::QuantDenseImpl& m) {
                 const auto& o = m.options;
                 return Json{{"in_features", o.in_features()},
                             {"out_features", o.out_features()},
                             {"bias", o.bias()},
                             {"input_quantizer", quantizer_json(o.input_quantizer())},
                             {"kernel_quantizer", quantizer_json(o.kernel_quantizer())},
                             {"kernel_constraint", constraint_json(o.kernel_constraint())}};
               }),
               [](const Json& j) {
                 Options r(j, "QuantDense");
                 nn::QuantDenseOptions o(r.integer("in_features"), r.integer("out_features"));
                 o.bias(r.boolean("bias", true))
                     .input_quantizer(r.quantizer("input_quantizer"))
                     .kernel_quantizer(r.quantizer("kernel_quantizer"))
                     .kernel_constraint(r.constraint("kernel_constraint"));
                 r.finish();
                 return torch::nn::AnyModule(nn::QuantDense(o));
               }});
  rules(r, MacRule::kWeights, lower::quant_dense);
  add_quant_conv<1, nn::QuantConv1d, nn::QuantConv1dImpl>(r, "QuantConv1d");
  rules(r, MacRule::kWeights);
  add_quant_conv<2, nn::QuantConv2d, nn::QuantConv2dImpl>(r, "QuantConv2d");
  rules(r, MacRule::kWeights, lower::quant_conv2d);
  add_quant_conv<3, nn::QuantConv3d, nn::QuantConv3dImpl>(r, "QuantConv3d");
  r.push_back({"QuantDepthwiseConv2d",
               describer<nn::QuantDepthwiseConv2dImpl>([](const nn::QuantDepthwiseConv2dImpl& m) {
                 const auto& o = m.options;
                 return Json{{"in_channels", o.in_channels()},
                             {"kernel_size", array_json<2>(o.kernel_size())},
                             {"depth_multiplier", o.depth_multiplier()},
                             {"stride", array_json<2>(o.stride())},
                             {"padding", padding_json<2>(o.padding())},
                             {"dilation", array_json<2>(o.dilation())},
                             {"bias", o.bias()},
                             {"pad_values", o.pad_values()},
                             {"input_quantizer", quantizer_json(o.input_quantizer())},
                             {"depthwise_quantizer", quantizer_json(o.depthwise_quantizer())},
                             {"depthwise_constraint", constraint_json(o.depthwise_constraint())}};
               }),
               [](const Json& j) {
                 Options r(j, "QuantDepthwiseConv2d");
                 nn::QuantDepthwiseConv2dOptions o(r.integer("in_channels"),
                                                   r.array<2>("kernel_size"));
                 o.depth_multiplier(r.integer("depth_multiplier", 1))
                     .stride(r.array<2>("stride", 1))
                     .padding(r.padding<2>("padding", 0))
                     .dilation(r.array<2>("dilation", 1))
                     .bias(r.boolean("bias", true))
                     .pad_values(r.number("pad_values", 0.0))
                     .input_quantizer(r.quantizer("input_quantizer"))
                     .depthwise_quantizer(r.quantizer("depthwise_quantizer"))
                     .depthwise_constraint(r.constraint("depthwise_constraint"));
                 r.finish();
                 return torch::nn::AnyModule(nn::QuantDepthwiseConv2d(o));
               }});
  rules(r, MacRule::kWeights, lower::quant_depthwise_conv2d);
  add_quant_separable<1, nn::QuantSeparableConv1d, nn::QuantSeparableConv1dImpl>(
      r, "QuantSeparableConv1d");
  rules(r, MacRule::kWeights);
  add_quant_separable<2, nn::QuantSeparableConv2d, nn::QuantSeparableConv2dImpl>(
      r, "QuantSeparableConv2d");
  rules(r, MacRule::kWeights);
  add_quant_transpose<2, nn::QuantConvTranspose2d, nn::QuantConvTranspose2dImpl>(
      r, "QuantConvTranspose2d");
  // Keras' Conv2DTranspose is a Conv2D, so Larq counts weights x output pixels for it (not the
  // MACs a transposed convolution performs); Conv3D and its transpose are not counted.
  rules(r, MacRule::kWeights);
  add_quant_transpose<3, nn::QuantConvTranspose3d, nn::QuantConvTranspose3dImpl>(
      r, "QuantConvTranspose3d");
  add_quant_local<1, nn::QuantLocallyConnected1d, nn::QuantLocallyConnected1dImpl>(
      r, "QuantLocallyConnected1d");
  add_quant_local<2, nn::QuantLocallyConnected2d, nn::QuantLocallyConnected2dImpl>(
      r, "QuantLocallyConnected2d");
  r.push_back({"BatchNorm", describer<nn::BatchNormImpl>([](const nn::BatchNormImpl& m) {
                 const auto& o = m.options;
                 return Json{{"num_features", o.num_features()},
                             {"eps", o.eps()},
                             {"momentum", o.momentum()},
                             {"scale", o.scale()},
                             {"center", o.center()}};
               }),
               [](const Json& j) {
                 Options r(j, "BatchNorm");
                 nn::BatchNormOptions o(r.integer("num_features"));
                 o.eps(r.number("eps", 1e-3))
                     .momentum(r.number("momentum", 0.01))
                     .scale(r.boolean("scale", true))
                     .center(r.boolean("center", true));
                 r.finish();
                 return torch::nn::AnyModule(nn::BatchNorm(o));
               }});
  rules(r, MacRule::kNone, lower::batch_norm);
  r.push_back({"HardTanh",
               describer<nn::HardTanhImpl>([](const nn::HardTanhImpl&) { return Json::object(); }),
               [](const Json& j) {
                 Options(j, "HardTanh").finish();
                 return torch::nn::AnyModule(nn::HardTanh());
               }});
  rules(r, MacRule::kUnknown, lower::hard_tanh);
  r.push_back({"LeakyTanh", describer<nn::LeakyTanhImpl>([](const nn::LeakyTanhImpl& m) {
                 return Json{{"alpha", m.alpha()}};
               }),
               [](const Json& j) {
                 Options r(j, "LeakyTanh");
                 const double alpha = r.number("alpha", 0.2);
                 r.finish();
                 return torch::nn::AnyModule(nn::LeakyTanh(alpha));
               }});
  r.push_back({"Quantizer", describer<nn::QuantizerImpl>([](const nn::QuantizerImpl& m) {
                 return Json{{"quantizer", m.quantizer()->to_json()}};
               }),
               [](const Json& j) {
                 Options r(j, "Quantizer");
                 r.required("quantizer");
                 auto q = r.quantizer("quantizer");
                 if (!q) r.fail("option \"quantizer\" must not be null");
                 r.finish();
                 return torch::nn::AnyModule(nn::Quantizer(q));
               }});
  rules(r, MacRule::kUnknown, lower::quantizer);
  r.push_back({"Add", describer<nn::AddImpl>([](const nn::AddImpl&) { return Json::object(); }),
               [](const Json& j) {
                 Options(j, "Add").finish();
                 return torch::nn::AnyModule(nn::Add());
               }});
  rules(r, MacRule::kUnknown, lower::add);
  r.back().multi_input = true;
  r.push_back({"Concat",
               describer<nn::ConcatImpl>([](const nn::ConcatImpl&) { return Json::object(); }),
               [](const Json& j) {
                 Options(j, "Concat").finish();
                 return torch::nn::AnyModule(nn::Concat());
               }});
  rules(r, MacRule::kUnknown, lower::concat);
  r.back().multi_input = true;
  r.push_back({"Multiply",
               describer<nn::MultiplyImpl>([](const nn::MultiplyImpl&) { return Json::object(); }),
               [](const Json& j) {
                 Options(j, "Multiply").finish();
                 return torch::nn::AnyModule(nn::Multiply());
               }});
  rules(r, MacRule::kUnknown, lower::multiply);
  r.back().multi_input = true;
  r.push_back({"Slice", describer<nn::SliceImpl>([](const nn::SliceImpl& m) {
                 return Json{{"begin", m.options.begin()}, {"end", m.options.end()}};
               }),
               [](const Json& j) {
                 Options r(j, "Slice");
                 nn::SliceOptions o(r.integer("begin"), r.integer("end"));
                 r.finish();
                 return torch::nn::AnyModule(nn::Slice(o));
               }});
  rules(r, MacRule::kUnknown, lower::slice);
  r.back().keeps_sign = true;
  r.push_back({"LearnableBias",
               describer<nn::LearnableBiasImpl>([](const nn::LearnableBiasImpl& m) {
                 return Json{{"channels", m.options.channels()}};
               }),
               [](const Json& j) {
                 Options r(j, "LearnableBias");
                 nn::LearnableBiasOptions o(r.integer("channels"));
                 r.finish();
                 return torch::nn::AnyModule(nn::LearnableBias(o));
               }});
  rules(r, MacRule::kUnknown, lower::learnable_bias);
  r.push_back({"BlurPool2d", describer<nn::BlurPool2dImpl>([](const nn::BlurPool2dImpl& m) {
                 return Json{{"channels", m.options.channels()}, {"stride", m.options.stride()}};
               }),
               [](const Json& j) {
                 Options r(j, "BlurPool2d");
                 nn::BlurPool2dOptions o(r.integer("channels"));
                 o.stride(r.integer("stride", 2));
                 r.finish();
                 return torch::nn::AnyModule(nn::BlurPool2d(o));
               }});
  // Keras' DepthwiseConv2D: weights x output pixels MACs, at 32 bits.
  rules(r, MacRule::kWeights, lower::blur_pool2d);
  // A nested graph: its options are its own architecture. The trace inlines it, so it needs
  // no summary rule or lowering of its own.
  r.push_back({"Graph", describer<nn::GraphImpl>([](const nn::GraphImpl& g) {
                 return serialize::describe(g);
               }),
               [](const Json& j) { return torch::nn::AnyModule(serialize::build(j)); }});
}

// ---- torch's own modules ------------------------------------------------------------------------

template <size_t D, typename Holder, typename Impl, typename OptionsT>
void add_torch_conv(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 std::string mode = torch::enumtype::get_enum_name(o.padding_mode());
                 return Json{{"in_channels", o.in_channels()},
                             {"out_channels", o.out_channels()},
                             {"kernel_size", array_json<D>(o.kernel_size())},
                             {"stride", array_json<D>(o.stride())},
                             {"padding", torch_padding_json<D>(o.padding())},
                             {"dilation", array_json<D>(o.dilation())},
                             {"groups", o.groups()},
                             {"bias", o.bias()},
                             {"padding_mode", mode}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 OptionsT o(r.integer("in_channels"), r.integer("out_channels"),
                            r.array<D>("kernel_size"));
                 o.stride(r.array<D>("stride", 1)).dilation(r.array<D>("dilation", 1));
                 const Json* pad = r.find("padding");
                 if (pad && pad->is_string()) {
                   const auto p = r.padding<D>("padding", 0);
                   if (p.same()) {
                     o.padding(torch::kSame);
                   } else {
                     o.padding(torch::kValid);
                   }
                 } else if (pad) {
                   o.padding(r.array<D>("padding"));
                 }
                 o.groups(r.integer("groups", 1)).bias(r.boolean("bias", true));
                 const std::string mode = r.string("padding_mode", "kZeros");
                 if (mode == "kZeros") {
                   o.padding_mode(torch::kZeros);
                 } else if (mode == "kReflect") {
                   o.padding_mode(torch::kReflect);
                 } else if (mode == "kReplicate") {
                   o.padding_mode(torch::kReplicate);
                 } else if (mode == "kCircular") {
                   o.padding_mode(torch::kCircular);
                 } else {
                   r.fail(
                       "option \"padding_mode\" must be kZeros, kReflect, kReplicate or "
                       "kCircular, got \"" +
                       mode + "\"");
                 }
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

template <typename Holder, typename Impl, typename OptionsT>
void add_torch_batch_norm(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 return Json{{"num_features", o.num_features()},
                             {"eps", o.eps()},
                             {"momentum", o.momentum() ? Json(*o.momentum()) : Json(nullptr)},
                             {"affine", o.affine()},
                             {"track_running_stats", o.track_running_stats()}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 OptionsT o(r.integer("num_features"));
                 o.eps(r.number("eps", 1e-5));
                 if (r.find("momentum")) {
                   auto m = r.optional_number("momentum");
                   o.momentum(m ? std::decay_t<decltype(o.momentum())>(*m)
                                : std::decay_t<decltype(o.momentum())>());
                 }
                 o.affine(r.boolean("affine", true))
                     .track_running_stats(r.boolean("track_running_stats", true));
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

template <size_t D, typename Holder, typename Impl, typename OptionsT>
void add_torch_max_pool(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 return Json{{"kernel_size", array_json<D>(o.kernel_size())},
                             {"stride", array_json<D>(o.stride())},
                             {"padding", array_json<D>(o.padding())},
                             {"dilation", array_json<D>(o.dilation())},
                             {"ceil_mode", o.ceil_mode()}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 OptionsT o(r.array<D>("kernel_size"));
                 if (r.find("stride")) o.stride(r.array<D>("stride"));
                 o.padding(r.array<D>("padding", 0))
                     .dilation(r.array<D>("dilation", 1))
                     .ceil_mode(r.boolean("ceil_mode", false));
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

template <size_t D, typename Holder, typename Impl, typename OptionsT>
void add_torch_avg_pool(std::vector<LayerKind>& r, const std::string& name) {
  r.push_back({name, describer<Impl>([](const Impl& m) {
                 const auto& o = m.options;
                 const auto& div = o.divisor_override();
                 return Json{{"kernel_size", array_json<D>(o.kernel_size())},
                             {"stride", array_json<D>(o.stride())},
                             {"padding", array_json<D>(o.padding())},
                             {"ceil_mode", o.ceil_mode()},
                             {"count_include_pad", o.count_include_pad()},
                             {"divisor_override", div ? Json(*div) : Json(nullptr)}};
               }),
               [name](const Json& j) {
                 Options r(j, name);
                 OptionsT o(r.array<D>("kernel_size"));
                 if (r.find("stride")) o.stride(r.array<D>("stride"));
                 o.padding(r.array<D>("padding", 0))
                     .ceil_mode(r.boolean("ceil_mode", false))
                     .count_include_pad(r.boolean("count_include_pad", true));
                 using Div = std::decay_t<decltype(o.divisor_override())>;
                 auto div = r.optional_integer("divisor_override");
                 o.divisor_override(div ? Div(*div) : Div());
                 r.finish();
                 return torch::nn::AnyModule(Holder(o));
               }});
}

void add_torch_types(std::vector<LayerKind>& r) {
  r.push_back({"torch.Linear", describer<torch::nn::LinearImpl>([](const torch::nn::LinearImpl& m) {
                 return Json{{"in_features", m.options.in_features()},
                             {"out_features", m.options.out_features()},
                             {"bias", m.options.bias()}};
               }),
               [](const Json& j) {
                 Options r(j, "torch.Linear");
                 torch::nn::LinearOptions o(r.integer("in_features"), r.integer("out_features"));
                 o.bias(r.boolean("bias", true));
                 r.finish();
                 return torch::nn::AnyModule(torch::nn::Linear(o));
               }});
  rules(r, MacRule::kWeights, lower::torch_linear);
  add_torch_conv<1, torch::nn::Conv1d, torch::nn::Conv1dImpl, torch::nn::Conv1dOptions>(
      r, "torch.Conv1d");
  rules(r, MacRule::kWeights);
  add_torch_conv<2, torch::nn::Conv2d, torch::nn::Conv2dImpl, torch::nn::Conv2dOptions>(
      r, "torch.Conv2d");
  rules(r, MacRule::kWeights, lower::torch_conv2d);
  add_torch_batch_norm<torch::nn::BatchNorm1d, torch::nn::BatchNorm1dImpl,
                       torch::nn::BatchNormOptions>(r, "torch.BatchNorm1d");
  rules(r, MacRule::kNone, lower::torch_batch_norm1d);
  add_torch_batch_norm<torch::nn::BatchNorm2d, torch::nn::BatchNorm2dImpl,
                       torch::nn::BatchNormOptions>(r, "torch.BatchNorm2d");
  rules(r, MacRule::kNone, lower::torch_batch_norm2d);
  add_torch_max_pool<1, torch::nn::MaxPool1d, torch::nn::MaxPool1dImpl,
                     torch::nn::MaxPool1dOptions>(r, "torch.MaxPool1d");
  rules(r, MacRule::kNone);
  add_torch_max_pool<2, torch::nn::MaxPool2d, torch::nn::MaxPool2dImpl,
                     torch::nn::MaxPool2dOptions>(r, "torch.MaxPool2d");
  rules(r, MacRule::kNone, lower::max_pool2d);
  r.back().keeps_sign = true;
  add_torch_avg_pool<1, torch::nn::AvgPool1d, torch::nn::AvgPool1dImpl,
                     torch::nn::AvgPool1dOptions>(r, "torch.AvgPool1d");
  rules(r, MacRule::kNone);
  add_torch_avg_pool<2, torch::nn::AvgPool2d, torch::nn::AvgPool2dImpl,
                     torch::nn::AvgPool2dOptions>(r, "torch.AvgPool2d");
  rules(r, MacRule::kNone, lower::avg_pool2d);
  r.push_back(
      {"torch.AdaptiveAvgPool2d",
       describer<torch::nn::AdaptiveAvgPool2dImpl>([](const torch::nn::AdaptiveAvgPool2dImpl& m) {
         const auto& size = m.options.output_size();
         Json out = Json::array();
         for (const auto& v : *size) out.push_back(v ? Json(*v) : Json(nullptr));
         return Json{{"output_size", out}};
       }),
       [](const Json& j) {
         Options r(j, "torch.AdaptiveAvgPool2d");
         const Json& size = r.required("output_size");
         if (!size.is_array() || size.size() != 2) {
           r.fail("option \"output_size\" must be a list of 2 sizes (or nulls), got " +
                  size.dump());
         }
         std::vector<c10::optional<int64_t>> v;
         for (const auto& e : size) {
           if (!e.is_null() && !(e.is_number_integer() && e.get<int64_t>() > 0)) {
             r.fail("option \"output_size\" must hold positive integers or nulls, got " +
                    size.dump());
           }
           v.push_back(e.is_null() ? c10::optional<int64_t>()
                                   : c10::optional<int64_t>(e.get<int64_t>()));
         }
         r.finish();
         return torch::nn::AnyModule(
             torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({v[0], v[1]})));
       }});
  // Larq's summary has no rule for global pooling ("?").
  rules(r, MacRule::kUnknown, lower::adaptive_avg_pool2d);
  r.push_back(
      {"torch.Flatten", describer<torch::nn::FlattenImpl>([](const torch::nn::FlattenImpl& m) {
         return Json{{"start_dim", m.options.start_dim()}, {"end_dim", m.options.end_dim()}};
       }),
       [](const Json& j) {
         Options r(j, "torch.Flatten");
         torch::nn::FlattenOptions o;
         o.start_dim(r.integer("start_dim", 1)).end_dim(r.integer("end_dim", -1));
         r.finish();
         return torch::nn::AnyModule(torch::nn::Flatten(o));
       }});
  rules(r, MacRule::kNone, lower::flatten);
  r.back().keeps_sign = true;
  r.push_back({"torch.ReLU", describer<torch::nn::ReLUImpl>([](const torch::nn::ReLUImpl& m) {
                 return Json{{"inplace", m.options.inplace()}};
               }),
               [](const Json& j) {
                 Options r(j, "torch.ReLU");
                 torch::nn::ReLUOptions o(r.boolean("inplace", false));
                 r.finish();
                 return torch::nn::AnyModule(torch::nn::ReLU(o));
               }});
  rules(r, MacRule::kUnknown, lower::relu);
  r.push_back(
      {"torch.PReLU", describer<torch::nn::PReLUImpl>([](const torch::nn::PReLUImpl& m) {
         return Json{{"num_parameters", m.options.num_parameters()}, {"init", m.options.init()}};
       }),
       [](const Json& j) {
         Options r(j, "torch.PReLU");
         torch::nn::PReLUOptions o;
         o.num_parameters(r.integer("num_parameters", 1)).init(r.number("init", 0.25));
         r.finish();
         return torch::nn::AnyModule(torch::nn::PReLU(o));
       }});
  rules(r, MacRule::kUnknown, lower::torch_prelu);
  r.push_back({"torch.Sigmoid",
               describer<torch::nn::SigmoidImpl>(
                   [](const torch::nn::SigmoidImpl&) { return Json::object(); }),
               [](const Json& j) {
                 Options(j, "torch.Sigmoid").finish();
                 return torch::nn::AnyModule(torch::nn::Sigmoid());
               }});
  rules(r, MacRule::kUnknown, lower::sigmoid);
  r.push_back({"torch.Hardtanh",
               describer<torch::nn::HardtanhImpl>([](const torch::nn::HardtanhImpl& m) {
                 return Json{{"min_val", m.options.min_val()}, {"max_val", m.options.max_val()}};
               }),
               [](const Json& j) {
                 Options r(j, "torch.Hardtanh");
                 torch::nn::HardtanhOptions o;
                 o.min_val(r.number("min_val", -1.0)).max_val(r.number("max_val", 1.0));
                 r.finish();
                 return torch::nn::AnyModule(torch::nn::Hardtanh(o));
               }});
  rules(r, MacRule::kUnknown, lower::torch_hardtanh);
  r.push_back({"torch.Dropout",
               describer<torch::nn::DropoutImpl>([](const torch::nn::DropoutImpl& m) {
                 return Json{{"p", m.options.p()}, {"inplace", m.options.inplace()}};
               }),
               [](const Json& j) {
                 Options r(j, "torch.Dropout");
                 torch::nn::DropoutOptions o(r.number("p", 0.5));
                 o.inplace(r.boolean("inplace", false));
                 r.finish();
                 return torch::nn::AnyModule(torch::nn::Dropout(o));
               }});
  rules(r, MacRule::kUnknown, lower::identity);
  r.push_back({"torch.Softmax",
               describer<torch::nn::SoftmaxImpl>([](const torch::nn::SoftmaxImpl& m) {
                 return Json{{"dim", m.options.dim()}};
               }),
               [](const Json& j) {
                 Options r(j, "torch.Softmax");
                 torch::nn::SoftmaxOptions o(r.integer("dim"));
                 r.finish();
                 return torch::nn::AnyModule(torch::nn::Softmax(o));
               }});
  rules(r, MacRule::kUnknown, lower::softmax);
}
struct Registry {
  std::mutex mutex;
  std::vector<std::shared_ptr<const LayerKind>> kinds;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    std::vector<LayerKind> builtin;
    add_onebit_types(builtin);
    add_torch_types(builtin);
    for (auto& k : builtin) reg->kinds.push_back(std::make_shared<const LayerKind>(std::move(k)));
    return reg;
  }();
  return *r;
}

std::vector<std::shared_ptr<const LayerKind>> snapshot() {
  auto& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  return reg.kinds;
}

}  // namespace

void register_layer(LayerKind kind) {
  if (kind.name.empty() || !kind.describe || !kind.build) {
    throw std::invalid_argument("register_layer: name, describe and build must be set");
  }
  auto& reg = registry();
  auto entry = std::make_shared<const LayerKind>(std::move(kind));
  std::lock_guard<std::mutex> lock(reg.mutex);
  for (auto& k : reg.kinds) {
    if (k->name == entry->name) {
      k = entry;
      return;
    }
  }
  // User kinds go first so that they win over a built-in base class.
  reg.kinds.insert(reg.kinds.begin(), entry);
}

std::shared_ptr<const LayerKind> find_layer_kind(const torch::nn::Module& module, Json* options) {
  for (const auto& k : snapshot()) {
    if (auto o = k->describe(module)) {
      if (options) *options = std::move(*o);
      return k;
    }
  }
  return nullptr;
}

std::shared_ptr<const LayerKind> layer_kind(const std::string& name) {
  for (const auto& k : snapshot()) {
    if (k->name == name) return k;
  }
  return nullptr;
}

std::vector<std::string> layer_kind_names() {
  std::vector<std::string> out;
  for (const auto& k : snapshot()) out.push_back(k->name);
  return out;
}

std::string short_type_name(const torch::nn::Module& module) {
  std::string n = module.name();
  auto lt = n.find('<');
  if (lt != std::string::npos) n = n.substr(0, lt);
  auto colon = n.rfind("::");
  if (colon != std::string::npos) n = n.substr(colon + 2);
  if (n.size() > 4 && n.compare(n.size() - 4, 4, "Impl") == 0) n.resize(n.size() - 4);
  return n;
}

}  // namespace onebit
