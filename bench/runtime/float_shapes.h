#pragma once
// The float-layer shapes (QuickNet / Bi-Real, batch 1) that float_ops_bench.cpp times with
// onebit's kernels and blas/float_blas_bench.cpp with OpenBLAS: one list, so both time the same
// layers side by side.

#include <benchmark/benchmark.h>

namespace onebit::bench_shapes {

/// 1x1 conv: input channels, output channels, size.
inline void conv1x1(benchmark::internal::Benchmark* b) {
  b->Args({64, 128, 28})->Args({128, 256, 14})->Args({256, 512, 7})->Args({16, 64, 56});
}

/// kxk "same" conv: input channels, output channels, size, kernel, stride, groups.
inline void conv(benchmark::internal::Benchmark* b) {
  b->Args({3, 16, 224, 3, 2, 1})      // QuickNet stem
      ->Args({64, 64, 28, 3, 1, 1})   // a float 3x3 conv (im2col)
      ->Args({64, 64, 28, 3, 1, 4});  // grouped, 16 channels per group
}

/// Dense layer: input features, output features.
inline void dense(benchmark::internal::Benchmark* b) { b->Args({512, 1000}); }

}  // namespace onebit::bench_shapes
