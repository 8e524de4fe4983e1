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

void bgemm_b1_8x4_avx2(const BgemmArgs& args);
void pack_sign_rows_avx2(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                         BitWord* out, std::size_t ld_out);

void bgemm_b1_32x4_avx512(const BgemmArgs& args);
void pack_sign_rows_avx512(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                           BitWord* out, std::size_t ld_out);

// Scalar output transform shared by every ISA for one accumulator (internal linkage, so each ISA
// file keeps its own copy).
static inline std::int64_t bgemm_dot(const BgemmArgs& g, std::size_t row, std::size_t o,
                                     std::int64_t popcount) {
  std::int64_t dot = g.k_bits - 2 * popcount;
  if (g.epilogue.correction_table != nullptr) {
    dot -= g.epilogue.correction_table[g.epilogue.correction_row[row] * bgemm_padded_n(g.n) + o];
  }
  return dot;
}

}  // namespace onebit::runtime::kernels
