#pragma once
/// \file
/// Building blocks of the published BNN architectures beyond convolutions and batch norm:
/// a product of two values (Real-to-Binary's squeeze-and-excite scaling), a channel slice
/// (MeliusNet's improvement block adds into the last channels), a learnable per-channel bias
/// (ReActNet's RSign and RPReLU shifts) and a fixed blur-pool filter (QuickNet's transitions).
///
/// ```
/// namespace nn = onebit::nn;
/// nn::Graph g;
/// nn::Value x = g->input();                                       // [N, 64, H, W]
/// nn::Value s = g->call("pool", torch::nn::AdaptiveAvgPool2d(
///                                   torch::nn::AdaptiveAvgPool2dOptions(1)), x);
/// s = g->call("flatten", torch::nn::Flatten(), s);                // [N, 64]
/// s = g->call("dense", nn::QuantDense(nn::QuantDenseOptions(64, 64).bias(false)), s);
/// s = g->call("sigmoid", torch::nn::Sigmoid(), s);
/// x = g->call("scale", nn::Multiply(), {x, s});                   // x * s per channel
/// x = g->call("shift", nn::LearnableBias(64), x);                 // x + b[c]
/// nn::Value head = g->call("first", nn::Slice(nn::SliceOptions(0, 32)), x);
/// ```

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <vector>

namespace onebit::nn {

/// Elementwise product of two values (Keras' `Multiply`). The second may have the first's shape,
/// or be [N, C] or [N, C, 1, 1] for a first value [N, C, H, W]: a per-channel scale broadcast
/// over the spatial axes (squeeze-and-excite, Real-to-Binary Net's data-dependent scaling).
class MultiplyImpl : public torch::nn::Cloneable<MultiplyImpl> {
 public:
  MultiplyImpl() = default;
  void reset() override {}
  /// xs[0] * xs[1] (exactly two tensors); other shapes throw std::invalid_argument.
  at::Tensor forward(const std::vector<at::Tensor>& xs);
  void pretty_print(std::ostream& stream) const override;
};
/// Module holder for `MultiplyImpl`.
TORCH_MODULE(Multiply);

/// Options of `Slice`: channels [begin, end) of the input (dim 1).
struct SliceOptions {
  /// Channels [begin, end); 0 <= begin < end.
  SliceOptions(int64_t begin, int64_t end) : begin_(begin), end_(end) {}
  /// First channel.
  TORCH_ARG(int64_t, begin);
  /// One past the last channel; must not exceed the input's channel count.
  TORCH_ARG(int64_t, end);
};

/// A channel slice x[:, begin:end] (PyTorch indexing; Keras code writes x[..., begin:end]).
/// With Slice, Add and Concat a graph adds a branch into some channels only (MeliusNet's
/// improvement block: concat(x[:, :C-64], x[:, C-64:] + w)).
class SliceImpl : public torch::nn::Cloneable<SliceImpl> {
 public:
  /// Throws std::invalid_argument unless 0 <= begin < end.
  explicit SliceImpl(SliceOptions options);
  void reset() override {}
  /// x[:, begin:end]; throws when `end` exceeds x's channels.
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  /// The options this slice was built with.
  SliceOptions options;
};
/// Module holder for `SliceImpl`.
TORCH_MODULE(Slice);

/// Options of `LearnableBias`.
struct LearnableBiasOptions {
  /// One bias per channel (dim 1).
  /* implicit */ LearnableBiasOptions(int64_t channels) : channels_(channels) {}  // NOLINT
  /// Number of channels.
  TORCH_ARG(int64_t, channels);
};

/// x + b[c]: a learnable per-channel shift, zero-initialized (ReActNet's "move" layers: before a
/// sign it learns the binarization threshold, around a PReLU it makes RPReLU). Works on
/// [N, C] and [N, C, H, W] inputs. Parameter: `bias` [C].
class LearnableBiasImpl : public torch::nn::Cloneable<LearnableBiasImpl> {
 public:
  /// Throws std::invalid_argument unless channels >= 1.
  explicit LearnableBiasImpl(LearnableBiasOptions options);
  void reset() override;
  /// x + bias broadcast over every axis but dim 1.
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  /// The options this layer was built with.
  LearnableBiasOptions options;
  /// The per-channel bias [C].
  at::Tensor bias;
};
/// Module holder for `LearnableBiasImpl`.
TORCH_MODULE(LearnableBias);

/// Options of `BlurPool2d`.
struct BlurPool2dOptions {
  /// A filter for `channels` channels.
  /* implicit */ BlurPool2dOptions(int64_t channels) : channels_(channels) {}  // NOLINT
  /// Number of channels (the filter is applied to each one on its own).
  TORCH_ARG(int64_t, channels);
  /// Stride of the filter (2 halves the resolution).
  TORCH_ARG(int64_t, stride) = 2;
};

/// Anti-aliased downsampling (Zhang 2019; QuickNet's transitions): a fixed, non-trainable 3x3
/// depthwise filter [1 2 1]^T [1 2 1] / 16 with Keras "same" zero padding and the given stride.
/// Parameter: `weight` [C, 1, 3, 3] with requires_grad false (counted as non-trainable, like
/// Keras' DepthwiseConv2D(trainable=False)).
class BlurPool2dImpl : public torch::nn::Cloneable<BlurPool2dImpl> {
 public:
  /// Throws std::invalid_argument unless channels >= 1 and stride >= 1.
  explicit BlurPool2dImpl(BlurPool2dOptions options);
  void reset() override;
  /// The filtered, strided input [N, C, ceil(H / stride), ceil(W / stride)].
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  /// The options this layer was built with.
  BlurPool2dOptions options;
  /// The fixed filter [C, 1, 3, 3].
  at::Tensor weight;
};
/// Module holder for `BlurPool2dImpl`.
TORCH_MODULE(BlurPool2d);

}  // namespace onebit::nn
