#pragma once
// Shared by the trainer tests: a small synthetic data set, temporary directories, short runs.

#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <string>

#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace onebit::testing {

/// A small learnable problem shaped like MNIST: the class is which quadrant is brightest.
inline data::Dataset synthetic(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto images = at::rand({n, 1, 28, 28}, gen) * 2 - 1;
  auto labels = at::randint(4, {n}, gen);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = labels[i].item<int64_t>();
    images[i].slice(1, (q / 2) * 14, (q / 2) * 14 + 14).slice(2, (q % 2) * 14, (q % 2) * 14 + 14) +=
        1.0;
  }
  return {images.clamp(-1, 1), labels, 10};
}

/// A fresh (removed) directory under the system's temporary directory.
inline std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("onebit_trainer_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(d);
  return d.string();
}

/// larq-mnist, 2 epochs of batch 32, one thread, no progress bar, into `out`.
inline train::TrainOptions small_options(const std::string& out) {
  train::TrainOptions o;
  o.model = "larq-mnist";
  o.epochs = 2;
  o.batch_size = 32;
  o.threads = 1;
  o.seed = 7;
  o.progress = false;
  o.out_dir = out;
  return o;
}

/// Builds the zoo model of `o` (seeded) and fits it on 256 synthetic training and 128 test images.
inline train::TrainResult run(const train::TrainOptions& o, nn::Graph* out_model = nullptr,
                              const std::vector<std::shared_ptr<train::Callback>>& callbacks = {}) {
  at::manual_seed(o.seed);
  auto model = zoo::build(o.model, o.model_options);
  if (out_model) *out_model = model;
  return train::fit(model, synthetic(256, 1), synthetic(128, 2), o, callbacks);
}

}  // namespace onebit::testing
