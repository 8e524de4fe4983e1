// 3x3 binary convolutions at ResNet-style shapes, batch 1, one thread:
//   build-rt/bench/bench_runtime --benchmark_filter=BinaryConv
// Counters: binary_macs_per_s, percent_of_peak (of this core's peak binary MACs per cycle for
// the ISA in use, measured at start by onebit::runtime::binary_peak, at the measured core clock
// clock_ghz), and with LibTorch (ONEBIT_HAVE_TORCH) the float conv2d of the same shape. The
// peak itself: BM_BinaryPeak.

#include <benchmark/benchmark.h>

#include <string>

#include "onebit/runtime/bench.h"

#ifdef ONEBIT_HAVE_TORCH
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#endif

namespace {

using onebit::runtime::BinaryConvShape;

void BM_BinaryConv3x3(benchmark::State& state) {
  BinaryConvShape shape;
  shape.channels = state.range(0);
  shape.height = shape.width = state.range(1);
  onebit::runtime::BinaryConvBench bench(shape, 1);
  const double peak_per_cycle =
      onebit::runtime::binary_peak(onebit::runtime::active_kernels().isa).binary_macs_per_cycle;
  const double clock_hz = onebit::runtime::measure_core_clock_hz();
  for (auto _ : state) bench.run();
  const double macs =
      static_cast<double>(shape.binary_macs()) * static_cast<double>(state.iterations());
  state.counters["binary_macs_per_s"] = benchmark::Counter(macs, benchmark::Counter::kIsRate);
  state.counters["clock_ghz"] = clock_hz * 1e-9;
  // percent_of_peak = MACs / (seconds * clock * peak per cycle) * 100, as a rate over the timed
  // seconds.
  state.counters["percent_of_peak"] =
      benchmark::Counter(macs * 100.0 / (clock_hz * peak_per_cycle), benchmark::Counter::kIsRate);
  state.SetLabel(shape.name());
}

// The peak of every ISA this CPU has: binary MACs per second and per cycle of one core.
void BM_BinaryPeak(benchmark::State& state) {
  const auto isas = onebit::runtime::supported_isas();
  const auto index = static_cast<std::size_t>(state.range(0));
  if (index >= isas.size()) {
    state.SkipWithError("this CPU has fewer instruction sets");
    return;
  }
  const auto isa = isas[index];
  onebit::runtime::BinaryPeak p;
  for (auto _ : state) p = onebit::runtime::measure_binary_peak(&onebit::runtime::kernels_for(isa));
  state.counters["binary_macs_per_s"] = p.binary_macs_per_s;
  state.counters["binary_macs_per_cycle"] = p.binary_macs_per_cycle;
  state.counters["clock_ghz"] = p.clock_hz * 1e-9;
  state.SetLabel(std::string(onebit::runtime::isa_name(isa)) + ", " + p.cpu);
}
BENCHMARK(BM_BinaryPeak)->DenseRange(0, 2)->Iterations(1)->Unit(benchmark::kMillisecond);

void shapes(benchmark::internal::Benchmark* b) {
  for (int c : {64, 128, 256, 512}) {
    for (int hw : {56, 28, 14, 7}) b->Args({c, hw});
  }
}

BENCHMARK(BM_BinaryConv3x3)->Apply(shapes)->MinTime(0.1)->Unit(benchmark::kMicrosecond);

#ifdef ONEBIT_HAVE_TORCH
void BM_FloatConv3x3Torch(benchmark::State& state) {
  at::set_num_threads(1);
  const int64_t c = state.range(0), hw = state.range(1);
  const at::Tensor x = at::randn({1, c, hw, hw});
  const at::Tensor w = at::randn({c, c, 3, 3});
  for (auto _ : state) benchmark::DoNotOptimize(at::conv2d(x, w, {}, 1, 1));
  const double macs =
      static_cast<double>(hw * hw * c * c * 9) * static_cast<double>(state.iterations());
  state.counters["float_macs_per_s"] = benchmark::Counter(macs, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_FloatConv3x3Torch)->Apply(shapes)->MinTime(0.1)->Unit(benchmark::kMicrosecond);
#endif

}  // namespace
