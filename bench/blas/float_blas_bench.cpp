// The float layers of BM_Float* (float_ops_bench.cpp) as a user would compute them with OpenBLAS
// instead: the same shapes, batch 1, one thread, NHWC data, so that one run of
//   build/bench/bench_runtime --benchmark_filter='Float(Conv|Dense)' --benchmark_repetitions=5 \
//       --benchmark_report_aggregates_only=true
// prints onebit's kernels and OpenBLAS side by side (BM_Float* vs BM_Blas*). A kxk convolution is
// an explicit im2col (included in the time) followed by one sgemm; a 1x1 stride-1 convolution is
// one sgemm on the input; a dense layer is one sgemv; each adds its bias. Counter flops_per_s is
// 2 * MACs / s, as in float_ops_bench.cpp. Built when CMake finds OpenBLAS (libopenblas-dev).

#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "../runtime/float_shapes.h"

namespace {

std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void one_blas_thread() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

void report(benchmark::State& state, double macs, const std::string& label) {
  state.counters["flops_per_s"] = benchmark::Counter(
      2.0 * macs * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(label + " (OpenBLAS)");
}

/// Adds `bias[o]` to every row of the `m` x `n` row-major matrix `out`.
void add_bias(float* out, const float* bias, std::int64_t m, std::int64_t n) {
  for (std::int64_t r = 0; r < m; ++r) {
    float* row = out + r * n;
    for (std::int64_t o = 0; o < n; ++o) row[o] += bias[o];
  }
}

/// A kxk "same" (Keras: out = ceil(in / stride)) convolution with groups, NHWC, as im2col plus
/// one sgemm per group.
struct BlasConv {
  std::int64_t cin, cout, hw, k, stride, groups, out_hw, pad;
  std::vector<float> input, weights, bias, columns, output;

  BlasConv(std::int64_t cin_, std::int64_t cout_, std::int64_t hw_, std::int64_t k_,
           std::int64_t stride_, std::int64_t groups_)
      : cin(cin_), cout(cout_), hw(hw_), k(k_), stride(stride_), groups(groups_) {
    out_hw = (hw + stride - 1) / stride;
    const std::int64_t total = std::max<std::int64_t>((out_hw - 1) * stride + k - hw, 0);
    pad = total / 2;  // the odd pixel goes after, as Keras pads
    input = random_values(static_cast<std::size_t>(hw * hw * cin), 1);
    weights = random_values(static_cast<std::size_t>(k * k * cin / groups * cout), 2);
    bias = random_values(static_cast<std::size_t>(cout), 3);
    columns.resize(static_cast<std::size_t>(out_hw * out_hw * k * k * cin));
    output.resize(static_cast<std::size_t>(out_hw * out_hw * cout));
  }

  double macs() const { return static_cast<double>(out_hw * out_hw * cout * k * k * cin / groups); }

  void run() {
    const std::int64_t cg = cin / groups, og = cout / groups, kk = k * k * cg;
    const std::int64_t m = out_hw * out_hw;
    if (k == 1 && stride == 1 && groups == 1) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                  static_cast<int>(cout), static_cast<int>(cin), 1.0f, input.data(),
                  static_cast<int>(cin), weights.data(), static_cast<int>(cout), 0.0f,
                  output.data(), static_cast<int>(cout));
      add_bias(output.data(), bias.data(), m, cout);
      return;
    }
    for (std::int64_t g = 0; g < groups; ++g) {
      // im2col of group g: row = output pixel, columns = (ky, kx, channel of the group).
      float* col = columns.data();
      for (std::int64_t oy = 0; oy < out_hw; ++oy) {
        for (std::int64_t ox = 0; ox < out_hw; ++ox) {
          for (std::int64_t ky = 0; ky < k; ++ky) {
            const std::int64_t iy = oy * stride + ky - pad;
            for (std::int64_t kx = 0; kx < k; ++kx) {
              const std::int64_t ix = ox * stride + kx - pad;
              if (iy < 0 || iy >= hw || ix < 0 || ix >= hw) {
                std::fill(col, col + cg, 0.0f);
              } else {
                const float* src = input.data() + (iy * hw + ix) * cin + g * cg;
                std::copy(src, src + cg, col);
              }
              col += cg;
            }
          }
        }
      }
      // Weights of group g: kk x og, row-major; output columns g*og .. (g+1)*og - 1.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                  static_cast<int>(og), static_cast<int>(kk), 1.0f, columns.data(),
                  static_cast<int>(kk), weights.data() + g * kk * og, static_cast<int>(og), 0.0f,
                  output.data() + g * og, static_cast<int>(cout));
    }
    add_bias(output.data(), bias.data(), m, cout);
  }
};

void time_conv(benchmark::State& state, BlasConv conv, const std::string& label) {
  one_blas_thread();
  conv.run();  // warm-up
  for (auto _ : state) {
    conv.run();
    benchmark::DoNotOptimize(conv.output.data());
  }
  report(state, conv.macs(), label);
}

// 1x1 conv: args input channels, output channels, size (as BM_FloatConv1x1).
void BM_BlasConv1x1(benchmark::State& state) {
  const std::int64_t cin = state.range(0), cout = state.range(1), hw = state.range(2);
  time_conv(state, BlasConv(cin, cout, hw, 1, 1, 1),
            std::to_string(cin) + "->" + std::to_string(cout) + " at " + std::to_string(hw));
}
BENCHMARK(BM_BlasConv1x1)
    ->Apply(onebit::bench_shapes::conv1x1)
    ->MinTime(0.1)
    ->Unit(benchmark::kMicrosecond);

// kxk "same" conv: args input channels, output channels, size, kernel, stride, groups (as
// BM_FloatConv).
void BM_BlasConv(benchmark::State& state) {
  const std::int64_t cin = state.range(0), cout = state.range(1), hw = state.range(2);
  const std::int64_t k = state.range(3), stride = state.range(4), groups = state.range(5);
  time_conv(state, BlasConv(cin, cout, hw, k, stride, groups),
            std::to_string(cin) + "->" + std::to_string(cout) + " " + std::to_string(k) + "x" +
                std::to_string(k) + " s" + std::to_string(stride) + " g" + std::to_string(groups) +
                " at " + std::to_string(hw));
}
BENCHMARK(BM_BlasConv)
    ->Apply(onebit::bench_shapes::conv)
    ->MinTime(0.1)
    ->Unit(benchmark::kMicrosecond);

// Dense layer: args input features, output features (as BM_FloatDense).
void BM_BlasDense(benchmark::State& state) {
  one_blas_thread();
  const std::int64_t in = state.range(0), out = state.range(1);
  const std::vector<float> x = random_values(static_cast<std::size_t>(in), 1);
  const std::vector<float> w = random_values(static_cast<std::size_t>(in * out), 2);
  const std::vector<float> bias = random_values(static_cast<std::size_t>(out), 3);
  std::vector<float> y(static_cast<std::size_t>(out));
  for (auto _ : state) {
    std::copy(bias.begin(), bias.end(), y.begin());
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(out), static_cast<int>(in), 1.0f,
                w.data(), static_cast<int>(in), x.data(), 1, 1.0f, y.data(), 1);
    benchmark::DoNotOptimize(y.data());
  }
  report(state, static_cast<double>(in * out), std::to_string(in) + "->" + std::to_string(out));
}
BENCHMARK(BM_BlasDense)
    ->Apply(onebit::bench_shapes::dense)
    ->MinTime(0.1)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
