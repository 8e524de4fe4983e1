#include "onebit/nn/separable.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "layer_util.h"

namespace onebit::nn {
template <size_t D, typename Derived>
QuantSeparableConvNdImpl<D, Derived>::QuantSeparableConvNdImpl(
    const QuantSeparableConvOptions<D>& options_)
    : options(options_) {
  const auto& o = options;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(describe() + ": " + what);
  };
  detail::check_channels(fail, o.in_channels(), o.out_channels());
  if (o.depth_multiplier() <= 0) {
    fail("depth_multiplier must be positive, got " + std::to_string(o.depth_multiplier()));
  }
  for (size_t i = 0; i < D; ++i) {
    detail::check_kernel_stride_dilation<D>(fail, o.kernel_size(), o.stride(), o.dilation(), i);
    detail::check_padding<D>(fail, o.padding(), i);
  }
  detail::check_pad_values(fail, o.pad_values());
  warn_if_unconstrained(describe(), o.depthwise_quantizer().get(), o.depthwise_constraint().get(),
                        "depthwise_quantizer", "depthwise_constraint");
  warn_if_unconstrained(describe(), o.pointwise_quantizer().get(), o.pointwise_constraint().get(),
                        "pointwise_quantizer", "pointwise_constraint");
  reset();
}

template <size_t D, typename Derived>
std::string QuantSeparableConvNdImpl<D, Derived>::describe() const {
  std::ostringstream s;
  s << "QuantSeparableConv" << D << "d(" << options.in_channels() << ", " << options.out_channels()
    << ", kernel_size=" << options.kernel_size() << ")";
  return s.str();
}

template <size_t D, typename Derived>
void QuantSeparableConvNdImpl<D, Derived>::reset() {
  const int64_t mid = options.in_channels() * options.depth_multiplier();
  std::vector<int64_t> dw_shape = {mid, 1};
  std::vector<int64_t> pw_shape = {options.out_channels(), mid};
  for (size_t i = 0; i < D; ++i) {
    dw_shape.push_back((*options.kernel_size())[i]);
    pw_shape.push_back(1);
  }
  depthwise_weight = this->register_parameter(
      "depthwise_weight",
      detail::new_kernel(dw_shape, "QuantSeparableConv" + std::to_string(D) + "d"));
  pointwise_weight = this->register_parameter(
      "pointwise_weight",
      detail::new_kernel(pw_shape, "QuantSeparableConv" + std::to_string(D) + "d"));
  bias = detail::register_bias(*this, options.bias(), {options.out_channels()});
  reset_parameters();
}

template <size_t D, typename Derived>
void QuantSeparableConvNdImpl<D, Derived>::reset_parameters() {
  detail::init_like_torch_conv(depthwise_weight, nullptr);
  detail::init_like_torch_conv(pointwise_weight, &bias);
}

template <size_t D, typename Derived>
at::Tensor QuantSeparableConvNdImpl<D, Derived>::forward(const at::Tensor& input) {
  detail::check_input_shape(input, options.in_channels(), D, [this] { return describe(); });
  auto x = quantizers::apply(options.input_quantizer().get(), input,
                             quantizers::TensorRole::activation());
  const auto depthwise_role = quantizers::TensorRole::depthwise_kernel(options.depth_multiplier());
  auto wd =
      quantizers::apply(options.depthwise_quantizer().get(), depthwise_weight, depthwise_role);
  auto wp = quantizers::apply(options.pointwise_quantizer().get(), pointwise_weight);
  auto padded =
      pad_input<D>(x, options.padding(), options.kernel_size(), options.stride(),
                   options.dilation(), options.pad_values(), [this] { return this->describe(); });
  const std::vector<int64_t> zeros(D, 0), ones(D, 1);
  auto mid =
      at::convolution(padded.input, wd, {}, *options.stride(), padded.conv_padding,
                      *options.dilation(), /*transposed=*/false, zeros, options.in_channels());
  return at::convolution(mid, wp, bias, ones, zeros, ones, /*transposed=*/false, zeros, 1);
}

template <size_t D, typename Derived>
std::vector<QuantizedParameter> QuantSeparableConvNdImpl<D, Derived>::quantized_parameters() const {
  return {{"depthwise_weight", depthwise_weight, options.depthwise_quantizer().get(),
           options.depthwise_constraint().get(),
           quantizers::TensorRole::depthwise_kernel(options.depth_multiplier())},
          {"pointwise_weight", pointwise_weight, options.pointwise_quantizer().get(),
           options.pointwise_constraint().get()}};
}

template <size_t D, typename Derived>
void QuantSeparableConvNdImpl<D, Derived>::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "onebit::nn::QuantSeparableConv" << D << "d(" << o.in_channels() << ", "
         << o.out_channels() << ", kernel_size=" << o.kernel_size();
  if (o.depth_multiplier() != 1) stream << ", depth_multiplier=" << o.depth_multiplier();
  stream << ", stride=" << o.stride() << ", ";
  print_padding(stream, o.padding(), o.pad_values());
  if (*o.dilation() != *torch::ExpandingArray<D>(1)) stream << ", dilation=" << o.dilation();
  stream << ", bias=" << std::boolalpha << o.bias();
  auto q = [&](const char* name, const quantizers::QuantizerSpec& spec) {
    if (spec) stream << ", " << name << "=" << spec.get()->id();
  };
  auto c = [&](const char* name, const constraints::ConstraintSpec& spec) {
    if (spec) stream << ", " << name << "=" << spec.get()->id();
  };
  q("input_quantizer", o.input_quantizer());
  q("depthwise_quantizer", o.depthwise_quantizer());
  q("pointwise_quantizer", o.pointwise_quantizer());
  c("depthwise_constraint", o.depthwise_constraint());
  c("pointwise_constraint", o.pointwise_constraint());
  stream << ")";
}

template class QuantSeparableConvNdImpl<1, QuantSeparableConv1dImpl>;
template class QuantSeparableConvNdImpl<2, QuantSeparableConv2dImpl>;

}  // namespace onebit::nn
