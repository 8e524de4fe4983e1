#include "onebit/nn/conv.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <sstream>

#include "onebit/nn/format.h"

namespace onebit::nn {

template <size_t D>
ConvPadding<D>::ConvPadding(const std::string& mode) : amount_(0) {
  if (mode == "same") {
    same_ = true;
  } else if (mode != "valid") {
    throw std::invalid_argument("convolution padding must be \"same\", \"valid\" or amounts, got \"" +
                                mode + "\"");
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

template <size_t D, typename Derived>
QuantConvNdImpl<D, Derived>::QuantConvNdImpl(const QuantConvOptions<D>& options_)
    : options(options_) {
  const auto& o = options;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(describe() + ": " + what);
  };
  if (o.in_channels() <= 0 || o.out_channels() <= 0) fail("channel counts must be positive");
  if (o.groups() <= 0 || o.in_channels() % o.groups() || o.out_channels() % o.groups()) {
    fail("groups (" + std::to_string(o.groups()) + ") must divide in_channels (" +
         std::to_string(o.in_channels()) + ") and out_channels (" +
         std::to_string(o.out_channels()) + ")");
  }
  for (size_t i = 0; i < D; ++i) {
    if ((*o.kernel_size())[i] <= 0 || (*o.stride())[i] <= 0 || (*o.dilation())[i] <= 0) {
      fail("kernel_size, stride and dilation must be positive");
    }
    if (!o.padding().same() && (*o.padding().amount())[i] < 0) fail("padding must be >= 0");
  }
  if (!std::isfinite(o.pad_values())) fail("pad_values must be finite");
  warn_if_unconstrained(describe(), o.kernel_quantizer().get(), o.kernel_constraint().get());
  reset();
}

template <size_t D, typename Derived>
std::string QuantConvNdImpl<D, Derived>::describe() const {
  std::ostringstream s;
  s << "QuantConv" << D << "d(" << options.in_channels() << ", " << options.out_channels()
    << ", kernel_size=" << options.kernel_size() << ")";
  return s.str();
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::reset() {
  std::vector<int64_t> shape = {options.out_channels(), options.in_channels() / options.groups()};
  for (size_t i = 0; i < D; ++i) shape.push_back((*options.kernel_size())[i]);
  weight = this->register_parameter("weight", torch::empty(shape));
  if (options.bias()) {
    bias = this->register_parameter("bias", torch::empty(options.out_channels()));
  } else {
    bias = this->register_parameter("bias", {}, /*requires_grad=*/false);
  }
  reset_parameters();
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::reset_parameters() {
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5));
  if (bias.defined()) {
    const double fan_in = static_cast<double>(weight.numel() / weight.size(0));
    const double bound = 1.0 / std::sqrt(fan_in);
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

template <size_t D, typename Derived>
at::Tensor QuantConvNdImpl<D, Derived>::forward(const at::Tensor& input) {
  if (input.dim() != static_cast<int64_t>(D) + 2 || input.size(1) != options.in_channels()) {
    std::ostringstream msg;
    msg << describe() << ": expected input of shape [N, " << options.in_channels();
    for (size_t i = 0; i < D; ++i) msg << ", *";
    msg << "], got " << input.sizes();
    throw std::invalid_argument(msg.str());
  }
  auto x = quantizers::apply(options.input_quantizer().get(), input);
  auto w = quantizers::apply(options.kernel_quantizer().get(), weight);

  std::array<int64_t, D> in{};
  for (size_t i = 0; i < D; ++i) in[i] = x.size(2 + i);
  auto pads = conv_pads<D>(options.padding(), in, options.kernel_size(), options.stride(),
                           options.dilation());
  bool symmetric_zero = options.pad_values() == 0.0;
  for (const auto& p : pads) symmetric_zero = symmetric_zero && p.first == p.second;

  std::vector<int64_t> conv_padding(D, 0);
  if (symmetric_zero) {
    for (size_t i = 0; i < D; ++i) conv_padding[i] = pads[i].first;
  } else {
    std::vector<int64_t> pad_list;  // last dimension first, as constant_pad_nd expects
    for (size_t i = D; i-- > 0;) {
      pad_list.push_back(pads[i].first);
      pad_list.push_back(pads[i].second);
    }
    x = at::constant_pad_nd(x, pad_list, options.pad_values());
  }
  for (size_t i = 0; i < D; ++i) {
    const int64_t span = ((*options.kernel_size())[i] - 1) * (*options.dilation())[i] + 1;
    if (x.size(2 + i) + 2 * conv_padding[i] < span) {
      std::ostringstream msg;
      msg << describe() << ": input " << input.sizes() << " is smaller than the kernel (span "
          << span << ") in spatial dimension " << i;
      throw std::invalid_argument(msg.str());
    }
  }
  return at::convolution(x, w, bias, *options.stride(), conv_padding, *options.dilation(),
                         /*transposed=*/false, std::vector<int64_t>(D, 0), options.groups());
}

template <size_t D, typename Derived>
at::Tensor QuantConvNdImpl<D, Derived>::quantized_weight() const {
  at::NoGradGuard no_grad;
  return quantizers::apply(options.kernel_quantizer().get(), weight).detach();
}

template <size_t D, typename Derived>
std::vector<QuantizedParameter> QuantConvNdImpl<D, Derived>::quantized_parameters() const {
  return {{"weight", weight, options.kernel_quantizer().get(), options.kernel_constraint().get()}};
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "onebit::nn::QuantConv" << D << "d(" << o.in_channels() << ", " << o.out_channels()
         << ", kernel_size=" << o.kernel_size() << ", stride=" << o.stride();
  if (o.padding().same()) {
    stream << ", padding=same, pad_values=" << o.pad_values();
  } else {
    stream << ", padding=" << o.padding().amount();
  }
  if (*o.dilation() != *torch::ExpandingArray<D>(1)) stream << ", dilation=" << o.dilation();
  if (o.groups() != 1) stream << ", groups=" << o.groups();
  stream << ", bias=" << std::boolalpha << o.bias();
  print_quantizers(stream, o.input_quantizer().get(), o.kernel_quantizer().get(),
                   o.kernel_constraint().get());
  stream << ")";
}

template class ConvPadding<1>;
template class ConvPadding<2>;
template class ConvPadding<3>;
template std::array<std::pair<int64_t, int64_t>, 1> conv_pads<1>(
    const ConvPadding<1>&, const std::array<int64_t, 1>&, const torch::ExpandingArray<1>&,
    const torch::ExpandingArray<1>&, const torch::ExpandingArray<1>&);
template std::array<std::pair<int64_t, int64_t>, 2> conv_pads<2>(
    const ConvPadding<2>&, const std::array<int64_t, 2>&, const torch::ExpandingArray<2>&,
    const torch::ExpandingArray<2>&, const torch::ExpandingArray<2>&);
template std::array<std::pair<int64_t, int64_t>, 3> conv_pads<3>(
    const ConvPadding<3>&, const std::array<int64_t, 3>&, const torch::ExpandingArray<3>&,
    const torch::ExpandingArray<3>&, const torch::ExpandingArray<3>&);
template class QuantConvNdImpl<1, QuantConv1dImpl>;
template class QuantConvNdImpl<2, QuantConv2dImpl>;
template class QuantConvNdImpl<3, QuantConv3dImpl>;

}  // namespace onebit::nn
