#pragma once
/// \file
/// QuantSeparableConv1d / QuantSeparableConv2d: a depthwise convolution followed by a pointwise
/// (1x1) convolution, each kernel with its own quantizer and constraint (Larq's
/// QuantSeparableConv1D/2D). The input quantizer applies once, to the layer's input; the
/// intermediate result is not re-quantized, as in Larq.

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "onebit/nn/padding.h"
#include "onebit/nn/quant_layer.h"

namespace onebit::nn {

/// Options of `QuantSeparableConv1d/2d`.
///
/// ```
/// QuantSeparableConv2d sep(QuantSeparableConv2dOptions(32, 64, 3).padding(torch::kSame)
///                              .input_quantizer("ste_sign")
///                              .depthwise_quantizer("ste_sign").pointwise_quantizer("ste_sign")
///                              .depthwise_constraint("weight_clip")
///                              .pointwise_constraint("weight_clip"));
/// ```
template <size_t D>
struct QuantSeparableConvOptions {
  QuantSeparableConvOptions(int64_t in_channels, int64_t out_channels,
                            torch::ExpandingArray<D> kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// Number of input channels.
  TORCH_ARG(int64_t, in_channels);
  /// Number of output channels (of the pointwise convolution).
  TORCH_ARG(int64_t, out_channels);
  /// Kernel size of the depthwise convolution.
  TORCH_ARG(torch::ExpandingArray<D>, kernel_size);
  /// Depthwise output channels per input channel.
  TORCH_ARG(int64_t, depth_multiplier) = 1;
  /// Stride of the depthwise convolution.
  TORCH_ARG(torch::ExpandingArray<D>, stride) = 1;
  /// Padding of the depthwise convolution: amounts, torch::kValid or torch::kSame.
  TORCH_ARG(ConvPadding<D>, padding) = 0;
  /// Dilation of the depthwise convolution.
  TORCH_ARG(torch::ExpandingArray<D>, dilation) = 1;
  /// Whether to learn an additive bias after the pointwise convolution (never quantized).
  TORCH_ARG(bool, bias) = true;
  /// The value the (quantized) input is padded with (0, or 1 for one-padding).
  TORCH_ARG(double, pad_values) = 0.0;
  /// Quantizer applied to the input.
  TORCH_ARG(quantizers::QuantizerSpec, input_quantizer);
  /// Quantizer applied to the latent depthwise kernel.
  TORCH_ARG(quantizers::QuantizerSpec, depthwise_quantizer);
  /// Quantizer applied to the latent pointwise kernel.
  TORCH_ARG(quantizers::QuantizerSpec, pointwise_quantizer);
  /// Constraint applied to the latent depthwise kernel after each optimizer step.
  TORCH_ARG(constraints::ConstraintSpec, depthwise_constraint);
  /// Constraint applied to the latent pointwise kernel after each optimizer step.
  TORCH_ARG(constraints::ConstraintSpec, pointwise_constraint);
};

/// Options of QuantSeparableConv1d.
using QuantSeparableConv1dOptions = QuantSeparableConvOptions<1>;
/// Options of QuantSeparableConv2d.
using QuantSeparableConv2dOptions = QuantSeparableConvOptions<2>;

/// y = conv(conv(pad(input_quantizer(x)), depthwise_quantizer(Wd), groups = C),
///          pointwise_quantizer(Wp)) + b.
/// With no quantizers it equals a grouped torch convolution (no bias) followed by a 1x1 torch
/// convolution with the same weights.
template <size_t D, typename Derived>
class QuantSeparableConvNdImpl : public torch::nn::Cloneable<Derived>, public QuantLayer {
 public:
  /// Builds the layer; warns for each binary kernel quantizer without a constraint.
  explicit QuantSeparableConvNdImpl(const QuantSeparableConvOptions<D>& options);

  void reset() override;
  /// Re-initializes both kernels (and the bias) as torch's convolutions do.
  void reset_parameters();
  /// Applies the layer to [N, in_channels, spatial...].
  at::Tensor forward(const at::Tensor& input);
  void pretty_print(std::ostream& stream) const override;

  quantizers::QuantizerPtr input_quantizer() const override {
    return options.input_quantizer().get();
  }
  /// "depthwise_weight" and "pointwise_weight".
  std::vector<QuantizedParameter> quantized_parameters() const override;

  /// The options the layer was built with.
  QuantSeparableConvOptions<D> options;
  /// Latent depthwise kernel, [in_channels * depth_multiplier, 1, kernel...].
  at::Tensor depthwise_weight;
  /// Latent pointwise kernel, [out_channels, in_channels * depth_multiplier, 1...].
  at::Tensor pointwise_weight;
  /// Bias, [out_channels], or undefined.
  at::Tensor bias;

 private:
  std::string describe() const;
};

/// Separable 1-D convolution over [N, C, L].
class QuantSeparableConv1dImpl : public QuantSeparableConvNdImpl<1, QuantSeparableConv1dImpl> {
 public:
  using QuantSeparableConvNdImpl<1, QuantSeparableConv1dImpl>::QuantSeparableConvNdImpl;
};
/// Separable 2-D convolution over [N, C, H, W].
class QuantSeparableConv2dImpl : public QuantSeparableConvNdImpl<2, QuantSeparableConv2dImpl> {
 public:
  using QuantSeparableConvNdImpl<2, QuantSeparableConv2dImpl>::QuantSeparableConvNdImpl;
};

/// Module holder for `QuantSeparableConv1dImpl`.
TORCH_MODULE(QuantSeparableConv1d);
/// Module holder for `QuantSeparableConv2dImpl`.
TORCH_MODULE(QuantSeparableConv2d);

}  // namespace onebit::nn
