// Training throughput of larq-mnist with quantizers on (the BNN) and off (the float copy): the
// cost of binarization in training. Run: build/bench/bench_training --benchmark_filter=TrainStep
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/optim/adam.h>

#include "onebit/constraints.h"
#include "onebit/nn/training_kernels.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace {

void BM_TrainStep(benchmark::State& state) {
  const bool quantized = state.range(0) != 0;
  const bool binary_kernels = state.range(0) == 2;
  const int64_t batch = state.range(1);
  onebit::nn::set_intra_op_threads(static_cast<int>(state.range(2)));
  onebit::nn::retain_freed_memory();
  const onebit::nn::TrainingKernelsGuard kernels(
      binary_kernels ? onebit::nn::TrainingKernels::kBinary : onebit::nn::TrainingKernels::kFloat);
  at::manual_seed(0);
  onebit::zoo::ModelOptions o;
  o.quantized = quantized;
  auto model = onebit::zoo::build("larq-mnist", o);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-3));
  auto x = at::rand({batch, 1, 28, 28}) * 2 - 1;
  auto y = at::randint(10, {batch});
  model->train();
  for (auto _ : state) {
    opt.zero_grad();
    auto [loss, correct] = onebit::train::loss_and_correct(model->forward(x), y);
    loss.backward();
    opt.step();
    onebit::apply_constraints(*model);
    benchmark::DoNotOptimize(correct);
  }
  state.counters["images_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
  state.SetLabel(binary_kernels ? "bnn, binary kernels"
                 : quantized    ? "bnn, float kernels"
                                : "float");
}

}  // namespace

// Args: mode (2 = BNN on onebit's binary training kernels, 1 = BNN on LibTorch's float kernels,
// 0 = the float copy), batch size, threads.
BENCHMARK(BM_TrainStep)
    ->ArgNames({"mode", "batch", "threads"})
    ->Args({2, 64, 1})
    ->Args({1, 64, 1})
    ->Args({0, 64, 1})
    ->Args({2, 64, 2})
    ->Args({1, 64, 2})
    ->Args({0, 64, 2})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
