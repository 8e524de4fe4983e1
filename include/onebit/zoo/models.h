#pragma once
/// \file
/// The model zoo: named architectures, built as `nn::Graph`s.
///
/// ```
/// auto model = onebit::zoo::build("larq-mnist");                     // the BNN
/// auto baseline = onebit::zoo::build("larq-mnist", {.quantized = false});  // float copy
/// ```

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "onebit/nn/graph.h"

namespace onebit::zoo {

/// Options shared by the zoo's models.
struct ModelOptions {
  /// False builds the same network with every quantizer and constraint off (the float baseline).
  bool quantized = true;
  /// Batch-norm momentum in LibTorch's convention (Keras's 0.99 is 0.01). 0.1 (Keras 0.9)
  /// tracks the flipping binary weights better than Larq's 0.01: see the README's accuracy study.
  double bn_momentum = 0.1;
  /// Batch-norm epsilon (Keras's default).
  double bn_eps = 1e-3;
  /// Input shape C, H, W.
  std::vector<int64_t> input_shape = {1, 28, 28};
  /// Number of output classes.
  int64_t num_classes = 10;

  /// JSON form (all fields).
  nlohmann::json to_json() const;
  /// Reads the JSON form; missing fields keep their defaults, unknown ones throw.
  static ModelOptions from_json(const nlohmann::json& j);
};

/// Builds a named model: "larq-mnist" (Larq's MNIST tutorial CNN), "bnn-mlp" (a fully
/// binarized MLP with a float first-layer input), "bireal-mnist" (Bi-Real-style float
/// shortcuts around every binary convolution: add) or "densenet-mnist" (BinaryDenseNet-style
/// dense blocks: concat); the graph models take inputs of at least 8x8. The model outputs logits
/// (the softmax is part of the loss; `torch::softmax(model->forward(x), 1)` gives probabilities).
/// Unknown names throw std::invalid_argument listing the known ones.
nn::Graph build(const std::string& name, const ModelOptions& options = {});

/// Names `build` knows.
std::vector<std::string> model_names();

}  // namespace onebit::zoo
