#include "onebit/nn/batch_norm.h"

#include <ATen/ATen.h>

#include <sstream>

namespace onebit::nn {

BatchNormImpl::BatchNormImpl(const BatchNormOptions& options_) : options(options_) {
  if (options.num_features() <= 0) {
    throw std::invalid_argument("BatchNorm: num_features must be positive, got " +
                                std::to_string(options.num_features()));
  }
  if (!(options.eps() > 0) || !(options.momentum() >= 0 && options.momentum() <= 1)) {
    std::ostringstream msg;
    msg << "BatchNorm: eps must be > 0 and momentum in [0, 1], got eps=" << options.eps()
        << " momentum=" << options.momentum();
    throw std::invalid_argument(msg.str());
  }
  reset();
}

void BatchNormImpl::reset() {
  const int64_t c = options.num_features();
  weight = options.scale() ? register_parameter("weight", torch::ones(c))
                           : register_parameter("weight", {}, false);
  bias = options.center() ? register_parameter("bias", torch::zeros(c))
                          : register_parameter("bias", {}, false);
  running_mean = register_buffer("running_mean", torch::zeros(c));
  running_var = register_buffer("running_var", torch::ones(c));
}

at::Tensor BatchNormImpl::forward(const at::Tensor& input) {
  if (input.dim() < 2 || input.size(1) != options.num_features()) {
    std::ostringstream msg;
    msg << "BatchNorm(" << options.num_features() << "): expected input of shape [N, "
        << options.num_features() << ", ...], got " << input.sizes();
    throw std::invalid_argument(msg.str());
  }
  return at::batch_norm(input, weight, bias, running_mean, running_var, is_training(),
                        options.momentum(), options.eps(), /*cudnn_enabled=*/false);
}

std::pair<at::Tensor, at::Tensor> BatchNormImpl::folded() const {
  at::NoGradGuard no_grad;
  auto m = (running_var + options.eps()).rsqrt();
  if (weight.defined()) m = m * weight;
  auto b = -running_mean * m;
  if (bias.defined()) b = b + bias;
  return {m.detach(), b.detach()};
}

void BatchNormImpl::pretty_print(std::ostream& stream) const {
  stream << "onebit::nn::BatchNorm(" << options.num_features() << ", eps=" << options.eps()
         << ", momentum=" << options.momentum() << ", scale=" << std::boolalpha << options.scale()
         << ", center=" << options.center() << ")";
}

}  // namespace onebit::nn
