// AVX2 + FMA float kernels: the float GEMM in register tiles of 6 rows x 16 columns (12 ymm
// accumulators, two weight vectors, one broadcast activation), the depthwise conv and the
// sparse-times-dense product, all from the templates of float_simd.h over 8-float vectors.

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

// The AVX-512 kernels' geometry (16 lanes, 8 x 32 tiles spanning two panels, 16-bit lane masks)
// on pairs of 256-bit vectors, so that a machine without AVX-512 still runs the code paths the
// AVX-512 instantiation takes; only the tests call it.
struct Avx2PairFloats {
  struct Reg {
    __m256 lo, hi;
  };
  static constexpr std::size_t kLanes = 16;
  static Reg zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static Reg load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void store(float* p, Reg v) { _mm256_storeu_ps(p, v.lo), _mm256_storeu_ps(p + 8, v.hi); }
  static Reg broadcast(const float* p) { return {_mm256_broadcast_ss(p), _mm256_broadcast_ss(p)}; }
  static Reg fmadd(Reg a, Reg b, Reg c) {
    return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
  }
  static Reg mul(Reg a, Reg b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static Reg add(Reg a, Reg b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static Reg load_first(const float* p, std::size_t n) {
    if (n <= 8) return {Avx2Floats::load_first(p, n), _mm256_setzero_ps()};
    return {_mm256_loadu_ps(p), Avx2Floats::load_first(p + 8, n - 8)};
  }
  static void store_first(float* p, Reg v, std::size_t n) {
    if (n <= 8) return Avx2Floats::store_first(p, v.lo, n);
    _mm256_storeu_ps(p, v.lo);
    Avx2Floats::store_first(p + 8, v.hi, n - 8);
  }
};

}  // namespace

void sgemm_f32_8x32_avx2pair(const SgemmArgs& args) { simd::sgemm<Avx2PairFloats, 8>(args); }

void dwconv_f32_avx2pair(const DwconvArgs& args) { simd::dwconv<Avx2PairFloats>(args); }

void csr_sgemm_f32_avx2pair(const CsrSgemmArgs& args) { simd::csr_sgemm<Avx2PairFloats>(args); }

void sgemm_f32_6x16_avx2(const SgemmArgs& args) { simd::sgemm<Avx2Floats, 6>(args); }

void dwconv_f32_avx2(const DwconvArgs& args) { simd::dwconv<Avx2Floats>(args); }

void csr_sgemm_f32_avx2(const CsrSgemmArgs& args) { simd::csr_sgemm<Avx2Floats>(args); }

}  // namespace onebit::runtime::kernels
