#pragma once
/// \file
/// Saving and loading whole models: the architecture (every layer with its options, quantizers
/// and constraints) and the weights in one file, so that another program rebuilds the model
/// without the code that defined it.
///
/// ```
/// onebit::save(model, "model.onebit");                     // latent weights: training resumes
/// onebit::save(model, "model.bits", /*quantized=*/true);   // binary kernels as bits
/// onebit::nn::Graph m = onebit::load("model.bits");        // kernels are exact +-1
/// ```
///
/// The architecture is the model's graph: one entry per node with its layer kind (see
/// onebit/registry.h), options and input value ids; a nested graph is a node whose options are
/// its own architecture. Files of format version 1 (Sequential models) still load.
/// Custom quantizers are stored by their registered name: call
/// `onebit::quantizers::register_custom` (in both programs) before `save` and `load`; custom
/// layers by their kind: call `onebit::register_layer`.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "onebit/nn/graph.h"
#include "onebit/registry.h"

namespace onebit {

/// Writes `model` (architecture and weights) to `path` atomically. With `quantized`, every
/// quantized kernel is stored as its quantized value, and binary kernels as bits (+-1, 0/1, or
/// +-a with a per-output-channel scale); the loaded model then holds those exact values.
/// Throws std::invalid_argument naming the layer for a module type or a quantizer that `load`
/// could not rebuild, std::runtime_error if the file cannot be written.
void save(const nn::Graph& model, const std::string& path, bool quantized = false);

/// Rebuilds a model written by `save`, in eval mode. Unknown layer types or quantizer names,
/// missing or mis-shaped tensors, and truncated or corrupt files throw std::runtime_error naming
/// the file and the item.
nn::Graph load(const std::string& path);

namespace serialize {

/// Current version of the file layout written by `save`: 2 stores a graph (nodes with their
/// inputs); 1 stored a Sequential's layer list and still loads.
constexpr int kFormatVersion = 2;

/// The architecture of `graph`: {"type": "Graph", "nodes": [{"name": "conv", "type":
/// "QuantConv2d", "options": {...}, "inputs": [0]}, ...], "output": 3}. Value 0 is the input,
/// node i produces value i + 1. Throws std::invalid_argument naming a node whose module no
/// layer kind describes, or whose custom quantizer is not registered.
nlohmann::json describe(const nn::GraphImpl& graph);
/// `describe` of a Graph (or, through the implicit conversion, of a Sequential).
nlohmann::json describe(const nn::Graph& graph);

/// Builds a model from `describe`'s JSON (fresh weights), or from a version-1 Sequential
/// architecture {"type": "Sequential", "layers": [...]}. Throws std::invalid_argument naming the
/// layer and the option for unknown types, unknown or ill-typed options, and bad inputs.
nn::Graph build(const nlohmann::json& architecture);

/// Limits that `build` (and so `load`, `load_checkpoint` and `onebit::load`) applies to an
/// architecture before allocating anything, so that a corrupt or hostile description fails with
/// a clear error instead of exhausting memory.
struct BuildLimits {
  /// Most parameters of one layer (bounded from its size options before it is made) and of the
  /// whole model (summed as layers are made). Default 2^31 (8 GiB of float32): about 90 times
  /// the largest zoo model.
  std::int64_t max_parameters = std::int64_t{1} << 31;
};
/// The limits in force (process-wide).
BuildLimits build_limits();
/// Replaces the process-wide limits; e.g. a service that loads untrusted files lowers them.
void set_build_limits(const BuildLimits& limits);

/// Registers a layer kind with describe and build only (no summary rule, no lowering); kept for
/// code written before `onebit::register_layer`, which it calls.
void register_module_type(const std::string& type, DescribeFn describe, BuildFn build);

/// The layer kind names `describe`/`build` know, in lookup order (`layer_kind_names()`).
std::vector<std::string> module_types();

}  // namespace serialize
}  // namespace onebit
