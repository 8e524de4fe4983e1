// Peak loop of the scalar reference: XOR + popcount + add on 8 independent 64-bit registers,
// with the same portable popcount as bgemm_b1_reference (std::bitset, which compiles to the
// POPCNT instruction only where the target guarantees it), so the reference kernel's percent of
// peak compares like with like.

#include <bitset>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

namespace {
constexpr int kChains = 8;
constexpr int kStepsPerBlock = 16;
}  // namespace

PeakLoopResult binary_peak_loop_reference(std::uint64_t blocks, BitWord seed) {
  BitWord a[kChains];
  std::uint64_t acc[kChains];
  const BitWord w = peak_word(seed, 0);
  for (int j = 0; j < kChains; ++j)
    a[j] = peak_word(seed, 1 + static_cast<unsigned>(j)), acc[j] = 0;
  for (std::uint64_t b = 0; b < blocks; ++b) {
    for (int s = 0; s < kStepsPerBlock; ++s) {
      for (int j = 0; j < kChains; ++j) {
#if defined(__GNUC__)
        asm volatile("" : "+r"(a[j]));  // the compiler may not hoist the XOR + popcount
#endif
        acc[j] += std::bitset<64>(a[j] ^ w).count();
      }
    }
  }
  PeakLoopResult r;
  for (int j = 0; j < kChains; ++j) r.popcount += acc[j];
  r.binary_macs = blocks * kStepsPerBlock * kChains * 64;
  return r;
}

}  // namespace onebit::runtime::kernels
