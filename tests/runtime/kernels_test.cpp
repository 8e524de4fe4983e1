// Kernel tests: the reference against float math on +-1 data, every optimized kernel against
// the reference bit for bit.

#include <gtest/gtest.h>

#include <bitset>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "onebit/runtime/bitpack.h"
#include "onebit/runtime/kernels.h"

namespace onebit::runtime {
namespace {

struct Problem {
  std::size_t m, n, k_bits;
  std::vector<BitWord> a, w_rows, w_packed;
  std::vector<float> mult, bias;
  std::vector<std::int32_t> threshold, correction;
  std::vector<std::uint32_t> correction_row;
  std::size_t k_words() const { return words_for_bits(k_bits); }
};

Problem make_problem(std::size_t m, std::size_t n, std::size_t k_bits, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  Problem p{m, n, k_bits, {}, {}, {}, {}, {}, {}, {}, {}};
  const std::size_t kw = p.k_words();
  const BitWord tail = k_bits % 64 == 0 ? ~BitWord{0} : (BitWord{1} << (k_bits % 64)) - 1;
  const auto fill = [&](std::vector<BitWord>& v, std::size_t rows) {
    v.assign(rows * kw, 0);
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t k = 0; k < kw; ++k)
        v[r * kw + k] = rng() & (k + 1 == kw ? tail : ~BitWord{0});
    }
  };
  fill(p.a, m);
  fill(p.w_rows, n);
  p.w_packed = prepack_bgemm_weights(p.w_rows.data(), n, kw, kw);
  const std::size_t np = bgemm_padded_n(n);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  p.mult.resize(np), p.bias.resize(np);
  p.threshold.assign(np, INT32_MIN);
  for (std::size_t o = 0; o < np; ++o) p.mult[o] = u(rng), p.bias[o] = u(rng) * 10.0f;
  for (std::size_t o = 0; o < n; ++o) {
    p.threshold[o] =
        static_cast<std::int32_t>(rng() % (2 * k_bits + 3)) - static_cast<std::int32_t>(k_bits) - 1;
  }
  p.correction.resize(3 * np);
  for (auto& c : p.correction) c = static_cast<std::int32_t>(rng() % 19) - 9;
  p.correction_row.resize(m);
  for (auto& r : p.correction_row) r = static_cast<std::uint32_t>(rng() % 3);
  return p;
}

BgemmArgs args_for(const Problem& p, bool bits, bool corr, std::vector<float>& out_f,
                   std::vector<std::uint8_t>& out_b) {
  BgemmArgs g;
  g.a = p.a.data(), g.lda = p.k_words(), g.b = p.w_packed.data();
  g.m = p.m, g.n = p.n, g.k_words = p.k_words(), g.k_bits = static_cast<std::int32_t>(p.k_bits);
  if (corr) {
    g.epilogue.correction_table = p.correction.data();
    g.epilogue.correction_row = p.correction_row.data();
  }
  if (bits) {
    g.epilogue.kind = BgemmEpilogue::Kind::kBits;
    g.epilogue.threshold = p.threshold.data();
    g.ldo = (p.n + 7) / 8 + 1;  // one guard byte per row that must stay untouched
    out_b.assign(p.m * g.ldo, 0xA5);
    g.out_bits = out_b.data();
  } else {
    g.epilogue.multiplier = p.mult.data(), g.epilogue.bias = p.bias.data();
    g.ldo = p.n + 1;
    out_f.assign(p.m * g.ldo, -12345.0f);
    g.out_float = out_f.data();
  }
  return g;
}

TEST(BgemmReference, MatchesFloatMathOnPlusMinusOne) {
  for (std::size_t k_bits : {1u, 63u, 64u, 65u, 200u}) {
    const Problem p = make_problem(5, 11, k_bits, 7 + static_cast<std::uint32_t>(k_bits));
    std::vector<float> out_f;
    std::vector<std::uint8_t> out_b;
    BgemmArgs g = args_for(p, false, false, out_f, out_b);
    kernels_for(Isa::kReference).bgemm(g);
    for (std::size_t r = 0; r < p.m; ++r) {
      for (std::size_t o = 0; o < p.n; ++o) {
        float dot = 0.0f;
        for (std::size_t i = 0; i < k_bits; ++i) {
          dot += bit_value(get_bit(p.a.data() + r * p.k_words(), i)) *
                 bit_value(get_bit(p.w_rows.data() + o * p.k_words(), i));
        }
        EXPECT_EQ(out_f[r * g.ldo + o], dot * p.mult[o] + p.bias[o]) << "k=" << k_bits;
      }
      EXPECT_EQ(out_f[r * g.ldo + p.n], -12345.0f) << "wrote past n";
    }
  }
}

TEST(BgemmReference, BitsOutputFollowsThreshold) {
  const Problem p = make_problem(3, 13, 100, 3);
  std::vector<float> out_f, dots;
  std::vector<std::uint8_t> out_b;
  BgemmArgs gf = args_for(p, false, false, out_f, out_b);
  std::vector<float> ones(16, 1.0f), zeros(16, 0.0f);
  gf.epilogue.multiplier = ones.data(), gf.epilogue.bias = zeros.data();
  kernels_for(Isa::kReference).bgemm(gf);
  dots = out_f;
  BgemmArgs gb = args_for(p, true, false, out_f, out_b);
  kernels_for(Isa::kReference).bgemm(gb);
  for (std::size_t r = 0; r < p.m; ++r) {
    for (std::size_t o = 0; o < 16; ++o) {
      const bool bit = (out_b[r * gb.ldo + o / 8] >> (o % 8)) & 1u;
      EXPECT_EQ(bit, o < p.n && dots[r * gf.ldo + o] < static_cast<float>(p.threshold[o]));
    }
  }
}

class BgemmIsa : public ::testing::TestWithParam<Isa> {};

void expect_same_as_reference(Isa isa, std::size_t m, std::size_t n, std::size_t k_bits,
                              std::uint32_t seed) {
  const Problem p = make_problem(m, n, k_bits, seed);
  for (bool bits : {false, true}) {
    for (bool corr : {false, true}) {
      std::vector<float> ref_f, got_f;
      std::vector<std::uint8_t> ref_b, got_b;
      BgemmArgs ref = args_for(p, bits, corr, ref_f, ref_b);
      BgemmArgs got = args_for(p, bits, corr, got_f, got_b);
      kernels_for(Isa::kReference).bgemm(ref);
      kernels_for(isa).bgemm(got);
      const std::string where = std::string(isa_name(isa)) + " m=" + std::to_string(m) +
                                " n=" + std::to_string(n) + " k=" + std::to_string(k_bits) +
                                (bits ? " bits" : " float") + (corr ? " corr" : "");
      ASSERT_EQ(ref_b, got_b) << where;
      ASSERT_EQ(ref_f.size(), got_f.size()) << where;
      for (std::size_t i = 0; i < ref_f.size(); ++i) {
        ASSERT_EQ(std::memcmp(&ref_f[i], &got_f[i], 4), 0) << where << " at " << i;
      }
    }
  }
}

TEST_P(BgemmIsa, BitExactAgainstReferenceAroundTiles) {
  std::uint32_t seed = 1;
  for (std::size_t m : {1u, 3u, 4u, 5u, 8u, 9u, 17u}) {
    for (std::size_t n : {1u, 7u, 8u, 9u, 24u, 31u, 32u, 33u, 64u, 65u}) {
      for (std::size_t k_bits : {1u, 64u, 100u, 576u, 2305u}) {
        expect_same_as_reference(GetParam(), m, n, k_bits, seed++);
      }
    }
  }
}

TEST_P(BgemmIsa, BitsAtTiesAndExtremeThresholds) {
  // Thresholds equal to a row's dot (dot < threshold is false there, true one above), either
  // parity, and the extremes of int32 (the SIMD kernels compare counts against limits derived
  // from the thresholds, which must neither overflow nor round the wrong way).
  const std::int32_t extremes[] = {INT32_MIN, INT32_MIN + 1, -(1 << 30) - 1, -(1 << 30),
                                   1 << 30,   INT32_MAX - 1, INT32_MAX,      0};
  for (std::size_t k_bits : {1u, 63u, 64u, 65u, 577u}) {
    for (bool corr : {false, true}) {
      Problem p = make_problem(11, 40, k_bits, 300 + static_cast<std::uint32_t>(k_bits));
      std::vector<float> dots;
      std::vector<std::uint8_t> unused;
      BgemmArgs gf = args_for(p, false, corr, dots, unused);
      std::vector<float> ones(p.threshold.size(), 1.0f), zeros(p.threshold.size(), 0.0f);
      gf.epilogue.multiplier = ones.data(), gf.epilogue.bias = zeros.data();
      kernels_for(Isa::kReference).bgemm(gf);
      for (std::size_t o = 0; o < p.n; ++o) {
        const auto dot = static_cast<std::int32_t>(dots[(o % p.m) * gf.ldo + o]);
        p.threshold[o] = o < 24 ? dot + static_cast<std::int32_t>(o % 3) - 1 : extremes[o % 8];
      }
      std::vector<float> ref_f, got_f;
      std::vector<std::uint8_t> ref_b, got_b;
      BgemmArgs ref = args_for(p, true, corr, ref_f, ref_b);
      BgemmArgs got = args_for(p, true, corr, got_f, got_b);
      kernels_for(Isa::kReference).bgemm(ref);
      kernels_for(GetParam()).bgemm(got);
      EXPECT_EQ(ref_b, got_b) << isa_name(GetParam()) << " k=" << k_bits << " corr=" << corr;
      // The ties must go both ways, or the test would not tell a shifted limit apart.
      std::size_t set = 0;
      for (std::size_t o = 0; o < 24; ++o)
        set += (ref_b[(o % p.m) * ref.ldo + o / 8] >> (o % 8)) & 1u;
      EXPECT_EQ(set, 8u) << "k=" << k_bits;
    }
  }
}

TEST_P(BgemmIsa, LargeKDoesNotOverflow) {
  // 2^20 bits per row: popcounts far beyond 8/16-bit lanes; all-ones vs all-zeros gives the
  // extreme dot -K.
  const std::size_t k_bits = std::size_t{1} << 20;
  Problem p = make_problem(5, 9, k_bits, 99);
  expect_same_as_reference(GetParam(), 5, 9, k_bits, 99);
  std::fill(p.a.begin(), p.a.end(), ~BitWord{0});
  std::fill(p.w_packed.begin(), p.w_packed.end(), 0);
  std::vector<float> out_f;
  std::vector<std::uint8_t> out_b;
  BgemmArgs g = args_for(p, false, false, out_f, out_b);
  std::vector<float> ones(16, 1.0f), zeros(16, 0.0f);
  g.epilogue.multiplier = ones.data(), g.epilogue.bias = zeros.data();
  kernels_for(GetParam()).bgemm(g);
  EXPECT_EQ(out_f[0], -static_cast<float>(k_bits));
}

TEST_P(BgemmIsa, PackSignsMatchesReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (std::size_t n : {1u, 7u, 8u, 15u, 16u, 17u, 63u, 64u, 65u, 130u}) {
    const std::size_t rows = 3, ld_in = n + 2, ld_out = words_for_bits(n) + 1;
    std::vector<float> x(rows * ld_in);
    for (auto& v : x) v = nd(rng);
    x[0] = -0.0f;
    if (n > 2) x[1] = std::numeric_limits<float>::quiet_NaN(), x[2] = 0.0f;
    std::vector<BitWord> ref(rows * ld_out, 7), got(rows * ld_out, 7);
    kernels_for(Isa::kReference).pack_sign_rows(x.data(), rows, n, ld_in, ref.data(), ld_out);
    kernels_for(GetParam()).pack_sign_rows(x.data(), rows, n, ld_in, got.data(), ld_out);
    EXPECT_EQ(ref, got) << "n=" << n;
    EXPECT_FALSE(get_bit(ref.data(), 0)) << "sign(-0) must be +1";
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(get_bit(ref.data(), i), x[i] < 0.0f);
  }
}

std::vector<Isa> optimized_isas() {
  std::vector<Isa> isas;
  for (Isa isa : supported_isas()) {
    if (isa != Isa::kReference) isas.push_back(isa);
  }
  if (isas.empty()) isas.push_back(Isa::kReference);  // still run the sweep on old CPUs
  return isas;
}

INSTANTIATE_TEST_SUITE_P(Kernels, BgemmIsa, ::testing::ValuesIn(optimized_isas()),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(Bitpack, CopyBitsAtAnyOffset) {
  std::mt19937_64 rng(11);
  const std::vector<std::size_t> offsets{0, 1, 3, 31, 63, 64, 65, 70, 127, 128};
  const std::vector<std::size_t> lengths{0, 1, 2, 63, 64, 65, 100, 127, 128, 129};
  for (std::size_t s : offsets) {
    for (std::size_t d : offsets) {
      for (std::size_t nbits : lengths) {
        // Source sized exactly to the copied range: copy_bits must not read past it.
        std::vector<BitWord> src(words_for_bits(s + nbits) + (s + nbits == 0 ? 1 : 0)), dst(8);
        for (auto& w : src) w = rng();
        for (auto& w : dst) w = rng();
        const std::vector<BitWord> before = dst;
        copy_bits(src.data(), s, nbits, dst.data(), d);
        for (std::size_t i = 0; i < 8 * 64; ++i) {
          const bool inside = i >= d && i < d + nbits;
          EXPECT_EQ(get_bit(dst.data(), i),
                    inside ? get_bit(src.data(), s + i - d) : get_bit(before.data(), i))
              << "src_bit " << s << " dst_bit " << d << " nbits " << nbits << " bit " << i;
        }
      }
    }
  }
}

TEST(Dispatch, ParsesAndRejectsIsaNames) {
  EXPECT_EQ(parse_isa("avx2"), Isa::kAvx2);
  EXPECT_EQ(parse_isa("reference"), Isa::kReference);
  EXPECT_THROW(parse_isa("sse9"), std::invalid_argument);
  EXPECT_TRUE(isa_supported(Isa::kReference));
}

}  // namespace
}  // namespace onebit::runtime
