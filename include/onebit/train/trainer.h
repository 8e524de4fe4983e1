#pragma once
/// \file
/// The training loop: data, model, optimizer, constraints, metrics, checkpoints.
///
/// ```
/// onebit::train::TrainOptions opts;
/// opts.model = "larq-mnist";
/// opts.epochs = 6;
/// opts.out_dir = "runs/mnist";
/// auto result = onebit::train::train(opts);   // result.test_accuracy, result.checkpoint
/// ```

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "onebit/data/datasets.h"
#include "onebit/nn/graph.h"
#include "onebit/zoo/models.h"

namespace onebit::train {

class ProcessGroup;  // onebit/train/distributed.h

/// Everything a training run needs; stored in the checkpoint's config.
struct TrainOptions {
  std::string model = "larq-mnist";       ///< zoo model name
  zoo::ModelOptions model_options;        ///< zoo options (quantized, batch-norm momentum, ...)
  std::string dataset = "fashion-mnist";  ///< data set name (see data::dataset_names())
  std::string data_dir;                   ///< empty: the data set's default directory
  int epochs = 6;                         ///< number of epochs
  int64_t batch_size = 64;                ///< training batch size
  double lr = 1e-3;                       ///< learning rate of the (default) optimizer
  uint64_t seed = 42;                     ///< seeds initialization and shuffling
  std::string optimizer = "adam";         ///< see make_optimizer()
  nlohmann::json optimizer_options = nlohmann::json::object();  ///< extra optimizer arguments
  std::string out_dir = "runs/default";  ///< checkpoint.pt, config.json, metrics.jsonl go here
  int threads = 0;                       ///< intra-op threads; 0 keeps LibTorch's default
  int64_t train_limit = 0;               ///< use only the first N training images (0: all)
  int64_t test_limit = 0;                ///< use only the first N test images (0: all)
  bool progress = true;                  ///< draw a progress bar on stderr
  std::string resume;                    ///< checkpoint (file or directory) to continue from
  /// Checkpoint whose model weights initialize the model before training (fine-tuning; the
  /// optimizer and epoch start fresh). Tensors that are missing or mis-shaped are an error that
  /// lists them (see load_model_state).
  std::string weights;
  /// Data-parallel training (onebit/train/distributed.h): the group this process trains in; null
  /// trains alone. `batch_size` is then the global batch, split over the ranks. Not stored in
  /// the JSON form: a checkpoint does not depend on the number of processes.
  std::shared_ptr<ProcessGroup> process_group;

  /// JSON form of all fields except `process_group`.
  nlohmann::json to_json() const;
  /// Reads the JSON form; missing fields keep their defaults, unknown ones throw.
  static TrainOptions from_json(const nlohmann::json& j);
};

/// Loss and accuracy of a model on a data set.
struct EvalResult {
  double loss = 0;      ///< mean cross-entropy
  double accuracy = 0;  ///< fraction of correct top-1 predictions
  int64_t count = 0;    ///< number of examples
};

/// State passed to callbacks.
struct Context {
  nn::Graph model;                         ///< the model being trained
  torch::optim::Optimizer* optimizer;      ///< its optimizer
  int epoch = 0;                           ///< current epoch, 1-based
  int64_t step = 0;                        ///< optimizer steps taken so far
  std::map<std::string, double> progress;  ///< extra fields shown in the progress line
};

/// Hooks into the training loop (metrics, schedules). All methods are optional.
class Callback {
 public:
  virtual ~Callback() = default;
  /// Before the first epoch (after a resume, before the first new epoch).
  virtual void on_train_begin(Context&) {}
  /// Before each epoch.
  virtual void on_epoch_begin(Context&) {}
  /// After each optimizer step and the constraints.
  virtual void on_batch_end(Context&) {}
  /// After each epoch; add fields to `metrics` to log them in metrics.jsonl.
  virtual void on_epoch_end(Context&, nlohmann::json& metrics) {}
};

/// Result of a training run.
struct TrainResult {
  double test_accuracy = 0;             ///< after the last epoch
  double test_loss = 0;                 ///< after the last epoch
  int epochs = 0;                       ///< epochs trained in total (including resumed ones)
  double images_per_second = 0;         ///< training throughput over all epochs of this run
  std::string checkpoint;               ///< path of checkpoint.pt
  std::vector<nlohmann::json> history;  ///< one metrics object per epoch of this run
};

/// Makes the optimizer named `options.optimizer` for `model`: "adam", "sgd" (option "momentum"),
/// or "bop" (Bop for the binary kernels, options "threshold" and "gamma", Adam with `lr` for
/// everything else, through `optim::CaseOptimizer`).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        nn::Graph& model);

/// Trains `model` on `train_set`, evaluating on `test_set` after each epoch, writing
/// `out_dir/metrics.jsonl`, `out_dir/config.json` and `out_dir/checkpoint.pt` (atomically).
/// Throws std::runtime_error if the loss becomes NaN or infinite. With `options.process_group`
/// every rank calls fit with the same options and trains on its shard of each global batch;
/// rank 0 alone writes the files (see onebit/train/distributed.h).
TrainResult fit(nn::Graph model, const data::Dataset& train_set, const data::Dataset& test_set,
                const TrainOptions& options,
                const std::vector<std::shared_ptr<Callback>>& callbacks = {});

/// Builds the zoo model and data set named in `options` and calls `fit`.
TrainResult train(const TrainOptions& options,
                  const std::vector<std::shared_ptr<Callback>>& callbacks = {});

/// Evaluates `model` in eval mode (restores the previous mode).
EvalResult evaluate(nn::Graph model, const data::Dataset& set, int64_t batch_size = 256);

/// Cross-entropy of logits against labels, and the number of correct top-1 predictions.
std::pair<at::Tensor, int64_t> loss_and_correct(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace onebit::train
