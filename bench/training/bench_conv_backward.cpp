// The binary training path's convolution gradient: LibTorch's convolution_backward (oneDNN) against
// onebit's matrix products of NHWC patches (nn::detail::conv2d_backward_gemm), input and kernel
// gradient of a 3x3 convolution at batch 64, channels-last, on the grid that set the rule "64 or
// more output channels use the products" (src/nn/training_kernels.cpp). Interleave the two with
// --benchmark_enable_random_interleaving=true on a noisy machine. Run:
//   build/bench/bench_training --benchmark_filter=BM_ConvBackward/ --benchmark_repetitions=5 \
//     --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <array>
#include <string>

#include "onebit/nn/training_kernels.h"
#include "onebit/quantizers.h"

namespace {

void BM_ConvBackward(benchmark::State& state) {
  const int64_t c = state.range(0), o = state.range(1), map = state.range(2);
  const bool gemm = state.range(3) != 0;
  onebit::nn::set_intra_op_threads(static_cast<int>(state.range(4)));
  onebit::nn::retain_freed_memory();
  at::manual_seed(0);
  const int64_t n = 64, out = map - 2;  // `map` includes the padding: a valid 3x3 convolution
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor x = at::randn({n, c, map, map}).sign().contiguous(cl);
  const at::Tensor w = at::randn({o, c, 3, 3}).sign();
  const at::Tensor g = at::randn({n, o, out, out}).contiguous(cl);
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  for (auto _ : state) {
    if (gemm) {
      auto r = onebit::nn::detail::conv2d_backward_gemm(g, x, w, one, zero, one, true, true);
      benchmark::DoNotOptimize(r.first.data_ptr());
    } else {
      auto r = at::convolution_backward(g, x, w, at::OptionalIntArrayRef(), one, zero, one, false,
                                        zero, 1, {true, true, false});
      benchmark::DoNotOptimize(std::get<0>(r).data_ptr());
    }
  }
  // Multiply-adds of both gradients: 2 x (outputs x kernel).
  const double flops = 2.0 * 2.0 * static_cast<double>(n * out * out * o * c * 9);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(gemm ? "matrix products" : "LibTorch convolution_backward");
}

void ConvBackwardGrid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"in", "out", "map", "gemm", "threads"});
  for (int64_t threads : {1, 2}) {
    for (int64_t map : {5, 9, 13, 16, 30}) {
      for (int64_t c : {32, 64, 128}) {
        for (int64_t o : {32, 64, 128}) {
          for (int64_t gemm : {0, 1}) b->Args({c, o, map, gemm, threads});
        }
      }
    }
  }
}

// DenseNet's layers: many input channels (the concatenation so far), 64 output channels.
void ConvBackwardWideInputs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"in", "out", "map", "gemm", "threads"});
  for (int64_t threads : {1, 2}) {
    for (int64_t map : {10, 18, 34}) {
      for (int64_t c : {192, 384}) {
        for (int64_t gemm : {0, 1}) b->Args({c, 64, map, gemm, threads});
      }
    }
  }
}

// Deep layers: 256-512 channels on the 1x1 to 4x4 maps of a 32x32 input (QuickNet and the
// ResNets at CIFAR size), where oneDNN's gradient was slow on AVX2.
void ConvBackwardDeepLayers(benchmark::internal::Benchmark* b) {
  b->ArgNames({"in", "out", "map", "gemm", "threads"});
  for (int64_t threads : {1, 2}) {
    for (int64_t map : {3, 4, 6}) {
      for (int64_t c : {256, 512}) {
        for (int64_t gemm : {0, 1}) b->Args({c, c, map, gemm, threads});
      }
    }
  }
}

// The same gradients when only `density` percent of the output gradient's entries are nonzero
// (a max pool's gradient: about 25%), each entry kept with that probability: LibTorch (mode 0),
// the matrix products on the dense gradient (1) and on the sparse one (2; the runtime's
// csr_sgemm). Sets kSparseGradientDensity. Run:
//   build/bench/bench_training --benchmark_filter=ConvBackwardSparse --benchmark_repetitions=5 \
//     --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
void BM_ConvBackwardSparse(benchmark::State& state) {
  const int64_t c = state.range(0), o = state.range(1), map = state.range(2);
  const double density = static_cast<double>(state.range(3)) / 100.0;
  const int64_t mode = state.range(4);
  onebit::nn::set_intra_op_threads(static_cast<int>(state.range(5)));
  onebit::nn::retain_freed_memory();
  at::manual_seed(0);
  const int64_t n = 64, out = map - 2;
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor x = at::randn({n, c, map, map}).sign().contiguous(cl);
  const at::Tensor w = at::randn({o, c, 3, 3}).sign();
  const at::Tensor keep = at::rand({n, o, out, out}).lt(density).to(at::kFloat);
  const at::Tensor g = (at::randn({n, o, out, out}) * keep).contiguous(cl);
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  for (auto _ : state) {
    if (mode == 0) {
      auto r = at::convolution_backward(g, x, w, at::OptionalIntArrayRef(), one, zero, one, false,
                                        zero, 1, {true, true, false});
      benchmark::DoNotOptimize(std::get<0>(r).data_ptr());
    } else {
      auto r = onebit::nn::detail::conv2d_backward_gemm(g, x, w, one, zero, one, true, true,
                                                        int64_t{256} << 10, mode == 2 ? 1.0 : 0.0);
      benchmark::DoNotOptimize(r.first.data_ptr());
    }
  }
  const double flops = 2.0 * 2.0 * static_cast<double>(n * out * out * o * c * 9);
  state.counters["dense GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(mode == 0   ? "LibTorch convolution_backward"
                 : mode == 1 ? "matrix products, dense gradient"
                             : "matrix products, sparse gradient");
}

void ConvBackwardSparseGrid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"in", "out", "map", "density", "mode", "threads"});
  for (int64_t threads : {1, 2}) {
    for (int64_t density : {10, 25, 40, 60}) {
      for (auto [c, o, map] :
           {std::array<int64_t, 3>{32, 32, 13}, {32, 64, 13}, {64, 64, 30}, {128, 128, 16}}) {
        for (int64_t mode : {0, 1, 2}) b->Args({c, o, map, density, mode, threads});
      }
    }
  }
}

// The small maps of deep layers as the binary path differentiates them: "same" zero padding
// (the pad value's own gradient is added apart), batch 32 (the zoo benchmark's), 3x3, in = out
// channels, on `map` x `map` inputs: LibTorch (mode 0), the patch products (1,
// conv2d_backward_gemm) and the per-tap products (2, conv2d_backward_taps). GFLOP/s count only
// the multiply-adds of the (pixel, tap) pairs that read inside the input. Run:
//   build/bench/bench_training --benchmark_filter=ConvBackwardSmallMaps \
//     --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true \
//     --benchmark_report_aggregates_only=true
void BM_ConvBackwardSmallMaps(benchmark::State& state) {
  const int64_t c = state.range(0), map = state.range(1), mode = state.range(2);
  onebit::nn::set_intra_op_threads(static_cast<int>(state.range(3)));
  onebit::nn::retain_freed_memory();
  at::manual_seed(0);
  const int64_t n = 32;
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor x = at::randn({n, c, map, map}).sign().contiguous(cl);
  const at::Tensor w = at::randn({c, c, 3, 3}).sign();
  const at::Tensor g = at::randn({n, c, map, map}).contiguous(cl);
  const std::vector<int64_t> one{1, 1};
  for (auto _ : state) {
    std::pair<at::Tensor, at::Tensor> r;
    if (mode == 0) {
      auto t = at::convolution_backward(g, x, w, at::OptionalIntArrayRef(), one, one, one, false,
                                        {0, 0}, 1, {true, true, false});
      r = {std::get<0>(t), std::get<1>(t)};
    } else if (mode == 1) {
      r = onebit::nn::detail::conv2d_backward_gemm(g, x, w, one, one, one, true, true);
    } else {
      r = onebit::nn::detail::conv2d_backward_taps(g, x, w, one, one, one, true, true);
    }
    benchmark::DoNotOptimize(r.first.data_ptr());
    benchmark::DoNotOptimize(r.second.data_ptr());
  }
  const int64_t taps_inside = map == 1 ? 1 : 3 * map - 2;  // per axis, over the map's pixels
  const double flops = 2.0 * 2.0 * static_cast<double>(n * taps_inside * taps_inside * c * c);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(mode == 0 ? "LibTorch" : mode == 1 ? "patch products" : "per-tap products");
}

void ConvBackwardSmallMapsGrid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"channels", "map", "mode", "threads"});
  for (int64_t threads : {1, 2}) {
    for (int64_t map : {1, 2, 4, 8}) {
      for (int64_t c : {128, 256, 512, 1024}) {
        if (c * map > 2048) continue;
        for (int64_t mode : {0, 1, 2}) b->Args({c, map, mode, threads});
      }
    }
  }
}

}  // namespace

BENCHMARK(BM_ConvBackward)->Apply(ConvBackwardGrid)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConvBackward)
    ->Name("BM_ConvBackwardWideInputs")
    ->Apply(ConvBackwardWideInputs)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConvBackward)
    ->Name("BM_ConvBackwardDeepLayers")
    ->Apply(ConvBackwardDeepLayers)
    ->Unit(benchmark::kMillisecond);
// The last pass over a binary convolution's kernel gradient: the padding's part (one-padding),
// the kernel quantizer's mask (ste_sign, clip 1.25) and the kernel's own layout, as the three
// operations it replaced (contiguous copy, broadcast add, the quantizer's gradient node) and as
// fold_kernel_gradient's one pass, on a contiguous or a channels-last (oneDNN's) gradient:
//   build/bench/bench_training --benchmark_filter=FoldKernelGradient \
//     --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
void BM_FoldKernelGradient(benchmark::State& state) {
  const int64_t c = state.range(0);
  const bool channels_last = state.range(1) != 0, folded = state.range(2) != 0;
  onebit::nn::set_intra_op_threads(1);
  onebit::nn::retain_freed_memory();
  at::manual_seed(0);
  const at::Tensor gw0 = at::randn({c, c, 3, 3});
  const at::Tensor gw =
      channels_last ? gw0.contiguous(at::MemoryFormat::ChannelsLast) : gw0.clone();
  const at::Tensor latent = at::randn({c, c, 3, 3});
  const at::Tensor padding = at::randn({c, 3, 3});
  const auto quantizer = onebit::quantizers::SteSign(1.25);
  for (auto _ : state) {
    state.PauseTiming();
    const at::Tensor g = gw.clone(at::MemoryFormat::Preserve);  // the backward's own temporary
    state.ResumeTiming();
    at::Tensor r;
    if (folded) {
      r = onebit::nn::detail::fold_kernel_gradient(g, padding, latent, 1.25, at::Tensor());
    } else {
      r = quantizer.gradient(latent, g.contiguous().add_(padding.unsqueeze(1)));
    }
    benchmark::DoNotOptimize(r.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * 3 * gw.numel() * 4);  // read g, latent; write
  state.SetLabel(std::string(channels_last ? "channels-last, " : "contiguous, ") +
                 (folded ? "folded" : "composed"));
}
BENCHMARK(BM_FoldKernelGradient)
    ->ArgNames({"channels", "channels_last", "folded"})
    ->ArgsProduct({{256, 512}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConvBackwardSmallMaps)
    ->Apply(ConvBackwardSmallMapsGrid)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConvBackwardSparse)->Apply(ConvBackwardSparseGrid)->Unit(benchmark::kMillisecond);
