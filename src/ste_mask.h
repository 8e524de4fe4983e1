#pragma once
// The straight-through estimator's clip mask 1{|x| <= clip} as a branch-free float factor,
// shared by the quantizers' own gradient pass and the binary training path's folded one (so
// that the two give the same values).

#include <cmath>
#include <cstdint>
#include <cstring>

namespace onebit::detail {

/// Multiplies by 1.0f where |x| <= clip, else by 0.0f (NaN: 0), compared on the bit patterns
/// (for clip >= 0, |x|'s bits order as its values, NaN above infinity): no branch per value, so
/// loops over it vectorize (a float comparison in a loop is "control flow" to GCC under the
/// default trapping-math; the branch per element, mispredicted on batch-norm outputs, took 10% of
/// a larq-mnist training step). clip is compared in float, as x.abs().le(clip) does.
class SteMask {
 public:
  explicit SteMask(double clip) : limit_(bits_of(std::fabs(static_cast<float>(clip)))) {}

  /// 1.0f or 0.0f for `x`.
  float factor(float x) const {
    const std::int32_t keep = -static_cast<std::int32_t>((bits_of(x) & 0x7fffffff) <= limit_);
    const std::int32_t factor_bits = keep & kOne;
    float f = 0;
    std::memcpy(&f, &factor_bits, sizeof f);
    return f;
  }

 private:
  static std::int32_t bits_of(float v) {
    std::int32_t b = 0;
    std::memcpy(&b, &v, sizeof b);
    return b;
  }
  static constexpr std::int32_t kOne = 0x3f800000;  // 1.0f
  std::int32_t limit_;                              // -0 as +0: the same limit, ordered bits
};

}  // namespace onebit::detail
