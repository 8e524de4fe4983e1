#pragma once
/// \file
/// The bit-layout contract of the onebit runtime. Every kernel, op and file reader follows it;
/// nothing else in the runtime restates it.
///
/// - Word type: `BitWord` = `std::uint64_t`, 64 elements per word, little-endian hosts only.
/// - Packing axis: the channel axis (innermost in the runtime's NHWC activations; the last axis
///   of a packed weight tensor). Element i of a row lives in bit (i % 64) of word (i / 64), LSB
///   first. Byte b of a word therefore holds elements 8b..8b+7.
/// - Values: bit 1 means -1, bit 0 means +1. `sign(x)` is +1 for x >= 0 (including -0.0 and
///   NaN, which do not compare below zero) and -1 for x < 0.
/// - Padding: every packed row is padded to whole words with 0 bits in both operands, so the
///   padding drops out of XOR; a binary dot product over K true elements is
///   `K - 2 * popcount(a XOR w)`.
/// - Spatial padding of packed activations with 0 bits is one-padding (the padded value is +1);
///   zero-padding is implemented as a per-output-position correction computed at load time.
/// - Reads past buffers: kernels never read or write outside the buffers they are given
///   (`kMaxReadPastBytes` is 0): vector tails use masked loads and stores.
/// - Model files store packed tensors as one dense bit stream over all elements in row-major
///   order (no per-row padding); the loader re-lays them out into padded rows.

#include <cstddef>
#include <cstdint>

namespace onebit::runtime {

/// One packed word: 64 binary values, element i in bit i.
using BitWord = std::uint64_t;

/// Number of binary values per `BitWord`.
inline constexpr std::size_t kBitsPerWord = 64;

/// How far any kernel may read past the end of a buffer it is given: nothing.
inline constexpr std::size_t kMaxReadPastBytes = 0;

/// Words needed to hold `bits` packed values, e.g. `words_for_bits(65) == 2`.
inline constexpr std::size_t words_for_bits(std::size_t bits) {
  return (bits + kBitsPerWord - 1) / kBitsPerWord;
}

/// The packed bit of a float: 1 (meaning -1) when x < 0, else 0 (meaning +1).
inline constexpr BitWord sign_bit(float x) { return x < 0.0f ? 1 : 0; }

/// The +-1 value a packed bit stands for: bit 0 -> +1.0f, bit 1 -> -1.0f.
inline constexpr float bit_value(BitWord bit) { return bit ? -1.0f : 1.0f; }

/// Binary dot product of K true elements from the popcount of their XOR.
inline constexpr std::int64_t binary_dot(std::int64_t k, std::int64_t popcount_xor) {
  return k - 2 * popcount_xor;
}

/// Reads bit `i` of a packed row.
inline constexpr bool get_bit(const BitWord* row, std::size_t i) {
  return (row[i / kBitsPerWord] >> (i % kBitsPerWord)) & 1u;
}

/// Sets bit `i` of a packed row to `value`.
inline void set_bit(BitWord* row, std::size_t i, bool value) {
  const BitWord mask = BitWord{1} << (i % kBitsPerWord);
  row[i / kBitsPerWord] = value ? (row[i / kBitsPerWord] | mask) : (row[i / kBitsPerWord] & ~mask);
}

/// Packs the signs of `n` floats into `words_for_bits(n)` words (padding bits 0), using the
/// active instruction set. Example: `pack_signs(x.data(), x.size(), out.data())`.
void pack_signs(const float* x, std::size_t n, BitWord* out);

/// Unpacks `n` packed values into +-1.0f floats.
void unpack_signs(const BitWord* in, std::size_t n, float* out);

/// Copies `nbits` bits from `src` starting at bit `src_bit` to `dst` starting at bit `dst_bit`;
/// bits of `dst` outside the destination range are left unchanged.
void copy_bits(const BitWord* src, std::size_t src_bit, std::size_t nbits, BitWord* dst,
               std::size_t dst_bit);

}  // namespace onebit::runtime
