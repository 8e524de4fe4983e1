// libFuzzer target for the JSON descriptions onebit reads from users and from its own files: the
// training config (`TrainOptions::from_json`, with the zoo's `ModelOptions`), and a model
// architecture (`serialize::build`: every layer kind, quantizer and constraint). Both document
// std::invalid_argument for a description they reject; any other exception (a JSON type error
// escaping, a LibTorch error), a crash, a sanitizer report or an allocation beyond the build
// limit is a finding.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "onebit/serialize.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  onebit::serialize::set_build_limits({std::int64_t{1} << 22});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    const auto options = onebit::train::TrainOptions::from_json(j);
    // Building the named zoo model checks its options; the small MNIST models keep this cheap
    // (the ImageNet ones take seconds per build at their default size).
    const std::string name = onebit::zoo::canonical_name(options.model);
    if (name == "larq-mnist" || name == "bnn-mlp" || name == "bireal-mnist") {
      onebit::zoo::build(name, options.model_options);
    }
  } catch (const std::invalid_argument&) {
  }
  try {
    onebit::serialize::build(j.is_object() && j.contains("architecture") ? j.at("architecture")
                                                                         : j);
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
