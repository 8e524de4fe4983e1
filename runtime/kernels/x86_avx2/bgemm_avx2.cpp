// AVX2 kernels. No vector popcount: each byte is counted with two 4-bit table lookups (vpshufb)
// and the bytes are summed into 64-bit lanes with vpsadbw. Register tile: one panel of 8 output
// channels (two 256-bit halves) x 4 activation rows.

#include <immintrin.h>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

namespace {

constexpr int kTileRows = 4;

struct Popcounter {
  __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2,
                                   2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  __m256i low_nibbles = _mm256_set1_epi8(0x0F);

  __m256i count64(__m256i v) const {
    const __m256i lo = _mm256_and_si256(v, low_nibbles);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles);
    const __m256i bytes =
        _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
    return _mm256_sad_epu8(bytes, _mm256_setzero_si256());
  }
};

void store_panel(const BgemmArgs& g, std::size_t r, std::size_t o, __m256i lo, __m256i hi) {
  alignas(32) std::int64_t popcount[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(popcount), lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(popcount + 4), hi);
  if (g.epilogue.kind == BgemmEpilogue::Kind::kBits) {
    unsigned byte = 0;
    for (unsigned i = 0; i < 8; ++i) {
      byte |= (bgemm_dot(g, r, o + i, popcount[i]) < g.epilogue.threshold[o + i] ? 1u : 0u) << i;
    }
    g.out_bits[r * g.ldo + o / 8] = static_cast<std::uint8_t>(byte);
    return;
  }
  for (std::size_t i = 0; i < 8 && o + i < g.n; ++i) {
    const auto dot = static_cast<float>(bgemm_dot(g, r, o + i, popcount[i]));
    g.out_float[r * g.ldo + o + i] = dot * g.epilogue.multiplier[o + i] + g.epilogue.bias[o + i];
  }
}

template <int Rows>
void bgemm_tile(const BgemmArgs& g, std::size_t row, std::size_t panel) {
  const Popcounter pc;
  __m256i acc_lo[Rows], acc_hi[Rows];
  const BitWord* a[Rows];
  for (int r = 0; r < Rows; ++r) {
    acc_lo[r] = _mm256_setzero_si256();
    acc_hi[r] = _mm256_setzero_si256();
    a[r] = g.a + (row + r) * g.lda;
  }
  const BitWord* b = g.b + panel * g.k_words * kBgemmPanel;
  for (std::size_t k = 0; k < g.k_words; ++k) {
    const __m256i w_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + k * 8));
    const __m256i w_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + k * 8 + 4));
    for (int r = 0; r < Rows; ++r) {
      const __m256i x = _mm256_set1_epi64x(static_cast<long long>(a[r][k]));
      acc_lo[r] = _mm256_add_epi64(acc_lo[r], pc.count64(_mm256_xor_si256(w_lo, x)));
      acc_hi[r] = _mm256_add_epi64(acc_hi[r], pc.count64(_mm256_xor_si256(w_hi, x)));
    }
  }
  for (int r = 0; r < Rows; ++r) {
    store_panel(g, row + r, panel * kBgemmPanel, acc_lo[r], acc_hi[r]);
  }
}

using TileFn = void (*)(const BgemmArgs&, std::size_t, std::size_t);
constexpr TileFn kTiles[kTileRows] = {&bgemm_tile<1>, &bgemm_tile<2>, &bgemm_tile<3>,
                                      &bgemm_tile<4>};

}  // namespace

void bgemm_b1_8x4_avx2(const BgemmArgs& g) {
  const std::size_t panels = bgemm_padded_n(g.n) / kBgemmPanel;
  for (std::size_t p = 0; p < panels; ++p) {
    for (std::size_t r = 0; r < g.m; r += kTileRows) {
      const std::size_t rows = g.m - r < kTileRows ? g.m - r : kTileRows;
      kTiles[rows - 1](g, r, p);
    }
  }
}

void pack_sign_rows_avx2(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                         BitWord* out, std::size_t ld_out) {
  const __m256 zero = _mm256_setzero_ps();
  for (std::size_t r = 0; r < rows; ++r) {
    const float* in = x + r * ld_in;
    BitWord* row_out = out + r * ld_out;
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const int negative =
          _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(in + i), zero, _CMP_LT_OQ));
      if (i % kBitsPerWord == 0) row_out[i / kBitsPerWord] = 0;
      row_out[i / kBitsPerWord] |= static_cast<BitWord>(negative) << (i % kBitsPerWord);
    }
    for (; i < n; ++i) {
      if (i % kBitsPerWord == 0) row_out[i / kBitsPerWord] = 0;
      row_out[i / kBitsPerWord] |= sign_bit(in[i]) << (i % kBitsPerWord);
    }
  }
}

}  // namespace onebit::runtime::kernels
