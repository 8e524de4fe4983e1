#pragma once
// Internal: prepared ops of the interpreter. An op is validated and laid out once (prepare_op),
// then run any number of times, concurrently, on per-call buffers.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"
#include "onebit/runtime/model.h"
#include "thread_pool.h"

namespace onebit::runtime::detail {

/// Shape and dtype of one value of the graph for one image; activations are NHWC.
struct ValueInfo {
  DType dtype = DType::kFloat32;  // kFloat32 or kBits
  std::int64_t c = 0, h = 0, w = 0;
  /// Floats per pixel (float) or words per pixel (bits).
  std::size_t pixel_stride() const { return dtype == DType::kBits ? words_for_bits(c) : c; }
  /// 8-byte words per image.
  std::size_t image_words() const;
};

/// One value for a whole batch: a view of `size` 8-byte words owned elsewhere (the
/// interpreter's arena, or a benchmark's vectors).
struct Buffer {
  std::uint64_t* data = nullptr;
  std::size_t size = 0;
  float* f() { return reinterpret_cast<float*>(data); }
  const float* f() const { return reinterpret_cast<const float*>(data); }
  BitWord* b() { return data; }
  const BitWord* b() const { return data; }
};

/// What one run needs besides buffers.
struct RunContext {
  const KernelTable* kernels = nullptr;
  int threads = 1;
  TaskRunner task_runner = nullptr;  ///< InterpreterOptions::task_runner (null: the pool)
};

/// A validated op ready to run.
class PreparedOp {
 public:
  virtual ~PreparedOp() = default;
  /// Computes `out` (already sized; zero-filled unless `writes_whole_output`) from `in` for
  /// `batch` images.
  virtual void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
                   std::size_t batch) const = 0;
  /// True when `run` writes every element of its output (every float, or every word of packed
  /// rows), so the interpreter need not zero-fill the output first; false (the default) when
  /// the op relies on the zero fill (accumulation, bit copies that leave padding bits).
  virtual bool writes_whole_output() const { return false; }
  /// Binary multiply-accumulates per image (0 for non-binary ops).
  virtual std::int64_t binary_macs() const { return 0; }
  /// Float multiply-accumulates per image of float conv2d / dense (weights x output pixels);
  /// 0 for every other op.
  virtual std::int64_t float_macs() const { return 0; }
  /// True for ops that map each float of one float input to one float of the output, pixel row
  /// by pixel row (batch norm, PReLU, ReLU, clip, sigmoid, quantize_levels): they also implement
  /// `run_rows`, and the interpreter runs a chain of them as one pass (`chain_per_element_ops`).
  virtual bool per_element() const { return false; }
  /// True for two-input ops that can join such a chain after its first op (add: y = x + other,
  /// the other input float or bits), through `run_rows` with `other`.
  virtual bool per_element_binary() const { return false; }
  /// For `per_element` (and `per_element_binary`) ops: output rows [r0, r1) (pixel rows of the
  /// value's channels) from the same rows of `x` (and of `other`, the second input's buffer);
  /// `x` and `y` are the value's base pointers and may be the same buffer.
  virtual void run_rows(const float* x, float* y, std::size_t r0, std::size_t r1,
                        const Buffer* other = nullptr) const {
    (void)x, (void)y, (void)r0, (void)r1, (void)other;
  }
  /// What an op heading a chain calls on finished rows [r0, r1) of its output (pixel rows of the
  /// whole batch).
  using RowTail = std::function<void(std::size_t r0, std::size_t r1)>;
  /// True for ops with a float output that can head a chain of per-element ops (binary conv):
  /// `run_with_tail` computes the output like `run` and calls `tail` on each block of rows as
  /// soon as the block is final, on the thread that finished it, once per row, while the block
  /// is still in cache.
  virtual bool heads_chains() const { return false; }
  virtual void run_with_tail(const RunContext& ctx, const std::vector<const Buffer*>& in,
                             Buffer& out, std::size_t batch, const RowTail& tail) const {
    (void)tail;
    run(ctx, in, out, batch);
  }
};

/// One op running `chain` (per-element ops, each consuming the previous one's output) block by
/// block: every block of rows goes through all of them while it is in cache, instead of one
/// pass over the whole value per op. The results equal running them one after the other: each
/// element goes through the same functions in the same order. The first op may instead be one
/// that `heads_chains` (a binary conv): the others then run on its rows as it finishes them.
/// `channels` floats per pixel row, `pixels` rows per image; the ops are not owned. The op's inputs
/// are the first op's input, then the other input of each `per_element_binary` member in order;
/// `other_input[k]` is that input's index for member k (0 for one-input members).
std::unique_ptr<PreparedOp> chain_per_element_ops(std::vector<const PreparedOp*> chain,
                                                  std::vector<std::size_t> other_input,
                                                  std::size_t channels, std::size_t pixels);

/// "op 3 (binary_conv2d)", or "op 3 (binary_conv2d \"block3_conv\")" when the op has a name:
/// how messages about op `index` start.
std::string op_where(std::size_t index, const Op& op);

/// Throws ModelError("<where>: <what>") unless `ok`.
void require(bool ok, const std::string& where, const std::string& what);

/// Validates `op` against its inputs and the model's tensors, computes its output value info and
/// returns the prepared op. Arity and input dtypes are checked from the op table (op_table.h),
/// the rest by the op's own prepare function. Throws ModelError naming `where` on any
/// inconsistency.
std::unique_ptr<PreparedOp> prepare_op(const Model& model, const Op& op,
                                       const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                       const std::string& where);

/// Signature of the per-op prepare functions the op table points to. They may assume that the
/// arity and input dtypes already match the op's table entry.
using PrepareFn = std::unique_ptr<PreparedOp> (*)(const Model& model, const Op& op,
                                                  const std::vector<ValueInfo>& inputs,
                                                  ValueInfo& output, const std::string& where);

// Per-op prepare functions, grouped by the source file (kernel family) that implements them.
// ops_binary.cpp
std::unique_ptr<PreparedOp> prepare_quantize(const Model&, const Op&, const std::vector<ValueInfo>&,
                                             ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_binary_conv2d(const Model&, const Op&,
                                                  const std::vector<ValueInfo>&, ValueInfo&,
                                                  const std::string&);
std::unique_ptr<PreparedOp> prepare_binary_dense(const Model&, const Op&,
                                                 const std::vector<ValueInfo>&, ValueInfo&,
                                                 const std::string&);
std::unique_ptr<PreparedOp> prepare_binary_maxpool2d(const Model&, const Op&,
                                                     const std::vector<ValueInfo>&, ValueInfo&,
                                                     const std::string&);
std::unique_ptr<PreparedOp> prepare_thermometer(const Model&, const Op&,
                                                const std::vector<ValueInfo>&, ValueInfo&,
                                                const std::string&);
// ops_float.cpp
std::unique_ptr<PreparedOp> prepare_conv2d(const Model&, const Op&, const std::vector<ValueInfo>&,
                                           ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_dense(const Model&, const Op&, const std::vector<ValueInfo>&,
                                          ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_batch_norm(const Model&, const Op&,
                                               const std::vector<ValueInfo>&, ValueInfo&,
                                               const std::string&);
std::unique_ptr<PreparedOp> prepare_pool2d(const Model&, const Op&, const std::vector<ValueInfo>&,
                                           ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_global_avgpool2d(const Model&, const Op&,
                                                     const std::vector<ValueInfo>&, ValueInfo&,
                                                     const std::string&);
std::unique_ptr<PreparedOp> prepare_add(const Model&, const Op&, const std::vector<ValueInfo>&,
                                        ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_relu(const Model&, const Op&, const std::vector<ValueInfo>&,
                                         ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_prelu(const Model&, const Op&, const std::vector<ValueInfo>&,
                                          ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_softmax(const Model&, const Op&, const std::vector<ValueInfo>&,
                                            ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_sigmoid(const Model&, const Op&, const std::vector<ValueInfo>&,
                                            ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_mul(const Model&, const Op&, const std::vector<ValueInfo>&,
                                        ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_clip(const Model&, const Op&, const std::vector<ValueInfo>&,
                                         ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_quantize_levels(const Model&, const Op&,
                                                    const std::vector<ValueInfo>&, ValueInfo&,
                                                    const std::string&);
// ops_layout.cpp
std::unique_ptr<PreparedOp> prepare_slice_channels(const Model&, const Op&,
                                                   const std::vector<ValueInfo>&, ValueInfo&,
                                                   const std::string&);
std::unique_ptr<PreparedOp> prepare_flatten(const Model&, const Op&, const std::vector<ValueInfo>&,
                                            ValueInfo&, const std::string&);
std::unique_ptr<PreparedOp> prepare_concat(const Model&, const Op&, const std::vector<ValueInfo>&,
                                           ValueInfo&, const std::string&);

/// A float for messages, with enough digits to tell neighbouring floats apart ("0.5",
/// "1.00000012", "-inf"), unlike std::to_string's fixed six decimals.
std::string float_string(float value);

/// "CxHxW" of a value, for messages.
std::string shape_string(const ValueInfo& v);

/// Row `row` (one pixel: `v.c` channels) of a float or bits value as floats: a pointer into the
/// buffer for float values, else the row unpacked to +-1 into `scratch` (at least `v.c` floats).
const float* row_as_floats(const ValueInfo& v, const Buffer& b, std::size_t row, float* scratch);

/// Geometry of a 2-D window op (conv or pool) on one image.
struct Window {
  std::int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  std::int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  std::int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  /// Input row of output row `oy` and tap `ky` (may be out of range).
  std::int64_t in_y(std::int64_t oy, std::int64_t ky) const { return oy * sh - pad_top + ky * dh; }
  std::int64_t in_x(std::int64_t ox, std::int64_t kx) const { return ox * sw - pad_left + kx * dw; }
};

/// Reads kernel/stride/dilation/pads attributes of `op` for an input of `in` and checks them.
Window read_window(const Op& op, const ValueInfo& in, const std::string& where,
                   bool stride_defaults_to_kernel);

/// Single-valued integer attribute `key` of `op` (or `fallback` when absent); throws naming
/// `where` when it holds more or fewer than one value.
std::int64_t scalar_attr(const Op& op, const std::string& key, std::int64_t fallback,
                         const std::string& where);

/// Required single-valued integer attribute `key` of `op` in [min, max]; throws naming `where`
/// when it is missing, has more or fewer than one value, or lies outside the range.
std::int64_t required_attr(const Op& op, const std::string& key, std::int64_t min, std::int64_t max,
                           const std::string& where);

/// A float stored in an integer attribute: its IEEE-754 binary32 bit pattern, 0 .. 2^32 - 1.
std::int64_t float_to_attr(float value);

/// Required float attribute `key` of `op` (stored as by `float_to_attr`); throws naming `where`
/// when it is missing, not one value in [0, 2^32) or NaN.
float float_attr(const Op& op, const std::string& key, const std::string& where);

/// Tensor `role` of `op` with the expected dtype (and rank); throws naming `where` otherwise.
/// (`role` by value: a `const std::string&` bound to a literal made GCC 13 warn of a dangling
/// reference at every call, wrongly: the result refers into `model`.)
const Tensor& op_tensor(const Model& model, const Op& op, std::string_view role, DType dtype,
                        const std::string& where);
/// True when `op` references a tensor under `role`.
bool has_tensor(const Op& op, const std::string& role);

/// run_tasks on `runner` (InterpreterOptions::task_runner) when set, else on the shared pool.
inline void run_tasks(std::size_t n, int threads, TaskFn fn, void* context, TaskRunner runner) {
  if (runner != nullptr) {
    runner(n, threads, fn, context);
  } else {
    run_tasks(n, threads, fn, context);
  }
}

/// Runs `fn(i)` for i in [0, n) on up to `threads` threads of the shared persistent pool (the
/// caller's thread included; see thread_pool.h). `fn` is called through a plain function
/// pointer, so nothing is allocated per call. Which thread runs which i varies between calls, so
/// every fn(i) must compute the same result wherever it runs.
/// With a `runner`, the tasks go to it instead of the pool.
template <typename Fn>
void parallel_for(std::size_t n, int threads, Fn&& fn, TaskRunner runner = nullptr) {
  using F = std::remove_reference_t<Fn>;
  if (threads <= 1 || n <= 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  run_tasks(
      n, threads, [](void* f, std::size_t i) { (*static_cast<F*>(f))(i); },
      const_cast<void*>(static_cast<const void*>(&fn)), runner);
}

/// parallel_for on `ctx`'s threads and task runner.
template <typename Fn>
void parallel_for(std::size_t n, const RunContext& ctx, Fn&& fn) {
  parallel_for(n, ctx.threads, std::forward<Fn>(fn), ctx.task_runner);
}

/// Element-wise work below which an op runs on the calling thread: waking workers and sharing
/// cache lines costs more than it saves for a few microseconds of work.
inline constexpr std::size_t kMinParallelElements = 32768;

/// Runs `fn(begin, end)` over `rows` rows (pixels) of `row_elements` elements each: on the
/// calling thread as one range when the total is small or `threads` is 1, else as `threads`
/// equal ranges on the pool. For ops whose every output row depends only on its own inputs,
/// so the results do not depend on the split.
template <typename Fn>
void parallel_rows(std::size_t rows, std::size_t row_elements, const RunContext& ctx, Fn&& fn) {
  const auto t = static_cast<std::size_t>(ctx.threads < 1 ? 1 : ctx.threads);
  if (t == 1 || rows < 2 || rows * row_elements < kMinParallelElements) {
    fn(std::size_t{0}, rows);
    return;
  }
  const std::size_t ranges = std::min(rows, t);
  parallel_for(ranges, ctx, [&](std::size_t i) { fn(rows * i / ranges, rows * (i + 1) / ranges); });
}

/// One row of a zero-bordered image, `row` elements: `left` zeros, `width` elements from `from`,
/// zeros to the end; all zeros when `from` is null (a border row). Shared by the convs that read
/// a padded copy of their input.
template <typename T>
void fill_bordered_row(T* to, const T* from, std::size_t left, std::size_t width, std::size_t row) {
  if (from == nullptr) {
    std::fill(to, to + row, T{});
    return;
  }
  std::fill(to, to + left, T{});
  std::copy(from, from + width, to + left);
  std::fill(to + left + width, to + row, T{});
}

/// How a binary conv's GEMM of one image (`rows` output pixels x `panels` panels of 8 output
/// channels) is cut into tasks: `row_chunks` chunks of `chunk_rows` rows (a multiple of 4 on one
/// thread; on more, any count when that shares the rows more evenly; the last chunk shorter) times
/// `col_blocks` blocks of `block_panels` panels (the last shorter).
struct ConvSplit {
  std::size_t chunk_rows = 0, row_chunks = 1, block_panels = 0, col_blocks = 1;
};

/// Picks the split of `images` GEMMs for `threads` threads: one thread gets chunks of at most
/// `max_rows` rows and whole columns; more threads get the split with the shortest estimated
/// time when equal tasks are shared out (output channels are cut only when `split_columns`).
/// Every split computes each output element the same way.
ConvSplit plan_conv_split(std::size_t images, std::size_t rows, std::size_t panels,
                          std::size_t k_words, std::size_t max_rows, int threads,
                          bool split_columns);

/// A thread's reusable scratch memory: at least `words` 8-byte words, 64-byte aligned, valid
/// until the same thread asks for the same `slot` again. Ops use it instead of allocating per
/// run; slots 0, 1 and 2 may be held at the same time.
std::uint64_t* thread_scratch(std::size_t words, int slot = 0);

}  // namespace onebit::runtime::detail
