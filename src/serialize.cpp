#include "onebit/serialize.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/serialize/archive.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "onebit/io.h"
#include "onebit/log.h"
#include "onebit/nn.h"

namespace onebit {
namespace serialize {
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
  /// Throws for any key that no reader asked for.
  void finish() const {
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
    if (v.is_number_integer()) return torch::ExpandingArray<D>(v.get<int64_t>());
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
    return torch::ExpandingArray<D>(at::IntArrayRef(values));
  }

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

struct ModuleType {
  std::string name;
  DescribeFn describe;
  BuildFn build;
};

/// Describe function for modules of type Impl.
template <typename Impl, typename F>
DescribeFn describer(F f) {
  return [f](const torch::nn::Module& m) -> std::optional<Json> {
    if (const auto* p = dynamic_cast<const Impl*>(&m)) return f(*p);
    return std::nullopt;
  };
}

// Each `add_*` registers describe and build for one family; the build functions read every key
// the describe functions write, so `build(describe(m))` reproduces m's options exactly.

template <size_t D, typename Holder, typename Impl>
void add_quant_conv(std::vector<ModuleType>& r, const std::string& name) {
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
void add_quant_transpose(std::vector<ModuleType>& r, const std::string& name) {
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
void add_quant_separable(std::vector<ModuleType>& r, const std::string& name) {
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
void add_quant_local(std::vector<ModuleType>& r, const std::string& name) {
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

void add_onebit_types(std::vector<ModuleType>& r) {
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
  add_quant_conv<1, nn::QuantConv1d, nn::QuantConv1dImpl>(r, "QuantConv1d");
  add_quant_conv<2, nn::QuantConv2d, nn::QuantConv2dImpl>(r, "QuantConv2d");
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
  add_quant_separable<1, nn::QuantSeparableConv1d, nn::QuantSeparableConv1dImpl>(
      r, "QuantSeparableConv1d");
  add_quant_separable<2, nn::QuantSeparableConv2d, nn::QuantSeparableConv2dImpl>(
      r, "QuantSeparableConv2d");
  add_quant_transpose<2, nn::QuantConvTranspose2d, nn::QuantConvTranspose2dImpl>(
      r, "QuantConvTranspose2d");
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
  r.push_back({"HardTanh",
               describer<nn::HardTanhImpl>([](const nn::HardTanhImpl&) { return Json::object(); }),
               [](const Json& j) {
                 Options(j, "HardTanh").finish();
                 return torch::nn::AnyModule(nn::HardTanh());
               }});
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
}

// ---- torch's own modules ------------------------------------------------------------------------

template <size_t D, typename Holder, typename Impl, typename OptionsT>
void add_torch_conv(std::vector<ModuleType>& r, const std::string& name) {
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
void add_torch_batch_norm(std::vector<ModuleType>& r, const std::string& name) {
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
void add_torch_max_pool(std::vector<ModuleType>& r, const std::string& name) {
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
void add_torch_avg_pool(std::vector<ModuleType>& r, const std::string& name) {
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

void add_torch_types(std::vector<ModuleType>& r) {
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
  add_torch_conv<1, torch::nn::Conv1d, torch::nn::Conv1dImpl, torch::nn::Conv1dOptions>(
      r, "torch.Conv1d");
  add_torch_conv<2, torch::nn::Conv2d, torch::nn::Conv2dImpl, torch::nn::Conv2dOptions>(
      r, "torch.Conv2d");
  add_torch_batch_norm<torch::nn::BatchNorm1d, torch::nn::BatchNorm1dImpl,
                       torch::nn::BatchNormOptions>(r, "torch.BatchNorm1d");
  add_torch_batch_norm<torch::nn::BatchNorm2d, torch::nn::BatchNorm2dImpl,
                       torch::nn::BatchNormOptions>(r, "torch.BatchNorm2d");
  add_torch_max_pool<1, torch::nn::MaxPool1d, torch::nn::MaxPool1dImpl,
                     torch::nn::MaxPool1dOptions>(r, "torch.MaxPool1d");
  add_torch_max_pool<2, torch::nn::MaxPool2d, torch::nn::MaxPool2dImpl,
                     torch::nn::MaxPool2dOptions>(r, "torch.MaxPool2d");
  add_torch_avg_pool<1, torch::nn::AvgPool1d, torch::nn::AvgPool1dImpl,
                     torch::nn::AvgPool1dOptions>(r, "torch.AvgPool1d");
  add_torch_avg_pool<2, torch::nn::AvgPool2d, torch::nn::AvgPool2dImpl,
                     torch::nn::AvgPool2dOptions>(r, "torch.AvgPool2d");
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
  r.push_back({"torch.ReLU", describer<torch::nn::ReLUImpl>([](const torch::nn::ReLUImpl& m) {
                 return Json{{"inplace", m.options.inplace()}};
               }),
               [](const Json& j) {
                 Options r(j, "torch.ReLU");
                 torch::nn::ReLUOptions o(r.boolean("inplace", false));
                 r.finish();
                 return torch::nn::AnyModule(torch::nn::ReLU(o));
               }});
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
}

struct Registry {
  std::mutex mutex;
  std::vector<ModuleType> types;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    add_onebit_types(reg->types);
    add_torch_types(reg->types);
    return reg;
  }();
  return *r;
}

std::vector<ModuleType> snapshot() {
  auto& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  return reg.types;
}

std::string known_types(const std::vector<ModuleType>& types) {
  std::string known;
  for (const auto& t : types) known += (known.empty() ? "" : ", ") + t.name;
  return known;
}

/// Checks that every quantizer in a layer's options can be rebuilt by `load` (custom ones must be
/// registered).
void check_quantizers(const Json& options, const std::string& where) {
  for (const auto& item : options.items()) {
    const auto& key = item.key();
    if (key.size() < 9 || key.compare(key.size() - 9, 9, "quantizer") != 0) continue;
    if (item.value().is_null()) continue;
    try {
      quantizers::from_json(item.value());
    } catch (const std::exception& e) {
      throw std::invalid_argument(where + ": " + key + " cannot be saved: " + e.what() +
                                  "; register custom quantizers with "
                                  "onebit::quantizers::register_custom before saving");
    }
  }
}

}  // namespace

Json describe(const torch::nn::Sequential& model) {
  const auto types = snapshot();
  Json layers = Json::array();
  for (const auto& child : model->named_children()) {
    const std::string where = "layer \"" + child.key() + "\" (" + child.value()->name() + ")";
    std::optional<Json> options;
    std::string type;
    for (const auto& t : types) {
      if ((options = t.describe(*child.value()))) {
        type = t.name;
        break;
      }
    }
    if (!options) {
      throw std::invalid_argument(
          where + ": this module type cannot be saved (known: " + known_types(types) +
          "); register it with onebit::serialize::register_module_type");
    }
    check_quantizers(*options, where);
    layers.push_back({{"name", child.key()}, {"type", type}, {"options", *options}});
  }
  return {{"type", "Sequential"}, {"layers", layers}};
}

torch::nn::Sequential build(const Json& architecture) {
  if (!architecture.is_object() || architecture.value("type", "") != "Sequential" ||
      !architecture.contains("layers") || !architecture.at("layers").is_array()) {
    throw std::invalid_argument(
        "architecture must be {\"type\": \"Sequential\", \"layers\": [...]}, got " +
        architecture.dump().substr(0, 200));
  }
  const auto types = snapshot();
  torch::nn::Sequential model;
  size_t index = 0;
  for (const auto& layer : architecture.at("layers")) {
    std::string name = std::to_string(index++);
    if (layer.is_object() && layer.contains("name") && layer.at("name").is_string()) {
      name = layer.at("name").get<std::string>();
    }
    const std::string where = "layer \"" + name + "\"";
    if (!layer.is_object() || !layer.contains("type") || !layer.at("type").is_string()) {
      throw std::invalid_argument(where + ": expected {\"name\", \"type\", \"options\"}, got " +
                                  layer.dump().substr(0, 200));
    }
    const auto type = layer.at("type").get<std::string>();
    const ModuleType* found = nullptr;
    for (const auto& t : types) {
      if (t.name == type) found = &t;
    }
    if (!found) {
      throw std::invalid_argument(where + ": unknown layer type \"" + type +
                                  "\" (known: " + known_types(types) + ")");
    }
    const Json options = layer.contains("options") ? layer.at("options") : Json::object();
    try {
      model->push_back(name, found->build(options));
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw std::invalid_argument(where + " (" + type + "): " + what.substr(0, what.find('\n')));
    }
  }
  return model;
}

void register_module_type(const std::string& type, DescribeFn describe_fn, BuildFn build_fn) {
  if (type.empty() || !describe_fn || !build_fn) {
    throw std::invalid_argument("register_module_type: type, describe and build must be set");
  }
  auto& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  for (auto& t : reg.types) {
    if (t.name == type) {
      t.describe = std::move(describe_fn);
      t.build = std::move(build_fn);
      return;
    }
  }
  // User types go first so that they win over a built-in base class.
  reg.types.insert(reg.types.begin(), {type, std::move(describe_fn), std::move(build_fn)});
}

std::vector<std::string> module_types() {
  std::vector<std::string> out;
  for (const auto& t : snapshot()) out.push_back(t.name);
  return out;
}

}  // namespace serialize

// ---- weights ----------------------------------------------------------------------------------

namespace {

using Json = nlohmann::json;
constexpr const char* kFormatName = "onebit-model";

/// Bits of a boolean tensor, 8 per byte, element i in bit i % 8 of byte i / 8 (LSB first).
at::Tensor pack_bits(const at::Tensor& bits) {
  auto flat = bits.reshape(-1).to(at::kLong);
  const int64_t n = flat.numel();
  const int64_t padded = (n + 7) / 8 * 8;
  if (padded != n) flat = at::constant_pad_nd(flat, {0, padded - n}, 0);
  auto weights = at::tensor({1, 2, 4, 8, 16, 32, 64, 128}, at::kLong);
  return (flat.view({-1, 8}) * weights).sum(1).to(at::kByte);
}

/// Inverse of pack_bits: `numel` values 0/1 as int64.
at::Tensor unpack_bits(const at::Tensor& packed, int64_t numel) {
  auto shifts = at::arange(8, at::kLong);
  auto bits = at::bitwise_and(packed.to(at::kLong).unsqueeze(1).__rshift__(shifts), 1);
  return bits.reshape(-1).slice(0, 0, numel);
}

std::string dtype_name(const at::Tensor& t) { return std::string(c10::toString(t.scalar_type())); }

std::vector<int64_t> shape_of(const at::Tensor& t) { return t.sizes().vec(); }

/// Per-output-channel magnitude if `q` is +-a[c] with a[c] > 0 (magnitude-aware sign), else
/// undefined.
at::Tensor channel_scale(const at::Tensor& q) {
  if (q.dim() < 1 || q.numel() == 0) return {};
  auto mag = q.abs().reshape({q.size(0), -1});
  auto scale = std::get<0>(mag.max(1));
  if (!at::equal(mag, scale.unsqueeze(1).expand_as(mag)) || !scale.gt(0).all().item<bool>()) {
    return {};
  }
  return scale.contiguous();
}

}  // namespace

void save(const torch::nn::Sequential& model, const std::string& path, bool quantized) {
  at::NoGradGuard no_grad;
  Json header = {{"format", kFormatName},
                 {"version", serialize::kFormatVersion},
                 {"architecture", serialize::describe(model)},
                 {"quantized", quantized}};
  std::map<const void*, nn::QuantizedParameter> kernels;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    if (const auto* layer = dynamic_cast<const nn::QuantLayer*>(item.value().get())) {
      for (const auto& p : layer->quantized_parameters()) {
        if (p.quantizer) kernels[p.latent.unsafeGetTensorImpl()] = p;
      }
    }
  }
  torch::serialize::OutputArchive archive;
  Json tensors = Json::array();
  auto add = [&](const std::string& name, const at::Tensor& value) {
    if (!value.defined()) return;
    const std::string key = "t" + std::to_string(tensors.size());
    Json entry = {{"name", name},
                  {"key", key},
                  {"shape", shape_of(value)},
                  {"dtype", dtype_name(value)},
                  {"encoding", "raw"}};
    at::Tensor stored = value.detach();
    auto k = kernels.find(value.unsafeGetTensorImpl());
    if (quantized && k != kernels.end()) {
      const auto& q = *k->second.quantizer;
      auto qv = q.quantize(stored);
      if (!at::equal(q.quantize(qv), qv)) {
        // The loaded model applies the quantizer again: store what reproduces the outputs.
        warn("save(" + path + "): quantizer \"" + q.id() + "\" of \"" + name +
             "\" does not map its own output to itself; storing the latent values");
      } else if (q.precision() == 1 && qv.abs().eq(1).all().item<bool>()) {
        entry["encoding"] = "pm1_bits";  // bit 1 = -1, as in the runtime's bit layout
        stored = pack_bits(qv.lt(0));
      } else if (q.precision() == 1 && (qv.eq(0) | qv.eq(1)).all().item<bool>()) {
        entry["encoding"] = "01_bits";
        stored = pack_bits(qv.gt(0));
      } else if (auto scale = q.precision() == 1 ? channel_scale(qv) : at::Tensor();
                 scale.defined()) {
        entry["encoding"] = "scaled_pm1_bits";
        entry["scale_key"] = key + "_scale";
        archive.write(key + "_scale", scale, /*is_buffer=*/true);
        stored = pack_bits(qv.lt(0));
      } else {
        entry["encoding"] = "quantized";
        stored = qv;
      }
    }
    archive.write(key, stored.contiguous().clone(), /*is_buffer=*/true);
    tensors.push_back(entry);
  };
  for (const auto& item : model->named_parameters(/*recurse=*/true)) add(item.key(), item.value());
  for (const auto& item : model->named_buffers(/*recurse=*/true)) add(item.key(), item.value());
  header["tensors"] = tensors;
  archive.write("onebit_model_version",
                c10::IValue(static_cast<int64_t>(serialize::kFormatVersion)));
  archive.write("header", c10::IValue(header.dump()));
  io::atomic_write(path, [&](const std::string& tmp) { archive.save_to(tmp); });
}

torch::nn::Sequential load(const std::string& path) {
  auto fail = [&](const std::string& what) -> void {
    throw std::runtime_error(path + ": " + what);
  };
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("model file not found");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail("not a readable onebit model (truncated or corrupt): " + what.substr(0, what.find('\n')));
  }
  c10::IValue header_value;
  if (!archive.try_read("header", header_value) || !header_value.isString()) {
    fail("not an onebit model file (no header); checkpoints are read with load_checkpoint");
  }
  Json header;
  try {
    header = Json::parse(header_value.toStringRef());
  } catch (const std::exception& e) {
    fail(std::string("corrupt header: ") + e.what());
  }
  if (header.value("format", "") != kFormatName) fail("not an onebit model file (format)");
  if (!header.contains("version") || !header.at("version").is_number_integer() ||
      header.at("version").get<int>() > serialize::kFormatVersion) {
    fail("unsupported format version " + header.value("version", Json()).dump() +
         " (this build reads up to " + std::to_string(serialize::kFormatVersion) + ")");
  }
  torch::nn::Sequential model;
  try {
    model = serialize::build(header.at("architecture"));
  } catch (const std::exception& e) {
    fail(e.what());
  }

  std::map<std::string, at::Tensor> targets;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) targets[item.key()] = item.value();
  }
  for (const auto& item : model->named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) targets[item.key()] = item.value();
  }
  std::set<std::string> loaded;
  at::NoGradGuard no_grad;
  for (const auto& entry : header.value("tensors", Json::array())) {
    std::string name, key, encoding;
    std::vector<int64_t> shape;
    try {
      name = entry.at("name").get<std::string>();
      key = entry.at("key").get<std::string>();
      encoding = entry.at("encoding").get<std::string>();
      shape = entry.at("shape").get<std::vector<int64_t>>();
    } catch (const std::exception&) {
      fail("corrupt tensor entry " + entry.dump().substr(0, 200));
    }
    const std::string item = "tensor \"" + name + "\"";
    auto it = targets.find(name);
    if (it == targets.end()) fail(item + " does not belong to the rebuilt model");
    at::Tensor& target = it->second;
    if (shape != shape_of(target)) {
      std::ostringstream msg;
      msg << item << " has shape " << at::IntArrayRef(shape) << " but the model expects "
          << target.sizes();
      fail(msg.str());
    }
    if (entry.value("dtype", "") != dtype_name(target)) {
      fail(item + " has dtype " + entry.value("dtype", "?") + " but the model expects " +
           dtype_name(target));
    }
    at::Tensor stored;
    if (!archive.try_read(key, stored, /*is_buffer=*/true)) {
      fail(item + " is missing from the file (truncated or corrupt)");
    }
    at::Tensor value;
    const int64_t numel = target.numel();
    if (encoding == "raw" || encoding == "quantized") {
      value = stored;
    } else if (encoding == "pm1_bits" || encoding == "01_bits" || encoding == "scaled_pm1_bits") {
      if (stored.scalar_type() != at::kByte || stored.dim() != 1 ||
          stored.numel() != (numel + 7) / 8) {
        fail(item + ": packed bits have the wrong size (" + std::to_string(stored.numel()) +
             " bytes for " + std::to_string(numel) + " values)");
      }
      auto bits = unpack_bits(stored, numel).to(target.scalar_type());
      value = encoding == "01_bits" ? bits : 1 - 2 * bits;
      value = value.reshape(target.sizes());
      if (encoding == "scaled_pm1_bits") {
        at::Tensor scale;
        if (!archive.try_read(entry.value("scale_key", ""), scale, /*is_buffer=*/true) ||
            scale.dim() != 1 || target.dim() < 1 || scale.size(0) != target.size(0)) {
          fail(item + ": its per-channel scale is missing or mis-shaped");
        }
        std::vector<int64_t> view(target.dim(), 1);
        view[0] = -1;
        value = value * scale.to(target.scalar_type()).view(view);
      }
    } else {
      fail(item + " has an unknown encoding \"" + encoding + "\"");
    }
    if (value.sizes() != target.sizes() || value.scalar_type() != target.scalar_type()) {
      std::ostringstream msg;
      msg << item << ": stored values have shape " << value.sizes() << " and dtype "
          << dtype_name(value) << ", the model expects " << target.sizes() << " and "
          << dtype_name(target);
      fail(msg.str());
    }
    target.copy_(value);
    loaded.insert(name);
  }
  for (const auto& kv : targets) {
    if (!loaded.count(kv.first)) fail("no value stored for tensor \"" + kv.first + "\"");
  }
  model->eval();
  return model;
}

}  // namespace onebit
