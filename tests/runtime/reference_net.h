#pragma once
// Test helper: plain float NCHW layers written like the PyTorch definitions, to check the
// runtime (its binary layers on +-1 data must agree exactly), and the kernel tables to run on.

#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"

namespace onebit::runtime::testing {

// Kernel tables of every ISA this CPU supports, reference first.
inline std::vector<const KernelTable*> all_tables() {
  std::vector<const KernelTable*> t;
  for (Isa isa : supported_isas()) t.push_back(&kernels_for(isa));
  return t;
}

struct Nchw {
  std::int64_t n = 0, c = 0, h = 0, w = 0;
  std::vector<float> v;
  float& at(std::int64_t i, std::int64_t ch, std::int64_t y, std::int64_t x) {
    return v[static_cast<std::size_t>(((i * c + ch) * h + y) * w + x)];
  }
  float at(std::int64_t i, std::int64_t ch, std::int64_t y, std::int64_t x) const {
    return v[static_cast<std::size_t>(((i * c + ch) * h + y) * w + x)];
  }
};

struct ConvSpec {
  std::int64_t out = 1, k = 3, stride = 1, dilation = 1, groups = 1;
  std::int64_t pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  float pad_value = 0.0f;
};

inline Nchw conv_ref(const Nchw& x, const std::vector<float>& w_oihw, const ConvSpec& s) {
  const std::int64_t cin = x.c / s.groups, cout_g = s.out / s.groups;
  const std::int64_t span = s.dilation * (s.k - 1) + 1;
  Nchw y{x.n,
         s.out,
         (x.h + s.pad_t + s.pad_b - span) / s.stride + 1,
         (x.w + s.pad_l + s.pad_r - span) / s.stride + 1,
         {}};
  y.v.assign(static_cast<std::size_t>(y.n * y.c * y.h * y.w), 0.0f);
  for (std::int64_t n = 0; n < x.n; ++n)
    for (std::int64_t o = 0; o < s.out; ++o)
      for (std::int64_t oy = 0; oy < y.h; ++oy)
        for (std::int64_t ox = 0; ox < y.w; ++ox) {
          float acc = 0.0f;
          const std::int64_t g = o / cout_g;
          for (std::int64_t ky = 0; ky < s.k; ++ky)
            for (std::int64_t kx = 0; kx < s.k; ++kx)
              for (std::int64_t i = 0; i < cin; ++i) {
                const std::int64_t iy = oy * s.stride - s.pad_t + ky * s.dilation;
                const std::int64_t ix = ox * s.stride - s.pad_l + kx * s.dilation;
                const bool inside = iy >= 0 && iy < x.h && ix >= 0 && ix < x.w;
                const float v = inside ? x.at(n, g * cin + i, iy, ix) : s.pad_value;
                acc = std::fma(
                    v, w_oihw[static_cast<std::size_t>(((o * cin + i) * s.k + ky) * s.k + kx)],
                    acc);
              }
          y.at(n, o, oy, ox) = acc;
        }
  return y;
}

inline Nchw maxpool_ref(const Nchw& x, std::int64_t k) {
  Nchw y{x.n, x.c, x.h / k, x.w / k, {}};
  y.v.resize(static_cast<std::size_t>(y.n * y.c * y.h * y.w));
  for (std::int64_t n = 0; n < y.n; ++n)
    for (std::int64_t c = 0; c < y.c; ++c)
      for (std::int64_t oy = 0; oy < y.h; ++oy)
        for (std::int64_t ox = 0; ox < y.w; ++ox) {
          float m = x.at(n, c, oy * k, ox * k);
          for (std::int64_t dy = 0; dy < k; ++dy)
            for (std::int64_t dx = 0; dx < k; ++dx)
              m = std::max(m, x.at(n, c, oy * k + dy, ox * k + dx));
          y.at(n, c, oy, ox) = m;
        }
  return y;
}

inline Nchw bn_ref(Nchw x, const std::vector<float>& m, const std::vector<float>& b) {
  const std::int64_t hw = x.h * x.w;
  for (std::size_t i = 0; i < x.v.size(); ++i) {
    const auto c = static_cast<std::size_t>((static_cast<std::int64_t>(i) / hw) % x.c);
    x.v[i] = x.v[i] * m[c] + b[c];
  }
  return x;
}

inline Nchw sign_ref(Nchw x) {
  for (float& v : x.v) v = v < 0.0f ? -1.0f : 1.0f;
  return x;
}

// PyTorch avg_pool2d (floor mode): square kernel, symmetric padding; the divisor is k * k with
// count_include_pad, else the number of taps inside the image. Sums taps in row-major order.
inline Nchw avgpool_ref(const Nchw& x, std::int64_t k, std::int64_t stride, std::int64_t pad,
                        bool count_include_pad) {
  Nchw y{x.n, x.c, (x.h + 2 * pad - k) / stride + 1, (x.w + 2 * pad - k) / stride + 1, {}};
  y.v.resize(static_cast<std::size_t>(y.n * y.c * y.h * y.w));
  for (std::int64_t n = 0; n < y.n; ++n)
    for (std::int64_t c = 0; c < y.c; ++c)
      for (std::int64_t oy = 0; oy < y.h; ++oy)
        for (std::int64_t ox = 0; ox < y.w; ++ox) {
          float sum = 0.0f;
          std::int64_t count = 0;
          for (std::int64_t dy = 0; dy < k; ++dy)
            for (std::int64_t dx = 0; dx < k; ++dx) {
              const std::int64_t iy = oy * stride - pad + dy, ix = ox * stride - pad + dx;
              if (iy < 0 || iy >= x.h || ix < 0 || ix >= x.w) continue;
              sum += x.at(n, c, iy, ix);
              ++count;
            }
          y.at(n, c, oy, ox) = sum / static_cast<float>(count_include_pad ? k * k : count);
        }
  return y;
}

// Mean over H*W per channel (pixels summed in row-major order), shape (N, C, 1, 1).
inline Nchw global_avgpool_ref(const Nchw& x) {
  Nchw y{x.n, x.c, 1, 1, std::vector<float>(static_cast<std::size_t>(x.n * x.c))};
  for (std::int64_t n = 0; n < x.n; ++n)
    for (std::int64_t c = 0; c < x.c; ++c) {
      float sum = 0.0f;
      for (std::int64_t p = 0; p < x.h * x.w; ++p) sum += x.at(n, c, p / x.w, p % x.w);
      y.at(n, c, 0, 0) = sum / static_cast<float>(x.h * x.w);
    }
  return y;
}

// torch.cat(xs, 1).
inline Nchw concat_ref(const std::vector<Nchw>& xs) {
  Nchw y{xs[0].n, 0, xs[0].h, xs[0].w, {}};
  for (const Nchw& x : xs) y.c += x.c;
  y.v.resize(static_cast<std::size_t>(y.n * y.c * y.h * y.w));
  for (std::int64_t n = 0; n < y.n; ++n) {
    std::int64_t c0 = 0;
    for (const Nchw& x : xs) {
      for (std::int64_t c = 0; c < x.c; ++c)
        for (std::int64_t p = 0; p < x.h * x.w; ++p)
          y.at(n, c0 + c, p / x.w, p % x.w) = x.at(n, c, p / x.w, p % x.w);
      c0 += x.c;
    }
  }
  return y;
}

inline Nchw add_ref(Nchw a, const Nchw& b) {
  for (std::size_t i = 0; i < a.v.size(); ++i) a.v[i] += b.v[i];
  return a;
}

// a * b; b of a's shape, or (N, C, 1, 1): one factor per channel and image.
inline Nchw mul_ref(Nchw a, const Nchw& b) {
  for (std::int64_t n = 0; n < a.n; ++n)
    for (std::int64_t c = 0; c < a.c; ++c)
      for (std::int64_t y = 0; y < a.h; ++y)
        for (std::int64_t x = 0; x < a.w; ++x)
          a.at(n, c, y, x) *= b.h == 1 && b.w == 1 ? b.at(n, c, 0, 0) : b.at(n, c, y, x);
  return a;
}

// x[:, begin:end].
inline Nchw slice_ref(const Nchw& x, std::int64_t begin, std::int64_t end) {
  Nchw y{x.n, end - begin, x.h, x.w, {}};
  y.v.resize(static_cast<std::size_t>(y.n * y.c * y.h * y.w));
  for (std::int64_t n = 0; n < y.n; ++n)
    for (std::int64_t c = 0; c < y.c; ++c)
      for (std::int64_t p = 0; p < x.h * x.w; ++p)
        y.at(n, c, p / x.w, p % x.w) = x.at(n, begin + c, p / x.w, p % x.w);
  return y;
}

inline Nchw sigmoid_ref(Nchw x) {
  for (float& v : x.v) v = 1.0f / (1.0f + std::exp(-v));
  return x;
}

inline Nchw clip_ref(Nchw x, float lo, float hi) {
  for (float& v : x.v) v = v < lo ? lo : (v > hi ? hi : v);
  return x;
}

// DoReFa: round(clip(x, 0, 1) * n) / n, n = 2^k - 1, in float, with round-half-to-even written
// out (independent of the floating-point environment's rounding mode).
inline float levels_ref(float v, int k) {
  const auto n = static_cast<float>((1 << k) - 1);
  const float t = (v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v)) * n;
  const float f = std::floor(t), frac = t - f;  // exact: t < 2^16
  const bool up = frac > 0.5f || (frac == 0.5f && std::fmod(f, 2.0f) != 0.0f);
  return (up ? f + 1.0f : f) / n;
}

inline Nchw levels_ref(Nchw x, int k) {
  for (float& v : x.v) v = levels_ref(v, k);
  return x;
}

// Flatten of NCHW is the identity on memory: features in C,H,W order.
inline Nchw dense_ref(const Nchw& x, const std::vector<float>& w, std::int64_t out) {
  const std::int64_t k = x.c * x.h * x.w;
  Nchw y{x.n, out, 1, 1, std::vector<float>(static_cast<std::size_t>(x.n * out))};
  for (std::int64_t n = 0; n < x.n; ++n)
    for (std::int64_t o = 0; o < out; ++o) {
      float acc = 0.0f;
      for (std::int64_t i = 0; i < k; ++i) acc = std::fma(x.v[n * k + i], w[o * k + i], acc);
      y.v[n * out + o] = acc;
    }
  return y;
}

inline std::vector<float> random_signs(std::size_t n, std::mt19937& rng) {
  std::vector<float> v(n);
  for (float& x : v) x = (rng() & 1u) ? 1.0f : -1.0f;
  return v;
}

inline std::vector<float> random_normal(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

/// A convolution test case: input C, H, W and the convolution.
struct ConvCase {
  std::int64_t c, h, w;
  ConvSpec s;
};

/// Adds the convolution of `cc` with kernel `w` (OIHW) to `b`, reading `x`.
inline ValueRef add_conv(ModelBuilder& b, ValueRef x, const ConvCase& cc,
                         const std::vector<float>& w, bool binary_kernel = true) {
  Conv2dParams p(cc.s.out, cc.s.k);
  p.stride(cc.s.stride)
      .dilation(cc.s.dilation)
      .groups_count(cc.s.groups)
      .binary_kernel(binary_kernel);
  p.padding_mode = PaddingMode::kExplicit;
  p.pad_top = cc.s.pad_t, p.pad_left = cc.s.pad_l, p.pad_bottom = cc.s.pad_b,
  p.pad_right = cc.s.pad_r;
  p.padding_value(cc.s.pad_value);
  return b.conv2d(x, p, w);
}

/// Runs `m` on every ISA with 1 and 3 threads, and once more after a round trip through its
/// `.obnn` bytes (which must re-serialize identically), and checks each result against
/// `expected` bit for bit.
inline void expect_runs_and_round_trips(const Model& m, const Nchw& x,
                                        const std::vector<float>& expected,
                                        const std::string& what) {
  const auto batch = static_cast<std::size_t>(x.n);
  for (const KernelTable* t : all_tables()) {
    for (int threads : {1, 3}) {
      EXPECT_EQ(Interpreter(m, {threads, t}).run(x.v, batch), expected)
          << what << " on " << isa_name(t->isa) << " with " << threads << " threads";
    }
  }
  const auto bytes = serialize_model(m);
  const Model back = parse_model(bytes.data(), bytes.size());
  EXPECT_EQ(serialize_model(back), bytes) << what;
  EXPECT_EQ(Interpreter::from_bytes(bytes.data(), bytes.size(), {3}).run(x.v, batch), expected)
      << what << " after a save/load round trip";
}

/// The message of the exception `f` throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace onebit::runtime::testing
