// Whole small models through the Interpreter, without LibTorch, for iterating on the runtime's
// per-run overhead:
//   build-rt/bench/bench_runtime --benchmark_filter=LarqMnist --benchmark_repetitions=5 \
//       --benchmark_report_aggregates_only=true
// BM_LarqMnistShaped/batch/threads: the layers of Larq's MNIST CNN as the converter lowers them
// (float conv with +-1 weights, max pool, batch norm, sign, binary conv -> max pool -> batch norm
// -> sign fused into bit output + binary max pool, binary conv, flatten, binary dense x 2),
// random weights (speed does not depend on them). Counter: images_per_s.

#include <benchmark/benchmark.h>

#include <random>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"

namespace {

using namespace onebit::runtime;

Model larq_mnist_shaped() {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> coin(0, 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto signs = [&](std::size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = coin(rng) ? 1.0f : -1.0f;
    return v;
  };
  const auto bn = [&](ModelBuilder& b, ValueRef x, std::size_t c) {
    std::vector<float> m(c), a(c);
    for (std::size_t i = 0; i < c; ++i) m[i] = 0.5f + 0.1f * normal(rng), a[i] = normal(rng);
    return b.batch_norm(x, m, a);
  };
  ModelBuilder b;
  ValueRef x = b.input({1, 28, 28});
  x = b.conv2d(x, Conv2dParams(32, 3).binary_kernel(true), signs(32 * 9));
  x = bn(b, b.max_pool2d(x, Pool2dParams(2)), 32);
  x = b.conv2d(b.sign(x), Conv2dParams(64, 3).binary_kernel(true), signs(64 * 32 * 9));
  x = bn(b, b.max_pool2d(x, Pool2dParams(2)), 64);
  x = b.conv2d(b.sign(x), Conv2dParams(64, 3).binary_kernel(true), signs(64 * 64 * 9));
  x = b.flatten(bn(b, x, 64));
  x = bn(b, b.dense(b.sign(x), DenseParams(64).binary_kernel(true), signs(64 * 576)), 64);
  x = bn(b, b.dense(b.sign(x), DenseParams(10).binary_kernel(true), signs(10 * 64)), 10);
  b.output(x);
  return b.build();
}

void BM_LarqMnistShaped(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  InterpreterOptions options;
  options.threads = static_cast<int>(state.range(1));
  const Interpreter net(larq_mnist_shaped(), options);
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> images(batch * 784);
  for (float& v : images) v = u(rng);
  net.run(images, batch);  // warm-up: arena, caches, thread pool
  for (auto _ : state) benchmark::DoNotOptimize(net.run(images, batch));
  state.counters["images_per_s"] =
      benchmark::Counter(static_cast<double>(batch) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LarqMnistShaped)
    ->Args({1, 1})
    ->Args({64, 1})
    ->Args({1, 2})
    ->Args({64, 2})
    ->MinTime(0.2)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
