#pragma once
/// \file
/// Timing helpers shared by bench/runtime and the `onebit bench` command, so that the timing
/// loop and the peak arithmetic exist once. The peak is measured on the machine that runs
/// (`measure_binary_peak`), never taken from a constant.
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

/// The peak binary throughput of one core of this machine for one instruction set, measured
/// (`measure_binary_peak`): the ISA's peak loop (`KernelTable::binary_peak_loop`: XOR +
/// popcount + add on many independent registers, no memory access) timed on the calling thread.
struct BinaryPeak {
  Isa isa = Isa::kReference;         ///< The kernel table whose loop was timed.
  std::string cpu;                   ///< CPU model name (`cpu_model_name`).
  double clock_hz = 0;               ///< Core clock measured with it (`measure_core_clock_hz`).
  double binary_macs_per_s = 0;      ///< Best rate over the timed trials.
  double binary_macs_per_cycle = 0;  ///< binary_macs_per_s / clock_hz.
  std::uint64_t binary_macs = 0;     ///< MACs of one timed trial.
  int trials = 0;                    ///< Timed trials (the best one counts).
};

/// Measures this core's peak binary throughput for `kernels`' ISA (nullptr: the active table):
/// its peak loop runs in `trials` trials of about `seconds_per_trial` each after a short
/// calibration, and the fastest trial counts, so a trial preempted by another process does not
/// lower the result; the clock is measured right after. Takes about
/// trials * seconds_per_trial + 25 ms. Throws `std::invalid_argument` for trials < 1 or a
/// non-positive time. Example:
/// \code
///   const BinaryPeak p = measure_binary_peak();
///   std::printf("%s, %s: %.0f G binary MAC/s, %.0f per cycle at %.2f GHz\n", p.cpu.c_str(),
///               isa_name(p.isa), p.binary_macs_per_s * 1e-9, p.binary_macs_per_cycle,
///               p.clock_hz * 1e-9);
/// \endcode
BinaryPeak measure_binary_peak(const KernelTable* kernels = nullptr, int trials = 5,
                               double seconds_per_trial = 0.004);

/// `measure_binary_peak` of `isa` with the defaults, measured on the first call for each ISA
/// and then returned from a cache (thread-safe), so that every percent of peak of one process
/// refers to the same measurement.
const BinaryPeak& binary_peak(Isa isa);

/// The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC 7B13 64-Core Processor"), with
/// "family F model M" appended where the file has them; "unknown CPU" where it cannot be read.
std::string cpu_model_name();

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
  double clock_hz = 0;  ///< Core clock measured before the timed runs.
  /// Peak of one core for `isa`, `binary_peak(isa)`: MACs per cycle.
  double peak_binary_macs_per_cycle = 0;
  /// 100 * (MAC/s / clock_hz) / (peak_binary_macs_per_cycle * threads): the kernel's MACs per
  /// cycle against the measured peak of the ISA it ran on, on as many cores as threads.
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
