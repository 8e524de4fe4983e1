#include "onebit/nn/transpose.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "layer_util.h"
#include "onebit/nn/format.h"

namespace onebit::nn {

template <size_t D, typename Derived>
QuantConvTransposeNdImpl<D, Derived>::QuantConvTransposeNdImpl(
    const QuantConvTransposeOptions<D>& options_)
    : options(options_) {
  const auto& o = options;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(describe() + ": " + what);
  };
  detail::check_channels(fail, o.in_channels(), o.out_channels());
  detail::check_groups(fail, o.groups(), o.in_channels(), o.out_channels());
  for (size_t i = 0; i < D; ++i) {
    const int64_t s = (*o.stride())[i], d = (*o.dilation())[i], op = (*o.output_padding())[i];
    detail::check_kernel_stride_dilation<D>(fail, o.kernel_size(), o.stride(), o.dilation(), i);
    detail::check_padding<D>(fail, o.padding(), i);
    if (op < 0 || op >= std::max(s, d)) {
      fail("output_padding (" + std::to_string(op) +
           ") must be >= 0 and smaller than the stride or the dilation");
    }
    if (o.padding().same() && op != 0) {
      fail("output_padding must be 0 with \"same\" padding (the output size is input * stride)");
    }
  }
  warn_if_unconstrained(describe(), o.kernel_quantizer().get(), o.kernel_constraint().get());
  reset();
}

template <size_t D, typename Derived>
std::string QuantConvTransposeNdImpl<D, Derived>::describe() const {
  std::ostringstream s;
  s << "QuantConvTranspose" << D << "d(" << options.in_channels() << ", " << options.out_channels()
    << ", kernel_size=" << options.kernel_size() << ")";
  return s.str();
}

template <size_t D, typename Derived>
void QuantConvTransposeNdImpl<D, Derived>::reset() {
  std::vector<int64_t> shape = {options.in_channels(), options.out_channels() / options.groups()};
  for (size_t i = 0; i < D; ++i) shape.push_back((*options.kernel_size())[i]);
  weight = this->register_parameter(
      "weight", detail::new_kernel(shape, "QuantConvTranspose" + std::to_string(D) + "d"));
  bias = detail::register_bias(*this, options.bias(), {options.out_channels()});
  reset_parameters();
}

template <size_t D, typename Derived>
void QuantConvTransposeNdImpl<D, Derived>::reset_parameters() {
  // torch computes the fan-in of a transposed kernel from dimension 1 (out / groups).
  detail::init_like_torch_conv(weight, &bias);
}

template <size_t D, typename Derived>
at::Tensor QuantConvTransposeNdImpl<D, Derived>::forward(const at::Tensor& input) {
  detail::check_input_shape(input, options.in_channels(), D, [this] { return describe(); });
  auto x = quantizers::apply(options.input_quantizer().get(), input,
                             quantizers::TensorRole::activation());
  auto w = quantizers::apply(options.kernel_quantizer().get(), weight);
  std::vector<int64_t> padding(D), output_padding(D);
  std::vector<int64_t> crop_end(D, 0);  // "same" with an odd total crop: one more at the end
  for (size_t i = 0; i < D; ++i) {
    if (!options.padding().same()) {
      padding[i] = (*options.padding().amount())[i];
      output_padding[i] = (*options.output_padding())[i];
      continue;
    }
    const int64_t s = (*options.stride())[i];
    const int64_t span = ((*options.kernel_size())[i] - 1) * (*options.dilation())[i] + 1;
    const int64_t full = (x.size(2 + i) - 1) * s + span;
    const int64_t total = full - x.size(2 + i) * s;  // crop to reach input * stride
    if (total >= 0) {
      padding[i] = total / 2;
      crop_end[i] = total % 2;
    } else {
      output_padding[i] = -total;  // < stride since span >= 1
    }
  }
  for (size_t i = 0; i < D; ++i) {
    const int64_t span = ((*options.kernel_size())[i] - 1) * (*options.dilation())[i] + 1;
    const int64_t out = (x.size(2 + i) - 1) * (*options.stride())[i] - 2 * padding[i] + span +
                        output_padding[i] - crop_end[i];
    if (x.size(2 + i) < 1 || out < 1) {
      std::ostringstream msg;
      msg << describe() << ": input " << input.sizes() << " gives an empty output in spatial "
          << "dimension " << i << " (padding " << padding[i] << " crops everything)";
      throw std::invalid_argument(msg.str());
    }
  }
  auto y = at::convolution(x, w, bias, *options.stride(), padding, *options.dilation(),
                           /*transposed=*/true, output_padding, options.groups());
  for (size_t i = 0; i < D; ++i) {
    if (crop_end[i]) y = y.narrow(2 + i, 0, y.size(2 + i) - crop_end[i]);
  }
  return y;
}

template <size_t D, typename Derived>
at::Tensor QuantConvTransposeNdImpl<D, Derived>::quantized_weight() const {
  at::NoGradGuard no_grad;
  return quantizers::apply(options.kernel_quantizer().get(), weight).detach();
}

template <size_t D, typename Derived>
std::vector<QuantizedParameter> QuantConvTransposeNdImpl<D, Derived>::quantized_parameters() const {
  return {{"weight", weight, options.kernel_quantizer().get(), options.kernel_constraint().get()}};
}

template <size_t D, typename Derived>
void QuantConvTransposeNdImpl<D, Derived>::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "onebit::nn::QuantConvTranspose" << D << "d(" << o.in_channels() << ", "
         << o.out_channels() << ", kernel_size=" << o.kernel_size() << ", stride=" << o.stride();
  if (o.padding().same()) {
    stream << ", padding=same";
  } else {
    stream << ", padding=" << o.padding().amount();
  }
  if (*o.output_padding() != *torch::ExpandingArray<D>(0)) {
    stream << ", output_padding=" << o.output_padding();
  }
  if (*o.dilation() != *torch::ExpandingArray<D>(1)) stream << ", dilation=" << o.dilation();
  if (o.groups() != 1) stream << ", groups=" << o.groups();
  stream << ", bias=" << std::boolalpha << o.bias();
  print_quantizers(stream, o.input_quantizer().get(), o.kernel_quantizer().get(),
                   o.kernel_constraint().get());
  stream << ")";
}

template class QuantConvTransposeNdImpl<2, QuantConvTranspose2dImpl>;
template class QuantConvTransposeNdImpl<3, QuantConvTranspose3dImpl>;

}  // namespace onebit::nn
