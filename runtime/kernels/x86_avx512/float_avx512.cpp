// AVX-512F float kernels: the float GEMM in register tiles of 8 rows x 32 columns (16 zmm
// accumulators, two weight vectors, one broadcast activation), the depthwise conv and the
// sparse-times-dense product, all from the templates of float_simd.h over 16-float vectors;
// partial vectors use k-masks.

#include <immintrin.h>

#include "../float_simd.h"

namespace onebit::runtime::kernels {

namespace {

struct Avx512Floats {
  using Reg = __m512;
  static constexpr std::size_t kLanes = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static Reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static __mmask16 first(std::size_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static Reg load_first(const float* p, std::size_t n) {
    return _mm512_maskz_loadu_ps(first(n), p);
  }
  static void store_first(float* p, Reg v, std::size_t n) { _mm512_mask_storeu_ps(p, first(n), v); }
};

}  // namespace

void sgemm_f32_8x32_avx512(const SgemmArgs& args) { simd::sgemm<Avx512Floats, 8>(args); }

void dwconv_f32_avx512(const DwconvArgs& args) { simd::dwconv<Avx512Floats>(args); }

void csr_sgemm_f32_avx512(const CsrSgemmArgs& args) { simd::csr_sgemm<Avx512Floats>(args); }

}  // namespace onebit::runtime::kernels
