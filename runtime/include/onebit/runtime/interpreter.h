#pragma once
/// \file
/// Runs a model on a batch of float NCHW images.
///
/// Example:
/// \code
///   onebit::runtime::Interpreter net = onebit::runtime::Interpreter::from_file("mnist.obnn");
///   std::vector<float> logits = net.run(images, 64);  // images: 64 x 1 x 28 x 28 floats
/// \endcode

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "onebit/runtime/kernels.h"
#include "onebit/runtime/model.h"

namespace onebit::runtime {

/// How `Interpreter::run` treats NaN and +-infinity in its input.
enum class NonFiniteInput {
  /// Throw `std::invalid_argument` naming the first such value (image, channel, row, column)
  /// before anything runs. The check reads the input once (well under 1% of a model's time).
  kReject,
  /// Run them through: float ops follow IEEE arithmetic (NaN propagates through sums and
  /// products), binary ops read NaN as +1 and +-infinity by its sign, and max pooling, clip and
  /// ReLU return either operand for NaN. No undefined behaviour; results for such inputs are not
  /// guaranteed to be identical across instruction sets.
  kPropagate,
};

/// A task of a `TaskRunner`: `fn(context, i)` runs task i.
using TaskFn = void (*)(void* context, std::size_t index);

/// Runs `fn(context, i)` once for every i in [0, n), in any order, on up to `threads` threads of
/// the caller's choice (the calling thread included), and returns when every task has returned;
/// when a task throws, rethrows the first exception once no task runs any more. Every task's
/// result is independent of the thread it runs on.
using TaskRunner = void (*)(std::size_t n, int threads, TaskFn fn, void* context);

/// Options of an `Interpreter`.
struct InterpreterOptions {
  /// Threads per `run` call (the calling thread included), taken from the process-wide
  /// persistent pool. A batch of a multiple of `threads` images, or of at least 4 per thread,
  /// runs equal groups of images in parallel; otherwise each op splits its work (convs and
  /// dense over output rows and output channels, element-wise ops over pixels). 1 runs
  /// everything on the caller's thread. Results do not depend on it.
  int threads = 1;
  /// Kernel table; nullptr uses `active_kernels()` (CPUID or `ONEBIT_ISA`).
  const KernelTable* kernels = nullptr;
  /// Largest activation arena of one image (`activation_bytes(1)`) the Interpreter accepts: a
  /// model whose values would need more is refused by the constructor with a `ModelError` that
  /// names the limit and the largest values, before any activation memory is allocated. The
  /// arena of a run is at most max(this, about 512 KiB) per concurrent call (larger batches run
  /// in passes). Default 1 GiB: an ImageNet BNN at 224x224 needs a few MiB.
  std::size_t max_activation_bytes = std::size_t{1} << 30;
  /// Largest `.obnn` file `from_file` reads (checked before reading; see `load_model`), and
  /// largest buffer `from_bytes` parses.
  std::uint64_t max_model_bytes = kDefaultMaxModelBytes;
  /// What `run` does with NaN or +-infinity in the input.
  NonFiniteInput non_finite = NonFiniteInput::kReject;
  /// Layout of `run`'s input and output: false (the default) for NCHW, PyTorch's default;
  /// true for NHWC (batch, rows, columns, channels: PyTorch's `channels_last` memory format and
  /// the runtime's own layout), which skips the two transposes. Bit outputs are written as +-1
  /// floats in the same layout.
  bool channels_last = false;
  /// Where the parallel parts of `run` execute: null (the default) for the runtime's persistent
  /// pool; else this function, e.g. one that hands the tasks to the host program's own threads.
  /// onebit's trainer passes LibTorch's `at::parallel_for`: two pools whose idle threads both
  /// spin while they wait for work take the two cores from each other (a larq-mnist training
  /// step on the binary path was no faster at 2 threads than at 1).
  TaskRunner task_runner = nullptr;
  /// true (the default): consecutive per-element ops (batch norm, PReLU, ReLU, clip, sigmoid,
  /// quantize_levels, each consuming only the previous one's output) run as one pass over
  /// memory, block by block; their intermediate values take no arena space. A binary conv with
  /// a float output heads such a chain: the ops run on its output rows as each thread finishes
  /// them, while they are in cache (QuickNet's conv -> ReLU -> batch norm -> add). false: op after
  /// op, e.g. for a per-op profile of each of them. The results are identical either way.
  bool chain_per_element_ops = true;
};

/// Time of one op in a profiled run (`Interpreter::run_profiled`).
struct OpTiming {
  std::size_t index = 0;  ///< Op index in the model.
  std::string type;       ///< Op type name, e.g. "binary_conv2d".
  std::string name;       ///< Op name from the file (may be empty).
  bool binary = false;    ///< True for ops of the binary (XOR/popcount) family.
  /// Wall time of the op in this run. Consecutive per-element ops (batch norm, PReLU, ReLU,
  /// clip, ...) run as one pass; the first of them reports the pass, the others 0.
  double seconds = 0;
  std::int64_t binary_macs = 0;  ///< Binary MACs of this op for the batch (0 for non-binary ops).
  std::int64_t float_macs = 0;   ///< Float MACs (conv2d/dense: weights x output pixels), else 0.
};

/// A prepared model. Construction validates every op (shapes, attributes, tensor roles) and
/// lays weights out for the kernels; `run` is const and takes its activation arena from a small
/// set kept by the Interpreter (one per concurrent call, reused by later calls), so one
/// Interpreter may be used from several threads at once and a steady stream of runs allocates
/// no activation memory. Threads come from one persistent pool shared by the process.
class Interpreter {
 public:
  /// Prepares `model`; throws `ModelError` if it is inconsistent.
  explicit Interpreter(Model model, InterpreterOptions options = {});
  /// Loads and prepares a `.obnn` file.
  static Interpreter from_file(const std::string& path, InterpreterOptions options = {});
  /// Parses and prepares `.obnn` bytes.
  static Interpreter from_bytes(const std::uint8_t* bytes, std::size_t size,
                                InterpreterOptions options = {});
  ~Interpreter();
  Interpreter(Interpreter&&) noexcept;
  Interpreter& operator=(Interpreter&&) noexcept;
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  /// Runs `batch` images given as float NCHW (`batch * C * H * W` values, C,H,W as
  /// `input_shape()`); returns the output value as float NCHW (`batch * output_size()` values;
  /// logits for classifiers, +-1 for bit outputs). Throws `std::invalid_argument` when the
  /// input size does not match.
  std::vector<float> run(const std::vector<float>& input, std::size_t batch) const;
  /// Same as above on a raw buffer of `size` floats.
  std::vector<float> run(const float* input, std::size_t size, std::size_t batch) const;
  /// Same as above, writing the `batch * output_size()` output floats to `output` (which must
  /// not overlap the input): no allocation per call.
  void run(const float* input, std::size_t size, std::size_t batch, float* output) const;
  /// Runs like `run` and also reports the wall time of every op, in execution order.
  /// The output is identical to `run`'s (same kernels, same threads; a profiled run always
  /// splits each op over the threads rather than running groups of images in parallel, so
  /// that every entry times one op); `timings` is replaced by
  /// one entry per op that runs (every op up to the one producing the model output). An op's
  /// time covers zero-filling its output in the arena and the op itself; the input/output
  /// transposes are not in any entry. `run` itself reads no clock.
  /// Example:
  /// \code
  ///   std::vector<OpTiming> t;
  ///   net.run_profiled(x.data(), x.size(), 8, t);
  ///   for (const OpTiming& op : t) std::printf("%-20s %-16s %8.3f ms\n", op.type.c_str(),
  ///                                            op.name.c_str(), op.seconds * 1e3);
  /// \endcode
  std::vector<float> run_profiled(const float* input, std::size_t size, std::size_t batch,
                                  std::vector<OpTiming>& timings) const;

  /// Input shape of one image: C, H, W.
  std::vector<std::int64_t> input_shape() const;
  /// Output shape of one image: C, H, W (C, 1, 1 for logits).
  std::vector<std::int64_t> output_shape() const;
  /// Floats per image in the output.
  std::size_t output_size() const;
  /// Bytes of the activation arena of one `run` of `batch` images (input, op outputs and the
  /// output; not per-op scratch): every value gets an offset in one block, planned from the
  /// values' lifetimes (`plan_arena`). A value lives from the op that produces it to its last
  /// consumer, however many consumers it has; a value nothing consumes only while it is
  /// produced. A run holds min(batch, `images_per_pass()`) images at once. Each concurrent
  /// `run` holds one arena; the Interpreter keeps them for later runs.
  /// Example: `net.activation_bytes(64)`.
  std::size_t activation_bytes(std::size_t batch) const;
  /// The largest total size of the values alive at once in a run of `batch` images (again
  /// min(batch, `images_per_pass()`) at once): the least memory any arena plan could use
  /// (`activation_bytes` is at least this).
  std::size_t live_activation_bytes(std::size_t batch) const;
  /// Images that go through all ops together: a larger batch runs in passes of this many
  /// images, so that the activations of a pass (about 512 KiB) stay in cache between ops. No op
  /// mixes images, so results do not depend on it. At least 1.
  std::size_t images_per_pass() const;
  /// Binary multiply-accumulates per image of the ops that run (for throughput reports); ops
  /// after the one producing the output are not run and not counted.
  std::int64_t binary_macs_per_image() const;
  /// The model as loaded.
  const Model& model() const;
  /// Changes the thread count used by later `run` calls.
  void set_threads(int threads);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace onebit::runtime
