#pragma once
/// \file
/// The model summary of Larq (`larq.models.summary`): per layer the input precision, output shape,
/// weights per bit-width, memory and MACs per precision; then the totals (parameters, model
/// size, 8-bit and float-32 sizes, compression ratio, MACs and the share that is binarized).
///
/// Rules (Larq's): a kernel of a quantized layer has its quantizer's bits, every other weight 32.
/// Batch norm counts its moving mean and variance (2 numbers per channel, non-trainable) in
/// place of beta and gamma. Each layer kind's `MacRule` (onebit/registry.h) says how its MACs
/// count: dense and 1-D/2-D, depthwise and separable convolutions (quantized or torch's), for
/// each kernel, weights x output positions, at precision max(input bits or 32, kernel bits);
/// flatten, batch norm and max/average pooling 0; any other layer (add, concat, global pooling,
/// activations, unregistered leaf modules) shows "?" and counts nothing, as in Larq. Memory is
/// in kB of 8*1024 bits. Output shapes are NCHW with -1 for the batch. The rows are the nodes of
/// the model trace (onebit/trace.h): nested graphs are expanded, merges have rows of their own.
///
/// ```
/// auto model = onebit::zoo::build("larq-mnist");
/// auto s = onebit::summary(model, {1, 28, 28});
/// std::cout << s.to_string();         // the two tables, as Larq prints them
/// s.to_json();                         // the same numbers, machine-readable
/// ```

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "onebit/nn/graph.h"

namespace onebit {

/// One row of the summary: a layer (or the directly owned parameters of a composite module).
struct LayerSummary {
  /// "<path in the model>:<kind>", e.g. "0:QuantConv2d" or "block1.bn:BatchNorm".
  std::string name;
  /// Bits of the input quantizer; nullopt for a layer without one (shown "-").
  std::optional<int> input_precision;
  /// Output shape with -1 for the batch.
  std::optional<std::vector<int64_t>> output_shape;
  /// Weight count per bit-width (only bit-widths the layer has).
  std::map<int, int64_t> params_by_bits;
  /// Trainable weights.
  int64_t trainable_params = 0;
  /// Non-trainable weights (e.g. batch-norm statistics).
  int64_t non_trainable_params = 0;
  /// Sum of bits x count over the weights.
  int64_t memory_bits = 0;
  /// Memory with every weight wider than 8 bits stored in 8 bits.
  int64_t int8_memory_bits = 0;
  /// Memory with every weight in 32 bits.
  int64_t fp32_memory_bits = 0;
  /// MAC count per precision; nullopt for a layer whose MACs are not counted ("?").
  std::optional<std::map<int, int64_t>> macs_by_bits;

  /// Weights of all bit-widths.
  int64_t params() const { return trainable_params + non_trainable_params; }
};

/// The summary of a model: its rows and totals.
struct ModelSummary {
  std::string name = "sequential";   ///< model name, used in the table titles
  std::vector<LayerSummary> layers;  ///< one row per layer, in forward order
  int64_t total_params = 0;          ///< all weights
  int64_t trainable_params = 0;      ///< trainable weights
  int64_t non_trainable_params = 0;  ///< non-trainable weights
  int64_t memory_bits = 0;           ///< model size in bits
  int64_t int8_memory_bits = 0;      ///< size with weights wider than 8 bits stored in 8 bits
  int64_t fp32_memory_bits = 0;      ///< size with every weight in 32 bits
  int64_t total_macs = 0;            ///< MACs of all counted layers
  double binarized_mac_ratio = 0;    ///< share of MACs at 1-bit precision
  double ternarized_mac_ratio = 0;   ///< share of MACs at 2-bit precision

  /// Bit-widths present among the weights, ascending (the "# k-bit" columns).
  std::vector<int> param_bits() const;
  /// Precisions present among the MACs, ascending (the "k-bit MACs" columns).
  std::vector<int> mac_precisions() const;
  /// MACs at precision `bits` over all layers.
  int64_t macs(int bits) const;
  /// Larq's two tables: "<name> stats" (per layer, with a Total row) and "<name> summary".
  /// `include_macs` = false leaves out the MAC columns and lines, as Larq's option does.
  std::string to_string(bool include_macs = true) const;
  /// {"layers": [{"name", "input_precision", "output_shape", "params_by_bits", "memory_bits",
  /// "macs_by_bits"}, ...], "totals": {"total_params", "trainable_params",
  /// "non_trainable_params", "memory_bits", "int8_memory_bits", "fp32_memory_bits", "total_macs",
  /// "binarized_mac_ratio", "ternarized_mac_ratio"}}. Unknown values ("-", "?") are null; bit
  /// widths are object keys ("1", "32").
  nlohmann::json to_json() const;
};

/// How `summary` presents a model.
struct SummaryOptions {
  /// false (default): one row per layer, those inside a nested graph named "outer.inner".
  /// true: Larq's presentation of a nested model: one row per top-level nested graph with the
  /// totals of its layers (weights, memory, MACs; a "?" inside counts 0), the input precision of
  /// its first layer and the output shape of its last. The model totals are the same either way.
  bool combine_nested = false;
};

/// Profiles `model` from its trace (`onebit::trace`: one dummy input of shape
/// [1, input_shape...] in eval mode; the mode is restored). Throws std::invalid_argument for an
/// empty or non-positive `input_shape` and for a composite module that is not a registered layer
/// kind (its forward cannot be seen; the message points to nn::Graph and register_layer), and
/// std::runtime_error (naming the node) when the forward pass fails.
ModelSummary summary(nn::Graph model, const std::vector<int64_t>& input_shape,
                     const std::string& name = "sequential");

/// `summary` with presentation options (see SummaryOptions).
ModelSummary summary(nn::Graph model, const std::vector<int64_t>& input_shape,
                     const std::string& name, const SummaryOptions& options);

/// Larq's number format: 3 significant figures with " k", " M", " B", " T" suffixes
/// (93556 -> "93.6 k", 999 -> "999", 0 -> "0"), scientific ("1.00E+15") from 1e15 on.
std::string format_number(double value);

/// Larq's size format for a number of bits: bytes in B, KiB, MiB or GiB with two decimals and
/// thousands separators (8192 bits -> "1.00 KiB").
std::string format_memory(double bits);

}  // namespace onebit
