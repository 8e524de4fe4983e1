#include "onebit/nn/conv.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <sstream>

#include "onebit/nn/format.h"

namespace onebit::nn {

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

  auto padded =
      pad_input<D>(x, options.padding(), options.kernel_size(), options.stride(),
                   options.dilation(), options.pad_values(), [this] { return this->describe(); });
  return at::convolution(padded.input, w, bias, *options.stride(), padded.conv_padding,
                         *options.dilation(),
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
  stream << ", ";
  print_padding(stream, o.padding(), o.pad_values());
  if (*o.dilation() != *torch::ExpandingArray<D>(1)) stream << ", dilation=" << o.dilation();
  if (o.groups() != 1) stream << ", groups=" << o.groups();
  stream << ", bias=" << std::boolalpha << o.bias();
  print_quantizers(stream, o.input_quantizer().get(), o.kernel_quantizer().get(),
                   o.kernel_constraint().get());
  stream << ")";
}

template class QuantConvNdImpl<1, QuantConv1dImpl>;
template class QuantConvNdImpl<2, QuantConv2dImpl>;
template class QuantConvNdImpl<3, QuantConv3dImpl>;

}  // namespace onebit::nn
