#include "onebit/nn/quant_layer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <map>

#include "onebit/log.h"

namespace onebit::nn {

void QuantLayer::apply_constraints() {
  for (auto& p : quantized_parameters()) {
    if (p.constraint) p.constraint->apply(p.latent);
  }
}

std::vector<std::pair<std::string, at::Tensor>> QuantLayer::quantized_weights() const {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : quantized_parameters()) {
    out.emplace_back(p.name, quantizers::apply(p.quantizer, p.latent, p.role).detach().clone());
  }
  return out;
}

void QuantLayer::warn_if_unconstrained(const std::string& layer, const quantizers::QuantizerPtr& q,
                                       const constraints::ConstraintPtr& c,
                                       const std::string& quantizer_option,
                                       const std::string& constraint_option) {
  // Larq's rule: a 1-bit quantizer other than NoOp (a NoOp only tags a weight as binary, e.g.
  // for Bop, which keeps it at +-1 itself).
  const bool binary = q && q->precision() == 1 && !dynamic_cast<const quantizers::NoOp*>(q.get());
  if (binary && !c) {
    warn(layer + ": " + quantizer_option + " \"" + q->id() + "\" is binary but `" +
         constraint_option +
         "` is not set (the kernel has no constraint); latent weights can grow without bound and "
         "stop flipping. Consider ." +
         constraint_option + "(\"weight_clip\").");
  }
}

torch::OrderedDict<std::string, at::Tensor> quantized_state_dict(const torch::nn::Module& model) {
  at::NoGradGuard no_grad;
  // Map each quantized kernel tensor to its quantized value.
  std::map<const void*, at::Tensor> replaced;
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (const auto* layer = dynamic_cast<const QuantLayer*>(module.get())) {
      for (const auto& p : layer->quantized_parameters()) {
        replaced[p.latent.unsafeGetTensorImpl()] =
            quantizers::apply(p.quantizer, p.latent, p.role).detach().clone();
      }
    }
  }
  torch::OrderedDict<std::string, at::Tensor> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    auto it = replaced.find(item.value().unsafeGetTensorImpl());
    out.insert(item.key(), it != replaced.end() ? it->second : item.value().detach().clone());
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    out.insert(item.key(), item.value().detach().clone());
  }
  return out;
}

}  // namespace onebit::nn
