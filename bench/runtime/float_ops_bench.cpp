// Float ops at QuickNet's shapes (3x224x224 input), batch 1, one thread, each op alone:
//   build-rt/bench/bench_runtime --benchmark_filter=Float --benchmark_repetitions=5 \
//       --benchmark_report_aggregates_only=true
// Counters: flops_per_s = 2 * float MACs / s for convs and dense; bytes_per_s = bytes read and
// written / s for the elementwise and pooling ops. ONEBIT_ISA=reference|avx2|avx512 picks the
// kernels.

#include <benchmark/benchmark.h>

#include <random>
#include <string>

#include "float_shapes.h"
#include "onebit/runtime/bench.h"
#include "onebit/runtime/builder.h"

namespace {

using namespace onebit::runtime;

std::vector<float> random_weights(std::size_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> w(n);
  for (float& v : w) v = normal(rng);
  return w;
}

// Times op `op` of `model` and reports FLOP/s (float MACs) or bytes/s (`bytes_per_run`).
void time_op(benchmark::State& state, const Model& model, std::size_t op, double bytes_per_run,
             const std::string& label) {
  OpBench bench(model, op);
  bench.run();  // warm-up: caches, page faults
  for (auto _ : state) bench.run();
  const auto runs = static_cast<double>(state.iterations());
  if (bench.float_macs() > 0) {
    state.counters["flops_per_s"] = benchmark::Counter(
        2.0 * static_cast<double>(bench.float_macs()) * runs, benchmark::Counter::kIsRate);
  } else {
    state.counters["bytes_per_s"] =
        benchmark::Counter(bytes_per_run * runs, benchmark::Counter::kIsRate);
  }
  state.SetLabel(label);
}

// Depthwise 3x3 "same" conv (groups = channels): args channels, input size, stride.
void BM_FloatDepthwise3x3(benchmark::State& state) {
  const std::int64_t c = state.range(0), hw = state.range(1), stride = state.range(2);
  ModelBuilder b;
  b.output(b.conv2d(b.input({c, hw, hw}),
                    Conv2dParams(c, 3).stride(stride).groups_count(c).padding(PaddingMode::kSame),
                    random_weights(static_cast<std::size_t>(c * 9)), random_weights(c)));
  time_op(state, b.build(), 0, 0.0,
          std::to_string(c) + "x" + std::to_string(hw) + "x" + std::to_string(hw) + " s" +
              std::to_string(stride));
}
BENCHMARK(BM_FloatDepthwise3x3)
    ->Args({16, 112, 2})
    ->Args({64, 55, 2})
    ->Args({128, 27, 2})
    ->Args({256, 13, 2})
    ->Args({64, 56, 1})
    ->MinTime(0.1)
    ->Unit(benchmark::kMicrosecond);

// 1x1 conv: args input channels, output channels, size.
void BM_FloatConv1x1(benchmark::State& state) {
  const std::int64_t cin = state.range(0), cout = state.range(1), hw = state.range(2);
  ModelBuilder b;
  b.output(b.conv2d(b.input({cin, hw, hw}), Conv2dParams(cout, 1),
                    random_weights(static_cast<std::size_t>(cin * cout)), random_weights(cout)));
  time_op(state, b.build(), 0, 0.0,
          std::to_string(cin) + "->" + std::to_string(cout) + " at " + std::to_string(hw));
}
BENCHMARK(BM_FloatConv1x1)
    ->Apply(onebit::bench_shapes::conv1x1)
    ->MinTime(0.1)
    ->Unit(benchmark::kMicrosecond);

// General kxk "same" conv: args input channels, output channels, size, kernel, stride, groups.
void BM_FloatConv(benchmark::State& state) {
  const std::int64_t cin = state.range(0), cout = state.range(1), hw = state.range(2);
  const std::int64_t k = state.range(3), stride = state.range(4), groups = state.range(5);
  ModelBuilder b;
  b.output(b.conv2d(
      b.input({cin, hw, hw}),
      Conv2dParams(cout, k).stride(stride).groups_count(groups).padding(PaddingMode::kSame),
      random_weights(static_cast<std::size_t>(cout * cin / groups * k * k)), random_weights(cout)));
  time_op(state, b.build(), 0, 0.0,
          std::to_string(cin) + "->" + std::to_string(cout) + " " + std::to_string(k) + "x" +
              std::to_string(k) + " s" + std::to_string(stride) + " g" + std::to_string(groups) +
              " at " + std::to_string(hw));
}
BENCHMARK(BM_FloatConv)
    ->Apply(onebit::bench_shapes::conv)
    ->MinTime(0.1)
    ->Unit(benchmark::kMicrosecond);

// Dense layer: args input features, output features.
void BM_FloatDense(benchmark::State& state) {
  const std::int64_t in = state.range(0), out = state.range(1);
  ModelBuilder b;
  b.output(b.dense(b.input({in}), DenseParams(out),
                   random_weights(static_cast<std::size_t>(in * out)), random_weights(out)));
  time_op(state, b.build(), 0, 0.0, std::to_string(in) + "->" + std::to_string(out));
}
BENCHMARK(BM_FloatDense)
    ->Apply(onebit::bench_shapes::dense)
    ->MinTime(0.1)
    ->Unit(benchmark::kMicrosecond);

// Elementwise and pooling ops on 64x56x56: arg 0 relu, 1 batch norm, 2 add, 3 max pool 3x3 s2.
void BM_FloatElementwise(benchmark::State& state) {
  const std::int64_t c = 64, hw = 56;
  const double bytes = static_cast<double>(c * hw * hw) * sizeof(float);
  ModelBuilder b;
  const ValueRef x = b.input({c, hw, hw});
  switch (state.range(0)) {
    case 0:
      b.output(b.relu(x));
      return time_op(state, b.build(), 0, 2 * bytes, "relu 64x56x56");
    case 1:
      b.output(b.batch_norm(x, random_weights(c), random_weights(c)));
      return time_op(state, b.build(), 0, 2 * bytes, "batch_norm 64x56x56");
    case 2:
      b.output(b.add(x, b.relu(x)));
      return time_op(state, b.build(), 1, 3 * bytes, "add 64x56x56");
    default:
      b.output(b.max_pool2d(x, Pool2dParams(3).stride(2).padding(PaddingMode::kSame)));
      return time_op(state, b.build(), 0, 1.25 * bytes, "max_pool 3x3 s2 64x56x56");
  }
}
BENCHMARK(BM_FloatElementwise)->DenseRange(0, 3)->MinTime(0.1)->Unit(benchmark::kMicrosecond);

}  // namespace
