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
#include <stdexcept>
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
  /// Learning-rate schedule, set before every step: "constant", "cosine" (to 0 at the last
  /// step), "step" (x0.1 after each third of the epochs) or "one-cycle" (up from lr/25 over the
  /// first 30% of the steps, then down to lr/2.5e5); see optim::schedules::by_name.
  std::string lr_schedule = "constant";
  /// Linear learning-rate warm-up over this many epochs (fractions allowed) before
  /// `lr_schedule` starts; not with "one-cycle", which has its own.
  double warmup_epochs = 0;
  /// Schedule of Bop's gamma (optimizer "bop"), same names, from optimizer_options' gamma.
  /// "auto": "cosine" with optimizer "bop" (Bop's default: fewer flips in the last epochs, so
  /// the final weights and their batch-norm statistics agree), "constant" otherwise.
  std::string gamma_schedule = "auto";
  /// Kernels of the quantized layers while training and evaluating (see nn::TrainingKernels):
  /// "binary" (the default) runs every layer with a +-1 kernel on onebit's runtime kernels
  /// (bit-packed XNOR-popcount where the input is binary too; the outputs equal the float
  /// path's) with matrix-product gradients for large patches: 1.1-1.7x the float path's speed
  /// on the zoo (README, "Training speed"); a model with no such layer trains exactly as with
  /// "float". "float" uses LibTorch's float operations throughout.
  std::string training_kernels = "binary";
  /// Decoupled weight decay (AdamW, or SGD's) of the real-valued weights with two or more
  /// dimensions. Latent binary weights (what Bop or a sign quantizer reads), biases and
  /// batch-norm parameters are never decayed.
  double weight_decay = 0;
  /// Label smoothing of the cross-entropy: targets (1 - e) one-hot + e / classes.
  double label_smoothing = 0;
  /// Random crop after padding each side by `crop_padding` pixels (with the minimum, -1), and a
  /// horizontal flip with probability 1/2, per training image; reproducible from `seed`.
  bool augment = false;
  int crop_padding = 4;  ///< padding of the random crop (pixels per side)
  /// Re-estimate batch-norm running statistics with the weights of each epoch's end, over this
  /// many training batches (in training mode, no gradient, an exact average of their batch
  /// statistics), before evaluating and saving. The running averages otherwise lag behind a
  /// BNN's sign flips. 0 keeps the running averages.
  int64_t bn_reestimate_batches = 100;
  /// Fraction of the training set held out (its last images) to select the best checkpoint;
  /// 0 selects on the test set.
  double val_split = 0;
  /// Knowledge distillation: a checkpoint (file or run directory) whose model, in eval mode and
  /// without gradients, teaches this one. Empty: none.
  std::string teacher;
  /// Weight a of the distillation term: loss = (1 - a) cross-entropy + a T^2 KL(teacher ||
  /// student) on logits softened by the temperature T.
  double distill_weight = 0.5;
  double distill_temperature = 1.0;  ///< T of the distillation term
  /// Weight of Real-to-Binary's attention-matching loss between the outputs of the nodes named
  /// in `attention_nodes` (the same top-level node names in student and teacher, e.g. the float
  /// copy of the same architecture). 0: off.
  double attention_weight = 0;
  std::vector<std::string> attention_nodes;  ///< graph nodes whose outputs are matched
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

/// Thrown by `fit` after `request_stop` (Ctrl-C in `onebit train`): the checkpoint holds the
/// exact position, and `resume` continues from it as if nothing had happened.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Asks every running `fit` in this process to stop after its current step, save a checkpoint
/// of the exact position and throw `Interrupted`. Async-signal-safe (a SIGINT handler may call
/// it). Data-parallel ranks agree on the step within 16 steps.
void request_stop();
/// Whether a stop was requested and not yet honoured.
bool stop_requested();

/// Result of a training run.
struct TrainResult {
  double test_accuracy = 0;             ///< after the last epoch
  double test_loss = 0;                 ///< after the last epoch
  double best_accuracy = 0;             ///< best selection accuracy (validation or test)
  int best_epoch = 0;                   ///< epoch of `best_accuracy`
  std::string best_checkpoint;          ///< path of best.pt (the model of `best_epoch`)
  int epochs = 0;                       ///< epochs trained in total (including resumed ones)
  double images_per_second = 0;         ///< training throughput over all epochs of this run
  std::string checkpoint;               ///< path of checkpoint.pt
  std::vector<nlohmann::json> history;  ///< one metrics object per epoch of this run
};

/// Makes the optimizer named `options.optimizer` for `model`: "adam", "sgd" (option "momentum"),
/// or "bop" (Bop for the binary kernels, options "threshold" and "gamma", Adam with `lr` for
/// everything else, through `optim::CaseOptimizer`). Adam (AdamW with weight decay) is
/// `optim::FusedAdam`/`FusedAdamW`, LibTorch's optimizer with a one-pass step; option
/// "fused": false selects LibTorch's own step (same state; results differ by float rounding).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        nn::Graph& model);

/// Drops the gradients of `model`'s parameters (undefined, as PyTorch's
/// `zero_grad(set_to_none=True)`), where `Optimizer::zero_grad` would zero them: the next
/// backward pass then hands each gradient over instead of adding it onto zeros (two passes over
/// every gradient less per step). A parameter that gets no gradient is then skipped by the
/// optimizers (with zeros, Adam would still move it by its momentum).
void clear_gradients(nn::Graph& model);

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

/// Cross-entropy of logits against labels (with `label_smoothing` e: against (1 - e) one-hot +
/// e / classes), and the number of correct top-1 predictions.
std::pair<at::Tensor, int64_t> loss_and_correct(const at::Tensor& logits, const at::Tensor& labels,
                                                double label_smoothing = 0);

/// Knowledge distillation's term on logits: T^2 KL(softmax(teacher / T) || softmax(student / T)),
/// averaged over the batch (Hinton et al.; the T^2 keeps gradient sizes independent of T).
at::Tensor distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                             double temperature);

/// Real-to-Binary's attention-matching loss (Martinez et al. 2020, after Zagoruyko & Komodakis):
/// for each pair of feature maps [N, C, H, W], the spatial attention map a = mean over channels
/// of x^2, flattened and divided by its L2 norm; the mean over the batch of ||a_s - a_t||_2,
/// averaged over the pairs. Shapes must agree in N, H and W (channels may differ).
at::Tensor attention_loss(const std::vector<at::Tensor>& student_maps,
                          const std::vector<at::Tensor>& teacher_maps);

/// The training augmentation of `TrainOptions::augment` on a batch [N, C, H, W]: each image
/// padded by `padding` pixels of value -1 on each side, cropped back to H x W at a random
/// offset, and flipped horizontally with probability 1/2, drawn from `generator`.
at::Tensor random_crop_flip(const at::Tensor& images, int64_t padding, at::Generator generator);

/// Re-estimates the running statistics of every batch-norm layer of `model` (onebit's and
/// LibTorch's) as the exact mean of the batch statistics of `batches` forward passes in training
/// mode without gradients, drawing batches of `batch_size` from `images` in the order of `order`
/// (indices). Restores the layers' momentum and the model's mode.
void reestimate_batch_norm(nn::Graph model, const at::Tensor& images, const at::Tensor& order,
                           int64_t batch_size, int64_t batches);

}  // namespace onebit::train
