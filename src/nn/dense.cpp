#include "onebit/nn/dense.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "layer_util.h"
#include "onebit/nn/format.h"
#include "onebit/nn/training_kernels.h"

namespace onebit::nn {

QuantDenseImpl::QuantDenseImpl(const QuantDenseOptions& options_) : options(options_) {
  if (options.in_features() <= 0 || options.out_features() <= 0) {
    std::ostringstream msg;
    msg << "QuantDense: in_features and out_features must be positive, got "
        << options.in_features() << " and " << options.out_features();
    throw std::invalid_argument(msg.str());
  }
  warn_if_unconstrained("QuantDense(" + std::to_string(options.in_features()) + ", " +
                            std::to_string(options.out_features()) + ")",
                        options.kernel_quantizer().get(), options.kernel_constraint().get());
  reset();
}

void QuantDenseImpl::reset() {
  weight = register_parameter(
      "weight", detail::new_kernel({options.out_features(), options.in_features()}, "QuantDense"));
  bias = detail::register_bias(*this, options.bias(), {options.out_features()});
  reset_parameters();
}

void QuantDenseImpl::reset_parameters() { detail::init_like_torch_conv(weight, &bias); }

at::Tensor QuantDenseImpl::forward(const at::Tensor& input) {
  if (input.dim() < 1 || input.size(-1) != options.in_features()) {
    std::ostringstream msg;
    msg << "QuantDense(" << options.in_features() << ", " << options.out_features()
        << "): expected input with last dimension " << options.in_features() << ", got shape "
        << input.sizes();
    throw std::invalid_argument(msg.str());
  }
  auto x = quantizers::apply(options.input_quantizer().get(), input,
                             quantizers::TensorRole::activation());
  if (input.dim() == 2 &&
      detail::use_runtime_kernels(options.input_quantizer().get(), options.kernel_quantizer().get(),
                                  input, weight)) {
    // The kernel quantizer's gradient folded into the product's where it allows.
    return detail::runtime_dense(x, weight, *options.kernel_quantizer().get(), bias,
                                 options.input_quantizer().get() != nullptr);
  }
  auto w = quantizers::apply(options.kernel_quantizer().get(), weight);
  return at::linear(x, w, bias);
}

at::Tensor QuantDenseImpl::quantized_weight() const {
  at::NoGradGuard no_grad;
  return quantizers::apply(options.kernel_quantizer().get(), weight).detach();
}

std::vector<QuantizedParameter> QuantDenseImpl::quantized_parameters() const {
  return {{"weight", weight, options.kernel_quantizer().get(), options.kernel_constraint().get()}};
}

void QuantDenseImpl::pretty_print(std::ostream& stream) const {
  stream << "onebit::nn::QuantDense(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << std::boolalpha
         << options.bias();
  print_quantizers(stream, options.input_quantizer().get(), options.kernel_quantizer().get(),
                   options.kernel_constraint().get());
  stream << ")";
}

}  // namespace onebit::nn
