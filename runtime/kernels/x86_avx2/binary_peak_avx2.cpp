// Peak loop of AVX2 (no vector popcount): XOR + popcount + add on 4 independent 256-bit
// registers. The popcount is the nibble lookup (two vpshufb per vector) and the add accumulates
// bytes, which is the cheapest known AVX2 form: at most 8 per byte per step, so 30 steps fit
// in a byte before the block folds the byte counts into 64-bit lanes with vpsadbw.

#include <immintrin.h>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

namespace {
constexpr int kChains = 4;
constexpr int kStepsPerBlock = 30;
}  // namespace

PeakLoopResult binary_peak_loop_avx2(std::uint64_t blocks, BitWord seed) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
  __m256i w = _mm256_set1_epi64x(static_cast<long long>(peak_word(seed, 0)));
  __m256i a[kChains];
  for (int j = 0; j < kChains; ++j) {
    const auto word = [&](int lane) {
      return static_cast<long long>(peak_word(seed, 1 + static_cast<unsigned>(j * 4 + lane)));
    };
    a[j] = _mm256_setr_epi64x(word(0), word(1), word(2), word(3));
  }
  __m256i total = _mm256_setzero_si256();
  for (std::uint64_t b = 0; b < blocks; ++b) {
    __m256i bytes[kChains];
    for (int j = 0; j < kChains; ++j) bytes[j] = _mm256_setzero_si256();
    for (int s = 0; s < kStepsPerBlock; ++s) {
      // The compiler must assume w changed, so it may not hoist the XOR + popcount out of the
      // loop; no instruction. (A barrier on each a[j] kept a[] in memory: a load and a store
      // in every step.)
      asm volatile("" : "+x"(w));
      for (int j = 0; j < kChains; ++j) {
        const __m256i x = _mm256_xor_si256(a[j], w);
        const __m256i lo = _mm256_and_si256(x, low_nibbles);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles);
        bytes[j] = _mm256_add_epi8(bytes[j], _mm256_shuffle_epi8(table, lo));
        bytes[j] = _mm256_add_epi8(bytes[j], _mm256_shuffle_epi8(table, hi));
      }
    }
    for (int j = 0; j < kChains; ++j) {
      total = _mm256_add_epi64(total, _mm256_sad_epu8(bytes[j], _mm256_setzero_si256()));
    }
  }
  alignas(32) std::uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), total);
  PeakLoopResult r;
  r.popcount = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  r.binary_macs = blocks * kStepsPerBlock * kChains * 256;
  return r;
}

}  // namespace onebit::runtime::kernels
