// Scalar reference float kernels: the definitions the SIMD float kernels are tested against.
// Each output is one float accumulator summed in the documented order with a rounded product
// and a sum (the library is built with -ffp-contract=off, so no FMA is formed).

#include <cmath>

#include "../kernel_decls.h"

namespace onebit::runtime::kernels {

void sgemm_f32_reference(const SgemmArgs& g) {
  for (std::size_t r = 0; r < g.m; ++r) {
    const float* a = g.a + r * g.lda;
    for (std::size_t o0 = 0; o0 < g.n; o0 += kSgemmPanel) {
      const float* panel = g.b + (o0 / kSgemmPanel) * g.k * kSgemmPanel;
      // One accumulator per column of the panel, each summed in k order (the inner loop runs
      // over columns, so a compiler can vectorize it without reordering any sum).
      float acc[kSgemmPanel] = {};
      for (std::size_t k = 0; k < g.k; ++k) {
        const float x = a[g.a_offsets != nullptr ? g.a_offsets[k] : k];
        for (std::size_t l = 0; l < kSgemmPanel; ++l) {
          acc[l] = std::fma(x, panel[k * kSgemmPanel + l], acc[l]);
        }
      }
      const std::size_t cols = g.n - o0 < kSgemmPanel ? g.n - o0 : kSgemmPanel;
      float* dst = g.out + r * g.ldo + o0;
      for (std::size_t l = 0; l < cols; ++l) {
        dst[l] = acc[l] * g.multiplier[o0 + l] + g.bias[o0 + l];
      }
    }
  }
}

void dwconv_f32_reference(const DwconvArgs& g) {
  const std::size_t c = g.channels;
  const auto in_w = static_cast<std::size_t>(g.in_w);
  for (std::int64_t oy = g.row_begin; oy < g.row_end; ++oy) {
    const std::int64_t iy0 = oy * g.stride_h - g.pad_top;
    std::int64_t ky0 = 0, ky1 = 0;
    window_tap_range(iy0, g.dilation_h, g.kernel_h, g.in_h, &ky0, &ky1);
    for (std::int64_t ox = 0; ox < g.out_w; ++ox) {
      const std::int64_t ix0 = ox * g.stride_w - g.pad_left;
      std::int64_t kx0 = 0, kx1 = 0;
      window_tap_range(ix0, g.dilation_w, g.kernel_w, g.in_w, &kx0, &kx1);
      float* dst = g.out + static_cast<std::size_t>(oy * g.out_w + ox) * c;
      for (std::size_t ch = 0; ch < c; ++ch) {
        float acc = 0.0f;
        for (std::int64_t ky = ky0; ky < ky1; ++ky) {
          const auto iy = static_cast<std::size_t>(iy0 + ky * g.dilation_h);
          for (std::int64_t kx = kx0; kx < kx1; ++kx) {
            const auto ix = static_cast<std::size_t>(ix0 + kx * g.dilation_w);
            const auto tap = static_cast<std::size_t>(ky * g.kernel_w + kx);
            acc = std::fma(g.in[(iy * in_w + ix) * c + ch], g.weight[tap * c + ch], acc);
          }
        }
        dst[ch] = acc * g.multiplier[ch] + g.bias[ch];
      }
    }
  }
}

void csr_sgemm_f32_reference(const CsrSgemmArgs& g) {
  for (std::size_t r = 0; r < g.m; ++r) {
    float* dst = g.out + r * g.ldo;
    for (std::size_t o = 0; o < g.n; ++o) {
      float acc = g.accumulate ? dst[o] : 0.0f;
      for (std::size_t e = g.row_begin[r]; e < g.row_begin[r + 1]; ++e) {
        acc = std::fma(g.value[e], g.b[static_cast<std::size_t>(g.index[e]) * g.ldb + o], acc);
      }
      dst[o] = acc;
    }
  }
}

}  // namespace onebit::runtime::kernels
