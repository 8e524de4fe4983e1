// libFuzzer target for the data-file readers (onebit/data/formats.h): bytes -> gzip detection and
// decompression (with a small output limit) -> the IDX parser and the CIFAR-10 parser. Any crash,
// sanitizer report, or exception other than std::runtime_error is a finding.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "onebit/data/formats.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onebit::data;
  std::vector<std::uint8_t> bytes(data, data + size);
  try {
    bytes = maybe_gunzip(std::move(bytes), "fuzz", /*max_bytes=*/std::uint64_t(64) << 20);
  } catch (const std::runtime_error&) {
    return 0;
  }
  try {
    const IdxArray a = parse_idx(bytes, "fuzz");
    std::uint64_t n = 1;
    for (auto d : a.shape) n *= static_cast<std::uint64_t>(d);
    if (n != a.values.size()) __builtin_trap();  // the parser's own invariant
  } catch (const std::runtime_error&) {
  }
  try {
    const Cifar10Batch b = parse_cifar10(bytes, "fuzz");
    if (b.labels.size() != static_cast<std::size_t>(b.count) ||
        b.pixels.size() != static_cast<std::size_t>(b.count) * 3072) {
      __builtin_trap();
    }
    for (auto l : b.labels) {
      if (l > 9) __builtin_trap();
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
