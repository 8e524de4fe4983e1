// libFuzzer target for the readers of training files: the bytes are written to a file and read as
// a checkpoint (`onebit::train::load_checkpoint`: LibTorch archive, config JSON, architecture,
// weights), as its optimizer state, as weights for a fixed model (`load_model_state`) and as a
// whole-model file (`onebit::load`). Each of them documents std::runtime_error for a file it
// cannot read; any other exception, a crash or a sanitizer report is a finding.

#include <torch/optim/adam.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>

#include "onebit/nn.h"
#include "onebit/serialize.h"
#include "onebit/train/checkpoint.h"
#include "training_fuzz_model.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // A corrupt description must fail on the limit, not by exhausting the fuzzer's memory.
  onebit::serialize::set_build_limits({std::int64_t{1} << 22});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path =
      "/tmp/onebit_fuzz_checkpoint_" + std::to_string(::getpid()) + ".pt";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    onebit::train::load_checkpoint(path);
  } catch (const std::runtime_error&) {
  }
  try {
    onebit::nn::Graph model = onebit::fuzz::tiny_model();
    torch::optim::Adam adam(model->parameters());
    onebit::train::load_optimizer_state(path, adam);
    onebit::train::load_model_state(path, model);
  } catch (const std::runtime_error&) {
  }
  try {
    onebit::load(path);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
