#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "../kernels/kernel_decls.h"
#include "onebit/runtime/kernels.h"

namespace onebit::runtime {

namespace {

constexpr KernelTable kReferenceTable{Isa::kReference,
                                      &kernels::bgemm_b1_reference,
                                      &kernels::pack_sign_rows_reference,
                                      &kernels::sgemm_f32_reference,
                                      &kernels::dwconv_f32_reference,
                                      &kernels::csr_sgemm_f32_reference,
                                      &kernels::binary_peak_loop_reference};
constexpr KernelTable kAvx2Table{Isa::kAvx2,
                                 &kernels::bgemm_b1_8x4_avx2,
                                 &kernels::pack_sign_rows_avx2,
                                 &kernels::sgemm_f32_6x16_avx2,
                                 &kernels::dwconv_f32_avx2,
                                 &kernels::csr_sgemm_f32_avx2,
                                 &kernels::binary_peak_loop_avx2};
constexpr KernelTable kAvx512Table{Isa::kAvx512,
                                   &kernels::bgemm_b1_32x4_avx512,
                                   &kernels::pack_sign_rows_avx512,
                                   &kernels::sgemm_f32_8x32_avx512,
                                   &kernels::dwconv_f32_avx512,
                                   &kernels::csr_sgemm_f32_avx512,
                                   &kernels::binary_peak_loop_avx512};

const KernelTable& choose_active() {
  if (const char* forced = std::getenv("ONEBIT_ISA"); forced != nullptr && *forced != '\0') {
    return kernels_for(parse_isa(forced));
  }
  if (isa_supported(Isa::kAvx512)) return kAvx512Table;
  if (isa_supported(Isa::kAvx2)) return kAvx2Table;
  return kReferenceTable;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kReference:
      break;
  }
  return "reference";
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : {Isa::kReference, Isa::kAvx2, Isa::kAvx512}) {
    if (name == isa_name(isa)) return isa;
  }
  throw std::invalid_argument("ONEBIT_ISA: unknown instruction set '" + name +
                              "', expected reference, avx2 or avx512");
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vpopcntdq");
    case Isa::kReference:
      break;
  }
  return true;
}

const KernelTable& kernels_for(Isa isa) {
  if (!isa_supported(isa)) {
    throw std::runtime_error(std::string("onebit runtime: instruction set '") + isa_name(isa) +
                             "' is not supported by this CPU");
  }
  switch (isa) {
    case Isa::kAvx2:
      return kAvx2Table;
    case Isa::kAvx512:
      return kAvx512Table;
    case Isa::kReference:
      break;
  }
  return kReferenceTable;
}

const KernelTable& active_kernels() {
  static const KernelTable& table = choose_active();
  return table;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kReference, Isa::kAvx2, Isa::kAvx512}) {
    if (isa_supported(isa)) isas.push_back(isa);
  }
  return isas;
}

std::vector<BitWord> prepack_bgemm_weights(const BitWord* rows, std::size_t n, std::size_t k_words,
                                           std::size_t ld) {
  std::vector<BitWord> packed(bgemm_padded_n(n) * k_words, 0);
  for (std::size_t o = 0; o < n; ++o) {
    for (std::size_t k = 0; k < k_words; ++k) {
      packed[((o / kBgemmPanel) * k_words + k) * kBgemmPanel + o % kBgemmPanel] = rows[o * ld + k];
    }
  }
  return packed;
}

std::vector<float> prepack_sgemm_weights(const float* b, std::size_t k, std::size_t n,
                                         std::size_t ldb) {
  std::vector<float> packed(sgemm_padded_n(n) * k, 0.0f);
  for (std::size_t j = 0; j < k; ++j) {
    for (std::size_t o = 0; o < n; ++o) {
      packed[((o / kSgemmPanel) * k + j) * kSgemmPanel + o % kSgemmPanel] = b[j * ldb + o];
    }
  }
  return packed;
}

void pack_signs(const float* x, std::size_t n, BitWord* out) {
  active_kernels().pack_sign_rows(x, 1, n, n, out, words_for_bits(n));
}

void unpack_signs(const BitWord* in, std::size_t n, float* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = bit_value(get_bit(in, i));
}

// Word-at-a-time: each destination word (or part of one) is assembled from at most two source
// words with shifts; with both offsets word-aligned this is a plain word copy. Reads only the
// source words that hold copied bits and writes only the destination bits in range.
void copy_bits(const BitWord* src, std::size_t src_bit, std::size_t nbits, BitWord* dst,
               std::size_t dst_bit) {
  while (nbits > 0) {
    const std::size_t doff = dst_bit % kBitsPerWord, soff = src_bit % kBitsPerWord;
    const std::size_t n = std::min(kBitsPerWord - doff, nbits);
    const BitWord* s = src + src_bit / kBitsPerWord;
    BitWord v = s[0] >> soff;
    if (soff + n > kBitsPerWord) v |= s[1] << (kBitsPerWord - soff);
    const BitWord mask = n == kBitsPerWord ? ~BitWord{0} : (BitWord{1} << n) - 1;
    BitWord& d = dst[dst_bit / kBitsPerWord];
    d = (d & ~(mask << doff)) | ((v & mask) << doff);
    src_bit += n, dst_bit += n, nbits -= n;
  }
}

}  // namespace onebit::runtime
