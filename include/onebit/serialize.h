#pragma once
/// \file
/// Saving and loading whole models: the architecture (every layer with its options, quantizers
/// and constraints) and the weights in one file, so that another program rebuilds the model
/// without the code that defined it.
///
/// ```
/// onebit::save(model, "model.onebit");                     // latent weights: training resumes
/// onebit::save(model, "model.bits", /*quantized=*/true);   // binary kernels as bits
/// torch::nn::Sequential m = onebit::load("model.bits");    // kernels are exact +-1
/// ```
///
/// Custom quantizers are stored by their registered name: call
/// `onebit::quantizers::register_custom` (in both programs) before `save` and `load`.
/// Nested `torch::nn::Sequential`s cannot occur (LibTorch cannot put a Sequential inside
/// another), so the architecture is a flat list of layers; each layer's options nest.

#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace onebit {

/// Writes `model` (architecture and weights) to `path` atomically. With `quantized`, every
/// quantized kernel is stored as its quantized value, and binary kernels as bits (+-1, 0/1, or
/// +-a with a per-output-channel scale); the loaded model then holds those exact values.
/// Throws std::invalid_argument naming the layer for a module type or a quantizer that `load`
/// could not rebuild, std::runtime_error if the file cannot be written.
void save(const torch::nn::Sequential& model, const std::string& path, bool quantized = false);

/// Rebuilds a model written by `save`, in eval mode. Unknown layer types or quantizer names,
/// missing or mis-shaped tensors, and truncated or corrupt files throw std::runtime_error naming
/// the file and the item.
torch::nn::Sequential load(const std::string& path);

namespace serialize {

/// Current version of the file layout written by `save`.
constexpr int kFormatVersion = 1;

/// The architecture of `model`:
/// {"type": "Sequential", "layers": [{"name": "0", "type": "QuantConv2d", "options": {...}}]}.
/// Throws std::invalid_argument naming a layer whose type is not registered.
nlohmann::json describe(const torch::nn::Sequential& model);

/// Builds a model from `describe`'s JSON (fresh weights). Throws std::invalid_argument naming
/// the layer and the option for unknown types, unknown or ill-typed options.
torch::nn::Sequential build(const nlohmann::json& architecture);

/// Describes a module: its options as JSON, or nullopt if the module is not of this type.
using DescribeFn = std::function<std::optional<nlohmann::json>(const torch::nn::Module&)>;
/// Builds a module of this type from its options.
using BuildFn = std::function<torch::nn::AnyModule(const nlohmann::json& options)>;

/// Registers a module type so that `save`/`load` know it (onebit's layers and torch's common
/// ones are built in). Re-registering a name replaces it.
void register_module_type(const std::string& type, DescribeFn describe, BuildFn build);

/// The module type names `describe`/`build` know, in lookup order.
std::vector<std::string> module_types();

}  // namespace serialize
}  // namespace onebit
