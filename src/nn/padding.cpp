#include "onebit/nn/padding.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <ostream>
#include <sstream>
#include <stdexcept>

namespace onebit::nn {

template <size_t D>
ConvPadding<D>::ConvPadding(const std::string& mode) : amount_(0) {
  if (mode == "same") {
    same_ = true;
  } else if (mode != "valid") {
    throw std::invalid_argument(
        "convolution padding must be \"same\", \"valid\" or amounts, got \"" + mode + "\"");
  }
}

template <size_t D>
std::array<std::pair<int64_t, int64_t>, D> conv_pads(const ConvPadding<D>& padding,
                                                     const std::array<int64_t, D>& in,
                                                     const torch::ExpandingArray<D>& kernel,
                                                     const torch::ExpandingArray<D>& stride,
                                                     const torch::ExpandingArray<D>& dilation) {
  std::array<std::pair<int64_t, int64_t>, D> pads{};
  for (size_t i = 0; i < D; ++i) {
    if (!padding.same()) {
      pads[i] = {(*padding.amount())[i], (*padding.amount())[i]};
      continue;
    }
    const int64_t s = (*stride)[i];
    const int64_t out = (in[i] + s - 1) / s;
    const int64_t span = ((*kernel)[i] - 1) * (*dilation)[i] + 1;
    const int64_t total = std::max<int64_t>((out - 1) * s + span - in[i], 0);
    pads[i] = {total / 2, total - total / 2};
  }
  return pads;
}

template <size_t D>
std::array<std::pair<int64_t, int64_t>, D> checked_conv_pads(
    const at::Tensor& x, const ConvPadding<D>& padding, const torch::ExpandingArray<D>& kernel,
    const torch::ExpandingArray<D>& stride, const torch::ExpandingArray<D>& dilation,
    const std::function<std::string()>& layer) {
  std::array<int64_t, D> in{};
  for (size_t i = 0; i < D; ++i) in[i] = x.size(2 + i);
  const auto pads = conv_pads<D>(padding, in, kernel, stride, dilation);
  for (size_t i = 0; i < D; ++i) {
    const int64_t span = ((*kernel)[i] - 1) * (*dilation)[i] + 1;
    if (in[i] + pads[i].first + pads[i].second < span) {
      std::ostringstream msg;
      msg << layer() << ": input " << x.sizes() << " is smaller than the kernel (span " << span
          << ") in spatial dimension " << i;
      throw std::invalid_argument(msg.str());
    }
  }
  return pads;
}

template <size_t D>
PaddedInput pad_input(const at::Tensor& x, const ConvPadding<D>& padding,
                      const torch::ExpandingArray<D>& kernel,
                      const torch::ExpandingArray<D>& stride,
                      const torch::ExpandingArray<D>& dilation, double pad_value,
                      const std::function<std::string()>& layer) {
  const auto pads = checked_conv_pads<D>(x, padding, kernel, stride, dilation, layer);
  bool symmetric_zero = pad_value == 0.0;
  for (const auto& p : pads) symmetric_zero = symmetric_zero && p.first == p.second;

  PaddedInput out{x, std::vector<int64_t>(D, 0)};
  if (symmetric_zero) {
    for (size_t i = 0; i < D; ++i) out.conv_padding[i] = pads[i].first;
  } else {
    std::vector<int64_t> pad_list;  // last dimension first, as constant_pad_nd expects
    for (size_t i = D; i-- > 0;) {
      pad_list.push_back(pads[i].first);
      pad_list.push_back(pads[i].second);
    }
    out.input = at::constant_pad_nd(x, pad_list, pad_value);
  }
  return out;
}

template <size_t D>
void print_padding(std::ostream& stream, const ConvPadding<D>& padding, double pad_values) {
  if (padding.same()) {
    stream << "padding=same, pad_values=" << pad_values;
  } else {
    stream << "padding=" << padding.amount();
  }
}

#define ONEBIT_INSTANTIATE_PADDING(D)                                                        \
  template class ConvPadding<D>;                                                             \
  template std::array<std::pair<int64_t, int64_t>, D> conv_pads<D>(                          \
      const ConvPadding<D>&, const std::array<int64_t, D>&, const torch::ExpandingArray<D>&, \
      const torch::ExpandingArray<D>&, const torch::ExpandingArray<D>&);                     \
  template std::array<std::pair<int64_t, int64_t>, D> checked_conv_pads<D>(                  \
      const at::Tensor&, const ConvPadding<D>&, const torch::ExpandingArray<D>&,             \
      const torch::ExpandingArray<D>&, const torch::ExpandingArray<D>&,                      \
      const std::function<std::string()>&);                                                  \
  template PaddedInput pad_input<D>(                                                         \
      const at::Tensor&, const ConvPadding<D>&, const torch::ExpandingArray<D>&,             \
      const torch::ExpandingArray<D>&, const torch::ExpandingArray<D>&, double,              \
      const std::function<std::string()>&);                                                  \
  template void print_padding<D>(std::ostream&, const ConvPadding<D>&, double);
ONEBIT_INSTANTIATE_PADDING(1)
ONEBIT_INSTANTIATE_PADDING(2)
ONEBIT_INSTANTIATE_PADDING(3)
#undef ONEBIT_INSTANTIATE_PADDING

}  // namespace onebit::nn
