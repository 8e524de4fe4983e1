#pragma once
/// \file
/// QuantDense: a fully connected layer with quantized input and kernel (Larq's QuantDense).

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/arg.h>

#include "onebit/nn/quant_layer.h"

namespace onebit::nn {

/// Options for `QuantDense`, mirroring `torch::nn::LinearOptions`.
///
/// ```
/// QuantDense layer(QuantDenseOptions(512, 10).bias(false)
///                      .input_quantizer("ste_sign").kernel_quantizer("ste_sign")
///                      .kernel_constraint("weight_clip"));
/// ```
struct QuantDenseOptions {
  QuantDenseOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  /// Size of each input sample.
  TORCH_ARG(int64_t, in_features);
  /// Size of each output sample.
  TORCH_ARG(int64_t, out_features);
  /// Whether to learn an additive bias (never quantized).
  TORCH_ARG(bool, bias) = true;
  /// Quantizer applied to the input (string id, object or nullptr).
  TORCH_ARG(quantizers::QuantizerSpec, input_quantizer);
  /// Quantizer applied to the latent kernel in the forward pass.
  TORCH_ARG(quantizers::QuantizerSpec, kernel_quantizer);
  /// Constraint applied to the latent kernel after each optimizer step.
  TORCH_ARG(constraints::ConstraintSpec, kernel_constraint);
};

/// y = x_q W_q^T + b with x_q = input_quantizer(x), W_q = kernel_quantizer(W). With no
/// quantizers it equals `torch::nn::Linear` with the same weights; initialization matches it too.
class QuantDenseImpl : public torch::nn::Cloneable<QuantDenseImpl>, public QuantLayer {
 public:
  QuantDenseImpl(int64_t in_features, int64_t out_features)
      : QuantDenseImpl(QuantDenseOptions(in_features, out_features)) {}
  /// Builds the layer; warns if the kernel quantizer is binary and there is no constraint.
  explicit QuantDenseImpl(const QuantDenseOptions& options);

  void reset() override;
  /// Re-initializes the weights as torch::nn::Linear does.
  void reset_parameters();
  /// Applies the layer to a tensor of shape [..., in_features].
  at::Tensor forward(const at::Tensor& input);
  /// The kernel as the forward pass uses it (e.g. exact +-1), detached.
  at::Tensor quantized_weight() const;
  void pretty_print(std::ostream& stream) const override;

  quantizers::QuantizerPtr input_quantizer() const override {
    return options.input_quantizer().get();
  }
  std::vector<QuantizedParameter> quantized_parameters() const override;

  /// The options the layer was built with.
  QuantDenseOptions options;
  /// Latent kernel, [out_features, in_features].
  at::Tensor weight;
  /// Bias, [out_features], or undefined.
  at::Tensor bias;
};

/// Module holder for `QuantDenseImpl` (use like `torch::nn::Linear`).
TORCH_MODULE(QuantDense);

}  // namespace onebit::nn
