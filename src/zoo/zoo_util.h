#pragma once
// Internal: helpers shared by the zoo's model definitions (models.cpp, literature.cpp).

#include <cstdint>
#include <string>

#include "onebit/nn.h"
#include "onebit/nn/graph.h"
#include "onebit/zoo/models.h"

namespace onebit::zoo::detail {

/// Throws std::invalid_argument unless the options hold an input C,H,W with H, W >= min_hw and
/// at least 2 classes.
void check_input(const std::string& name, const ModelOptions& o, int64_t min_hw);

/// A batch norm with Keras' conventions as written in a model definition: `keras_momentum` (0.9
/// in Keras is 0.1 in LibTorch) and `eps`, overridden by the options' bn_momentum / bn_eps when
/// set; `scale` / `center` as Keras' (gamma / beta present).
nn::BatchNorm batch_norm(int64_t channels, const ModelOptions& o, double keras_momentum, double eps,
                         bool scale = true, bool center = true);

/// ceil(a / b) for positive b.
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Output size of a "valid" window of size k and stride s over n positions.
inline int64_t valid_out(int64_t n, int64_t k, int64_t s) { return (n - k) / s + 1; }

}  // namespace onebit::zoo::detail
