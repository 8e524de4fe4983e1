#pragma once
// The key of a parameter in `torch::optim::Optimizer::state()`: a string in LibTorch 1.x, the
// TensorImpl pointer in later versions. Deduced from the map type so that both compile.

#include <torch/optim/optimizer.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

namespace onebit::optim::detail {

using StateMap = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using StateKey = typename StateMap::key_type;

template <typename Key = StateKey>
Key state_key(const at::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;  // what c10::guts::to_string(TensorImpl*) gives
    s << param.unsafeGetTensorImpl();
    return s.str();
  } else {
    return Key(param.unsafeGetTensorImpl());
  }
}

}  // namespace onebit::optim::detail
