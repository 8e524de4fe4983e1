#include "layer_util.h"

#include <torch/nn/init.h>

#include "onebit/serialize.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace onebit::nn::detail {

at::Tensor new_kernel(at::IntArrayRef shape, const std::string& layer) {
  const int64_t limit = serialize::build_limits().max_parameters;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw std::invalid_argument(layer + ": negative kernel dimension " + std::to_string(d));
    n = (d != 0 && n > limit / d) ? limit + 1 : n * d;
  }
  if (n > limit) {
    std::string dims;
    for (int64_t d : shape) dims += (dims.empty() ? "" : "x") + std::to_string(d);
    throw std::invalid_argument(layer + ": a kernel of " + dims +
                                " elements is more than the limit of " + std::to_string(limit) +
                                " parameters (onebit::serialize::set_build_limits)");
  }
  return torch::empty(shape);
}

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
