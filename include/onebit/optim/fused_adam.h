#pragma once
/// \file
/// Adam and AdamW with each parameter's update done in one pass over its memory.
///
/// LibTorch's `torch::optim::Adam::step` runs eight tensor operations per parameter (two
/// moments, square root, division, epsilon, update), each a pass over memory with temporaries:
/// 13-22% of a training step of the zoo's 5-30 M-parameter models. `FusedAdam` and `FusedAdamW`
/// are those optimizers with `step` replaced by one loop that reads the parameter, its gradient
/// and the two moments once and writes them once, on LibTorch's threads. Everything else is
/// inherited: options, parameter groups, the state (`AdamParamState`: step, exp_avg, exp_avg_sq,
/// max_exp_avg_sq) and `save`/`load`, so a checkpoint written with one loads into the other.
///
/// The arithmetic is LibTorch's, operation by operation in the same order
/// (m = m * b1 + (1 - b1) * g; v = v * b2 + (1 - b2) * g * g; p += -lr / bc1 * m / (sqrt(v) /
/// sqrt(bc2) + eps)); LibTorch's vectorized kernels fuse some multiply-adds and its scalar tails
/// do not, so results agree to float rounding (about 1e-7 relative per step), not bit for bit.
/// Float32 parameters on the CPU take the fused loop; any other parameter (double, a GPU tensor,
/// a non-contiguous view) takes LibTorch's operations. Results do not depend on the thread count.
///
/// ```
/// onebit::optim::FusedAdam opt(model->parameters(), torch::optim::AdamOptions(1e-3));
/// opt.zero_grad(); loss.backward(); opt.step();
/// ```

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

namespace onebit::optim {

/// `torch::optim::Adam` with a one-pass `step` (see the file comment).
class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  /// One Adam step for every parameter with a gradient (LibTorch's semantics; sparse gradients
  /// throw `std::invalid_argument`). Returns the closure's loss, if a closure is given.
  torch::Tensor step(LossClosure closure = nullptr) override;
};

/// `torch::optim::AdamW` (decoupled weight decay) with a one-pass `step`.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  /// One AdamW step for every parameter with a gradient (LibTorch's semantics).
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace onebit::optim
