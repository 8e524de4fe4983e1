#pragma once
/// \file
/// Bop, the latent-free binary optimizer (Helwegen et al. 2019, Larq's `Bop`), and the predicate
/// that selects the binary parameters it trains.
///
/// Bop keeps an exponential moving average m of each weight's gradient and flips the weight when
/// m agrees strongly enough with it:
///
///     m <- m + gamma * (g - m)          (m starts at 0)
///     w <- sign(-sign(w * m - threshold) * w)
///
/// with sign(0) = 0 inside and +1 outside, exactly Larq's rule: w becomes -sign(w) where
/// w * m > threshold, sign(w) where w * m < threshold, and +1 on the tie w * m == threshold.
/// After its first update a weight holds exactly +1/-1; real-valued starting weights are decided
/// on directly, as in Larq (the forward pass sees sign(w) through the kernel quantizer anyway).
/// `BopOptions::binarize_at_start(true)` instead sets every parameter to sign(w) when the
/// optimizer is built (onebit's behaviour before it matched Larq). The kernel quantizer of such a
/// weight (e.g. `ste_sign`) is the identity on +-1, and a `weight_clip` constraint leaves it
/// unchanged. Real-valued parameters go to another optimizer through `CaseOptimizer`:
///
/// ```
/// using namespace onebit::optim;
/// CaseOptimizer opt(model->named_parameters(),
///                   {{is_binary_in(*model), [](std::vector<at::Tensor> ps) {
///                       return std::make_unique<Bop>(std::move(ps), BopOptions(1e-6, 1e-3));
///                     }, "bop"}},
///                   [](std::vector<at::Tensor> ps) {
///                     return std::make_unique<torch::optim::Adam>(std::move(ps));
///                   });
/// ```

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include <vector>

#include "onebit/optim/case_optimizer.h"

namespace torch::nn {
class Module;
}

namespace onebit::optim {

/// Hyperparameters of Bop (per parameter group). Defaults are Larq's (1e-8, 1e-4); Larq's guide
/// suggests threshold 1e-6 and gamma 1e-3 for training from scratch.
struct BopOptions : public torch::optim::OptimizerCloneableOptions<BopOptions> {
  /// `threshold` >= 0, `gamma` in [0, 1]; checked when Bop is built.
  explicit BopOptions(double threshold = 1e-8, double gamma = 1e-4)
      : threshold_(threshold), gamma_(gamma) {}
  /// Reads threshold and gamma.
  void serialize(torch::serialize::InputArchive& archive) override;
  /// Writes threshold and gamma.
  void serialize(torch::serialize::OutputArchive& archive) const override;
  /// Magnitude of the averaged gradient signal required to flip a weight.
  TORCH_ARG(double, threshold);
  /// Adaptivity rate of the moving average (plays the role of a learning rate).
  TORCH_ARG(double, gamma);
  /// true: set every parameter to sign(w) (+1 for w >= 0) when Bop is built. false (default, as
  /// Larq): leave the starting weights as they are; the first update decides on them directly.
  TORCH_ARG(bool, binarize_at_start) = false;
};

/// Per-parameter state of Bop.
struct BopParamState : public torch::optim::OptimizerCloneableParamState<BopParamState> {
  /// Reads m and step.
  void serialize(torch::serialize::InputArchive& archive) override;
  /// Writes m and step.
  void serialize(torch::serialize::OutputArchive& archive) const override;
  /// The moving average of the gradient, shaped like the parameter.
  TORCH_ARG(at::Tensor, m);
  /// Number of updates applied to this parameter.
  TORCH_ARG(int64_t, step) = 0;
};

/// One Bop update of `param` in place, given its gradient `grad` and its moving average `m`
/// (updated in place, shaped like `param`): the rule of the file comment. `Bop::step` applies
/// it to every parameter; the Python package's `onebit.optim.Bop` calls it too, so both
/// optimizers flip the same weights. No autograd.
void bop_update(at::Tensor& param, at::Tensor& m, const at::Tensor& grad, double threshold,
                double gamma);

/// The Bop optimizer. Parameters without a gradient are skipped in a step.
class Bop : public torch::optim::Optimizer {
 public:
  /// Builds Bop over parameter groups (groups without options use `defaults`); with
  /// `binarize_at_start` it sets every parameter to sign(w). Throws std::invalid_argument for a
  /// negative threshold, a gamma outside [0, 1], or a parameter that is not a floating-point leaf
  /// tensor.
  explicit Bop(std::vector<torch::optim::OptimizerParamGroup> param_groups,
               BopOptions defaults = BopOptions());
  /// Builds Bop over one group of parameters.
  explicit Bop(std::vector<at::Tensor> params, BopOptions defaults = BopOptions());

  /// One update of every parameter that has a gradient (see the file comment for the rule).
  /// Returns the loss of `closure` if given.
  at::Tensor step(LossClosure closure = nullptr) override;
  /// Writes the moving averages (by group and position of the parameter).
  void save(torch::serialize::OutputArchive& archive) const override;
  /// Reads the moving averages written by `save`. Throws std::runtime_error if the groups or
  /// parameter shapes differ. Options are not read: they come from the constructor (as in
  /// LibTorch's optimizers) or from a schedule.
  void load(torch::serialize::InputArchive& archive) override;

  /// The moving average m of `param` (undefined before its first update).
  at::Tensor moving_average(const at::Tensor& param) const;

 private:
  void check_parameters();
};

/// Whether `param` is a binary parameter of `model`: a `QuantLayer` kernel whose quantizer has
/// precision 1 (a 1-bit quantizer or `NoOp(1)`), Larq's `Bop.is_binary_variable`.
bool is_binary(const at::Tensor& param, const torch::nn::Module& model);

/// A predicate for `CaseOptimizer` that claims the binary parameters of `model` as they are now
/// (the predicate keeps its own references to them, not to the model).
ParamPredicate is_binary_in(const torch::nn::Module& model);

}  // namespace onebit::optim
