#pragma once
/// \file
/// Activations used in BNNs: `hard_tanh`, `leaky_tanh`, and quantizers as activation modules.
///
/// ```
/// torch::nn::Sequential model(
///     onebit::nn::QuantDense(onebit::nn::QuantDenseOptions(784, 256)),
///     onebit::nn::HardTanh(),
///     onebit::nn::Quantizer("ste_sign"),   // like Keras's Activation("ste_sign")
///     onebit::nn::QuantDense(onebit::nn::QuantDenseOptions(256, 10)));
/// ```
/// Prefer the layers' `input_quantizer` over a Quantizer module: a batch norm or pooling layer in
/// between makes the next layer's input non-binary again.

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "onebit/quantizers.h"

namespace onebit::nn {

/// clip(x, -1, 1); gradient 1 on [-1, 1], 0 outside.
at::Tensor hard_tanh(const at::Tensor& x);

/// clip(x, -1, 1) with slope `alpha` instead of 0 outside [-1, 1]:
/// x for |x| <= 1, 1 + alpha (x - 1) above, -1 + alpha (x + 1) below.
at::Tensor leaky_tanh(const at::Tensor& x, double alpha = 0.2);

/// Module form of `hard_tanh`.
class HardTanhImpl : public torch::nn::Cloneable<HardTanhImpl> {
 public:
  HardTanhImpl() = default;
  void reset() override {}
  /// hard_tanh(x).
  at::Tensor forward(const at::Tensor& x) { return hard_tanh(x); }
  void pretty_print(std::ostream& stream) const override;
};
/// Module holder for `HardTanhImpl`.
TORCH_MODULE(HardTanh);

/// Module form of `leaky_tanh`.
class LeakyTanhImpl : public torch::nn::Cloneable<LeakyTanhImpl> {
 public:
  /// `alpha` must be finite.
  explicit LeakyTanhImpl(double alpha = 0.2);
  void reset() override {}
  /// leaky_tanh(x, alpha).
  at::Tensor forward(const at::Tensor& x) { return leaky_tanh(x, alpha_); }
  void pretty_print(std::ostream& stream) const override;
  /// The slope outside [-1, 1].
  double alpha() const { return alpha_; }

 private:
  double alpha_;
};
/// Module holder for `LeakyTanhImpl`.
TORCH_MODULE(LeakyTanh);

/// A quantizer as a module (Keras's `Activation("ste_sign")`): forward is the quantizer with its
/// pseudo-gradient. Not a QuantLayer (it has no weights); `quantizer()` exposes it to the
/// summary and the converter.
class QuantizerImpl : public torch::nn::Cloneable<QuantizerImpl> {
 public:
  /// `quantizer`: a string id or a quantizer object; null throws std::invalid_argument.
  explicit QuantizerImpl(quantizers::QuantizerSpec quantizer);
  void reset() override {}
  /// quantizer(x).
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  /// The wrapped quantizer (never null).
  const quantizers::QuantizerPtr& quantizer() const { return quantizer_; }

 private:
  quantizers::QuantizerPtr quantizer_;
};
/// Module holder for `QuantizerImpl`: `onebit::nn::Quantizer("ste_sign")`.
TORCH_MODULE(Quantizer);

}  // namespace onebit::nn
