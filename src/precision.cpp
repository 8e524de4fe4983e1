#include "onebit/precision.h"

#include <torch/nn/module.h>

#include "onebit/nn/quant_layer.h"

namespace onebit {
namespace {

// Precision of every quantized kernel, keyed by tensor identity.
std::map<const void*, int> kernel_bits(const torch::nn::Module& model) {
  std::map<const void*, int> bits;
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (const auto* layer = dynamic_cast<const nn::QuantLayer*>(module.get())) {
      for (const auto& p : layer->quantized_parameters()) {
        if (p.latent.defined()) {
          bits[p.latent.unsafeGetTensorImpl()] = quantizers::precision_of(p.quantizer);
        }
      }
    }
  }
  return bits;
}

}  // namespace

std::map<std::string, int> parameter_precision(const torch::nn::Module& model) {
  const auto bits = kernel_bits(model);
  std::map<std::string, int> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    auto it = bits.find(item.value().unsafeGetTensorImpl());
    out[item.key()] = it == bits.end() ? 32 : it->second;
  }
  return out;
}

int parameter_precision(const torch::nn::Module& model, const at::Tensor& param) {
  if (!param.defined()) return 32;
  const auto bits = kernel_bits(model);
  auto it = bits.find(param.unsafeGetTensorImpl());
  return it == bits.end() ? 32 : it->second;
}

}  // namespace onebit
