#pragma once
// Internal: the published architectures (literature.cpp), listed for the zoo's name table.

#include <functional>
#include <vector>

#include "onebit/nn/graph.h"
#include "onebit/zoo/models.h"

namespace onebit::zoo::detail {

/// One named architecture: its name, a one-line description and its build function (options
/// already resolved: input shape and classes set).
struct ZooEntry {
  const char* name;
  const char* description;
  std::function<nn::Graph(const ModelOptions&)> build;
};

/// The fifteen published BNNs, ImageNet-sized by default (3x224x224, 1000 classes).
const std::vector<ZooEntry>& literature_models();

}  // namespace onebit::zoo::detail
