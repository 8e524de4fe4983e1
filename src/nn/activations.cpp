#include "onebit/nn/activations.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace onebit::nn {

at::Tensor hard_tanh(const at::Tensor& x) { return at::clamp(x, -1.0, 1.0); }

at::Tensor leaky_tanh(const at::Tensor& x, double alpha) {
  // The two outer terms are zero inside [-1, 1] and carry slope alpha outside.
  return at::clamp(x, -1.0, 1.0) + (at::clamp_min(x, 1.0) - 1.0) * alpha +
         (at::clamp_max(x, -1.0) + 1.0) * alpha;
}

void HardTanhImpl::pretty_print(std::ostream& stream) const { stream << "onebit::nn::HardTanh()"; }

LeakyTanhImpl::LeakyTanhImpl(double alpha) : alpha_(alpha) {
  if (!std::isfinite(alpha)) {
    std::ostringstream msg;
    msg << "LeakyTanh: alpha must be a finite number, got " << alpha;
    throw std::invalid_argument(msg.str());
  }
}

void LeakyTanhImpl::pretty_print(std::ostream& stream) const {
  stream << "onebit::nn::LeakyTanh(alpha=" << alpha_ << ")";
}

QuantizerImpl::QuantizerImpl(quantizers::QuantizerSpec quantizer) : quantizer_(quantizer.get()) {
  if (!quantizer_) {
    throw std::invalid_argument(
        "onebit::nn::Quantizer: a quantizer is required (a string id such as \"ste_sign\" or a "
        "quantizer object), got none");
  }
}

at::Tensor QuantizerImpl::forward(const at::Tensor& x) {
  return (*quantizer_)(x, quantizers::TensorRole::activation());
}

void QuantizerImpl::pretty_print(std::ostream& stream) const {
  stream << "onebit::nn::Quantizer(" << quantizer_->to_json().dump() << ")";
}

}  // namespace onebit::nn
