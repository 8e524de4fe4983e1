#pragma once
/// \file
/// QuantLocallyConnected1d / QuantLocallyConnected2d: like a convolution, but with a different
/// (unshared) kernel and bias at every output position (Larq's QuantLocallyConnected1D/2D).
/// LibTorch has no such layer; it is computed as im2col followed by one batched matrix product
/// over the output positions. Because the weights depend on the position, the input's spatial
/// size is fixed at construction (`input_size`).

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <string>
#include <vector>

#include "onebit/nn/padding.h"
#include "onebit/nn/quant_layer.h"

namespace onebit::nn {

/// Options of `QuantLocallyConnected1d/2d`.
///
/// ```
/// // 16 x 12 x 12 input, 3x3 kernels, 8 filters at each of the 10 x 10 output positions.
/// QuantLocallyConnected2d lc(QuantLocallyConnected2dOptions(16, 8, 3, {12, 12})
///                                .input_quantizer("ste_sign").kernel_quantizer("ste_sign")
///                                .kernel_constraint("weight_clip"));
/// ```
template <size_t D>
struct QuantLocallyConnectedOptions {
  QuantLocallyConnectedOptions(int64_t in_channels, int64_t out_channels,
                               torch::ExpandingArray<D> kernel_size,
                               torch::ExpandingArray<D> input_size)
      : in_channels_(in_channels),
        out_channels_(out_channels),
        kernel_size_(kernel_size),
        input_size_(input_size) {}
  /// Number of input channels.
  TORCH_ARG(int64_t, in_channels);
  /// Number of filters at each output position.
  TORCH_ARG(int64_t, out_channels);
  /// Kernel size per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, kernel_size);
  /// Spatial size of the input (fixed: the weights are per output position).
  TORCH_ARG(torch::ExpandingArray<D>, input_size);
  /// Stride per spatial dimension.
  TORCH_ARG(torch::ExpandingArray<D>, stride) = 1;
  /// torch::kValid (Keras's only mode), torch::kSame or explicit amounts.
  TORCH_ARG(ConvPadding<D>, padding) = torch::kValid;
  /// Dilation per spatial dimension (Keras has none; 1 matches it).
  TORCH_ARG(torch::ExpandingArray<D>, dilation) = 1;
  /// Whether to learn a bias per output position and filter (never quantized).
  TORCH_ARG(bool, bias) = true;
  /// The value the (quantized) input is padded with (0, or 1 for one-padding).
  TORCH_ARG(double, pad_values) = 0.0;
  /// Quantizer applied to the input.
  TORCH_ARG(quantizers::QuantizerSpec, input_quantizer);
  /// Quantizer applied to the latent kernel in the forward pass.
  TORCH_ARG(quantizers::QuantizerSpec, kernel_quantizer);
  /// Constraint applied to the latent kernel after each optimizer step.
  TORCH_ARG(constraints::ConstraintSpec, kernel_constraint);
};

/// Options of QuantLocallyConnected1d.
using QuantLocallyConnected1dOptions = QuantLocallyConnectedOptions<1>;
/// Options of QuantLocallyConnected2d.
using QuantLocallyConnected2dOptions = QuantLocallyConnectedOptions<2>;

/// y[n, o, p] = sum_{c, k} W[o, p, c k] x_q[n, c, patch(p) + k] + b[o, p], with x_q the padded,
/// quantized input and W = kernel_quantizer(latent). With all position kernels equal it equals
/// a convolution. Initialization: uniform(+-1/sqrt(fan_in)), fan_in = in_channels * kernel
/// elements, as torch initializes a convolution of the same fan-in.
template <size_t D, typename Derived>
class QuantLocallyConnectedNdImpl : public torch::nn::Cloneable<Derived>, public QuantLayer {
 public:
  /// Builds the layer; throws if the kernel does not fit the padded input.
  explicit QuantLocallyConnectedNdImpl(const QuantLocallyConnectedOptions<D>& options);

  void reset() override;
  /// Re-initializes kernel and bias.
  void reset_parameters();
  /// Applies the layer to [N, in_channels, input_size...].
  at::Tensor forward(const at::Tensor& input);
  /// The kernel as the forward pass uses it, detached.
  at::Tensor quantized_weight() const;
  void pretty_print(std::ostream& stream) const override;

  quantizers::QuantizerPtr input_quantizer() const override {
    return options.input_quantizer().get();
  }
  std::vector<QuantizedParameter> quantized_parameters() const override;
  /// False: Larq's summary does not count locally connected layers.

  /// Spatial size of the output.
  const std::array<int64_t, D>& output_size() const { return output_size_; }

  /// The options the layer was built with.
  QuantLocallyConnectedOptions<D> options;
  /// Latent kernel, [out_channels, output positions, in_channels * kernel elements]; the last
  /// axis is ordered channel-major like im2col (c, k0, k1).
  at::Tensor weight;
  /// Bias, [out_channels, output spatial...], or undefined.
  at::Tensor bias;

 private:
  std::string describe() const;
  std::array<int64_t, D> output_size_{};
};

/// Locally connected 1-D layer over [N, C, L].
class QuantLocallyConnected1dImpl
    : public QuantLocallyConnectedNdImpl<1, QuantLocallyConnected1dImpl> {
 public:
  using QuantLocallyConnectedNdImpl<1, QuantLocallyConnected1dImpl>::QuantLocallyConnectedNdImpl;
};
/// Locally connected 2-D layer over [N, C, H, W].
class QuantLocallyConnected2dImpl
    : public QuantLocallyConnectedNdImpl<2, QuantLocallyConnected2dImpl> {
 public:
  using QuantLocallyConnectedNdImpl<2, QuantLocallyConnected2dImpl>::QuantLocallyConnectedNdImpl;
};

/// Module holder for `QuantLocallyConnected1dImpl`.
TORCH_MODULE(QuantLocallyConnected1d);
/// Module holder for `QuantLocallyConnected2dImpl`.
TORCH_MODULE(QuantLocallyConnected2d);

}  // namespace onebit::nn
