#pragma once
/// \file
/// The kernel table: one set of function pointers per instruction set, picked once from CPUID
/// (or forced with the environment variable `ONEBIT_ISA=reference|avx2|avx512`).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "onebit/runtime/bitpack.h"

namespace onebit::runtime {

/// Instruction sets with a kernel table.
enum class Isa { kReference, kAvx2, kAvx512 };

/// Lower-case name of an ISA as accepted by `ONEBIT_ISA`: "reference", "avx2", "avx512".
const char* isa_name(Isa isa);

/// Parses an ISA name; throws `std::invalid_argument` naming the value on anything else.
Isa parse_isa(const std::string& name);

/// True when this CPU (and OS) can run the kernels of `isa`.
bool isa_supported(Isa isa);

/// Output channels per weight panel of a binary GEMM (one 512-bit vector of 64-bit lanes).
inline constexpr std::size_t kBgemmPanel = 8;

/// Output transform applied by a binary GEMM to each accumulator.
/// With `pc` the popcount of XOR over the row, the dot product is
/// `dot = k_bits - 2 * pc - correction`, where `correction` is
/// `correction_table[correction_row[r] * n_padded + o]` when `correction_table` is set, else 0.
struct BgemmEpilogue {
  /// Float output `float(dot) * multiplier[o] + bias[o]` (no FMA), or packed bits.
  enum class Kind { kFloat, kBits };
  Kind kind = Kind::kFloat;
  const float* multiplier = nullptr;  ///< kFloat: n_padded entries.
  const float* bias = nullptr;        ///< kFloat: n_padded entries.
  /// kBits: output bit o is 1 (meaning -1) when `dot < threshold[o]`; n_padded entries; padded
  /// channels must hold INT32_MIN so their bits are 0.
  const std::int32_t* threshold = nullptr;
  const std::int32_t* correction_table = nullptr;  ///< Optional zero-padding correction.
  const std::uint32_t* correction_row = nullptr;   ///< One table row index per GEMM row.
};

/// A binary GEMM call: `m` rows of packed activations (`k_words` words each, rows `lda` words
/// apart) times `n` output channels of prepacked weights (see `prepack_bgemm_weights`).
struct BgemmArgs {
  const BitWord* a = nullptr;
  std::size_t lda = 0;
  const BitWord* b = nullptr;  ///< ceil(n / 8) panels of k_words x 8 words.
  std::size_t m = 0, n = 0, k_words = 0;
  std::int32_t k_bits = 0;           ///< True elements per row (without padding bits).
  float* out_float = nullptr;        ///< kFloat: row r at out_float + r * ldo, n values written.
  std::uint8_t* out_bits = nullptr;  ///< kBits: row r at out_bits + r * ldo, ceil(n/8) bytes.
  std::size_t ldo = 0;               ///< Row stride in floats (kFloat) or bytes (kBits).
  BgemmEpilogue epilogue;
};

/// Number of output channels rounded up to whole panels.
inline constexpr std::size_t bgemm_padded_n(std::size_t n) {
  return (n + kBgemmPanel - 1) / kBgemmPanel * kBgemmPanel;
}

/// Lays out `n` packed weight rows (`k_words` words each, rows `ld` words apart) as panels of 8
/// output channels: word k of channel o goes to `[(o / 8) * k_words + k] * 8 + o % 8`; channels
/// beyond n are 0. Every ISA uses this layout.
std::vector<BitWord> prepack_bgemm_weights(const BitWord* rows, std::size_t n, std::size_t k_words,
                                           std::size_t ld);

/// One instruction set's kernels. All entries are non-null.
struct KernelTable {
  Isa isa;
  /// Binary GEMM with fused output transform.
  void (*bgemm)(const BgemmArgs& args);
  /// Packs `rows` rows of `n` floats (rows `ld_in` floats apart) into rows of
  /// `words_for_bits(n)` words (`ld_out` words apart).
  void (*pack_sign_rows)(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                         BitWord* out, std::size_t ld_out);
};

/// The kernel table of `isa`; throws `std::runtime_error` if this CPU lacks it.
const KernelTable& kernels_for(Isa isa);

/// The table used by the runtime: chosen once from CPUID, or from `ONEBIT_ISA` (which throws
/// `std::runtime_error` on the first call if it names an unknown or unsupported ISA).
const KernelTable& active_kernels();

/// Every ISA this CPU supports, reference first.
std::vector<Isa> supported_isas();

}  // namespace onebit::runtime
