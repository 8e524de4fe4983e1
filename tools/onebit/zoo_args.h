#pragma once
// The zoo-model options several commands share: --model, --input-shape, --classes, --weights.

#include <cstdint>
#include <string>

#include "onebit/nn/graph.h"
#include "onebit/zoo/models.h"

namespace onebit::cli {

/// A zoo model as the command line names it.
struct ZooModelArgs {
  std::string model;        ///< zoo name (any spelling `zoo::canonical_name` accepts)
  std::string input_shape;  ///< "C,H,W"; empty: the model's default
  int64_t classes = 0;      ///< 0: the model's default
  std::string weights;      ///< checkpoint to load the weights from; empty: random weights
  bool quantized = true;    ///< false: the float copy
};

/// A built zoo model (eval mode) with its canonical name and resolved options.
struct ZooModel {
  std::string name;
  zoo::ModelOptions options;
  nn::Graph model{nullptr};
};

/// Builds the model `args` names and loads its weights (errors list missing or mis-shaped
/// tensors).
ZooModel build_zoo_model(const ZooModelArgs& args);

}  // namespace onebit::cli
