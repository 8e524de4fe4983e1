// Scalar reference kernels: the definition every optimized kernel is tested against.

#include <bitset>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

namespace {

std::int64_t popcount_xor_row(const BgemmArgs& g, const BitWord* a, const BitWord* panel,
                              std::size_t lane) {
  std::int64_t pc = 0;
  for (std::size_t k = 0; k < g.k_words; ++k) {
    const BitWord x = a[bgemm_a_index(g, k)];
    pc += static_cast<std::int64_t>(std::bitset<64>(x ^ panel[k * kBgemmPanel + lane]).count());
  }
  return pc;
}

void store_bit(const BgemmArgs& g, std::size_t r, std::size_t o, std::int64_t dot) {
  std::uint8_t* byte = g.out_bits + r * g.ldo + o / 8;
  const auto mask = static_cast<std::uint8_t>(1u << (o % 8));
  if (o % 8 == 0) *byte = 0;
  if (dot < g.epilogue.threshold[o]) *byte = static_cast<std::uint8_t>(*byte | mask);
}

}  // namespace

void bgemm_b1_reference(const BgemmArgs& g) {
  const std::size_t n_padded = bgemm_padded_n(g.n);
  for (std::size_t r = 0; r < g.m; ++r) {
    const BitWord* a = bgemm_a_row(g, r);
    for (std::size_t o = 0; o < n_padded; ++o) {
      const BitWord* panel = g.b + (o / kBgemmPanel) * g.k_words * kBgemmPanel;
      const std::int64_t dot = bgemm_dot(g, r, o, popcount_xor_row(g, a, panel, o % kBgemmPanel));
      if (g.epilogue.kind == BgemmEpilogue::Kind::kBits) {
        store_bit(g, r, o, dot);
      } else if (o < g.n) {
        g.out_float[r * g.ldo + o] =
            static_cast<float>(dot) * g.epilogue.multiplier[o] + g.epilogue.bias[o];
      }
    }
  }
}

void pack_sign_rows_reference(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                              BitWord* out, std::size_t ld_out) {
  const std::size_t words = words_for_bits(n);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t w = 0; w < words; ++w) {
      BitWord word = 0;
      for (std::size_t i = w * kBitsPerWord; i < n && i < (w + 1) * kBitsPerWord; ++i) {
        word |= sign_bit(x[r * ld_in + i]) << (i % kBitsPerWord);
      }
      out[r * ld_out + w] = word;
    }
  }
}

}  // namespace onebit::runtime::kernels
