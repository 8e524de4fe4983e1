#include "layer_util.h"

#include <torch/nn/init.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace onebit::nn::detail {

at::Tensor register_bias(torch::nn::Module& module, bool enabled, at::IntArrayRef shape) {
  if (enabled) return module.register_parameter("bias", torch::empty(shape));
  return module.register_parameter("bias", {}, /*requires_grad=*/false);
}

void init_like_torch_conv(at::Tensor& weight, at::Tensor* bias) {
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5));
  if (bias && bias->defined()) {
    const double fan_in = static_cast<double>(weight.numel() / weight.size(0));
    const double bound = 1.0 / std::sqrt(fan_in);
    torch::nn::init::uniform_(*bias, -bound, bound);
  }
}

void throw_input_shape(const std::string& layer, int64_t channels,
                       const std::vector<std::string>& spatial, at::IntArrayRef got) {
  std::ostringstream msg;
  msg << layer << ": expected input of shape [N, " << channels;
  for (const auto& s : spatial) msg << ", " << s;
  msg << "], got " << got;
  throw std::invalid_argument(msg.str());
}

}  // namespace onebit::nn::detail
