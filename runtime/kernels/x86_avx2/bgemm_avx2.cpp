// AVX2 kernels. No vector popcount: each byte is counted with two 4-bit table lookups (vpshufb)
// and the bytes are summed into 64-bit lanes with vpsadbw (per word, or once per tile for K up
// to 31 words). The output transform runs in registers. Register tile: one panel of 8 output
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

  // acc + the popcount of each byte of v, in byte lanes.
  __m256i add_bytes(__m256i acc, __m256i v) const {
    const __m256i lo = _mm256_and_si256(v, low_nibbles);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles);
    acc = _mm256_add_epi8(acc, _mm256_shuffle_epi8(table, lo));
    return _mm256_add_epi8(acc, _mm256_shuffle_epi8(table, hi));
  }
};

// Output transform of one row x one panel of 8 channels, in registers: dot = k_bits - 2 * pc
// (- correction) in 64-bit lanes, then 8 threshold compares (kBits: one output byte) or the
// exact int -> float conversion (|dot| < 2^24) and multiplier * dot + bias as two roundings,
// like the reference.
[[gnu::always_inline]] inline void store_panel(const BgemmArgs& g, std::size_t r, std::size_t o,
                                               __m256i lo, __m256i hi) {
  const BgemmEpilogue& e = g.epilogue;
  const __m256i k_bits = _mm256_set1_epi64x(g.k_bits);
  __m256i dot_lo = _mm256_sub_epi64(k_bits, _mm256_slli_epi64(lo, 1));
  __m256i dot_hi = _mm256_sub_epi64(k_bits, _mm256_slli_epi64(hi, 1));
  if (e.correction_table != nullptr) {
    const std::int32_t* corr =
        e.correction_table + e.correction_row[r] * bgemm_correction_ld(e, g.n) + o;
    dot_lo = _mm256_sub_epi64(
        dot_lo, _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(corr))));
    dot_hi = _mm256_sub_epi64(
        dot_hi, _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(corr + 4))));
  }
  if (e.kind == BgemmEpilogue::Kind::kBits) {
    const std::int32_t* t = e.threshold + o;
    const __m256i t_lo =
        _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
    const __m256i t_hi =
        _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t + 4)));
    const int bits_lo = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(t_lo, dot_lo)));
    const int bits_hi = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(t_hi, dot_hi)));
    g.out_bits[r * g.ldo + o / 8] = static_cast<std::uint8_t>(bits_lo | bits_hi << 4);
    return;
  }
  // The low 32 bits of each 64-bit lane, lo's four then hi's four.
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128i dot32_lo = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(dot_lo, even));
  const __m128i dot32_hi = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(dot_hi, even));
  const __m256 dot = _mm256_cvtepi32_ps(_mm256_setr_m128i(dot32_lo, dot32_hi));
  const __m256 y = _mm256_add_ps(_mm256_mul_ps(dot, _mm256_loadu_ps(e.multiplier + o)),
                                 _mm256_loadu_ps(e.bias + o));
  float* dst = g.out_float + r * g.ldo + o;
  const std::size_t valid = g.n - o < 8 ? g.n - o : 8;
  if (valid == 8) {
    _mm256_storeu_ps(dst, y);
  } else {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lane);
    _mm256_maskstore_ps(dst, mask, y);
  }
}

// Up to this many K words, a tile counts into byte lanes (at most 8 per byte per word, so
// 31 words fit in a byte) and folds them into 64-bit lanes once at the end: one vpsadbw and one
// add less per vector and word than counting each word into 64-bit lanes.
constexpr std::size_t kByteCountWords = 31;

template <int Rows, bool kBytes, bool kImplicit>
void bgemm_tile(const BgemmArgs& g, std::size_t row, std::size_t panel) {
  const Popcounter pc;
  __m256i acc_lo[Rows], acc_hi[Rows];
  const BitWord* a[Rows];
  // Unrolled, so the accumulators stay registers (a loop here becomes a memset of a stack array).
#pragma GCC unroll 4
  for (int r = 0; r < Rows; ++r) {
    acc_lo[r] = _mm256_setzero_si256();
    acc_hi[r] = _mm256_setzero_si256();
    a[r] = kImplicit ? g.a + g.a_rows[row + r] : g.a + (row + r) * g.lda;
  }
  const std::uint32_t* offsets = g.a_offsets;
  const BitWord* b = g.b + panel * g.k_words * kBgemmPanel;
  for (std::size_t k = 0; k < g.k_words; ++k) {
    const __m256i w_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + k * 8));
    const __m256i w_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + k * 8 + 4));
#pragma GCC unroll 4
    for (int r = 0; r < Rows; ++r) {
      const __m256i x =
          _mm256_set1_epi64x(static_cast<long long>(a[r][kImplicit ? offsets[k] : k]));
      if constexpr (kBytes) {
        acc_lo[r] = pc.add_bytes(acc_lo[r], _mm256_xor_si256(w_lo, x));
        acc_hi[r] = pc.add_bytes(acc_hi[r], _mm256_xor_si256(w_hi, x));
      } else {
        acc_lo[r] = _mm256_add_epi64(acc_lo[r], pc.count64(_mm256_xor_si256(w_lo, x)));
        acc_hi[r] = _mm256_add_epi64(acc_hi[r], pc.count64(_mm256_xor_si256(w_hi, x)));
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < Rows; ++r) {
    if constexpr (kBytes) {
      acc_lo[r] = _mm256_sad_epu8(acc_lo[r], _mm256_setzero_si256());
      acc_hi[r] = _mm256_sad_epu8(acc_hi[r], _mm256_setzero_si256());
    }
    store_panel(g, row + r, panel * kBgemmPanel, acc_lo[r], acc_hi[r]);
  }
}

using TileFn = void (*)(const BgemmArgs&, std::size_t, std::size_t);
// [implicit][rows - 1]
constexpr TileFn kTiles[2][kTileRows] = {
    {&bgemm_tile<1, false, false>, &bgemm_tile<2, false, false>, &bgemm_tile<3, false, false>,
     &bgemm_tile<4, false, false>},
    {&bgemm_tile<1, false, true>, &bgemm_tile<2, false, true>, &bgemm_tile<3, false, true>,
     &bgemm_tile<4, false, true>}};
// Byte counting keeps 3 rows: 6 accumulators, the table, the mask, 2 weight vectors and the
// temporaries fit in the 16 registers (4 rows spill).
constexpr int kByteTileRows = 3;
constexpr TileFn kByteTiles[2][kByteTileRows] = {
    {&bgemm_tile<1, true, false>, &bgemm_tile<2, true, false>, &bgemm_tile<3, true, false>},
    {&bgemm_tile<1, true, true>, &bgemm_tile<2, true, true>, &bgemm_tile<3, true, true>}};

}  // namespace

void bgemm_b1_8x4_avx2(const BgemmArgs& g) {
  const std::size_t panels = bgemm_padded_n(g.n) / kBgemmPanel;
  const bool bytes = g.k_words <= kByteCountWords;
  const int implicit = g.a_rows != nullptr ? 1 : 0;
  const TileFn* tiles = bytes ? kByteTiles[implicit] : kTiles[implicit];
  const std::size_t tile_rows = bytes ? kByteTileRows : kTileRows;
  // Blocks of rows whose activation words stay in L1 while every panel passes over them (and
  // each output row is written whole while its cache lines are hot).
  const std::size_t block = bgemm_row_block(g.k_words, tile_rows);
  for (std::size_t r0 = 0; r0 < g.m; r0 += block) {
    const std::size_t r1 = g.m - r0 < block ? g.m : r0 + block;
    for (std::size_t p = 0; p < panels; ++p) {
      for (std::size_t r = r0; r < r1; r += tile_rows) {
        const std::size_t rows = r1 - r < tile_rows ? r1 - r : tile_rows;
        tiles[rows - 1](g, r, p);
      }
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
