#pragma once
/// \file
/// BatchNorm with Keras's options: `scale` (gamma) and `center` (beta) can be switched off
/// independently, as Larq's models do (`BatchNormalization(scale=False)`).

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/arg.h>

namespace onebit::nn {

/// Options of `BatchNorm`. `momentum` follows LibTorch's convention
/// (running = (1 - momentum) running + momentum batch): Keras's momentum 0.99 is 0.01 here.
struct BatchNormOptions {
  explicit BatchNormOptions(int64_t num_features) : num_features_(num_features) {}
  /// Number of channels (dimension 1 of the input).
  TORCH_ARG(int64_t, num_features);
  /// Added to the variance for numerical stability (Keras's default 1e-3).
  TORCH_ARG(double, eps) = 1e-3;
  /// Weight of the current batch in the running statistics.
  TORCH_ARG(double, momentum) = 0.01;
  /// Learn a per-channel scale (gamma).
  TORCH_ARG(bool, scale) = true;
  /// Learn a per-channel offset (beta).
  TORCH_ARG(bool, center) = true;
};

/// Batch normalization over dimension 1 of an [N, C, ...] input, for any number of spatial
/// dimensions (0 for dense layers).
class BatchNormImpl : public torch::nn::Cloneable<BatchNormImpl> {
 public:
  explicit BatchNormImpl(int64_t num_features) : BatchNormImpl(BatchNormOptions(num_features)) {}
  /// Builds the layer from options.
  explicit BatchNormImpl(const BatchNormOptions& options);
  void reset() override;
  /// Normalizes with batch statistics in training mode, running statistics in eval mode.
  at::Tensor forward(const at::Tensor& input);
  /// Per-channel multiplier and bias of the eval-mode transform y = x * m + b.
  std::pair<at::Tensor, at::Tensor> folded() const;
  void pretty_print(std::ostream& stream) const override;

  /// The options the layer was built with.
  BatchNormOptions options;
  /// gamma, or undefined when !scale.
  at::Tensor weight;
  /// beta, or undefined when !center.
  at::Tensor bias;
  /// Running mean (buffer).
  at::Tensor running_mean;
  /// Running variance (buffer).
  at::Tensor running_var;
};

/// Module holder for `BatchNormImpl`.
TORCH_MODULE(BatchNorm);

}  // namespace onebit::nn
