// libFuzzer target: bytes -> parse_model -> Interpreter (validation, weight layout) -> one run on
// a small input. Any crash, sanitizer report or exception other than ModelError is a finding.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const onebit::runtime::Interpreter net =
        onebit::runtime::Interpreter::from_bytes(data, size, {1, nullptr});
    const auto shape = net.input_shape();
    const std::int64_t numel = shape[0] * shape[1] * shape[2];
    // Keep each input fast: skip running models with large inputs or compute.
    if (numel > (1 << 16) || net.binary_macs_per_image() > 100'000'000) return 0;
    std::vector<float> input(static_cast<std::size_t>(numel));
    for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>(i % 7) - 3.0f;
    const std::vector<float> out = net.run(input, 1);
    if (out.size() != net.output_size()) __builtin_trap();
  } catch (const onebit::runtime::ModelError&) {
    // Rejected cleanly: the expected outcome for damaged bytes.
  }
  return 0;
}
