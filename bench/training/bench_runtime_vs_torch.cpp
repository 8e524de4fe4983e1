// The whole larq-mnist model: onebit_runtime vs LibTorch eval mode, one thread, batch 1 and 64.
//   build/bench/bench_training --benchmark_filter=LarqMnist
// Counter: images_per_second. The model is untrained (random weights): speed does not depend
// on the values.

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <memory>

#include "onebit/convert.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/zoo/models.h"

namespace {

struct LarqMnist {
  onebit::nn::Graph model = onebit::zoo::build("larq-mnist");
  std::unique_ptr<onebit::runtime::Interpreter> net;
  LarqMnist() {
    model->eval();
    net = std::make_unique<onebit::runtime::Interpreter>(onebit::convert(model, {1, 28, 28}));
  }
};

LarqMnist& larq_mnist() {
  static LarqMnist m;
  return m;
}

at::Tensor images(int64_t batch) { return at::rand({batch, 1, 28, 28}).mul_(2).sub_(1); }

void set_images_per_second(benchmark::State& state, int64_t batch) {
  state.counters["images_per_second"] =
      benchmark::Counter(static_cast<double>(batch) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void BM_LarqMnistRuntime(benchmark::State& state) {
  const int64_t batch = state.range(0);
  LarqMnist& m = larq_mnist();
  m.net->set_threads(1);
  const at::Tensor x = images(batch);
  for (auto _ : state) {
    benchmark::DoNotOptimize(m.net->run(x.data_ptr<float>(), static_cast<size_t>(x.numel()),
                                        static_cast<size_t>(batch)));
  }
  set_images_per_second(state, batch);
}

void BM_LarqMnistTorch(benchmark::State& state) {
  const int64_t batch = state.range(0);
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  LarqMnist& m = larq_mnist();
  const at::Tensor x = images(batch);
  for (auto _ : state) benchmark::DoNotOptimize(m.model->forward(x));
  set_images_per_second(state, batch);
}

BENCHMARK(BM_LarqMnistRuntime)->Arg(1)->Arg(64)->MinTime(0.2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LarqMnistTorch)->Arg(1)->Arg(64)->MinTime(0.2)->Unit(benchmark::kMicrosecond);

}  // namespace
