#pragma once
/// \file
/// Training metrics for BNNs: the flip ratio of binary weights (Larq's FlipRatio), and a
/// training-loop callback that reports it for every binary layer.
///
/// ```
/// onebit::metrics::FlipRatio m;
/// m.update(torch::tensor({1, 1}));   // first update only records
/// m.update(torch::tensor({2, 2}));   // both changed: 1
/// m.update(torch::tensor({1, 2}));   // one of two changed: 0.5
/// m.result();                        // mean of the ratios: 0.75
/// m.reset_states();                  // as Keras does at every epoch start
/// m.update(torch::tensor({2, 2}));   // compared and recorded, but not counted (Larq)
/// m.update(torch::tensor({2, 1}));   // 0.5
/// m.result();                        // 0.5
/// ```

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "onebit/train/trainer.h"

namespace onebit::metrics {

/// Fraction of values that changed between consecutive updates, averaged over updates.
///
/// Each `update(values)` computes 1 - unchanged / total against the values of the previous
/// update; `result()` is the mean of those ratios since construction or the last
/// `reset_states()` (0 when there is none). As in Larq, the first update after construction and
/// the first after `reset_states()` only record the values (Larq's metric adds that update's
/// ratio times sign(count) = 0 and divides by count - 1).
class FlipRatio {
 public:
  /// Records `values` and returns this update's ratio, or nullopt for an update that only
  /// records (the first after construction or `reset_states()`). Throws std::invalid_argument
  /// if the shape differs from the previous update's.
  std::optional<double> update(const at::Tensor& values);
  /// Mean ratio over the updates since the last reset; 0 if none was computed.
  double result() const { return count_ ? total_ / static_cast<double>(count_) : 0.0; }
  /// Number of ratios averaged by `result()`.
  int64_t count() const { return count_; }
  /// Number of values that changed in the last update (0 for the first).
  int64_t last_changed() const { return last_changed_; }
  /// Clears the mean but keeps the last values; the next update only records (Larq's
  /// `reset_state`).
  void reset_states() {
    total_ = 0;
    count_ = 0;
    skip_next_ = true;
  }

 private:
  at::Tensor previous_;
  bool skip_next_ = false;
  double total_ = 0;
  int64_t count_ = 0;
  int64_t last_changed_ = 0;
};

/// The sign pattern of a quantized kernel as the flip ratio compares it: `values > 0` (for
/// +-1 kernels the sign, for 0/1 kernels the bit).
at::Tensor binary_pattern(const at::Tensor& quantized);

/// What the flip ratio compares for a kernel quantized to `precision` bits: the sign pattern
/// (`binary_pattern`) for 1-bit kernels, so that a per-channel scale (magnitude_aware_sign) does
/// not count as a change, and the quantized values themselves for wider ones (ternary -1/0/+1,
/// DoReFa's levels).
at::Tensor flip_pattern(const at::Tensor& quantized, int precision);

/// A quantized kernel of a model, as the flip ratio follows it.
struct QuantizedKernel {
  std::string name;    ///< the module's name, or "name.parameter" if it has several kernels
  at::Tensor values;   ///< quantizer(latent), detached
  int precision = 32;  ///< the quantizer's bits
};

/// The quantized kernels of a model: every QuantLayer kernel with a quantizer of precision below
/// 32 (binary, ternary, DoReFa k-bit, NoOp(k)): Larq attaches its FlipRatio metric to every
/// kernel quantizer, not only to 1-bit ones.
std::vector<QuantizedKernel> quantized_kernels(const torch::nn::Module& model);

/// The binary kernels of a model: the `quantized_kernels` whose quantizer has precision 1, keyed
/// by the same names.
std::vector<std::pair<std::string, at::Tensor>> binary_kernels(const torch::nn::Module& model);

/// Options of `FlipRatioCallback`.
struct FlipRatioOptions {
  /// true: compare after every optimizer step and report the mean per epoch (Larq's metric);
  /// false: compare once per epoch, the end of one epoch with the end of the previous.
  bool every_step = true;
};

/// Measures the flip ratio of every quantized kernel (`quantized_kernels`) during training. At each
/// epoch end it writes
/// `"flip_ratio": {"<layer>": ratio, ...}` into the epoch metrics and puts the mean over layers
/// into `Context::progress["flip"]` (also updated after every step when `every_step`). A model
/// without quantized kernels adds nothing. With `every_step`, the metrics are reset at each
/// epoch start as Keras resets Larq's, so the first step of an epoch is recorded but not counted.
class FlipRatioCallback : public train::Callback {
 public:
  /// Creates the callback.
  explicit FlipRatioCallback(FlipRatioOptions options = {}) : options_(options) {}
  void on_train_begin(train::Context& ctx) override;
  void on_epoch_begin(train::Context& ctx) override;
  void on_batch_end(train::Context& ctx) override;
  void on_epoch_end(train::Context& ctx, nlohmann::json& metrics) override;
  /// The metric of each quantized kernel, by name.
  const std::map<std::string, FlipRatio>& ratios() const { return ratios_; }

 private:
  void measure(train::Context& ctx);
  double mean() const;
  FlipRatioOptions options_;
  std::map<std::string, FlipRatio> ratios_;
  std::map<std::string, double> epoch_ratios_;  // epoch mode: end of this epoch vs the last
};

}  // namespace onebit::metrics
