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
/// Each `update(values)` after the first computes 1 - unchanged / total against the values of
/// the previous update; `result()` is the mean of those ratios since construction or the last
/// `reset_states()` (0 when there is none). The first update only records the values.
class FlipRatio {
 public:
  /// Records `values` and returns this update's ratio, or nullopt for the first update.
  /// Throws std::invalid_argument if the shape differs from the previous update's.
  std::optional<double> update(const at::Tensor& values);
  /// Mean ratio over the updates since the last reset; 0 if none was computed.
  double result() const { return count_ ? total_ / static_cast<double>(count_) : 0.0; }
  /// Number of ratios averaged by `result()`.
  int64_t count() const { return count_; }
  /// Number of values that changed in the last update (0 for the first).
  int64_t last_changed() const { return last_changed_; }
  /// Clears the mean but keeps the last values, so the next update is still compared with them
  /// (no step is lost between epochs).
  void reset_states() {
    total_ = 0;
    count_ = 0;
  }

 private:
  at::Tensor previous_;
  double total_ = 0;
  int64_t count_ = 0;
  int64_t last_changed_ = 0;
};

/// The sign pattern of a quantized kernel as the flip ratio compares it: `values > 0` (for
/// +-1 kernels the sign, for 0/1 kernels the bit).
at::Tensor binary_pattern(const at::Tensor& quantized);

/// The binary kernels of a model: every QuantLayer parameter whose quantizer has precision 1,
/// keyed by the module's name (or "name.parameter" for layers with more than one binary kernel).
std::vector<std::pair<std::string, at::Tensor>> binary_kernels(const torch::nn::Module& model);

/// Options of `FlipRatioCallback`.
struct FlipRatioOptions {
  /// true: compare after every optimizer step and report the mean per epoch (Larq's metric);
  /// false: compare once per epoch, the end of one epoch with the end of the previous.
  bool every_step = true;
};

/// Measures the flip ratio of every binary kernel during training. At each epoch end it writes
/// `"flip_ratio": {"<layer>": ratio, ...}` into the epoch metrics and puts the mean over layers
/// into `Context::progress["flip"]` (also updated after every step when `every_step`). A model
/// without binary kernels adds nothing.
class FlipRatioCallback : public train::Callback {
 public:
  /// Creates the callback.
  explicit FlipRatioCallback(FlipRatioOptions options = {}) : options_(options) {}
  void on_train_begin(train::Context& ctx) override;
  void on_epoch_begin(train::Context& ctx) override;
  void on_batch_end(train::Context& ctx) override;
  void on_epoch_end(train::Context& ctx, nlohmann::json& metrics) override;
  /// The metric of each binary kernel, by name.
  const std::map<std::string, FlipRatio>& ratios() const { return ratios_; }

 private:
  void measure(train::Context& ctx);
  double mean() const;
  FlipRatioOptions options_;
  std::map<std::string, FlipRatio> ratios_;
};

}  // namespace onebit::metrics
