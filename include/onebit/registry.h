#pragma once
/// \file
/// The layer registry: one entry per layer kind holds everything onebit needs to know about it:
/// how to describe its options (save, checkpoints), rebuild it from them (load), count it in the
/// summary, and lower it to runtime ops (convert). The summary, save/load and the converter all
/// read this one table through the model trace (onebit/trace.h); nothing else lists layer types.
///
/// Adding a layer kind is one `register_layer` call (see docs/graph.md for a worked example):
/// ```
/// onebit::LayerKind kind;
/// kind.name = "Scale";
/// kind.describe = onebit::describer<ScaleImpl>([](const ScaleImpl& m) {
///   return nlohmann::json{{"factor", m.factor}};
/// });
/// kind.build = [](const nlohmann::json& o) {
///   return torch::nn::AnyModule(Scale(o.at("factor").get<double>()));
/// };
/// kind.macs = onebit::MacRule::kNone;
/// kind.lower = [](onebit::Lowering& l, const torch::nn::Module& m) { ... };  // optional
/// onebit::register_layer(kind);
/// ```

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace onebit {

class Lowering;
struct Lowered;

/// How the model summary counts a layer's multiply-accumulates (Larq's rules).
enum class MacRule {
  kUnknown,  ///< shown "?" and counted as 0 (Larq: any layer it has no rule for)
  kNone,     ///< 0 MACs (flatten, batch norm, max/average pooling)
  kWeights,  ///< for each non-bias weight: count x output pixels, at max(input bits, weight bits)
};

/// Describes a module: its options as JSON, or nullopt when the module is not of this kind.
using DescribeFn = std::function<std::optional<nlohmann::json>(const torch::nn::Module&)>;
/// Builds a fresh module of this kind from its options; throws std::invalid_argument naming the
/// option on unknown, missing or ill-typed options.
using BuildFn = std::function<torch::nn::AnyModule(const nlohmann::json& options)>;
/// Lowers a module of this kind to runtime ops (see onebit/convert.h).
using LowerFn = std::function<Lowered(Lowering&, const torch::nn::Module&)>;

/// One layer kind; see the file comment.
struct LayerKind {
  /// Name stored in files and shown in errors, e.g. "QuantConv2d" or "torch.Linear".
  std::string name;
  /// Required.
  DescribeFn describe;
  /// Required.
  BuildFn build;
  /// Summary rule.
  MacRule macs = MacRule::kUnknown;
  /// The module's forward takes std::vector<at::Tensor> (merges such as Add and Concat).
  bool multi_input = false;
  /// The layer only moves elements or takes maxima (flatten, max pooling), so that the sign of
  /// its output is the sign of an input element: the converter looks through it when it checks
  /// whether a batch norm's output only feeds sign quantizers.
  bool keeps_sign = false;
  /// Lowering to runtime ops; empty when the kind cannot be converted.
  LowerFn lower;
};

/// Registers `kind` (name, describe and build required). Registering an existing name replaces
/// that entry. User kinds are looked up before the built-in ones, so a subclass of a built-in
/// module can be registered separately. Thread-safe.
void register_layer(LayerKind kind);

/// The kind of `module` (the first entry whose describe accepts it), and its options in
/// `options` when not null; nullptr when no kind describes it.
std::shared_ptr<const LayerKind> find_layer_kind(const torch::nn::Module& module,
                                                 nlohmann::json* options = nullptr);

/// The kind registered under `name`, or nullptr.
std::shared_ptr<const LayerKind> layer_kind(const std::string& name);

/// All registered kind names, in lookup order.
std::vector<std::string> layer_kind_names();

/// "onebit::nn::QuantConv2dImpl" -> "QuantConv2d": a module's C++ type without namespaces,
/// template arguments and the "Impl" suffix (for messages and summary rows).
std::string short_type_name(const torch::nn::Module& module);

/// A describe function for modules of type `Impl`: `f(const Impl&) -> json`.
template <typename Impl, typename F>
DescribeFn describer(F f) {
  return [f](const torch::nn::Module& m) -> std::optional<nlohmann::json> {
    if (const auto* p = dynamic_cast<const Impl*>(&m)) return nlohmann::json(f(*p));
    return std::nullopt;
  };
}

}  // namespace onebit
