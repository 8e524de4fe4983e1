#pragma once
/// \file
/// QuantDepthwiseConv2d: a depthwise convolution (one filter bank per input channel) with
/// quantized input and kernel (Larq's QuantDepthwiseConv2D).

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "onebit/nn/padding.h"
#include "onebit/nn/quant_layer.h"

namespace onebit::nn {

/// Options of `QuantDepthwiseConv2d`.
///
/// ```
/// QuantDepthwiseConv2d dw(QuantDepthwiseConv2dOptions(32, 3).depth_multiplier(2)
///                             .padding(torch::kSame).pad_values(1.0)
///                             .input_quantizer("ste_sign").depthwise_quantizer("ste_sign")
///                             .depthwise_constraint("weight_clip"));   // 32 -> 64 channels
/// ```
struct QuantDepthwiseConv2dOptions {
  QuantDepthwiseConv2dOptions(int64_t in_channels, torch::ExpandingArray<2> kernel_size)
      : in_channels_(in_channels), kernel_size_(kernel_size) {}
  /// Number of input channels.
  TORCH_ARG(int64_t, in_channels);
  /// Kernel size (height, width).
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  /// Output channels per input channel; the layer outputs in_channels * depth_multiplier.
  TORCH_ARG(int64_t, depth_multiplier) = 1;
  /// Stride (height, width).
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  /// Explicit amounts, torch::kValid or torch::kSame.
  TORCH_ARG(ConvPadding<2>, padding) = 0;
  /// Dilation (height, width).
  TORCH_ARG(torch::ExpandingArray<2>, dilation) = 1;
  /// Whether to learn an additive bias (never quantized).
  TORCH_ARG(bool, bias) = true;
  /// The value the (quantized) input is padded with (0, or 1 for one-padding).
  TORCH_ARG(double, pad_values) = 0.0;
  /// Quantizer applied to the input.
  TORCH_ARG(quantizers::QuantizerSpec, input_quantizer);
  /// Quantizer applied to the latent depthwise kernel in the forward pass.
  TORCH_ARG(quantizers::QuantizerSpec, depthwise_quantizer);
  /// Constraint applied to the latent depthwise kernel after each optimizer step.
  TORCH_ARG(constraints::ConstraintSpec, depthwise_constraint);
};

/// y = conv2d(pad(input_quantizer(x)), depthwise_quantizer(W), groups = in_channels) + b.
/// With no quantizers it equals `torch::nn::Conv2d(C, C * depth_multiplier, k).groups(C)` with
/// the same weights; initialization matches it too.
class QuantDepthwiseConv2dImpl : public torch::nn::Cloneable<QuantDepthwiseConv2dImpl>,
                                 public QuantLayer {
 public:
  /// Builds the layer; warns if the kernel quantizer is binary and there is no constraint.
  explicit QuantDepthwiseConv2dImpl(const QuantDepthwiseConv2dOptions& options);
  QuantDepthwiseConv2dImpl(int64_t in_channels, torch::ExpandingArray<2> kernel_size)
      : QuantDepthwiseConv2dImpl(QuantDepthwiseConv2dOptions(in_channels, kernel_size)) {}

  void reset() override;
  /// Re-initializes the weights as torch::nn::Conv2d does.
  void reset_parameters();
  /// Applies the layer to [N, in_channels, H, W].
  at::Tensor forward(const at::Tensor& input);
  /// The depthwise kernel as the forward pass uses it, detached.
  at::Tensor quantized_weight() const;
  /// How the depthwise quantizer sees `weight` (per depth-multiplier index, as in Larq).
  quantizers::TensorRole kernel_role() const {
    return quantizers::TensorRole::depthwise_kernel(options.depth_multiplier());
  }
  void pretty_print(std::ostream& stream) const override;

  quantizers::QuantizerPtr input_quantizer() const override {
    return options.input_quantizer().get();
  }
  std::vector<QuantizedParameter> quantized_parameters() const override;

  /// The options the layer was built with.
  QuantDepthwiseConv2dOptions options;
  /// Latent depthwise kernel, [in_channels * depth_multiplier, 1, kh, kw].
  at::Tensor weight;
  /// Bias, [in_channels * depth_multiplier], or undefined.
  at::Tensor bias;

 private:
  std::string describe() const;
};

/// Module holder for `QuantDepthwiseConv2dImpl`.
TORCH_MODULE(QuantDepthwiseConv2d);

}  // namespace onebit::nn
