#pragma once
// Internal helpers shared by the convolution-like layers (conv, transposed, separable, depthwise,
// locally connected): option checks, kernel/bias registration, torch-style initialization and
// the input-shape check. Not part of the public headers.

#include <ATen/core/Tensor.h>
#include <torch/expanding_array.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "onebit/nn/padding.h"

namespace onebit::nn::detail {

/// Fails with "channel counts must be positive" unless both counts are.
template <typename Fail>
void check_channels(const Fail& fail, int64_t in_channels, int64_t out_channels) {
  if (in_channels <= 0 || out_channels <= 0) fail("channel counts must be positive");
}

/// Fails unless `groups` is positive and divides both channel counts.
template <typename Fail>
void check_groups(const Fail& fail, int64_t groups, int64_t in_channels, int64_t out_channels) {
  if (groups <= 0 || in_channels % groups || out_channels % groups) {
    fail("groups (" + std::to_string(groups) + ") must divide in_channels (" +
         std::to_string(in_channels) + ") and out_channels (" + std::to_string(out_channels) + ")");
  }
}

/// Fails unless kernel size, stride and dilation of spatial dimension `i` are positive.
template <size_t D, typename Fail>
void check_kernel_stride_dilation(const Fail& fail, const torch::ExpandingArray<D>& kernel_size,
                                  const torch::ExpandingArray<D>& stride,
                                  const torch::ExpandingArray<D>& dilation, size_t i) {
  if ((*kernel_size)[i] <= 0 || (*stride)[i] <= 0 || (*dilation)[i] <= 0) {
    fail("kernel_size, stride and dilation must be positive");
  }
}

/// Fails if explicit padding of spatial dimension `i` is negative.
template <size_t D, typename Fail>
void check_padding(const Fail& fail, const ConvPadding<D>& padding, size_t i) {
  if (!padding.same() && (*padding.amount())[i] < 0) fail("padding must be >= 0");
}

/// Fails unless the padding value is finite.
template <typename Fail>
void check_pad_values(const Fail& fail, double pad_values) {
  if (!std::isfinite(pad_values)) fail("pad_values must be finite");
}

/// An uninitialized kernel of `shape` for layer `layer` (e.g. "QuantConv2d"), after checking
/// that its element count is within `serialize::build_limits().max_parameters`: a layer that
/// would hold more throws std::invalid_argument before anything is allocated (a corrupt
/// description or a mistyped size must not exhaust memory).
at::Tensor new_kernel(at::IntArrayRef shape, const std::string& layer);

/// Registers "bias" of `shape` on `module`, or an undefined "bias" when `enabled` is false.
at::Tensor register_bias(torch::nn::Module& module, bool enabled, at::IntArrayRef shape);

/// Initializes like torch::nn::ConvNd: kaiming_uniform_(a = sqrt(5)) for `weight`, and, when
/// `bias` is given and defined, uniform(+-1/sqrt(fan_in)) with fan_in = weight elements per
/// output channel.
void init_like_torch_conv(at::Tensor& weight, at::Tensor* bias);

/// Throws std::invalid_argument("<layer>: expected input of shape [N, <channels>, <spatial>...],
/// got <sizes>").
[[noreturn]] void throw_input_shape(const std::string& layer, int64_t channels,
                                    const std::vector<std::string>& spatial, at::IntArrayRef got);

/// Throws (as throw_input_shape, spatial dimensions shown as "*") unless `input` is
/// [N, channels, spatial_dims spatial sizes...]. `describe` is only called on failure.
template <typename Describe>
void check_input_shape(const at::Tensor& input, int64_t channels, size_t spatial_dims,
                       const Describe& describe) {
  if (input.dim() != static_cast<int64_t>(spatial_dims) + 2 || input.size(1) != channels) {
    throw_input_shape(describe(), channels, std::vector<std::string>(spatial_dims, "*"),
                      input.sizes());
  }
}

}  // namespace onebit::nn::detail
