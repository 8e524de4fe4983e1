#pragma once
/// \file
/// Padding shared by the quantized convolutions: explicit amounts, "valid", or Keras's "same"
/// rule, applied with a chosen value (`pad_values`: 0 for zero-padding, 1 for one-padding, which
/// keeps binary inputs binary).

#include <ATen/core/Tensor.h>
#include <torch/enum.h>
#include <torch/expanding_array.h>

#include <array>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace onebit::nn {

/// Padding of a convolution: explicit amounts per spatial dimension, "valid" (none) or "same"
/// (output size ceil(input / stride), the extra pixel after, as in Keras/TensorFlow).
template <size_t D>
class ConvPadding {
 public:
  ConvPadding(int64_t amount) : amount_(amount) {}  // NOLINT(google-explicit-constructor)
  ConvPadding(torch::ExpandingArray<D> amount)      // NOLINT(google-explicit-constructor)
      : amount_(amount) {}
  ConvPadding(std::initializer_list<int64_t> amount)  // NOLINT(google-explicit-constructor)
      : amount_(torch::ExpandingArray<D>(amount)) {}
  ConvPadding(torch::enumtype::kSame) : same_(true), amount_(0) {}  // NOLINT
  ConvPadding(torch::enumtype::kValid) : amount_(0) {}              // NOLINT
  /// "same" or "valid"; anything else throws std::invalid_argument.
  explicit ConvPadding(const std::string& mode);

  /// True for "same" padding.
  bool same() const { return same_; }
  /// Explicit amounts (zero for "valid" and unused for "same").
  const torch::ExpandingArray<D>& amount() const { return amount_; }

 private:
  bool same_ = false;
  torch::ExpandingArray<D> amount_;
};

/// Pads before/after per spatial dimension for input spatial sizes `in` (Keras "same" rule when
/// `padding.same()`): out = ceil(in / stride), total = max((out - 1) stride + (k - 1) d + 1 - in,
/// 0), before = total / 2, after = total - before.
template <size_t D>
std::array<std::pair<int64_t, int64_t>, D> conv_pads(const ConvPadding<D>& padding,
                                                     const std::array<int64_t, D>& in,
                                                     const torch::ExpandingArray<D>& kernel,
                                                     const torch::ExpandingArray<D>& stride,
                                                     const torch::ExpandingArray<D>& dilation);

/// An input prepared for a "valid"-style convolution: `input` is already padded where the pad
/// value or an asymmetric "same" padding requires it; `conv_padding` is the symmetric zero
/// padding left for the convolution itself.
struct PaddedInput {
  at::Tensor input;                   ///< the (possibly padded) input
  std::vector<int64_t> conv_padding;  ///< symmetric zero padding per spatial dimension
};

/// The pads of `conv_pads` for the spatial sizes of `x` ([N, C, spatial...]), after checking
/// that every padded size holds the dilated kernel: std::invalid_argument, prefixed with
/// `layer()` (called only then), otherwise. What `pad_input` pads with.
template <size_t D>
std::array<std::pair<int64_t, int64_t>, D> checked_conv_pads(
    const at::Tensor& x, const ConvPadding<D>& padding, const torch::ExpandingArray<D>& kernel,
    const torch::ExpandingArray<D>& stride, const torch::ExpandingArray<D>& dilation,
    const std::function<std::string()>& layer);

/// Pads `x` ([N, C, spatial...]) for a convolution with the given geometry: with zero pad value
/// and symmetric pads the padding is left to the convolution, otherwise `x` is padded with
/// `pad_value` explicitly. Throws std::invalid_argument, prefixed with `layer()` (called only
/// then, so the hot path builds no strings), when a padded spatial size is smaller than the
/// dilated kernel.
template <size_t D>
PaddedInput pad_input(const at::Tensor& x, const ConvPadding<D>& padding,
                      const torch::ExpandingArray<D>& kernel,
                      const torch::ExpandingArray<D>& stride,
                      const torch::ExpandingArray<D>& dilation, double pad_value,
                      const std::function<std::string()>& layer);

/// Writes "padding=same, pad_values=v" or "padding=[...]" for pretty_print.
template <size_t D>
void print_padding(std::ostream& stream, const ConvPadding<D>& padding, double pad_values);

}  // namespace onebit::nn
