#pragma once
/// \file
/// The model trace: one pass that turns a model and an input shape into the flat list of its
/// layers (kind, options, input values, output shape). The summary, the converter and
/// `onebit summary` read this list; save/load and checkpoints store the same nodes with their
/// inputs (onebit/serialize.h). Nested graphs are inlined, their node names joined with '.'.
///
/// ```
/// auto t = onebit::trace(model, {1, 28, 28});
/// for (const auto& n : t.nodes) std::cout << n.name << " " << n.type << "\n";
/// ```

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "onebit/nn/graph.h"
#include "onebit/registry.h"

namespace onebit {

/// One layer of a traced model.
struct TracedNode {
  /// Path of the module in the model, e.g. "conv1" or "block2.bn" (nested graphs).
  std::string name;
  /// The registered kind name, or the C++ type (`short_type_name`) for an unregistered module.
  std::string type;
  /// The registered kind; nullptr for a module no kind describes.
  std::shared_ptr<const LayerKind> kind;
  /// The kind's description of the module's options (null for an unregistered module).
  nlohmann::json options;
  /// The module itself (shared with the model).
  std::shared_ptr<torch::nn::Module> module;
  /// Value ids of the inputs: 0 is the model input, node i produces value i + 1.
  std::vector<int> inputs;
  /// Output shape with -1 for the batch, e.g. {-1, 32, 26, 26}: every axis whose size follows
  /// the batch size is -1 (the model is traced at two batch sizes), so a module that returns a
  /// fixed-size tensor keeps its sizes, e.g. {2} (Larq's "(2,)").
  std::vector<int64_t> output_shape;
  /// The top-level node this node belongs to: its own name, or for a node inside a nested
  /// graph the name of the outermost graph node that contains it (e.g. "block2" for
  /// "block2.conv").
  std::string top_level;
};

/// A traced model.
struct ModelTrace {
  std::vector<int64_t> input_shape;  ///< one example, without the batch (e.g. {1, 28, 28})
  std::vector<TracedNode> nodes;     ///< in execution order
  int output = 0;                    ///< value id of the model output

  /// Indices of the nodes that read value `value`.
  std::vector<std::size_t> consumers(int value) const;
  /// Output shape of a value (the input shape with -1 for value 0).
  std::vector<int64_t> shape(int value) const;
};

/// Traces `model` with dummy inputs of shape [1, input_shape...] and [2, input_shape...] (to tell
/// the batch axis from fixed ones) in eval mode (the mode is restored; no gradients). Throws
/// std::invalid_argument for a bad `input_shape` or for a composite module (one with children) that
/// is not registered, since its forward pass cannot be seen: the message names the node and points
/// to `nn::Graph` and `register_layer`. Throws std::runtime_error naming the node when a forward
/// pass fails (e.g. a shape mismatch).
ModelTrace trace(nn::Graph model, const std::vector<int64_t>& input_shape);

/// The message for a module that a pass (`what`, e.g. "save" or "convert") cannot handle
/// because no layer kind describes it.
std::string unregistered_message(const std::string& node, const torch::nn::Module& module,
                                 const std::string& what);

}  // namespace onebit
