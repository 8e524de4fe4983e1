#pragma once
/// \file
/// Hyperparameter schedules: set an optimizer's learning rate, or Bop's gamma and threshold, to
/// schedule(t) each epoch or each step during training (Larq's `HyperparameterScheduler`).
///
/// ```
/// using namespace onebit::optim;
/// auto gamma = std::make_shared<HyperparameterScheduler>(
///     schedules::exponential_decay(1e-3, 0.1, 10), "gamma", UpdateFreq::kEpoch, "bop");
/// onebit::train::train(options, {gamma});      // metrics.jsonl gets "bop/gamma" per epoch
/// ```

#include <torch/optim/optimizer.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

#include "onebit/train/trainer.h"

namespace onebit::optim {

/// A schedule: the value for step or epoch t (t counts from 0).
using Schedule = std::function<double(int64_t t)>;

/// Ready-made schedules.
namespace schedules {
/// Always `value`.
Schedule constant(double value);
/// initial * (alpha + (1 - alpha) * (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2):
/// from `initial` at t = 0 to `alpha * initial` at t >= decay_steps (> 0).
Schedule cosine_decay(double initial, int64_t decay_steps, double alpha = 0.0);
/// initial * factor^floor(t / every) (every > 0).
Schedule step_decay(double initial, double factor, int64_t every);
/// initial * rate^(t / decay_steps) (decay_steps > 0), decaying smoothly.
Schedule exponential_decay(double initial, double rate, int64_t decay_steps);
/// Larq's and PyTorch's one-cycle policy: cosine from `peak / div_factor` up to `peak` over the
/// first `warmup_fraction` of `total` steps, then cosine down to `peak / div_factor /
/// final_div_factor` at `total`.
Schedule one_cycle(double peak, int64_t total, double warmup_fraction = 0.3,
                   double div_factor = 25.0, double final_div_factor = 1e4);
/// Linear warm-up: schedule(0) * (t + 1) / (warmup_steps + 1) for t < warmup_steps, then
/// schedule(t - warmup_steps). warmup_steps = 0 returns `schedule` itself.
Schedule warmup(Schedule schedule, int64_t warmup_steps);
/// The schedule named "constant", "cosine" (to 0 at `total`), "step" (x0.1 after each third of
/// the run, on a multiple of `steps_per_period`) or "one-cycle" (see one_cycle), starting at
/// `initial`, over `total` steps (or epochs, with steps_per_period 1), after a linear warm-up of
/// `warmup_steps` (not with "one-cycle", which has its own). Throws std::invalid_argument for
/// other names or a warm-up that is not shorter than the run.
Schedule by_name(const std::string& name, double initial, int64_t total,
                 int64_t steps_per_period = 1, int64_t warmup_steps = 0);
}  // namespace schedules

/// When a scheduler updates its hyperparameter.
enum class UpdateFreq {
  kEpoch,  ///< before each epoch, with t = epoch index from 0
  kStep,   ///< before each optimizer step, with t = number of steps taken so far
};

/// Sets hyperparameter `name` of every parameter group of `optimizer`: "lr" (LibTorch's
/// optimizers), "momentum" (SGD), "gamma" and "threshold" (Bop). On a `CaseOptimizer` it sets it
/// on every inner optimizer that has it. Throws std::invalid_argument if no group has it.
void set_hyperparameter(torch::optim::Optimizer& optimizer, const std::string& name, double value);

/// The value of hyperparameter `name` in the first parameter group that has it (see
/// `set_hyperparameter`). Throws std::invalid_argument if none has it.
double get_hyperparameter(torch::optim::Optimizer& optimizer, const std::string& name);

/// A training callback that sets a hyperparameter from a schedule and logs the value into each
/// epoch's metrics (key `hyperparameter`, or `optimizer + "/" + hyperparameter` when an inner
/// optimizer is addressed).
class HyperparameterScheduler : public train::Callback {
 public:
  /// `optimizer` addresses an inner optimizer of a `CaseOptimizer` by name (e.g. "bop", "adam")
  /// or index ("0"); empty means the training optimizer itself (on a CaseOptimizer: every inner
  /// optimizer that has the hyperparameter).
  HyperparameterScheduler(Schedule schedule, std::string hyperparameter,
                          UpdateFreq update_freq = UpdateFreq::kEpoch, std::string optimizer = "");

  void on_train_begin(train::Context& ctx) override;
  void on_epoch_begin(train::Context& ctx) override;
  void on_batch_end(train::Context& ctx) override;
  void on_epoch_end(train::Context& ctx, nlohmann::json& metrics) override;

  /// The last value set (NaN before the first).
  double value() const { return value_; }
  /// The metrics key the value is logged under.
  const std::string& log_key() const { return key_; }

 private:
  void apply(train::Context& ctx, int64_t t);
  Schedule schedule_;
  std::string hyperparameter_;
  UpdateFreq update_freq_;
  std::string optimizer_;
  std::string key_;
  double value_;
};

}  // namespace onebit::optim
