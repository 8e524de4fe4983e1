// Peak loop of AVX-512 VPOPCNTDQ: XOR + vpopcntq + vpaddq on 12 independent 512-bit registers
// (the accumulation of bgemm_b1_32x4_avx512, without its loads).

#include <immintrin.h>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

namespace {
constexpr int kChains = 12;
constexpr int kStepsPerBlock = 16;
}  // namespace

PeakLoopResult binary_peak_loop_avx512(std::uint64_t blocks, BitWord seed) {
  __m512i w = _mm512_set1_epi64(static_cast<long long>(peak_word(seed, 0)));
  __m512i a[kChains], acc[kChains];
#pragma GCC unroll 16
  for (int j = 0; j < kChains; ++j) {
    const auto word = [&](int lane) {
      return static_cast<long long>(peak_word(seed, 1 + static_cast<unsigned>(j * 8 + lane)));
    };
    a[j] =
        _mm512_setr_epi64(word(0), word(1), word(2), word(3), word(4), word(5), word(6), word(7));
    acc[j] = _mm512_setzero_si512();
  }
  for (std::uint64_t b = 0; b < blocks; ++b) {
    for (int s = 0; s < kStepsPerBlock; ++s) {
      // The compiler must assume w changed, so it may not hoist the XOR + popcount out of the
      // loop; no instruction. (A barrier on each a[j] kept a[] and acc[] in memory: loads and
      // stores in every step, and a peak 30% below what the conv kernel reached on a Xeon.)
      asm volatile("" : "+v"(w));
#pragma GCC unroll 16
      for (int j = 0; j < kChains; ++j) {
        acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(_mm512_xor_si512(a[j], w)));
      }
    }
  }
  __m512i total = acc[0];
#pragma GCC unroll 16
  for (int j = 1; j < kChains; ++j) total = _mm512_add_epi64(total, acc[j]);
  PeakLoopResult r;
  r.popcount = static_cast<std::uint64_t>(_mm512_reduce_add_epi64(total));
  r.binary_macs = blocks * kStepsPerBlock * kChains * 512;
  return r;
}

}  // namespace onebit::runtime::kernels
