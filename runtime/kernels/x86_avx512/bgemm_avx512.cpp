// AVX-512 kernels (F, BW, VL, DQ, VPOPCNTDQ). Register tile: 4 panels of 8 output channels x 4
// activation rows = 16 accumulators of 8 x 64-bit counts; K is streamed one word at a time, the
// activation word is broadcast and XORed with one 512-bit weight vector per panel.

#include <immintrin.h>

#include <utility>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

namespace {

constexpr int kTilePanels = 4;
constexpr int kTileRows = 4;

// Two panels' counts (8 x 64-bit lanes each) as 16 x 32-bit lanes, first's 8 then second's 8
// (counts are below 2^24: no loss).
inline __m512i narrow_pair(__m512i first, __m512i second) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return _mm512_permutex2var_epi32(first, even, second);
}

// Output transform of one row x `channels` (8 or 16: one or two panels) output channels from o,
// in 32-bit lanes: dot = k_bits - 2 * pc (- correction), then threshold compares (kBits: one
// output byte per panel) or the exact int -> float conversion and multiplier * dot + bias as two
// roundings, like the reference. Masked loads: nothing past the panels is read.
inline void store_channels(const BgemmArgs& g, std::size_t r, std::size_t o, __m512i pc,
                           std::size_t channels) {
  const __mmask16 lanes = channels == 16 ? static_cast<__mmask16>(0xFFFF) : 0x00FF;
  __m512i dot = _mm512_sub_epi32(_mm512_set1_epi32(g.k_bits), _mm512_slli_epi32(pc, 1));
  const BgemmEpilogue& e = g.epilogue;
  if (e.correction_table != nullptr) {
    const std::int32_t* corr =
        e.correction_table + e.correction_row[r] * bgemm_correction_ld(e, g.n) + o;
    dot = _mm512_sub_epi32(dot, _mm512_maskz_loadu_epi32(lanes, corr));
  }
  if (e.kind == BgemmEpilogue::Kind::kBits) {
    const __m512i threshold = _mm512_maskz_loadu_epi32(lanes, e.threshold + o);
    const auto bits = static_cast<unsigned>(_mm512_mask_cmplt_epi32_mask(lanes, dot, threshold));
    std::uint8_t* dst = g.out_bits + r * g.ldo + o / 8;
    dst[0] = static_cast<std::uint8_t>(bits);
    if (channels == 16) dst[1] = static_cast<std::uint8_t>(bits >> 8);
    return;
  }
  __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_maskz_loadu_ps(lanes, e.multiplier + o));
  y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(lanes, e.bias + o));
  const std::size_t valid = g.n - o < channels ? g.n - o : channels;
  _mm512_mask_storeu_ps(g.out_float + r * g.ldo + o, static_cast<__mmask16>((1u << valid) - 1), y);
}

template <bool kImplicit, int Panels, int Rows>
void bgemm_tile(const BgemmArgs& g, std::size_t row, std::size_t panel) {
  __m512i acc[Panels][Rows];
  for (int p = 0; p < Panels; ++p) {
    for (int r = 0; r < Rows; ++r) acc[p][r] = _mm512_setzero_si512();
  }
  const BitWord* a[Rows];
  for (int r = 0; r < Rows; ++r) {
    a[r] = kImplicit ? g.a + g.a_rows[row + r] : g.a + (row + r) * g.lda;
  }
  const std::uint32_t* offsets = g.a_offsets;
  const std::size_t panel_words = g.k_words * kBgemmPanel;
  const BitWord* b = g.b + panel * panel_words;
  for (std::size_t k = 0; k < g.k_words; ++k) {
    __m512i w[Panels];
    for (int p = 0; p < Panels; ++p) w[p] = _mm512_loadu_si512(b + p * panel_words + k * 8);
    for (int r = 0; r < Rows; ++r) {
      const __m512i x = _mm512_set1_epi64(static_cast<long long>(a[r][kImplicit ? offsets[k] : k]));
      for (int p = 0; p < Panels; ++p) {
        acc[p][r] = _mm512_add_epi64(acc[p][r], _mm512_popcnt_epi64(_mm512_xor_si512(w[p], x)));
      }
    }
  }
  // Panels in pairs: the output transform runs on 16 channels per vector.
  for (int p = 0; p < Panels; p += 2) {
    for (int r = 0; r < Rows; ++r) {
      const std::size_t o = (panel + p) * kBgemmPanel;
      if (p + 1 < Panels) {
        store_channels(g, row + r, o, narrow_pair(acc[p][r], acc[p + 1][r]), 2 * kBgemmPanel);
      } else {
        store_channels(g, row + r, o, narrow_pair(acc[p][r], acc[p][r]), kBgemmPanel);
      }
    }
  }
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
