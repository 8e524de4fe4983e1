#include "onebit/nn/depthwise.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "layer_util.h"

namespace onebit::nn {

QuantDepthwiseConv2dImpl::QuantDepthwiseConv2dImpl(const QuantDepthwiseConv2dOptions& options_)
    : options(options_) {
  const auto& o = options;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(describe() + ": " + what);
  };
  if (o.in_channels() <= 0) fail("in_channels must be positive");
  if (o.depth_multiplier() <= 0) {
    fail("depth_multiplier must be positive, got " + std::to_string(o.depth_multiplier()));
  }
  for (size_t i = 0; i < 2; ++i) {
    detail::check_kernel_stride_dilation<2>(fail, o.kernel_size(), o.stride(), o.dilation(), i);
    detail::check_padding<2>(fail, o.padding(), i);
  }
  detail::check_pad_values(fail, o.pad_values());
  warn_if_unconstrained(describe(), o.depthwise_quantizer().get(), o.depthwise_constraint().get(),
                        "depthwise_quantizer", "depthwise_constraint");
  reset();
}

std::string QuantDepthwiseConv2dImpl::describe() const {
  std::ostringstream s;
  s << "QuantDepthwiseConv2d(" << options.in_channels() << ", kernel_size=" << options.kernel_size()
    << ", depth_multiplier=" << options.depth_multiplier() << ")";
  return s.str();
}

void QuantDepthwiseConv2dImpl::reset() {
  const int64_t out = options.in_channels() * options.depth_multiplier();
  weight = register_parameter("weight", detail::new_kernel({out, 1, (*options.kernel_size())[0],
                                                            (*options.kernel_size())[1]},
                                                           "QuantDepthwiseConv2d"));
  bias = detail::register_bias(*this, options.bias(), {out});
  reset_parameters();
}

void QuantDepthwiseConv2dImpl::reset_parameters() { detail::init_like_torch_conv(weight, &bias); }

at::Tensor QuantDepthwiseConv2dImpl::forward(const at::Tensor& input) {
  if (input.dim() != 4 || input.size(1) != options.in_channels()) {
    detail::throw_input_shape(describe(), options.in_channels(), {"H", "W"}, input.sizes());
  }
  auto x = quantizers::apply(options.input_quantizer().get(), input,
                             quantizers::TensorRole::activation());
  auto w = quantizers::apply(options.depthwise_quantizer().get(), weight, kernel_role());
  auto padded =
      pad_input<2>(x, options.padding(), options.kernel_size(), options.stride(),
                   options.dilation(), options.pad_values(), [this] { return this->describe(); });
  return at::convolution(padded.input, w, bias, *options.stride(), padded.conv_padding,
                         *options.dilation(), /*transposed=*/false, {0, 0}, options.in_channels());
}

at::Tensor QuantDepthwiseConv2dImpl::quantized_weight() const {
  at::NoGradGuard no_grad;
  return quantizers::apply(options.depthwise_quantizer().get(), weight, kernel_role()).detach();
}

std::vector<QuantizedParameter> QuantDepthwiseConv2dImpl::quantized_parameters() const {
  return {{"weight", weight, options.depthwise_quantizer().get(),
           options.depthwise_constraint().get(), kernel_role()}};
}

void QuantDepthwiseConv2dImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "onebit::nn::QuantDepthwiseConv2d(" << o.in_channels()
         << ", kernel_size=" << o.kernel_size() << ", depth_multiplier=" << o.depth_multiplier()
         << ", stride=" << o.stride() << ", ";
  print_padding(stream, o.padding(), o.pad_values());
  if (*o.dilation() != *torch::ExpandingArray<2>(1)) stream << ", dilation=" << o.dilation();
  stream << ", bias=" << std::boolalpha << o.bias();
  if (o.input_quantizer()) stream << ", input_quantizer=" << o.input_quantizer().get()->id();
  if (o.depthwise_quantizer()) {
    stream << ", depthwise_quantizer=" << o.depthwise_quantizer().get()->id();
  }
  if (o.depthwise_constraint()) {
    stream << ", depthwise_constraint=" << o.depthwise_constraint().get()->id();
  }
  stream << ")";
}

}  // namespace onebit::nn
