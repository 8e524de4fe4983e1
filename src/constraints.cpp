#include "onebit/constraints.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>
#include <stdexcept>

#include "onebit/nn/quant_layer.h"

namespace onebit {
namespace constraints {

WeightClip::WeightClip(double clip_value) : clip_value_(clip_value) {
  if (!std::isfinite(clip_value) || clip_value <= 0) {
    throw std::invalid_argument("weight_clip: clip_value must be a positive number, got " +
                                std::to_string(clip_value));
  }
}

void WeightClip::apply(at::Tensor& param) const {
  at::NoGradGuard no_grad;
  param.clamp_(-clip_value_, clip_value_);
}

ConstraintPtr from_json(const nlohmann::json& spec) {
  if (spec.is_null()) return nullptr;
  std::string id;
  nlohmann::json config = nlohmann::json::object();
  if (spec.is_string()) {
    id = spec.get<std::string>();
  } else if (spec.is_object() && spec.contains("class_name") && spec["class_name"].is_string()) {
    id = spec["class_name"].get<std::string>();
    if (spec.contains("config")) config = spec["config"];
  } else {
    throw std::invalid_argument(
        "constraint spec must be a string id or {\"class_name\": id, \"config\": {...}}, got " +
        spec.dump());
  }
  if (id == "weight_clip" || id == "WeightClip") {
    if (!config.is_object()) {
      throw std::invalid_argument("weight_clip: config must be an object, got " + config.dump());
    }
    double clip = 1.0;
    for (const auto& item : config.items()) {
      if (item.key() != "clip_value") {
        throw std::invalid_argument("weight_clip: unknown argument \"" + item.key() +
                                    "\" (known: clip_value)");
      }
      if (!item.value().is_number()) {
        throw std::invalid_argument("weight_clip: clip_value must be a number, got " +
                                    item.value().dump());
      }
      clip = item.value().get<double>();
    }
    return std::make_shared<WeightClip>(clip);
  }
  throw std::invalid_argument("unknown constraint \"" + id + "\" (known: weight_clip)");
}

nlohmann::json to_json(const ConstraintPtr& c) { return c ? c->to_json() : nlohmann::json(); }

ConstraintSpec::ConstraintSpec(const char* id) : ptr_(id ? from_json(std::string(id)) : nullptr) {}
ConstraintSpec::ConstraintSpec(const std::string& id) : ptr_(from_json(id)) {}

}  // namespace constraints

void apply_constraints(torch::nn::Module& model) {
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (auto* layer = dynamic_cast<nn::QuantLayer*>(module.get())) layer->apply_constraints();
  }
}

}  // namespace onebit
