#pragma once
/// \file
/// Checkpoints: model weights, optimizer state and the training config in one file, written
/// atomically.

#include <torch/optim/optimizer.h>
#include <nlohmann/json.hpp>
#include "onebit/nn/graph.h"

#include <string>

namespace onebit::train {

/// A loaded checkpoint.
struct Checkpoint {
  nn::Graph model{nullptr};  ///< rebuilt from the config, weights loaded, in eval mode
  nlohmann::json config;     ///< {"train": TrainOptions JSON, "epoch": n, ...}
  std::string path;          ///< the checkpoint file read
};

/// `path` itself if it is a file, else `path/checkpoint.pt`.
std::string checkpoint_file(const std::string& path);

/// Writes model, optimizer (may be null) and config to `path` atomically.
void save_checkpoint(const std::string& path, const nn::Graph& model,
                     torch::optim::Optimizer* optimizer, const nlohmann::json& config);

/// Loads a checkpoint written by `save_checkpoint` (file or directory). The model is rebuilt from
/// the architecture stored in the config (see onebit/serialize.h), or from the zoo name and
/// options for checkpoints written before architectures were stored. A missing, truncated or
/// corrupt file throws std::runtime_error naming it, and so does a checkpoint of a model whose
/// architecture could not be stored (a layer no kind describes): the message says why and
/// points to `load_model_state`.
Checkpoint load_checkpoint(const std::string& path);

/// Loads the optimizer state stored in a checkpoint into `optimizer`.
void load_optimizer_state(const std::string& path, torch::optim::Optimizer& optimizer);

}  // namespace onebit::train

namespace onebit::train {

/// Loads only the model weights stored in a checkpoint into `model` (same architecture: every
/// parameter and buffer of `model` by its name, e.g. "block3_conv.weight"). Nothing is changed
/// unless every tensor is present with the right shape; otherwise throws std::runtime_error
/// naming the file and listing the missing tensors, the mis-shaped ones (expected and stored
/// shape) and the stored tensors the model has no place for. `onebit ... --weights FILE` uses it
/// to load a checkpoint into a zoo model.
void load_model_state(const std::string& path, nn::Graph model);

}  // namespace onebit::train
