#pragma once
/// \file
/// The model zoo: named architectures, built as `nn::Graph`s.
///
/// ```
/// auto model = onebit::zoo::build("larq-mnist");                     // the BNN
/// auto baseline = onebit::zoo::build("larq-mnist", {.quantized = false});  // float copy
/// ```

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "onebit/nn/graph.h"

namespace onebit::zoo {

/// Options shared by the zoo's models.
struct ModelOptions {
  /// False builds the same network with every quantizer and constraint off (the float baseline).
  bool quantized = true;
  /// False keeps the kernels real-valued (no kernel quantizer or constraint) while activations
  /// stay binary: the first stage of two-stage training (Real-to-Binary, ReActNet), whose weights
  /// then initialize the full BNN (`TrainOptions::weights`).
  bool binary_weights = true;
  /// Batch-norm momentum in LibTorch's convention (Keras's 0.99 is 0.01). Unset: each model's
  /// own (the published models use their papers' settings; onebit's MNIST models use 0.1, which
  /// tracks the flipping binary weights better than Larq's 0.01: see the README's accuracy study).
  std::optional<double> bn_momentum;
  /// Batch-norm epsilon. Unset: each model's own (Keras's 1e-3 for onebit's MNIST models).
  std::optional<double> bn_eps;
  /// Input shape C, H, W. Empty: the model's default (`default_input_shape`).
  std::vector<int64_t> input_shape;
  /// Number of output classes. 0: the model's default (`default_num_classes`).
  int64_t num_classes = 0;

  /// JSON form (all fields; unset ones as null / [] / 0).
  nlohmann::json to_json() const;
  /// Reads the JSON form; missing fields keep their defaults, unknown ones throw.
  static ModelOptions from_json(const nlohmann::json& j);
};

/// Builds a named model. onebit's own small models (input 1x28x28, 10 classes by default):
/// "larq-mnist" (Larq's MNIST tutorial CNN), "bnn-mlp" (a fully binarized MLP with a float
/// first-layer input), "bireal-mnist" (Bi-Real-style float shortcuts: add) and "densenet-mnist"
/// (BinaryDenseNet-style dense blocks: concat). The published BNNs of Larq Zoo and ReActNet
/// (input 3x224x224, 1000 classes by default; smaller inputs such as 3x32x32 work, the AlexNet
/// family needs at least 57x57, DoReFa-Net 44x44 and QuickNet 29x29): "binary-alexnet", "xnornet", "dorefanet",
/// "birealnet", "binary-resnet-e18", "binary-densenet28", "binary-densenet37",
/// "binary-densenet37-dilated", "binary-densenet45", "meliusnet22", "real-to-binary-net",
/// "quicknet-small", "quicknet", "quicknet-large", "reactnet-a". Names are matched ignoring case,
/// '-' and '_' (so Larq's "QuickNetSmall" and "binary_densenet28" work). The model outputs logits
/// (the softmax is part of the loss; `torch::softmax(model->forward(x), 1)` gives
/// probabilities). Unknown names throw std::invalid_argument listing the known ones.
nn::Graph build(const std::string& name, const ModelOptions& options = {});

/// Names `build` knows, in the order `onebit models` lists them.
std::vector<std::string> model_names();

/// The canonical name of `name` ("QuickNetSmall" -> "quicknet-small"); throws like `build`.
std::string canonical_name(const std::string& name);

/// A one-line description of a model (paper and idea).
std::string model_description(const std::string& name);

/// `options` with the model's defaults filled in: input shape and class count when unset.
ModelOptions resolve_options(const std::string& name, ModelOptions options);

}  // namespace onebit::zoo
