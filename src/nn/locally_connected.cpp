#include "onebit/nn/locally_connected.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <sstream>

#include "layer_util.h"
#include "onebit/nn/format.h"

namespace onebit::nn {

template <size_t D, typename Derived>
QuantLocallyConnectedNdImpl<D, Derived>::QuantLocallyConnectedNdImpl(
    const QuantLocallyConnectedOptions<D>& options_)
    : options(options_) {
  const auto& o = options;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(describe() + ": " + what);
  };
  detail::check_channels(fail, o.in_channels(), o.out_channels());
  std::array<int64_t, D> in{};
  for (size_t i = 0; i < D; ++i) {
    detail::check_kernel_stride_dilation<D>(fail, o.kernel_size(), o.stride(), o.dilation(), i);
    if ((*o.input_size())[i] <= 0) fail("input_size must be positive");
    detail::check_padding<D>(fail, o.padding(), i);
    in[i] = (*o.input_size())[i];
  }
  detail::check_pad_values(fail, o.pad_values());
  const auto pads = conv_pads<D>(o.padding(), in, o.kernel_size(), o.stride(), o.dilation());
  for (size_t i = 0; i < D; ++i) {
    const int64_t span = ((*o.kernel_size())[i] - 1) * (*o.dilation())[i] + 1;
    const int64_t padded = in[i] + pads[i].first + pads[i].second;
    if (padded < span) {
      std::ostringstream msg;
      msg << "the kernel (span " << span << ") is larger than the padded input (" << padded
          << ") in spatial dimension " << i;
      fail(msg.str());
    }
    output_size_[i] = (padded - span) / (*o.stride())[i] + 1;
  }
  warn_if_unconstrained(describe(), o.kernel_quantizer().get(), o.kernel_constraint().get());
  reset();
}

template <size_t D, typename Derived>
std::string QuantLocallyConnectedNdImpl<D, Derived>::describe() const {
  std::ostringstream s;
  s << "QuantLocallyConnected" << D << "d(" << options.in_channels() << ", "
    << options.out_channels() << ", kernel_size=" << options.kernel_size()
    << ", input_size=" << options.input_size() << ")";
  return s.str();
}

template <size_t D, typename Derived>
void QuantLocallyConnectedNdImpl<D, Derived>::reset() {
  int64_t positions = 1, patch = options.in_channels();
  std::vector<int64_t> bias_shape = {options.out_channels()};
  for (size_t i = 0; i < D; ++i) {
    positions *= output_size_[i];
    patch *= (*options.kernel_size())[i];
    bias_shape.push_back(output_size_[i]);
  }
  weight = this->register_parameter(
      "weight", detail::new_kernel({options.out_channels(), positions, patch},
                                   "QuantLocallyConnected" + std::to_string(D) + "d"));
  bias = detail::register_bias(*this, options.bias(), bias_shape);
  reset_parameters();
}

template <size_t D, typename Derived>
void QuantLocallyConnectedNdImpl<D, Derived>::reset_parameters() {
  // kaiming_uniform(a = sqrt(5)) of a convolution with this fan-in is uniform(+-1/sqrt(fan_in)).
  const double bound = 1.0 / std::sqrt(static_cast<double>(weight.size(2)));
  torch::nn::init::uniform_(weight, -bound, bound);
  if (bias.defined()) torch::nn::init::uniform_(bias, -bound, bound);
}

template <size_t D, typename Derived>
at::Tensor QuantLocallyConnectedNdImpl<D, Derived>::forward(const at::Tensor& input) {
  bool ok = input.dim() == static_cast<int64_t>(D) + 2 && input.size(1) == options.in_channels();
  for (size_t i = 0; ok && i < D; ++i) ok = input.size(2 + i) == (*options.input_size())[i];
  if (!ok) {
    std::vector<std::string> spatial;
    for (size_t i = 0; i < D; ++i) spatial.push_back(std::to_string((*options.input_size())[i]));
    detail::throw_input_shape(describe(), options.in_channels(), spatial, input.sizes());
  }
  auto x = quantizers::apply(options.input_quantizer().get(), input,
                             quantizers::TensorRole::activation());
  auto w = quantizers::apply(options.kernel_quantizer().get(), weight);
  auto padded =
      pad_input<D>(x, options.padding(), options.kernel_size(), options.stride(),
                   options.dilation(), options.pad_values(), [this] { return this->describe(); });
  // im2col is 2-D only: a 1-D input is a 2-D one of width 1.
  std::vector<int64_t> k(2, 1), s(2, 1), d(2, 1), p(2, 0);
  for (size_t i = 0; i < D; ++i) {
    k[i] = (*options.kernel_size())[i];
    s[i] = (*options.stride())[i];
    d[i] = (*options.dilation())[i];
    p[i] = padded.conv_padding[i];
  }
  auto x4 = D == 1 ? padded.input.unsqueeze(-1) : padded.input;
  auto cols = at::im2col(x4, k, d, p, s);                           // [N, C K, P]
  auto y = at::bmm(cols.permute({2, 0, 1}), w.permute({1, 2, 0}));  // [P, N, O]
  std::vector<int64_t> shape = {input.size(0), options.out_channels()};
  for (size_t i = 0; i < D; ++i) shape.push_back(output_size_[i]);
  y = y.permute({1, 2, 0}).reshape(shape);
  return bias.defined() ? y + bias : y;
}

template <size_t D, typename Derived>
at::Tensor QuantLocallyConnectedNdImpl<D, Derived>::quantized_weight() const {
  at::NoGradGuard no_grad;
  return quantizers::apply(options.kernel_quantizer().get(), weight).detach();
}

template <size_t D, typename Derived>
std::vector<QuantizedParameter> QuantLocallyConnectedNdImpl<D, Derived>::quantized_parameters()
    const {
  return {{"weight", weight, options.kernel_quantizer().get(), options.kernel_constraint().get()}};
}

template <size_t D, typename Derived>
void QuantLocallyConnectedNdImpl<D, Derived>::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "onebit::nn::QuantLocallyConnected" << D << "d(" << o.in_channels() << ", "
         << o.out_channels() << ", kernel_size=" << o.kernel_size()
         << ", input_size=" << o.input_size() << ", stride=" << o.stride() << ", ";
  print_padding(stream, o.padding(), o.pad_values());
  if (*o.dilation() != *torch::ExpandingArray<D>(1)) stream << ", dilation=" << o.dilation();
  stream << ", bias=" << std::boolalpha << o.bias();
  print_quantizers(stream, o.input_quantizer().get(), o.kernel_quantizer().get(),
                   o.kernel_constraint().get());
  stream << ")";
}

template class QuantLocallyConnectedNdImpl<1, QuantLocallyConnected1dImpl>;
template class QuantLocallyConnectedNdImpl<2, QuantLocallyConnected2dImpl>;

}  // namespace onebit::nn
