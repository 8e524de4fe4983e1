#pragma once
/// \file
/// Data-parallel training across processes on LibTorch's c10d (Gloo on CPU).
///
/// Every process (rank) holds a full copy of the model, trains on its shard of each global batch,
/// and the ranks average their gradients with bucketed all-reduces before every optimizer step, so
/// all copies stay identical. Launch like torchrun: each process reads RANK, WORLD_SIZE,
/// MASTER_ADDR, MASTER_PORT and LOCAL_RANK from the environment; `onebit train --nproc N` starts
/// N local workers itself. See docs/distributed.md.
///
/// ```
/// auto options = onebit::train::DistributedOptions::from_env();   // RANK, WORLD_SIZE, ...
/// onebit::train::TrainOptions train;
/// if (options.world_size > 1)
///   train.process_group = std::make_shared<onebit::train::ProcessGroup>(options);
/// onebit::train::train(train);   // rank 0 writes the checkpoint, metrics and progress
/// ```

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "onebit/data/datasets.h"
#include "onebit/nn/graph.h"
#include "onebit/train/trainer.h"

namespace onebit::train {

/// A collective or the rendezvous failed: a peer died, hung past the timeout, or could not be
/// reached. The message names this rank, the operation, and the peers that stopped answering.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// How a process joins a data-parallel job.
struct DistributedOptions {
  /// "gloo" (CPU). "nccl" is refused: onebit trains on the CPU only for now.
  std::string backend = "gloo";
  int rank = 0;                           ///< this process, 0 .. world_size - 1
  int world_size = 1;                     ///< number of processes; 1: no distribution
  int local_rank = 0;                     ///< index of this process on its machine
  std::string master_addr = "127.0.0.1";  ///< host of rank 0, which runs the rendezvous store
  int master_port = 29500;                ///< TCP port of the rendezvous store
  /// Seconds the rendezvous and each collective may wait for a peer before failing.
  double timeout_seconds = 60;
  /// Gradients are all-reduced in flat buckets of about this many bytes (see GradientReducer).
  int64_t bucket_bytes = 256 << 10;

  /// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (torchrun's variables);
  /// unset WORLD_SIZE means one process. A malformed or inconsistent value throws
  /// std::invalid_argument naming the variable and its value.
  static DistributedOptions from_env();
  /// Throws std::invalid_argument naming the first field that is out of range.
  void validate() const;
};

/// A c10d process group (Gloo) joined through a TCPStore hosted by rank 0. Construction blocks
/// until all `world_size` ranks have joined or the timeout passes. Collectives are synchronous
/// and throw DistributedError naming the peers that stopped answering; after such an error the
/// group must not be used again.
class ProcessGroup {
 public:
  /// Joins the job described by `options` (validated first). A port in use on rank 0, an
  /// unreachable master or missing peers throw DistributedError with the address and timeout.
  explicit ProcessGroup(const DistributedOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const;                           ///< this process
  int world_size() const;                     ///< number of processes
  const DistributedOptions& options() const;  ///< as given
  /// Copies rank `root`'s tensors into every rank's (same shapes and dtypes on every rank).
  void broadcast(const std::vector<at::Tensor>& tensors, int root = 0);
  /// Replaces each tensor by its sum over all ranks (in place, one all-reduce per dtype).
  void all_reduce_sum(const std::vector<at::Tensor>& tensors);
  /// Returns once every rank has called it.
  void barrier();

  /// Internal state (c10d objects), for the gradient reducer.
  struct Impl;
  /// The internal state.
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

/// Averages a model's gradients over the ranks of a group with bucketed all-reduces, like
/// DistributedDataParallel: parameters are packed, in reverse registration order (about the order
/// backward produces their gradients), into flat buckets of about `bucket_bytes`. A gradient hook
/// on every parameter copies its gradient into its bucket during backward and starts the bucket's
/// asynchronous all-reduce as soon as the bucket is complete (buckets start in the same order on
/// every rank), so communication overlaps the rest of backward. The first step learns how many
/// gradients each parameter receives per backward and reduces after backward.
/// `finish()` after backward waits for all buckets and writes the averaged gradients into
/// `param.grad()` (overwriting it: call `zero_grad()` before each backward, as fit does).
class GradientReducer {
 public:
  /// Hooks `params` (all of one rank's trainable parameters, the same on every rank).
  GradientReducer(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
                  int64_t bucket_bytes);
  ~GradientReducer();  ///< removes the hooks
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;
  /// After backward (or instead of it, on a rank whose shard of the batch is empty: its
  /// gradients count as zero): completes the reduction and sets every gradient to the mean over
  /// the ranks.
  void finish();
  /// Number of buckets.
  size_t bucket_count() const;

  struct State;  ///< internal

 private:
  std::shared_ptr<State> state_;
  std::vector<at::Tensor> params_;
  std::vector<unsigned> hooks_;
};

/// What `fit` does differently on several ranks, in one place. With no group (or a group of one)
/// every method is the single-process behaviour, so the training loop has one code path.
class DataParallel {
 public:
  /// Prepares data-parallel training of `model` over `group` (may be null).
  DataParallel(std::shared_ptr<ProcessGroup> group, nn::Graph model);
  ~DataParallel();
  int rank() const;        ///< 0 without a group
  int world_size() const;  ///< 1 without a group
  /// True on rank 0, the only rank that writes files and progress.
  bool is_root() const { return rank() == 0; }
  /// Copies rank 0's parameters and buffers to every rank (start of training, after a resume).
  void broadcast_state();
  /// This rank's contiguous part of a global batch of indices: rank r of W gets elements
  /// [r m / W, (r + 1) m / W) of the m indices (may be empty when m < W).
  at::Tensor shard(const at::Tensor& indices) const;
  /// Factor for this rank's mean loss over `local` images so that the averaged gradient is the
  /// gradient of the mean loss over the `global` images of the batch: local * W / global.
  double loss_scale(int64_t local, int64_t global) const;
  /// After backward: averages the gradients over the ranks (see GradientReducer).
  void reduce_gradients();
  /// Averages floating-point buffers (batch-norm running statistics) over the ranks, so every
  /// rank evaluates and saves the same model.
  void average_buffers();
  /// Sums each value over the ranks.
  std::vector<double> sum(const std::vector<double>& values) const;

 private:
  std::shared_ptr<ProcessGroup> group_;
  nn::Graph model_;
  std::unique_ptr<GradientReducer> reducer_;
};

/// Evaluates `model` with every rank taking a contiguous shard of `set`; the sums of loss,
/// correct predictions and count are all-reduced, so every rank returns the whole set's result.
EvalResult evaluate(nn::Graph model, const data::Dataset& set, int64_t batch_size,
                    const DataParallel& parallel);

/// A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT on one machine).
int free_local_port();

/// Runs `argv` (argv[0]: the executable) as `nproc` local workers with RANK, LOCAL_RANK,
/// WORLD_SIZE, MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default: a free port) set, and
/// waits for them. If a worker fails, the others are stopped (SIGTERM, then SIGKILL after
/// `grace_seconds`). Returns 0 if all succeeded, else the first failure's exit code (128 + signal
/// for a killed worker). Messages about failed workers go to stderr. `extra_env` ("NAME=value")
/// is added to every worker's environment where NAME is not set already.
int run_local_workers(const std::vector<std::string>& argv, int nproc, double grace_seconds = 5,
                      const std::vector<std::string>& extra_env = {});

}  // namespace onebit::train
