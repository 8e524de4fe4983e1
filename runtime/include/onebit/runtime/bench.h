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

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "onebit/runtime/interpreter.h"
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
/// trials * seconds_per_trial + 45 ms (calibration, a 20 ms warm-up, the clock). Throws
/// `std::invalid_argument` for trials < 1 or a non-positive time. Example: \code
///   const BinaryPeak p = measure_binary_peak();
///   std::printf("%s, %s: %.0f G binary MAC/s, %.0f per cycle at %.2f GHz\n", p.cpu.c_str(),
///               isa_name(p.isa), p.binary_macs_per_s * 1e-9, p.binary_macs_per_cycle,
///               p.clock_hz * 1e-9);
/// \endcode
BinaryPeak measure_binary_peak(const KernelTable* kernels = nullptr, int trials = 10,
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
  double clock_hz = 0;  ///< Core clock measured before the timed runs (for information).
  /// Peak of one core for `isa`, `binary_peak(isa)`: MACs per cycle and per second.
  double peak_binary_macs_per_cycle = 0;
  double peak_binary_macs_per_s = 0;
  /// 100 * MAC/s / (peak_binary_macs_per_s * threads): the kernel's throughput against the
  /// measured peak of the ISA it ran on, on as many cores as threads. A ratio of two rates
  /// measured on this core, so a noisy clock measurement does not enter it.
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

/// Seconds elapsed since `t0` on the steady clock.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Median of `values` (0 for none; the mean of the two middle values for an even count).
double median(std::vector<double> values);

/// Runs `fn` once to warm up, then repeatedly until at least `min_seconds` have passed and at
/// least `min_runs` runs were timed; returns the median seconds of one run. Medians, because the
/// machines these run on are shared and a mean is pulled up by every preemption.
template <typename Fn>
double median_seconds_per_run(Fn&& fn, double min_seconds, int min_runs = 3) {
  fn();
  std::vector<double> times;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(seconds_since(t0));
  } while (seconds_since(start) < min_seconds || static_cast<int>(times.size()) < min_runs);
  return median(std::move(times));
}

/// Peak resident memory of this process so far (VmHWM of /proc/self/status), in bytes; 0 where
/// it cannot be read.
std::size_t peak_rss_bytes();

/// One op of `ModelProfile`: the op's identity and MACs from its first profiled run and the
/// median of its times over all runs.
struct OpProfile {
  OpTiming op;                ///< Index, type, name, family and MACs (`seconds`: first run).
  double median_seconds = 0;  ///< Median wall time over the profiled runs.
  double share = 0;           ///< median_seconds / ModelProfile::total_seconds.
};

/// Where a model's time goes: the per-op medians of several profiled runs
/// (`Interpreter::run_profiled`), in op order.
struct ModelProfile {
  std::vector<OpProfile> ops;  ///< One row per op, in the model's order.
  int runs = 0;                ///< Profiled runs the medians were taken over (after a warm-up).
  double total_seconds = 0;    ///< Sum of the ops' medians.
  double binary_seconds = 0;   ///< Sum of the medians of ops of the binary family.
  /// binary_seconds / total_seconds (0 for an empty profile).
  double binary_share() const { return total_seconds > 0 ? binary_seconds / total_seconds : 0; }
};

/// Profiles `net` on `batch` images (`input`, `size` floats): one warm-up run, then `runs`
/// profiled runs; each op's median time. Throws `std::invalid_argument` for runs < 1 and what
/// `Interpreter::run_profiled` throws for a wrong input size. Example:
/// \code
///   const ModelProfile p = profile_model(net, image.data(), image.size(), 1, 20);
///   for (const OpProfile& r : p.ops)
///     std::printf("%-30s %8.3f ms %5.1f%%\n", r.op.name.c_str(), r.median_seconds * 1e3,
///                 100 * r.share);
/// \endcode
ModelProfile profile_model(const Interpreter& net, const float* input, std::size_t size,
                           std::size_t batch, int runs);

}  // namespace onebit::runtime
