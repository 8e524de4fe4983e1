#pragma once
/// \file
/// QuantConvTranspose2d / QuantConvTranspose3d: transposed convolutions with quantized input and
/// kernel (Larq's QuantConv2DTranspose/3DTranspose).
///
/// There is no `pad_values`: the padding of a transposed convolution crops its output instead
/// of extending its input, and the zeros a stride inserts between input pixels make the
/// effective input non-binary whatever the padding value (Larq has no pad_values here either).

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "onebit/nn/padding.h"
#include "onebit/nn/quant_layer.h"

namespace onebit::nn {

/// Options of `QuantConvTranspose2d/3d`, mirroring `torch::nn::ConvTransposeOptions`.
///
/// ```
/// QuantConvTranspose2d up(QuantConvTranspose2dOptions(64, 32, 3).stride(2)
///                             .padding(torch::kSame)        // output = input * stride
///                             .input_quantizer("ste_sign").kernel_quantizer("ste_sign")
///                             .kernel_constraint("weight_clip"));
/// ```
template <size_t D>
struct QuantConvTransposeOptions {
  QuantConvTransposeOptions(int64_t in_channels, int64_t out_channels,
                            torch::ExpandingArray<D> kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// Number of input channels.
  TORCH_ARG(int64_t, in_channels);
  /// Number of output channels.
  TORCH_ARG(int64_t, out_channels);
  /// Kernel size per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, kernel_size);
  /// Stride per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, stride) = 1;
  /// Explicit amounts cropped from both sides of the output (torch's meaning), torch::kValid
  /// (none: output (in - 1) stride + (k - 1) dilation + 1) or torch::kSame (Keras: output
  /// in * stride, the extra cropped pixel at the end).
  TORCH_ARG(ConvPadding<D>, padding) = 0;
  /// Extra size added at the end of each output dimension (explicit padding only; must be
  /// smaller than the stride or the dilation).
  TORCH_ARG(torch::ExpandingArray<D>, output_padding) = 0;
  /// Dilation per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, dilation) = 1;
  /// Number of groups; must divide both channel counts.
  TORCH_ARG(int64_t, groups) = 1;
  /// Whether to learn an additive bias (never quantized).
  TORCH_ARG(bool, bias) = true;
  /// Quantizer applied to the input.
  TORCH_ARG(quantizers::QuantizerSpec, input_quantizer);
  /// Quantizer applied to the latent kernel in the forward pass.
  TORCH_ARG(quantizers::QuantizerSpec, kernel_quantizer);
  /// Constraint applied to the latent kernel after each optimizer step.
  TORCH_ARG(constraints::ConstraintSpec, kernel_constraint);
};

/// Options of QuantConvTranspose2d.
using QuantConvTranspose2dOptions = QuantConvTransposeOptions<2>;
/// Options of QuantConvTranspose3d.
using QuantConvTranspose3dOptions = QuantConvTransposeOptions<3>;

/// y = conv_transpose(input_quantizer(x), kernel_quantizer(W)) + b. With no quantizers it
/// equals `torch::nn::ConvTranspose2d/3d` with the same weights; initialization matches it too.
template <size_t D, typename Derived>
class QuantConvTransposeNdImpl : public torch::nn::Cloneable<Derived>, public QuantLayer {
 public:
  /// Builds the layer; warns if the kernel quantizer is binary and there is no constraint.
  explicit QuantConvTransposeNdImpl(const QuantConvTransposeOptions<D>& options);

  void reset() override;
  /// Re-initializes the weights as torch::nn::ConvTransposeNd does.
  void reset_parameters();
  /// Applies the layer to [N, in_channels, spatial...].
  at::Tensor forward(const at::Tensor& input);
  /// The kernel as the forward pass uses it, detached.
  at::Tensor quantized_weight() const;
  void pretty_print(std::ostream& stream) const override;

  quantizers::QuantizerPtr input_quantizer() const override {
    return options.input_quantizer().get();
  }
  std::vector<QuantizedParameter> quantized_parameters() const override;

  /// The options the layer was built with.
  QuantConvTransposeOptions<D> options;
  /// Latent kernel, [in_channels, out_channels / groups, kernel...] (torch's layout).
  at::Tensor weight;
  /// Bias, [out_channels], or undefined.
  at::Tensor bias;

 private:
  std::string describe() const;
};

/// Transposed 2-D convolution over [N, C, H, W].
class QuantConvTranspose2dImpl : public QuantConvTransposeNdImpl<2, QuantConvTranspose2dImpl> {
 public:
  using QuantConvTransposeNdImpl<2, QuantConvTranspose2dImpl>::QuantConvTransposeNdImpl;
};
/// Transposed 3-D convolution over [N, C, D, H, W].
class QuantConvTranspose3dImpl : public QuantConvTransposeNdImpl<3, QuantConvTranspose3dImpl> {
 public:
  using QuantConvTransposeNdImpl<3, QuantConvTranspose3dImpl>::QuantConvTransposeNdImpl;
};

/// Module holder for `QuantConvTranspose2dImpl`.
TORCH_MODULE(QuantConvTranspose2d);
/// Module holder for `QuantConvTranspose3dImpl`.
TORCH_MODULE(QuantConvTranspose3d);

}  // namespace onebit::nn
