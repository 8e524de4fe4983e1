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

/// Instruction sets with a kernel table: scalar C++; AVX2 with FMA; AVX-512 F/BW/VL/DQ with
/// VPOPCNTDQ.
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
/// `correction_table[correction_row[r] * ld + o]` when `correction_table` is set, else 0, with
/// `ld` = `correction_ld`, or `bgemm_padded_n(n)` when that is 0.
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
  /// Entries between table rows; 0 means `bgemm_padded_n(n)`. A GEMM over a block of a layer's
  /// output channels passes the layer's row length with the table offset to the block.
  std::size_t correction_ld = 0;
};

/// A binary GEMM call: `m` rows of packed activations (`k_words` words each, rows `lda` words
/// apart) times `n` output channels of prepacked weights (see `prepack_bgemm_weights`).
struct BgemmArgs {
  const BitWord* a = nullptr;
  std::size_t lda = 0;
  /// Optional implicit im2col (a conv read straight from its input pixels, without copying
  /// patches): when both are set, row r's word k is `a[a_rows[r] + a_offsets[k]]` and `lda` is
  /// unused.
  const std::uint64_t* a_rows = nullptr;
  const std::uint32_t* a_offsets = nullptr;
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

/// Entries between rows of a correction table (see `BgemmEpilogue::correction_ld`).
inline constexpr std::size_t bgemm_correction_ld(const BgemmEpilogue& e, std::size_t n) {
  return e.correction_ld != 0 ? e.correction_ld : bgemm_padded_n(n);
}

/// Lays out `n` packed weight rows (`k_words` words each, rows `ld` words apart) as panels of 8
/// output channels: word k of channel o goes to `[(o / 8) * k_words + k] * 8 + o % 8`; channels
/// beyond n are 0. Every ISA uses this layout.
std::vector<BitWord> prepack_bgemm_weights(const BitWord* rows, std::size_t n, std::size_t k_words,
                                           std::size_t ld);

/// Output channels per panel of prepacked float GEMM weights (`prepack_sgemm_weights`): two
/// 256-bit or one 512-bit vector of floats.
inline constexpr std::size_t kSgemmPanel = 16;

/// Number of output channels rounded up to whole float GEMM panels.
inline constexpr std::size_t sgemm_padded_n(std::size_t n) {
  return (n + kSgemmPanel - 1) / kSgemmPanel * kSgemmPanel;
}

/// A float GEMM call with a fused per-column output transform:
/// `out[r][o] = acc[r][o] * multiplier[o] + bias[o]` (a product, then a sum: the batch norm op's
/// formula, so that a folded batch norm gives the unfolded result), where
/// `acc[r][o] = sum over j of a[r][j] * b[j][o]` accumulated in j order from 0 in one float
/// accumulator per output. The SIMD kernels accumulate with fused multiply-adds and the
/// reference with a rounded product and a sum, so they agree within float rounding; each output
/// depends only on its row and column, never on `m` or the tiling, so any split of the rows
/// over threads gives identical results.
struct SgemmArgs {
  /// Element (r, j) at `a[r * lda + j]`, or at `a[r * lda + a_offsets[j]]` when `a_offsets` is
  /// set (an implicit im2col: rows are output pixels of a conv, the offsets its taps).
  const float* a = nullptr;
  std::size_t lda = 0;
  const std::uint32_t* a_offsets = nullptr;  ///< Optional, `k` entries.
  const float* b = nullptr;  ///< `prepack_sgemm_weights` layout: ceil(n / 16) panels of k x 16.
  std::size_t m = 0, n = 0, k = 0;
  const float* multiplier = nullptr;  ///< `n` entries.
  const float* bias = nullptr;        ///< `n` entries.
  float* out = nullptr;               ///< Row r at `out + r * ldo`; `n` values written per row.
  std::size_t ldo = 0;
};

/// Lays out a row-major `k` x `n` float matrix `b` (rows `ldb` floats apart) as panels of 16
/// columns: element (j, o) goes to `[(o / 16) * k + j] * 16 + o % 16`; columns beyond `n` are 0.
/// Every ISA's `sgemm` reads this layout.
std::vector<float> prepack_sgemm_weights(const float* b, std::size_t k, std::size_t n,
                                         std::size_t ldb);

/// A depthwise 2-D convolution of one NHWC image, one input channel per output channel, over
/// output rows [row_begin, row_end):
/// `out[oy][ox][c] = acc * multiplier[c] + bias[c]` (product, then sum) with
/// `acc = sum of in[iy][ix][c] * weight[ky][kx][c]` over the taps inside the image in (ky, kx)
/// order, `iy = oy * stride_h - pad_top + ky * dilation_h`, `ix` likewise: zero padding, padded
/// taps skipped. Accumulation as in `SgemmArgs` (fused multiply-adds in the SIMD kernels).
struct DwconvArgs {
  const float* in = nullptr;          ///< in_h x in_w pixels of `channels` floats.
  const float* weight = nullptr;      ///< kernel_h x kernel_w taps of `channels` floats.
  const float* multiplier = nullptr;  ///< `channels` entries.
  const float* bias = nullptr;        ///< `channels` entries.
  float* out = nullptr;  ///< The output image: row oy at `out + oy * out_w * channels`.
  std::size_t channels = 0;
  std::int64_t in_h = 0, in_w = 0, out_w = 0;
  std::int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1;
  std::int64_t dilation_h = 1, dilation_w = 1, pad_top = 0, pad_left = 0;
  std::int64_t row_begin = 0, row_end = 0;  ///< Output rows computed.
};

/// A sparse-times-dense float product (the training library's gradients of convolutions whose
/// output gradient is mostly zero, e.g. behind a max pool): `m` rows of a sparse matrix in
/// compressed rows, row r holding `value[e]` in column `index[e]` for e in
/// [`row_begin[r]`, `row_begin[r + 1]`), times a dense row-major matrix `b` (row i at
/// `b + i * ldb`, `n` floats):
/// `out[r][o] = (accumulate ? out[r][o] : 0) + sum over e of value[e] * b[index[e]][o]`, one float
/// accumulator per output, summed in e order with fused multiply-adds in every kernel (the
/// reference with `std::fma`), so every ISA gives the same bits, and so does any split of the
/// rows over threads (`row_begin` holds absolute positions: a block of rows passes
/// `row_begin + r0` and `out + r0 * ldo`).
struct CsrSgemmArgs {
  const std::size_t* row_begin = nullptr;  ///< m + 1 entries, non-decreasing.
  const std::int32_t* index = nullptr;     ///< Column of each entry: a row of `b`.
  const float* value = nullptr;            ///< Value of each entry.
  const float* b = nullptr;
  std::size_t ldb = 0;
  float* out = nullptr;  ///< Row r at `out + r * ldo`; `n` values written per row.
  std::size_t ldo = 0;
  std::size_t m = 0, n = 0;
  bool accumulate = false;  ///< Add to `out` instead of overwriting it.
};

/// What one call of a peak loop did (`KernelTable::binary_peak_loop`).
struct PeakLoopResult {
  std::uint64_t binary_macs = 0;  ///< Binary MACs done: bits XORed, counted and added.
  std::uint64_t popcount = 0;     ///< Sum of all the popcounts: keeps the work observable.
};

/// One instruction set's kernels. All entries are non-null.
struct KernelTable {
  Isa isa;
  /// Binary GEMM with fused output transform.
  void (*bgemm)(const BgemmArgs& args);
  /// Packs `rows` rows of `n` floats (rows `ld_in` floats apart) into rows of
  /// `words_for_bits(n)` words (`ld_out` words apart).
  void (*pack_sign_rows)(const float* x, std::size_t rows, std::size_t n, std::size_t ld_in,
                         BitWord* out, std::size_t ld_out);
  /// Float GEMM with fused output transform (float conv2d and dense).
  void (*sgemm)(const SgemmArgs& args);
  /// Depthwise float conv2d.
  void (*dwconv)(const DwconvArgs& args);
  /// Sparse (compressed rows) times dense float product.
  void (*csr_sgemm)(const CsrSgemmArgs& args);
  /// The peak loop: `blocks` blocks of XOR + popcount + add on many independent registers of
  /// this ISA, no memory access, the data derived from `seed`. Each ISA does a fixed amount of
  /// work per block, so the result is `blocks` times that of one block.
  PeakLoopResult (*binary_peak_loop)(std::uint64_t blocks, BitWord seed);
};

/// The kernel table of `isa`; throws `std::runtime_error` if this CPU lacks it.
const KernelTable& kernels_for(Isa isa);

/// The table used by the runtime: chosen once from CPUID, or from `ONEBIT_ISA` (which throws
/// `std::runtime_error` on the first call if it names an unknown or unsupported ISA).
const KernelTable& active_kernels();

/// Every ISA this CPU supports, reference first.
std::vector<Isa> supported_isas();

}  // namespace onebit::runtime
