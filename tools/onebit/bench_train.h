#pragma once
// `onebit bench --train`: training throughput of a zoo model on the float and the binary
// training kernels.

#include <string>
#include <vector>

#include "zoo_args.h"

namespace onebit::cli {

/// Arguments of `onebit bench --train`.
struct TrainBenchArgs {
  ZooModelArgs zoo;  ///< The model (default larq-mnist).
  std::vector<int> threads = {1, 2};
  int64_t batch_size = 64;
  std::string optimizer = "adam";      ///< As `onebit train --optimizer`.
  bool libtorch_adam = false;          ///< LibTorch's Adam step instead of onebit's fused one.
  std::string conv_gradient = "auto";  ///< The binary path's conv gradients (ConvGradient).
  double min_seconds = 1.0;            ///< Timed seconds per configuration (after warm-up).
  bool profile = false;  ///< Per-op self times of each path at the first thread count.
  bool json = false;
};

/// Times training steps (forward + loss, backward, optimizer step + constraints) on random
/// images with each training-kernels choice and thread count; prints a table or JSON lines.
void bench_training(const TrainBenchArgs& args);

}  // namespace onebit::cli
