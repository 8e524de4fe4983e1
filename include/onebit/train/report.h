#pragma once
/// \file
/// The HTML report of a training run: one self-contained file (`out_dir/report.html`) with the
/// loss, accuracy and flip-ratio curves per epoch (flip ratio per layer), the learning-rate and
/// Bop schedules, the model summary table and the final figures. Charts are inline SVG; the page
/// has no script and loads nothing (a Content-Security-Policy forbids every request), so it opens
/// from disk, from a mail attachment or an artifact store alike.
///
/// ```
/// // regenerated after every epoch by onebit::train::train (ReportCallback), or by hand:
/// onebit::train::write_report("runs/larq-mnist");   // onebit report runs/larq-mnist
/// ```

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "onebit/train/trainer.h"

namespace onebit::train {

/// What a report shows.
struct ReportData {
  std::string title;                    ///< page title, e.g. "larq-mnist: runs/mnist"
  nlohmann::json config;                ///< the run's TrainOptions JSON (shown as a table)
  std::vector<nlohmann::json> history;  ///< one metrics object per epoch (metrics.jsonl)
  std::string summary_table;            ///< `ModelSummary::to_string()` (empty: no section)
  int planned_epochs = 0;               ///< epochs the run will train (0: unknown)
};

/// Renders the report page. Curves: "loss" (train_loss, test_loss), "accuracy"
/// (train_accuracy, test_accuracy), "flip_ratio" (one series per layer of the "flip_ratio"
/// objects) and "schedule" (lr, and Bop's gamma and threshold when logged). Each series is an SVG
/// polyline with one marker per epoch (`data-series`, `data-points` attributes; a marker's tooltip
/// gives its value). Text from the config and the layer names is HTML-escaped.
std::string render_report(const ReportData& data);

/// Reads a metrics.jsonl file (one JSON object per line; blank lines are skipped). A missing file
/// gives no entries; a line that is not a JSON object throws std::runtime_error naming the file
/// and the line number.
std::vector<nlohmann::json> read_metrics(const std::string& path);

/// Regenerates `run_dir/report.html` from the files of a run directory: config.json,
/// metrics.jsonl and checkpoint.pt (for the summary table; left out when the checkpoint is
/// missing). Written atomically; returns the path. Throws std::runtime_error naming the file for
/// a missing or unreadable config or metrics file.
std::string write_report(const std::string& run_dir);

/// Writes `out_dir/report.html` after every epoch (atomically, so it can be watched from a
/// browser while the run goes on). Adds "lr" (and "gamma"/"threshold" for Bop) to each epoch's
/// metrics when no scheduler logged them. Register it after the callbacks whose metrics it
/// should show (onebit::train::train adds it last).
class ReportCallback : public Callback {
 public:
  /// `input_shape` (C,H,W) is used for the summary table; `title` heads the page.
  ReportCallback(TrainOptions options, std::vector<int64_t> input_shape, std::string title);
  void on_train_begin(Context& ctx) override;
  void on_epoch_end(Context& ctx, nlohmann::json& metrics) override;
  /// Path of the report file.
  std::string path() const;

 private:
  TrainOptions options_;
  std::vector<int64_t> input_shape_;
  ReportData data_;
};

}  // namespace onebit::train
