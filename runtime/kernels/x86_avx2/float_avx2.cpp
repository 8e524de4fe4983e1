// AVX2 + FMA float kernels: the float GEMM in register tiles of 6 rows x 16 columns (12 ymm
// accumulators, two weight vectors, one broadcast activation) and the depthwise conv, both from
// the templates of float_simd.h over 8-float vectors.

#include <immintrin.h>

#include "../float_simd.h"

namespace onebit::runtime::kernels {

namespace {

struct Avx2Floats {
  using Reg = __m256;
  static constexpr std::size_t kLanes = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static Reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static __m256i first(std::size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Reg load_first(const float* p, std::size_t n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_first(float* p, Reg v, std::size_t n) { _mm256_maskstore_ps(p, first(n), v); }
};

}  // namespace

void sgemm_f32_6x16_avx2(const SgemmArgs& args) { simd::sgemm<Avx2Floats, 6>(args); }

void dwconv_f32_avx2(const DwconvArgs& args) { simd::dwconv<Avx2Floats>(args); }

}  // namespace onebit::runtime::kernels
