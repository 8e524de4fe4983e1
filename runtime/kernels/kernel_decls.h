#pragma once
// Internal: per-ISA kernel entry points. ISA source files include only this header, <cstdint>
// and intrinsics, so that no standard-library template is instantiated with ISA flags (the
// linker could otherwise pick an AVX-512 copy of a shared inline function for every caller).

#include <cstddef>
#include <cstdint>

#include "onebit/runtime/kernels.h"

namespace onebit::runtime::kernels {

void bgemm_b1_reference(const BgemmArgs& args);
void pack_sign_rows_reference(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                              BitWord* out, std::size_t ld_out);

void sgemm_f32_reference(const SgemmArgs& args);
void dwconv_f32_reference(const DwconvArgs& args);
void csr_sgemm_f32_reference(const CsrSgemmArgs& args);

PeakLoopResult binary_peak_loop_reference(std::uint64_t blocks, BitWord seed);
PeakLoopResult binary_peak_loop_avx2(std::uint64_t blocks, BitWord seed);
PeakLoopResult binary_peak_loop_avx512(std::uint64_t blocks, BitWord seed);

void bgemm_b1_8x4_avx2(const BgemmArgs& args);
void pack_sign_rows_avx2(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                         BitWord* out, std::size_t ld_out);

void sgemm_f32_6x16_avx2(const SgemmArgs& args);
void dwconv_f32_avx2(const DwconvArgs& args);
void csr_sgemm_f32_avx2(const CsrSgemmArgs& args);
// Tests only: the AVX-512 float kernels' tiling (16 lanes) on pairs of AVX2 vectors, for
// machines without AVX-512 (in no kernel table).
void sgemm_f32_8x32_avx2pair(const SgemmArgs& args);
void dwconv_f32_avx2pair(const DwconvArgs& args);
void csr_sgemm_f32_avx2pair(const CsrSgemmArgs& args);

void bgemm_b1_32x4_avx512(const BgemmArgs& args);
void pack_sign_rows_avx512(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                           BitWord* out, std::size_t ld_out);
void sgemm_f32_8x32_avx512(const SgemmArgs& args);
void dwconv_f32_avx512(const DwconvArgs& args);
void csr_sgemm_f32_avx512(const CsrSgemmArgs& args);

// Scalar output transform shared by every ISA for one accumulator (internal linkage, so each ISA
// file keeps its own copy).
static inline std::int64_t bgemm_dot(const BgemmArgs& g, std::size_t row, std::size_t o,
                                     std::int64_t popcount) {
  std::int64_t dot = g.k_bits - 2 * popcount;
  if (g.epilogue.correction_table != nullptr) {
    dot -= g.epilogue.correction_table[g.epilogue.correction_row[row] *
                                           bgemm_correction_ld(g.epilogue, g.n) +
                                       o];
  }
  return dot;
}

// Rows per block of a binary GEMM's loop over rows, then panels, then tiles: about 8 KiB of
// activation words (a multiple of the tile's rows, at least one tile), so that a block stays in
// L1 while every weight panel passes over it (internal linkage, like bgemm_dot).
static inline std::size_t bgemm_row_block(std::size_t k_words, std::size_t tile_rows) {
  const std::size_t rows = 1024 / (k_words > 0 ? k_words : 1) / tile_rows * tile_rows;
  return rows > tile_rows ? rows : tile_rows;
}

// Row r of the activations: its first word, and its word k at `row[bgemm_a_index(g, k)]`
// (internal linkage, like bgemm_dot).
static inline const BitWord* bgemm_a_row(const BgemmArgs& g, std::size_t r) {
  return g.a_rows != nullptr ? g.a + g.a_rows[r] : g.a + r * g.lda;
}
static inline std::size_t bgemm_a_index(const BgemmArgs& g, std::size_t k) {
  return g.a_rows != nullptr ? g.a_offsets[k] : k;
}

// Word `index` of a peak loop's data (splitmix64 of seed + index): every ISA derives its
// registers' contents the same way (internal linkage, like bgemm_dot).
static inline BitWord peak_word(BitWord seed, std::uint64_t index) {
  BitWord z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Taps [*first, *last) of one window axis whose input coordinate `start + t * dilation` lies in
// [0, size), for t in [0, taps) (internal linkage, like bgemm_dot).
static inline void window_tap_range(std::int64_t start, std::int64_t dilation, std::int64_t taps,
                                    std::int64_t size, std::int64_t* first, std::int64_t* last) {
  std::int64_t lo = start >= 0 ? 0 : (-start + dilation - 1) / dilation;
  std::int64_t hi = start >= size ? 0 : (size - 1 - start) / dilation + 1;
  lo = lo < taps ? lo : taps;
  hi = hi < taps ? hi : taps;
  *first = lo;
  *last = hi > lo ? hi : lo;
}

}  // namespace onebit::runtime::kernels
