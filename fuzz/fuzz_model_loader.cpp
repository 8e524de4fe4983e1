// libFuzzer target: bytes -> parse_model -> Interpreter (validation, weight layout) -> one run on
// a small input. Any crash, sanitizer report or exception other than ModelError is a finding.
// Each input is tried as given and, so that mutations reach the metadata parser and the ops
// instead of stopping at the checksums, once more with file_size and both CRC-32s repaired.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/model.h"

namespace {

std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

std::uint64_t u64_at(const std::vector<std::uint8_t>& b, std::size_t at) {
  std::uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}

// Rewrites file_size and the CRCs of the (claimed) sections when they lie within the buffer.
void repair(std::vector<std::uint8_t>& b) {
  if (b.size() < 64) return;
  const std::uint64_t size = b.size();
  std::memcpy(b.data() + 16, &size, 8);
  const std::uint64_t meta_off = u64_at(b, 24), meta_size = u64_at(b, 32);
  const std::uint64_t pay_off = u64_at(b, 40), pay_size = u64_at(b, 48);
  if (meta_off <= size && meta_size <= size - meta_off) {
    const std::uint32_t c = crc32(b.data() + meta_off, meta_size);
    std::memcpy(b.data() + 56, &c, 4);
  }
  if (pay_off <= size && pay_size <= size - pay_off) {
    const std::uint32_t c = crc32(b.data() + pay_off, pay_size);
    std::memcpy(b.data() + 60, &c, 4);
  }
}

void load_and_run(const std::uint8_t* data, std::size_t size) {
  try {
    const onebit::runtime::Interpreter net =
        onebit::runtime::Interpreter::from_bytes(data, size, {1, nullptr});
    const auto shape = net.input_shape();
    const std::int64_t numel = shape[0] * shape[1] * shape[2];
    // Keep each input fast: skip running models with large inputs or compute.
    if (numel > (1 << 16) || net.binary_macs_per_image() > 100'000'000) return;
    std::vector<float> input(static_cast<std::size_t>(numel));
    for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>(i % 7) - 3.0f;
    const std::vector<float> out = net.run(input, 1);
    if (out.size() != net.output_size()) __builtin_trap();
  } catch (const onebit::runtime::ModelError&) {
    // Rejected cleanly: the expected outcome for damaged bytes.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  load_and_run(data, size);
  std::vector<std::uint8_t> repaired(data, data + size);
  repair(repaired);
  load_and_run(repaired.data(), repaired.size());
  return 0;
}
