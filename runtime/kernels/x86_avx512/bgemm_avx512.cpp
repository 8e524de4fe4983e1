// AVX-512 kernels (F, BW, VL, DQ, VPOPCNTDQ). Register tile: 4 panels of 8 output channels x 5
// activation rows = 20 accumulators of 8 x 64-bit counts; K is streamed one word at a time, the
// activation word is broadcast and XORed with one 512-bit weight vector per panel.

#include <immintrin.h>

#include <utility>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

namespace {

constexpr int kTilePanels = 4;
constexpr int kTileRows = 5;

// Two panels' counts (8 x 64-bit lanes each) as 16 x 32-bit lanes, first's 8 then second's 8
// (counts are below 2^24: no loss).
inline __m512i narrow_pair(__m512i first, __m512i second) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return _mm512_permutex2var_epi32(first, even, second);
}

// The output transform of a tile, in 32-bit lanes on pairs of panels (16 channels per vector):
// dot = k_bits - 2 * pc (- correction), then either the exact int -> float conversion and
// multiplier * dot + bias as two roundings, like the reference, or the threshold compare of the
// packed-bits output (one byte per panel). Per-channel vectors are loaded once per tile, and every
// loop is unrolled so the counts stay in registers. Masked loads: nothing past the panels is read.
template <int Pairs, int Rows>
struct TileOutput {
  const BgemmArgs& g;
  std::size_t row, panel;
  __m512i pc[Pairs][Rows];

  static constexpr __mmask16 lanes(int pair, int panels) {
    return 2 * pair + 1 < panels ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>(0x00FF);
  }
  std::size_t channel(int pair) const { return (panel + 2 * static_cast<std::size_t>(pair)) * 8; }
  const std::int32_t* correction(int r) const {
    const BgemmEpilogue& e = g.epilogue;
    return e.correction_table + e.correction_row[row + r] * bgemm_correction_ld(e, g.n);
  }

  // Bit o is set when dot < threshold, i.e. 2 pc > k_bits - correction - threshold, i.e. pc >
  // floor((k_bits - correction - threshold) / 2). Thresholds are clamped to [-2^30, 2^30]
  // (INT32_MIN marks padded channels): every |dot| is below 2^25, so no bit changes and nothing
  // overflows.
  template <int Panels, bool kCorrection>
  [[gnu::always_inline]] void bits() const {
    __m512i limit[Pairs];
#pragma GCC unroll 4
    for (int q = 0; q < Pairs; ++q) {
      const __m512i t = _mm512_min_epi32(
          _mm512_max_epi32(
              _mm512_maskz_loadu_epi32(lanes(q, Panels), g.epilogue.threshold + channel(q)),
              _mm512_set1_epi32(-(1 << 30))),
          _mm512_set1_epi32(1 << 30));
      limit[q] = _mm512_sub_epi32(_mm512_set1_epi32(g.k_bits), t);
      if (!kCorrection) limit[q] = _mm512_srai_epi32(limit[q], 1);
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      std::uint8_t* dst = g.out_bits + (row + r) * g.ldo;
#pragma GCC unroll 4
      for (int q = 0; q < Pairs; ++q) {
        __m512i m = limit[q];
        if (kCorrection) {
          const __m512i corr =
              _mm512_maskz_loadu_epi32(lanes(q, Panels), correction(r) + channel(q));
          m = _mm512_srai_epi32(_mm512_sub_epi32(m, corr), 1);
        }
        const auto set = static_cast<unsigned>(_mm512_cmpgt_epi32_mask(pc[q][r], m));
        std::uint8_t* out = dst + channel(q) / 8;
        out[0] = static_cast<std::uint8_t>(set);
        if (2 * q + 1 < Panels) out[1] = static_cast<std::uint8_t>(set >> 8);
      }
    }
  }

  template <int Panels, bool kCorrection>
  [[gnu::always_inline]] void floats() const {
    __m512 mult[Pairs], bias[Pairs];
    __mmask16 valid[Pairs];
#pragma GCC unroll 4
    for (int q = 0; q < Pairs; ++q) {
      mult[q] = _mm512_maskz_loadu_ps(lanes(q, Panels), g.epilogue.multiplier + channel(q));
      bias[q] = _mm512_maskz_loadu_ps(lanes(q, Panels), g.epilogue.bias + channel(q));
      const std::size_t left = g.n - channel(q), width = 2 * q + 1 < Panels ? 16 : 8;
      valid[q] = static_cast<__mmask16>((1u << (left < width ? left : width)) - 1);
    }
    const __m512i k = _mm512_set1_epi32(g.k_bits);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      float* dst = g.out_float + (row + r) * g.ldo;
#pragma GCC unroll 4
      for (int q = 0; q < Pairs; ++q) {
        __m512i dot = _mm512_sub_epi32(k, _mm512_add_epi32(pc[q][r], pc[q][r]));
        if (kCorrection) {
          dot = _mm512_sub_epi32(
              dot, _mm512_maskz_loadu_epi32(lanes(q, Panels), correction(r) + channel(q)));
        }
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), mult[q]), bias[q]);
        _mm512_mask_storeu_ps(dst + channel(q), valid[q], y);
      }
    }
  }

  template <int Panels>
  [[gnu::always_inline]] void store() const {
    const bool correction = g.epilogue.correction_table != nullptr;
    if (g.epilogue.kind == BgemmEpilogue::Kind::kBits) {
      correction ? bits<Panels, true>() : bits<Panels, false>();
    } else {
      correction ? floats<Panels, true>() : floats<Panels, false>();
    }
  }
};

template <bool kImplicit, int Panels, int Rows>
void bgemm_tile(const BgemmArgs& g, std::size_t row, std::size_t panel) {
  __m512i acc[Panels][Rows];
#pragma GCC unroll 4
  for (int p = 0; p < Panels; ++p) {
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) acc[p][r] = _mm512_setzero_si512();
  }
  const BitWord* a[Rows];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
    a[r] = kImplicit ? g.a + g.a_rows[row + r] : g.a + (row + r) * g.lda;
  }
  const std::uint32_t* offsets = g.a_offsets;
  const std::size_t panel_words = g.k_words * kBgemmPanel;
  const BitWord* b = g.b + panel * panel_words;
  for (std::size_t k = 0; k < g.k_words; ++k) {
    __m512i w[Panels];
#pragma GCC unroll 4
    for (int p = 0; p < Panels; ++p) w[p] = _mm512_loadu_si512(b + p * panel_words + k * 8);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const __m512i x = _mm512_set1_epi64(static_cast<long long>(a[r][kImplicit ? offsets[k] : k]));
#pragma GCC unroll 4
      for (int p = 0; p < Panels; ++p) {
        acc[p][r] = _mm512_add_epi64(acc[p][r], _mm512_popcnt_epi64(_mm512_xor_si512(w[p], x)));
      }
    }
  }
  constexpr int kPairs = (Panels + 1) / 2;
  TileOutput<kPairs, Rows> out{g, row, panel, {}};
#pragma GCC unroll 4
  for (int q = 0; q < kPairs; ++q) {
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      out.pc[q][r] = narrow_pair(acc[2 * q][r], acc[2 * q + 1 < Panels ? 2 * q + 1 : 2 * q][r]);
    }
  }
  out.template store<Panels>();
}

using TileFn = void (*)(const BgemmArgs&, std::size_t, std::size_t);

template <bool kImplicit, int Panels, int... Rows>
constexpr void fill_row(TileFn* out, std::integer_sequence<int, Rows...>) {
  ((out[Rows] = &bgemm_tile<kImplicit, Panels, Rows + 1>), ...);
}

struct TileTable {
  TileFn fn[kTilePanels][kTileRows];
  constexpr TileFn at(std::size_t panels, std::size_t rows) const {
    return fn[panels - 1][rows - 1];
  }
};

template <bool kImplicit, int... Panels>
constexpr TileTable make_tiles(std::integer_sequence<int, Panels...>) {
  TileTable t{};
  (fill_row<kImplicit, Panels + 1>(t.fn[Panels], std::make_integer_sequence<int, kTileRows>{}),
   ...);
  return t;
}

constexpr TileTable kTiles[2] = {
    make_tiles<false>(std::make_integer_sequence<int, kTilePanels>{}),
    make_tiles<true>(std::make_integer_sequence<int, kTilePanels>{})};  // [implicit]

BitWord pack_word(const float* x, std::size_t count) {
  BitWord word = 0;
  const __m512 zero = _mm512_setzero_ps();
  for (std::size_t base = 0; base < count; base += 16) {
    const std::size_t left = count - base;
    const __mmask16 load = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(load, x + base);
    const __mmask16 negative = _mm512_mask_cmp_ps_mask(load, v, zero, _CMP_LT_OQ);
    word |= static_cast<BitWord>(negative) << base;
  }
  return word;
}

}  // namespace

void bgemm_b1_32x4_avx512(const BgemmArgs& g) {
  const std::size_t panels = bgemm_padded_n(g.n) / kBgemmPanel;
  // Blocks of rows whose activation words stay in L1 while every panel passes over them.
  const std::size_t block = bgemm_row_block(g.k_words, kTileRows);
  const TileTable& tiles = kTiles[g.a_rows != nullptr ? 1 : 0];
  for (std::size_t r0 = 0; r0 < g.m; r0 += block) {
    const std::size_t r1 = g.m - r0 < block ? g.m : r0 + block;
    for (std::size_t p = 0; p < panels; p += kTilePanels) {
      const std::size_t tile_panels = panels - p < kTilePanels ? panels - p : kTilePanels;
      for (std::size_t r = r0; r < r1; r += kTileRows) {
        const std::size_t tile_rows = r1 - r < kTileRows ? r1 - r : kTileRows;
        tiles.at(tile_panels, tile_rows)(g, r, p);
      }
    }
  }
}

void pack_sign_rows_avx512(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                           BitWord* out, std::size_t ld_out) {
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t i = 0; i < n; i += kBitsPerWord) {
      const std::size_t count = n - i < kBitsPerWord ? n - i : kBitsPerWord;
      out[r * ld_out + i / kBitsPerWord] = pack_word(x + r * ld_in + i, count);
    }
  }
}

}  // namespace onebit::runtime::kernels
