#pragma once
/// \file
/// QuantConv1d / QuantConv2d / QuantConv3d: convolutions with quantized input and kernel
/// (Larq's QuantConv1D/2D/3D), with "same" padding by a chosen value (`pad_values`).

#include <torch/arg.h>
#include <torch/enum.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <initializer_list>
#include <string>

#include "onebit/nn/padding.h"
#include "onebit/nn/quant_layer.h"

namespace onebit::nn {

/// Options for `QuantConv1d/2d/3d`, mirroring `torch::nn::ConvOptions`.
///
/// ```
/// QuantConv2d conv(QuantConv2dOptions(32, 64, 3).padding(torch::kSame).pad_values(1.0)
///                      .bias(false).input_quantizer("ste_sign").kernel_quantizer("ste_sign")
///                      .kernel_constraint("weight_clip"));
/// ```
template <size_t D>
struct QuantConvOptions {
  QuantConvOptions(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<D> kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// Number of input channels.
  TORCH_ARG(int64_t, in_channels);
  /// Number of output channels.
  TORCH_ARG(int64_t, out_channels);
  /// Kernel size per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, kernel_size);
  /// Stride per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, stride) = 1;
  /// Explicit amounts, torch::kValid or torch::kSame.
  TORCH_ARG(ConvPadding<D>, padding) = 0;
  /// Dilation per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, dilation) = 1;
  /// Number of groups; must divide both channel counts.
  TORCH_ARG(int64_t, groups) = 1;
  /// Whether to learn an additive bias (never quantized).
  TORCH_ARG(bool, bias) = true;
  /// The value the (quantized) input is padded with: 0 (zero-padding) or 1 (one-padding, which
  /// keeps binary inputs binary).
  TORCH_ARG(double, pad_values) = 0.0;
  /// Quantizer applied to the input (string id, object or nullptr).
  TORCH_ARG(quantizers::QuantizerSpec, input_quantizer);
  /// Quantizer applied to the latent kernel in the forward pass.
  TORCH_ARG(quantizers::QuantizerSpec, kernel_quantizer);
  /// Constraint applied to the latent kernel after each optimizer step.
  TORCH_ARG(constraints::ConstraintSpec, kernel_constraint);
};

/// Options of QuantConv1d.
using QuantConv1dOptions = QuantConvOptions<1>;
/// Options of QuantConv2d.
using QuantConv2dOptions = QuantConvOptions<2>;
/// Options of QuantConv3d.
using QuantConv3dOptions = QuantConvOptions<3>;

/// The shared implementation of QuantConv1d/2d/3d:
/// y = conv(pad(input_quantizer(x), pad_values), kernel_quantizer(W)) + b.
template <size_t D, typename Derived>
class QuantConvNdImpl : public torch::nn::Cloneable<Derived>, public QuantLayer {
 public:
  /// Builds the layer; warns if the kernel quantizer is binary and there is no constraint.
  explicit QuantConvNdImpl(const QuantConvOptions<D>& options);

  void reset() override;
  /// Re-initializes the weights as torch::nn::ConvNd does.
  void reset_parameters();
  /// Applies the layer to a tensor of shape [N, in_channels, spatial...].
  at::Tensor forward(const at::Tensor& input);
  /// The kernel as the forward pass uses it (e.g. exact +-1), detached.
  at::Tensor quantized_weight() const;
  void pretty_print(std::ostream& stream) const override;

  quantizers::QuantizerPtr input_quantizer() const override {
    return options.input_quantizer().get();
  }
  std::vector<QuantizedParameter> quantized_parameters() const override;

  /// The options the layer was built with.
  QuantConvOptions<D> options;
  /// Latent kernel, [out_channels, in_channels / groups, kernel...].
  at::Tensor weight;
  /// Bias, [out_channels], or undefined.
  at::Tensor bias;

 private:
  std::string describe() const;
};

/// 1-D quantized convolution over [N, C, L].
class QuantConv1dImpl : public QuantConvNdImpl<1, QuantConv1dImpl> {
 public:
  using QuantConvNdImpl<1, QuantConv1dImpl>::QuantConvNdImpl;
  QuantConv1dImpl(int64_t in, int64_t out, torch::ExpandingArray<1> kernel)
      : QuantConv1dImpl(QuantConv1dOptions(in, out, kernel)) {}
};
/// 2-D quantized convolution over [N, C, H, W].
class QuantConv2dImpl : public QuantConvNdImpl<2, QuantConv2dImpl> {
 public:
  using QuantConvNdImpl<2, QuantConv2dImpl>::QuantConvNdImpl;
  QuantConv2dImpl(int64_t in, int64_t out, torch::ExpandingArray<2> kernel)
      : QuantConv2dImpl(QuantConv2dOptions(in, out, kernel)) {}
};
/// 3-D quantized convolution over [N, C, D, H, W].
class QuantConv3dImpl : public QuantConvNdImpl<3, QuantConv3dImpl> {
 public:
  using QuantConvNdImpl<3, QuantConv3dImpl>::QuantConvNdImpl;
  QuantConv3dImpl(int64_t in, int64_t out, torch::ExpandingArray<3> kernel)
      : QuantConv3dImpl(QuantConv3dOptions(in, out, kernel)) {}
};

/// Module holder for `QuantConv1dImpl`.
TORCH_MODULE(QuantConv1d);
/// Module holder for `QuantConv2dImpl` (use like `torch::nn::Conv2d`).
TORCH_MODULE(QuantConv2d);
/// Module holder for `QuantConv3dImpl`.
TORCH_MODULE(QuantConv3d);

}  // namespace onebit::nn
