#include "onebit/nn/conv.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "layer_util.h"
#include "onebit/nn/format.h"
#include "onebit/nn/training_kernels.h"

namespace onebit::nn {

template <size_t D, typename Derived>
QuantConvNdImpl<D, Derived>::QuantConvNdImpl(const QuantConvOptions<D>& options_)
    : options(options_) {
  const auto& o = options;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(describe() + ": " + what);
  };
  detail::check_channels(fail, o.in_channels(), o.out_channels());
  detail::check_groups(fail, o.groups(), o.in_channels(), o.out_channels());
  for (size_t i = 0; i < D; ++i) {
    detail::check_kernel_stride_dilation<D>(fail, o.kernel_size(), o.stride(), o.dilation(), i);
    detail::check_padding<D>(fail, o.padding(), i);
  }
  detail::check_pad_values(fail, o.pad_values());
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
  weight = this->register_parameter(
      "weight", detail::new_kernel(shape, "QuantConv" + std::to_string(D) + "d"));
  bias = detail::register_bias(*this, options.bias(), {options.out_channels()});
  reset_parameters();
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::reset_parameters() {
  detail::init_like_torch_conv(weight, &bias);
}

template <size_t D, typename Derived>
at::Tensor QuantConvNdImpl<D, Derived>::forward(const at::Tensor& input) {
  detail::check_input_shape(input, options.in_channels(), D, [this] { return describe(); });
  auto x = quantizers::apply(options.input_quantizer().get(), input,
                             quantizers::TensorRole::activation());

  const auto layer = [this] { return this->describe(); };
  if constexpr (D == 2) {
    if (detail::use_runtime_kernels(options.input_quantizer().get(),
                                    options.kernel_quantizer().get(), input, weight,
                                    options.pad_values())) {
      // The runtime pads by itself (a binary input never sees materialized zeros), and the
      // backward pass needs no padded copy either.
      const auto& o = options;
      const auto pads =
          checked_conv_pads<2>(x, o.padding(), o.kernel_size(), o.stride(), o.dilation(), layer);
      detail::Conv2dGeometry g;
      g.stride.assign(o.stride()->begin(), o.stride()->end());
      g.dilation.assign(o.dilation()->begin(), o.dilation()->end());
      g.groups = o.groups();
      g.same = o.padding().same();
      if (!g.same) g.pads.assign(o.padding().amount()->begin(), o.padding().amount()->end());
      g.pad_before = {pads[0].first, pads[1].first};
      g.pad_after = {pads[0].second, pads[1].second};
      g.pad_value = o.pad_values();
      // The kernel quantizer's gradient folded into the convolution's where it allows.
      return detail::runtime_conv2d(x, weight, *o.kernel_quantizer().get(), bias, g,
                                    o.input_quantizer().get() != nullptr);
    }
  }
  auto w = quantizers::apply(options.kernel_quantizer().get(), weight);
  auto padded = pad_input<D>(x, options.padding(), options.kernel_size(), options.stride(),
                             options.dilation(), options.pad_values(), layer);
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
