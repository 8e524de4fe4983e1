#pragma once
/// \file
/// Timing helpers shared by bench/runtime and the `onebit bench` command, so that the timing
/// loop and the peak arithmetic exist once.
///
/// Example:
/// \code
///   auto r = onebit::runtime::bench_binary_conv({256, 14, 14}, /*threads=*/1,
///   /*min_seconds=*/0.2); std::printf("%s %.3g MAC/s %.1f%% of peak\n", r.shape.c_str(),
///   r.binary_macs_per_s,
///               r.percent_of_peak);
/// \endcode

#include <cstdint>
#include <memory>
#include <string>

#include "onebit/runtime/kernels.h"
#include "onebit/runtime/model.h"

namespace onebit::runtime {

/// Peak binary MACs per cycle per core of the development machine (Zen 5, AVX-512 VPOPCNTDQ:
/// 1.33 xor+popcount+add triples of 512 bits per cycle), see docs/runtime.md.
inline constexpr double kPeakBinaryMacsPerCycle = 682.0;

/// A square binary convolution as found in ResNet-style BNNs: `channels` in and out, stride 1,
/// "same" one-padding, bit-packed input, fused threshold (bit-packed) output by default.
struct BinaryConvShape {
  std::int64_t channels = 64;  ///< Input and output channels.
  std::int64_t height = 56;    ///< Input (= output) height.
  std::int64_t width = 56;     ///< Input (= output) width.
  std::int64_t kernel = 3;     ///< Square kernel size.
  std::int64_t batch = 1;      ///< Images per run.
  bool output_bits = true;     ///< false: float output (dot * multiplier + bias).
  /// "CxHxW", e.g. "256x14x14".
  std::string name() const;
  /// Binary MACs of one run: batch * H * W * C_out * C_in * k * k.
  std::int64_t binary_macs() const;
};

/// Result of a timed benchmark.
struct BenchResult {
  std::string shape;            ///< `BinaryConvShape::name()`.
  std::string isa;              ///< Kernel table used.
  int threads = 1;              ///< Threads used.
  std::int64_t iterations = 0;  ///< Timed runs.
  double seconds_per_run = 0;   ///< Mean wall time of one run.
  double binary_macs_per_s = 0;
  double clock_hz = 0;  ///< Measured core clock (see `measure_core_clock_hz`).
  /// 100 * MAC/s / (clock_hz * kPeakBinaryMacsPerCycle * threads).
  double percent_of_peak = 0;
};

/// A prepared binary conv with its packed input and output buffers, for timing loops.
class BinaryConvBench {
 public:
  /// Prepares the conv with random +-1 weights, thresholds and input.
  explicit BinaryConvBench(const BinaryConvShape& shape, int threads = 1,
                           const KernelTable* kernels = nullptr);
  ~BinaryConvBench();
  BinaryConvBench(const BinaryConvBench&) = delete;
  BinaryConvBench& operator=(const BinaryConvBench&) = delete;
  /// Runs the conv once (the input stays packed; no quantize, no transposes).
  void run();
  /// The shape being timed.
  const BinaryConvShape& shape() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// One op of a model prepared and run alone, for timing loops of the non-binary ops (float
/// conv2d, dense, batch norm, pooling, elementwise) without the interpreter's NCHW <-> NHWC
/// transposes and buffer allocations.
///
/// Example (a float 1x1 conv, 64 -> 128 channels at 28x28):
/// \code
///   ModelBuilder b;
///   b.output(b.conv2d(b.input({64, 28, 28}), Conv2dParams(128, 1), weights));
///   OpBench bench(b.build(), 0);
///   bench.run();  // time this
/// \endcode
class OpBench {
 public:
  /// Prepares op `op_index` of `model` (the ops before it only for the shapes of its inputs)
  /// and fills its inputs with random values: normal floats, or random bits. Throws
  /// `std::out_of_range` when the model has no op `op_index`, `ModelError` when it is invalid.
  OpBench(const Model& model, std::size_t op_index, std::int64_t batch = 1, int threads = 1,
          const KernelTable* kernels = nullptr);
  ~OpBench();
  OpBench(const OpBench&) = delete;
  OpBench& operator=(const OpBench&) = delete;
  /// Runs the op once on `batch` images.
  void run();
  /// Float multiply-accumulates of one run (float conv2d and dense; 0 for other ops).
  std::int64_t float_macs() const;
  /// Output elements (channels x pixels x images) of one run.
  std::int64_t output_elements() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Measures the current core clock: a chain of dependent 1-cycle integer adds timed against
/// std::chrono::steady_clock (best of 20 trials of about 1 ms each, so a trial preempted by
/// another process does not lower the result).
double measure_core_clock_hz();

/// Times `BinaryConvBench` for at least `min_seconds` and fills every field of `BenchResult`.
BenchResult bench_binary_conv(const BinaryConvShape& shape, int threads, double min_seconds,
                              const KernelTable* kernels = nullptr);

}  // namespace onebit::runtime
