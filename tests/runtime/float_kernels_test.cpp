// Float kernels and ops: the reference sgemm/dwconv against double-precision math within float
// rounding, every ISA's kernels against the reference bit for bit (edges of every register tile,
// masked tails, rows and columns outside the call untouched), and float conv2d / dense / the
// elementwise ops through ModelBuilder + Interpreter on every ISA with 1 and 3 threads against
// the float math of reference_net.h (dot products as fused multiply-adds in order) bit for bit.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"
#include "reference_net.h"
// Internal kernel entry points, for the AVX-512 tiling emulated on AVX2 (in no kernel table).
#include "../../runtime/kernels/kernel_decls.h"

namespace onebit::runtime {
namespace {

using testing::all_tables;
using testing::ConvSpec;
using testing::Nchw;

constexpr float kGuard = -12345.0f;  // fills memory a kernel must not write

std::vector<Isa> optimized_isas() {
  std::vector<Isa> isas;
  for (Isa isa : supported_isas()) {
    if (isa != Isa::kReference) isas.push_back(isa);
  }
  if (isas.empty()) isas.push_back(Isa::kReference);  // still run the sweeps on old CPUs
  return isas;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// Bound on the error of a float dot product of `terms` products accumulated one rounding per
// step, then `* m + b` (two roundings), relative to the magnitudes involved.
double rounding_bound(std::size_t terms, double abs_sum, double m, double b) {
  const double u = std::ldexp(1.0, -24);
  return static_cast<double>(terms + 2) * 2.0 * u * (abs_sum * std::abs(m) + std::abs(b)) + 1e-30;
}

// ---------------------------------------------------------------------------------------------
// sgemm

struct GemmProblem {
  std::size_t m, n, k, lda, ldo;
  std::vector<float> a, b, packed, mult, bias;
  std::vector<std::uint32_t> a_offsets;  // empty: none
};

GemmProblem make_gemm(std::size_t m, std::size_t n, std::size_t k, std::uint32_t seed) {
  std::mt19937 rng(seed);
  GemmProblem p{m, n, k, k + 3, n + 5, {}, {}, {}, {}, {}, {}};
  p.a = testing::random_normal(m * p.lda, rng);
  p.b = testing::random_normal(k * n, rng);
  p.packed = prepack_sgemm_weights(p.b.data(), k, n, n);
  p.mult = testing::random_normal(n, rng);
  p.bias = testing::random_normal(n, rng, 3.0f);
  return p;
}

using SgemmFn = void (*)(const SgemmArgs&);
using DwconvFn = void (*)(const DwconvArgs&);

std::vector<float> run_gemm(const GemmProblem& p, SgemmFn sgemm) {
  std::vector<float> out(p.m * p.ldo, kGuard);
  SgemmArgs g;
  g.a = p.a.data(), g.lda = p.lda, g.b = p.packed.data();
  g.a_offsets = p.a_offsets.empty() ? nullptr : p.a_offsets.data();
  g.m = p.m, g.n = p.n, g.k = p.k;
  g.multiplier = p.mult.data(), g.bias = p.bias.data();
  g.out = out.data(), g.ldo = p.ldo;
  sgemm(g);
  return out;
}

TEST(SgemmPacking, PanelsOfSixteenZeroPadded) {
  const std::size_t k = 3, n = 18, ldb = 20;
  std::vector<float> b(k * ldb);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i + 1);
  const std::vector<float> packed = prepack_sgemm_weights(b.data(), k, n, ldb);
  ASSERT_EQ(packed.size(), sgemm_padded_n(n) * k);
  EXPECT_EQ(sgemm_padded_n(n), 32u);
  for (std::size_t j = 0; j < k; ++j) {
    for (std::size_t o = 0; o < 32; ++o) {
      const float v = packed[((o / kSgemmPanel) * k + j) * kSgemmPanel + o % kSgemmPanel];
      EXPECT_EQ(v, o < n ? b[j * ldb + o] : 0.0f) << "j=" << j << " o=" << o;
    }
  }
}

TEST(SgemmReference, MatchesDoubleMathWithinRounding) {
  std::uint32_t seed = 1;
  for (std::size_t k : {1u, 2u, 27u, 64u, 577u}) {
    for (std::size_t n : {1u, 9u, 16u, 33u}) {
      const GemmProblem p = make_gemm(4, n, k, seed++);
      const std::vector<float> out = run_gemm(p, kernels_for(Isa::kReference).sgemm);
      for (std::size_t r = 0; r < p.m; ++r) {
        for (std::size_t o = 0; o < n; ++o) {
          double exact = 0.0, abs_sum = 0.0;
          for (std::size_t j = 0; j < k; ++j) {
            const double t = static_cast<double>(p.a[r * p.lda + j]) * p.b[j * n + o];
            exact += t, abs_sum += std::abs(t);
          }
          exact = exact * p.mult[o] + p.bias[o];
          EXPECT_NEAR(out[r * p.ldo + o], exact, rounding_bound(k, abs_sum, p.mult[o], p.bias[o]))
              << "k=" << k << " n=" << n << " r=" << r << " o=" << o;
        }
        for (std::size_t o = n; o < p.ldo; ++o) {
          EXPECT_EQ(out[r * p.ldo + o], kGuard) << "wrote past n";
        }
      }
    }
  }
}

// Every kernel output bit for bit equal to the reference's, around the tiles: rows around the
// AVX2 (6) and AVX-512 (8) tiles, columns around one vector (8 or 16), a panel (16) and a
// two-vector tile (16 or 32), K from 1 up; the columns past n untouched.
void sweep_sgemm(SgemmFn sgemm, const std::string& what) {
  std::uint32_t seed = 100;
  for (std::size_t m : {1u, 2u, 5u, 6u, 7u, 8u, 9u, 13u, 25u}) {
    for (std::size_t n : {1u, 3u, 7u, 8u, 9u, 15u, 16u, 17u, 31u, 32u, 33u, 48u, 130u}) {
      for (std::size_t k : {1u, 3u, 27u, 64u, 301u}) {
        GemmProblem p = make_gemm(m, n, k, seed++);
        for (bool offsets : {false, true}) {
          if (offsets) {  // A read through a_offsets: the row backwards, skipping 3 floats
            p.a_offsets.resize(k);
            for (std::size_t j = 0; j < k; ++j)
              p.a_offsets[j] = static_cast<std::uint32_t>(k - j + 2);
          }
          const std::vector<float> ref = run_gemm(p, kernels_for(Isa::kReference).sgemm);
          const std::vector<float> got = run_gemm(p, sgemm);
          for (std::size_t i = 0; i < ref.size(); ++i) {
            ASSERT_TRUE(same_bits(ref[i], got[i]))
                << what << " m=" << m << " n=" << n << " k=" << k << " offsets=" << offsets
                << " at row " << i / p.ldo << " col " << i % p.ldo << ": " << got[i] << " vs "
                << ref[i];
          }
        }
      }
    }
  }
}

class SgemmIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(SgemmIsa, BitExactAgainstReferenceAroundTiles) {
  sweep_sgemm(kernels_for(GetParam()).sgemm, isa_name(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(FloatKernels, SgemmIsa, ::testing::ValuesIn(optimized_isas()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(isa_name(info.param));
                         });

// ---------------------------------------------------------------------------------------------
// dwconv

struct DwProblem {
  std::size_t c;
  std::int64_t in_h, in_w, out_h, out_w, k, stride, dilation, pt, pl;
  std::vector<float> in, weight, mult, bias;
};

// A random geometry with `c` channels and a square kernel `k`; pads up to the window span.
DwProblem make_dw(std::size_t c, std::int64_t k, std::mt19937& rng) {
  DwProblem p{};
  p.c = c, p.k = k;
  p.stride = 1 + static_cast<std::int64_t>(rng() % 2);
  p.dilation = 1 + static_cast<std::int64_t>(rng() % 2);
  const std::int64_t span = p.dilation * (k - 1) + 1;
  p.pt = static_cast<std::int64_t>(rng() % static_cast<unsigned>(span));
  p.pl = static_cast<std::int64_t>(rng() % static_cast<unsigned>(span));
  const auto pb = static_cast<std::int64_t>(rng() % static_cast<unsigned>(span));
  const auto pr = static_cast<std::int64_t>(rng() % static_cast<unsigned>(span));
  p.in_h = std::max<std::int64_t>(1, span - p.pt - pb) + static_cast<std::int64_t>(rng() % 9);
  p.in_w = std::max<std::int64_t>(1, span - p.pl - pr) + static_cast<std::int64_t>(rng() % 14);
  p.out_h = (p.in_h + p.pt + pb - span) / p.stride + 1;
  p.out_w = (p.in_w + p.pl + pr - span) / p.stride + 1;
  p.in = testing::random_normal(static_cast<std::size_t>(p.in_h * p.in_w) * c, rng);
  p.weight = testing::random_normal(static_cast<std::size_t>(k * k) * c, rng);
  p.mult = testing::random_normal(c, rng);
  p.bias = testing::random_normal(c, rng, 3.0f);
  return p;
}

std::vector<float> run_dw(const DwProblem& p, DwconvFn dwconv, std::int64_t row_begin,
                          std::int64_t row_end) {
  std::vector<float> out(static_cast<std::size_t>(p.out_h * p.out_w) * p.c, kGuard);
  DwconvArgs g;
  g.in = p.in.data(), g.weight = p.weight.data();
  g.multiplier = p.mult.data(), g.bias = p.bias.data(), g.out = out.data();
  g.channels = p.c, g.in_h = p.in_h, g.in_w = p.in_w, g.out_w = p.out_w;
  g.kernel_h = g.kernel_w = p.k, g.stride_h = g.stride_w = p.stride;
  g.dilation_h = g.dilation_w = p.dilation, g.pad_top = p.pt, g.pad_left = p.pl;
  g.row_begin = row_begin, g.row_end = row_end;
  dwconv(g);
  return out;
}

std::string dw_name(const DwProblem& p) {
  return "c=" + std::to_string(p.c) + " k=" + std::to_string(p.k) +
         " in=" + std::to_string(p.in_h) + "x" + std::to_string(p.in_w) +
         " s=" + std::to_string(p.stride) + " d=" + std::to_string(p.dilation) + " pads t" +
         std::to_string(p.pt) + " l" + std::to_string(p.pl);
}

TEST(DwconvReference, MatchesDoubleMathWithinRounding) {
  std::mt19937 rng(7);
  for (std::size_t c : {1u, 3u, 17u}) {
    for (std::int64_t k : {1, 3, 5}) {
      const DwProblem p = make_dw(c, k, rng);
      const std::vector<float> out = run_dw(p, kernels_for(Isa::kReference).dwconv, 0, p.out_h);
      for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
        for (std::int64_t ox = 0; ox < p.out_w; ++ox) {
          for (std::size_t ch = 0; ch < c; ++ch) {
            double exact = 0.0, abs_sum = 0.0;
            std::size_t taps = 0;
            for (std::int64_t ky = 0; ky < k; ++ky) {
              for (std::int64_t kx = 0; kx < k; ++kx) {
                const std::int64_t iy = oy * p.stride - p.pt + ky * p.dilation;
                const std::int64_t ix = ox * p.stride - p.pl + kx * p.dilation;
                if (iy < 0 || iy >= p.in_h || ix < 0 || ix >= p.in_w) continue;
                const double t =
                    static_cast<double>(p.in[static_cast<std::size_t>(iy * p.in_w + ix) * c + ch]) *
                    p.weight[static_cast<std::size_t>(ky * k + kx) * c + ch];
                exact += t, abs_sum += std::abs(t), ++taps;
              }
            }
            exact = exact * p.mult[ch] + p.bias[ch];
            EXPECT_NEAR(out[static_cast<std::size_t>(oy * p.out_w + ox) * c + ch], exact,
                        rounding_bound(taps, abs_sum, p.mult[ch], p.bias[ch]))
                << dw_name(p) << " at " << oy << "," << ox << "," << ch;
          }
        }
      }
    }
  }
}

// Channels around one, two and four vectors of 8 and 16 (masked tails), kernels 1 to 11,
// strides 1 and 2, dilations 1 and 2, asymmetric pads; a band of rows, the rest untouched.
void sweep_dwconv(DwconvFn dwconv, const std::string& what) {
  std::mt19937 rng(11);
  for (std::size_t c : {1u, 3u, 8u, 15u, 16u, 17u, 24u, 33u, 64u, 65u, 130u}) {
    for (std::int64_t k : {1, 3, 5, 7, 11}) {
      for (int trial = 0; trial < 3; ++trial) {
        const DwProblem p = make_dw(c, k, rng);
        const std::int64_t begin = trial == 0 ? 0 : static_cast<std::int64_t>(rng() % p.out_h);
        const std::int64_t end =
            trial == 0 ? p.out_h : begin + 1 + static_cast<std::int64_t>(rng() % (p.out_h - begin));
        const std::vector<float> ref = run_dw(p, kernels_for(Isa::kReference).dwconv, begin, end);
        const std::vector<float> got = run_dw(p, dwconv, begin, end);
        const auto row_floats = static_cast<std::size_t>(p.out_w) * c;
        for (std::size_t i = 0; i < ref.size(); ++i) {
          const auto oy = static_cast<std::int64_t>(i / row_floats);
          if (oy < begin || oy >= end) {
            ASSERT_EQ(got[i], kGuard) << what << " " << dw_name(p) << ": wrote row " << oy
                                      << " outside [" << begin << ", " << end << ")";
          }
          ASSERT_TRUE(same_bits(ref[i], got[i])) << what << " " << dw_name(p) << " at float " << i
                                                 << ": " << got[i] << " vs " << ref[i];
        }
      }
    }
  }
}

class DwconvIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(DwconvIsa, BitExactAgainstReferenceOnRandomGeometry) {
  sweep_dwconv(kernels_for(GetParam()).dwconv, isa_name(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(FloatKernels, DwconvIsa, ::testing::ValuesIn(optimized_isas()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(isa_name(info.param));
                         });

// ---------------------------------------------------------------------------------------------
// csr_sgemm

// A sparse m x rows_b matrix in compressed rows with about `density` of its entries set (some
// rows empty), a dense rows_b x n matrix with row stride n + 3, and an output with row stride
// n + 5 prefilled with random values (read when accumulating) and kGuard past n.
struct CsrProblem {
  std::size_t m, n, rows_b, ldb, ldo;
  std::vector<std::size_t> row_begin;
  std::vector<std::int32_t> index;
  std::vector<float> value, b, out;
};

CsrProblem make_csr(std::size_t m, std::size_t n, std::size_t rows_b, double density,
                    std::uint32_t seed) {
  std::mt19937 rng(seed);
  CsrProblem p{m, n, rows_b, n + 3, n + 5, {0}, {}, {}, {}, {}};
  std::bernoulli_distribution set(density);
  std::normal_distribution<float> normal;
  for (std::size_t r = 0; r < m; ++r) {
    for (std::size_t i = 0; i < rows_b; ++i) {
      if (!set(rng)) continue;
      p.index.push_back(static_cast<std::int32_t>(i));
      p.value.push_back(normal(rng));
    }
    p.row_begin.push_back(p.index.size());
  }
  p.b = testing::random_normal(rows_b * p.ldb, rng);
  p.out.assign(m * p.ldo, kGuard);
  for (std::size_t r = 0; r < m; ++r) {
    for (std::size_t o = 0; o < n; ++o) p.out[r * p.ldo + o] = normal(rng);
  }
  return p;
}

using CsrSgemmFn = void (*)(const CsrSgemmArgs&);

std::vector<float> run_csr(const CsrProblem& p, bool accumulate, CsrSgemmFn csr_sgemm) {
  std::vector<float> out = p.out;
  CsrSgemmArgs g;
  g.row_begin = p.row_begin.data(), g.index = p.index.data(), g.value = p.value.data();
  g.b = p.b.data(), g.ldb = p.ldb, g.out = out.data(), g.ldo = p.ldo;
  g.m = p.m, g.n = p.n, g.accumulate = accumulate;
  csr_sgemm(g);
  return out;
}

TEST(CsrSgemmReference, MatchesDoubleMathWithinRounding) {
  std::uint32_t seed = 7;
  for (double density : {0.0, 0.2, 1.0}) {
    for (std::size_t n : {1u, 9u, 70u}) {
      const CsrProblem p = make_csr(5, n, 40, density, seed++);
      for (bool accumulate : {false, true}) {
        const std::vector<float> out =
            run_csr(p, accumulate, kernels_for(Isa::kReference).csr_sgemm);
        for (std::size_t r = 0; r < p.m; ++r) {
          for (std::size_t o = 0; o < n; ++o) {
            const double start = accumulate ? p.out[r * p.ldo + o] : 0.0;
            double exact = start, abs_sum = std::abs(start);
            for (std::size_t e = p.row_begin[r]; e < p.row_begin[r + 1]; ++e) {
              const double t = static_cast<double>(p.value[e]) *
                               p.b[static_cast<std::size_t>(p.index[e]) * p.ldb + o];
              exact += t, abs_sum += std::abs(t);
            }
            const std::size_t terms = p.row_begin[r + 1] - p.row_begin[r];
            EXPECT_NEAR(out[r * p.ldo + o], exact, rounding_bound(terms, abs_sum, 1.0, 0.0))
                << "density " << density << " n=" << n << " r=" << r << " o=" << o;
          }
          for (std::size_t o = n; o < p.ldo; ++o) {
            EXPECT_EQ(out[r * p.ldo + o], kGuard) << "wrote past n";
          }
        }
      }
    }
  }
}

// Every kernel bit for bit equal to the reference: columns around one vector (8 or 16 lanes)
// and the 8-vector tiles (64 or 128 columns), empty and full rows, both output modes; columns
// past n untouched; any split of the rows gives the same result.
void sweep_csr_sgemm(CsrSgemmFn csr_sgemm, const std::string& what) {
  std::uint32_t seed = 300;
  for (std::size_t n : {1u, 5u, 8u, 9u, 16u, 17u, 63u, 64u, 65u, 127u, 128u, 129u, 288u}) {
    for (double density : {0.0, 0.05, 0.3, 1.0}) {
      const CsrProblem p = make_csr(7, n, 33, density, seed++);
      for (bool accumulate : {false, true}) {
        const std::vector<float> ref =
            run_csr(p, accumulate, kernels_for(Isa::kReference).csr_sgemm);
        const std::vector<float> got = run_csr(p, accumulate, csr_sgemm);
        for (std::size_t i = 0; i < ref.size(); ++i) {
          ASSERT_TRUE(same_bits(ref[i], got[i]))
              << what << " n=" << n << " density " << density << " accumulate " << accumulate
              << " at row " << i / p.ldo << " col " << i % p.ldo << ": " << got[i] << " vs "
              << ref[i];
        }
        // Rows 3..6 alone (a thread's block): the same bits in those rows, the others untouched.
        std::vector<float> part = p.out;
        CsrSgemmArgs g;
        g.row_begin = p.row_begin.data() + 3, g.index = p.index.data(), g.value = p.value.data();
        g.b = p.b.data(), g.ldb = p.ldb, g.out = part.data() + 3 * p.ldo, g.ldo = p.ldo;
        g.m = 4, g.n = p.n, g.accumulate = accumulate;
        csr_sgemm(g);
        for (std::size_t i = 0; i < ref.size(); ++i) {
          const float expected = i < 3 * p.ldo ? p.out[i] : ref[i];
          ASSERT_TRUE(same_bits(expected, part[i]))
              << what << " rows 3..6 only, n=" << n << " at row " << i / p.ldo << " col "
              << i % p.ldo;
        }
      }
    }
  }
}

class CsrSgemmIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(CsrSgemmIsa, BitExactAgainstReferenceAroundTiles) {
  sweep_csr_sgemm(kernels_for(GetParam()).csr_sgemm, isa_name(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(FloatKernels, CsrSgemmIsa, ::testing::ValuesIn(optimized_isas()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(isa_name(info.param));
                         });

// The AVX-512 kernels' tiling (16 lanes, 8 x 32 tiles over two panels, 16-lane masks) from the
// same templates on pairs of AVX2 vectors: runs those code paths where AVX-512 is missing. (The
// AVX-512 kernels themselves run in the sweeps above on CPUs that have it.)
TEST(FloatKernels, Avx512TilingOnAvx2PairsBitExactAgainstReference) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "needs AVX2";
  sweep_sgemm(&kernels::sgemm_f32_8x32_avx2pair, "avx512 tiling on avx2");
  sweep_dwconv(&kernels::dwconv_f32_avx2pair, "avx512 tiling on avx2");
  sweep_csr_sgemm(&kernels::csr_sgemm_f32_avx2pair, "avx512 tiling on avx2");
}

// ---------------------------------------------------------------------------------------------
// Ops through the interpreter

// Runs `m` on every ISA with 1 and 3 threads and checks each result against `expected` bit for
// bit (which also makes 1 and 3 threads identical).
void expect_runs_to(const Model& m, const Nchw& x, const std::vector<float>& expected,
                    const std::string& what) {
  for (const KernelTable* t : all_tables()) {
    for (int threads : {1, 3}) {
      const std::vector<float> y =
          Interpreter(m, {threads, t}).run(x.v, static_cast<std::size_t>(x.n));
      ASSERT_EQ(y.size(), expected.size()) << what;
      for (std::size_t i = 0; i < y.size(); ++i) {
        ASSERT_TRUE(same_bits(y[i], expected[i]) || y[i] == expected[i])
            << what << " on " << isa_name(t->isa) << " with " << threads << " threads at " << i
            << ": " << y[i] << " vs " << expected[i];
      }
    }
  }
}

struct FloatConvCase {
  std::int64_t c, h, w, out, k, stride, dilation, groups;
  bool same;                    // "same" padding (asymmetric where the total is odd)
  std::int64_t pt, pl, pb, pr;  // explicit pads otherwise
  std::int64_t batch;
};

std::string case_name(const FloatConvCase& cc) {
  return std::to_string(cc.c) + "x" + std::to_string(cc.h) + "x" + std::to_string(cc.w) + " -> " +
         std::to_string(cc.out) + " k" + std::to_string(cc.k) + " s" + std::to_string(cc.stride) +
         " d" + std::to_string(cc.dilation) + " g" + std::to_string(cc.groups) +
         (cc.same ? " same" : " explicit") + " batch " + std::to_string(cc.batch);
}

// TensorFlow "same" pads of one axis (as ModelBuilder computes them).
std::pair<std::int64_t, std::int64_t> same_pads(std::int64_t in, std::int64_t k, std::int64_t s,
                                                std::int64_t d) {
  const std::int64_t out = (in + s - 1) / s;
  const std::int64_t total = std::max<std::int64_t>((out - 1) * s + (k - 1) * d + 1 - in, 0);
  return {total / 2, total - total / 2};
}

TEST(FloatConvOp, EveryIsaAndThreadCountMatchesFloatMath) {
  // c, h, w, out, k, stride, dilation, groups, same, pads t l b r, batch
  const std::vector<FloatConvCase> cases{
      {3, 224 / 8, 224 / 8, 16, 3, 2, 1, 1, true, 0, 0, 0, 0, 1},  // stem-like, same (0, 1)
      {3, 17, 13, 16, 3, 2, 1, 1, true, 0, 0, 0, 0, 3},
      {1, 9, 9, 5, 3, 1, 1, 1, false, 1, 1, 1, 1, 3},        // one input channel
      {17, 9, 7, 33, 1, 1, 1, 1, false, 0, 0, 0, 0, 3},      // 1x1 direct
      {33, 8, 8, 130, 1, 1, 1, 1, false, 0, 0, 0, 0, 1},     // 1x1 direct, many columns
      {130, 5, 5, 17, 1, 2, 1, 1, false, 0, 0, 0, 0, 3},     // 1x1 stride 2 (im2col)
      {16, 12, 12, 24, 1, 1, 1, 1, false, 1, 0, 0, 1, 1},    // 1x1 padded (im2col)
      {17, 11, 10, 9, 5, 1, 1, 1, true, 0, 0, 0, 0, 1},      // 5x5 same
      {3, 23, 21, 8, 7, 2, 1, 1, true, 0, 0, 0, 0, 1},       // 7x7 s2 same (asymmetric)
      {3, 15, 14, 4, 11, 1, 1, 1, false, 5, 4, 3, 2, 1},     // 11x11 explicit asymmetric
      {8, 13, 11, 12, 3, 1, 2, 1, false, 2, 2, 2, 2, 3},     // dilation 2
      {12, 9, 9, 8, 3, 2, 2, 4, true, 0, 0, 0, 0, 1},        // groups 4, dilation 2, s2
      {16, 10, 10, 16, 3, 1, 1, 4, false, 1, 1, 1, 1, 3},    // groups 4
      {132, 6, 6, 132, 3, 1, 1, 4, true, 0, 0, 0, 0, 1},     // groups 4, 33 per group
      {16, 56, 56, 16, 3, 2, 1, 16, true, 0, 0, 0, 0, 1},    // depthwise s2 same (0, 1)
      {64, 11, 11, 64, 3, 2, 1, 64, true, 0, 0, 0, 0, 3},    // blur-pool-like, same (1, 1)
      {17, 9, 8, 17, 3, 1, 1, 17, false, 1, 1, 1, 1, 1},     // depthwise, odd channels
      {33, 12, 12, 33, 5, 1, 2, 33, true, 0, 0, 0, 0, 1},    // depthwise 5x5 dilation 2
      {130, 7, 7, 130, 7, 2, 1, 130, false, 3, 2, 1, 0, 1},  // depthwise 7x7, asymmetric
      {3, 9, 9, 6, 3, 1, 1, 3, false, 1, 1, 1, 1, 3},        // depthwise, multiplier 2
      {17, 8, 10, 34, 11, 2, 1, 17, true, 0, 0, 0, 0, 1},    // depthwise 11x11, multiplier 2
      {1, 7, 7, 3, 3, 1, 1, 1, false, 1, 1, 1, 1, 1},        // c = 1 (one group)
  };
  std::mt19937 rng(21);
  for (const FloatConvCase& cc : cases) {
    Conv2dParams p(cc.out, cc.k);
    p.stride(cc.stride).dilation(cc.dilation).groups_count(cc.groups);
    ConvSpec s{cc.out, cc.k, cc.stride, cc.dilation, cc.groups, cc.pt, cc.pl, cc.pb, cc.pr, 0.0f};
    if (cc.same) {
      p.padding(PaddingMode::kSame);
      std::tie(s.pad_t, s.pad_b) = same_pads(cc.h, cc.k, cc.stride, cc.dilation);
      std::tie(s.pad_l, s.pad_r) = same_pads(cc.w, cc.k, cc.stride, cc.dilation);
    } else {
      p.padding_mode = PaddingMode::kExplicit;
      p.pad_top = cc.pt, p.pad_left = cc.pl, p.pad_bottom = cc.pb, p.pad_right = cc.pr;
    }
    const auto n_w = static_cast<std::size_t>(cc.out * cc.c / cc.groups * cc.k * cc.k);
    const std::vector<float> w = testing::random_normal(n_w, rng);
    const std::vector<float> bias = testing::random_normal(static_cast<std::size_t>(cc.out), rng);
    const std::vector<float> ones(static_cast<std::size_t>(cc.out), 1.0f);
    const Nchw x{
        cc.batch, cc.c, cc.h, cc.w,
        testing::random_normal(static_cast<std::size_t>(cc.batch * cc.c * cc.h * cc.w), rng)};
    ModelBuilder b;
    b.output(b.conv2d(b.input({cc.c, cc.h, cc.w}), p, w, bias));
    const Nchw expected = testing::bn_ref(testing::conv_ref(x, w, s), ones, bias);
    ASSERT_EQ(Interpreter(b.build()).output_shape(),
              (std::vector<std::int64_t>{expected.c, expected.h, expected.w}))
        << case_name(cc);
    expect_runs_to(b.build(), x, expected.v, case_name(cc));
  }
}

TEST(FloatDenseOp, EveryIsaAndThreadCountMatchesFloatMath) {
  std::mt19937 rng(22);
  for (std::int64_t in : {1, 3, 17, 130, 512}) {
    for (std::int64_t out : {1, 17, 33, 130, 1000}) {
      for (std::int64_t batch : {1, 3}) {
        const std::vector<float> w =
            testing::random_normal(static_cast<std::size_t>(in * out), rng);
        const std::vector<float> bias = testing::random_normal(static_cast<std::size_t>(out), rng);
        const std::vector<float> m = testing::random_normal(static_cast<std::size_t>(out), rng);
        const Nchw x{batch, in, 1, 1,
                     testing::random_normal(static_cast<std::size_t>(batch * in), rng)};
        ModelBuilder b;
        b.output(b.batch_norm(b.dense(b.input({in}), DenseParams(out), w, bias), m,
                              std::vector<float>(static_cast<std::size_t>(out), 0.5f)));
        const std::vector<float> ones(static_cast<std::size_t>(out), 1.0f);
        const Nchw expected =
            testing::bn_ref(testing::bn_ref(testing::dense_ref(x, w, out), ones, bias), m,
                            std::vector<float>(static_cast<std::size_t>(out), 0.5f));
        expect_runs_to(b.build(), x, expected.v,
                       "dense " + std::to_string(in) + " -> " + std::to_string(out) + " batch " +
                           std::to_string(batch));
      }
    }
  }
}

// Max pooling with pads (which never win), NCHW.
Nchw maxpool_padded_ref(const Nchw& x, std::int64_t k, std::int64_t stride, std::int64_t pt,
                        std::int64_t pl, std::int64_t pb, std::int64_t pr) {
  Nchw y{x.n, x.c, (x.h + pt + pb - k) / stride + 1, (x.w + pl + pr - k) / stride + 1, {}};
  y.v.resize(static_cast<std::size_t>(y.n * y.c * y.h * y.w));
  for (std::int64_t n = 0; n < y.n; ++n)
    for (std::int64_t c = 0; c < y.c; ++c)
      for (std::int64_t oy = 0; oy < y.h; ++oy)
        for (std::int64_t ox = 0; ox < y.w; ++ox) {
          float best = -std::numeric_limits<float>::infinity();
          for (std::int64_t dy = 0; dy < k; ++dy)
            for (std::int64_t dx = 0; dx < k; ++dx) {
              const std::int64_t iy = oy * stride - pt + dy, ix = ox * stride - pl + dx;
              if (iy >= 0 && iy < x.h && ix >= 0 && ix < x.w)
                best = std::max(best, x.at(n, c, iy, ix));
            }
          y.at(n, c, oy, ox) = best;
        }
  return y;
}

TEST(FloatElementwiseOps, ReluBatchNormPreluAddMaxPoolMatchScalarMathOnOddShapes) {
  std::mt19937 rng(23);
  for (std::int64_t c : {1, 3, 17, 33, 130}) {
    for (std::int64_t batch : {1, 3}) {
      const std::int64_t h = 7, w = 6;
      const Nchw x{batch, c, h, w,
                   testing::random_normal(static_cast<std::size_t>(batch * c * h * w), rng)};
      const auto cs = static_cast<std::size_t>(c);
      const std::vector<float> m = testing::random_normal(cs, rng),
                               bias = testing::random_normal(cs, rng);
      const std::vector<float> alpha = testing::random_normal(cs, rng);
      const std::string shape = std::to_string(c) + "x7x6 batch " + std::to_string(batch);
      {
        ModelBuilder b;
        b.output(b.relu(b.input({c, h, w})));
        Nchw y = x;
        for (float& v : y.v) v = v > 0.0f ? v : 0.0f;
        expect_runs_to(b.build(), x, y.v, "relu " + shape);
      }
      {
        ModelBuilder b;
        b.output(b.batch_norm(b.input({c, h, w}), m, bias));
        expect_runs_to(b.build(), x, testing::bn_ref(x, m, bias).v, "batch_norm " + shape);
      }
      {
        ModelBuilder b;
        b.output(b.prelu(b.input({c, h, w}), alpha));
        Nchw y = x;
        for (std::size_t i = 0; i < y.v.size(); ++i) {
          const auto ch = (i / static_cast<std::size_t>(h * w)) % cs;
          y.v[i] = y.v[i] >= 0.0f ? y.v[i] : alpha[ch] * y.v[i];
        }
        expect_runs_to(b.build(), x, y.v, "prelu " + shape);
      }
      {
        ModelBuilder b;
        const ValueRef in = b.input({c, h, w});
        b.output(b.add(in, b.batch_norm(in, m, bias)));
        expect_runs_to(b.build(), x, testing::add_ref(x, testing::bn_ref(x, m, bias)).v,
                       "add " + shape);
      }
      {
        ModelBuilder b;
        b.output(b.max_pool2d(b.input({c, h, w}),
                              Pool2dParams(3).stride(2).padding(PaddingMode::kSame)));
        // "same" for 7x6, k3 s2: rows 1 + 1, columns 0 + 1.
        expect_runs_to(b.build(), x, maxpool_padded_ref(x, 3, 2, 1, 0, 1, 1).v,
                       "max_pool " + shape);
      }
    }
  }
}

// PReLU chooses its factor on the bits of each element (so that the loop vectorizes): the same
// values as v >= 0 ? v : alpha * v for zeros of either sign, infinities, NaNs, denormals, with
// positive, negative and zero alphas, per channel and one alpha for all channels.
TEST(FloatElementwiseOps, PreluEqualsTheBranchOnSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<float> specials{0.0f,  -0.0f, inf,   -inf,  nan,    -nan, tiny,
                                    -tiny, 1.0f,  -1.0f, 3e38f, -3e38f, 0.5f, -2.5f};
  const std::int64_t c = 4, h = 1, w = static_cast<std::int64_t>(specials.size());
  std::vector<float> x;
  for (std::int64_t ch = 0; ch < c; ++ch) x.insert(x.end(), specials.begin(), specials.end());
  for (const std::vector<float>& alpha :
       {std::vector<float>{0.25f, -0.5f, 0.0f, -0.0f}, std::vector<float>{-3.0f}}) {
    ModelBuilder b;
    b.output(b.prelu(b.input({c, h, w}), alpha));
    InterpreterOptions options;
    options.non_finite = NonFiniteInput::kPropagate;
    const std::vector<float> y = Interpreter(b.build(), options).run(x, 1);
    ASSERT_EQ(y.size(), x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float a = alpha.size() == 1 ? alpha[0] : alpha[i / specials.size()];
      const float expected = x[i] >= 0.0f ? x[i] : a * x[i];
      const std::string what = "x = " + std::to_string(x[i]) + ", alpha = " + std::to_string(a);
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(y[i])) << what;
      } else {
        EXPECT_EQ(y[i], expected) << what;
        EXPECT_EQ(std::signbit(y[i]), std::signbit(expected)) << what;
      }
    }
  }
}

}  // namespace
}  // namespace onebit::runtime
