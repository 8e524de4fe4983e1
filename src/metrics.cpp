#include "onebit/metrics.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <sstream>
#include <stdexcept>

#include "onebit/nn/quant_layer.h"

namespace onebit::metrics {

std::optional<double> FlipRatio::update(const at::Tensor& values) {
  at::NoGradGuard no_grad;
  auto current = values.detach().clone();
  if (!previous_.defined()) {
    previous_ = current;
    last_changed_ = 0;
    return std::nullopt;
  }
  if (previous_.sizes() != current.sizes()) {
    std::ostringstream msg;
    msg << "FlipRatio: values have shape " << current.sizes() << ", expected " << previous_.sizes()
        << " as in the previous update";
    throw std::invalid_argument(msg.str());
  }
  const int64_t total = current.numel();
  const int64_t unchanged = at::eq(previous_, current).sum().item<int64_t>();
  last_changed_ = total - unchanged;
  const double ratio =
      total ? 1.0 - static_cast<double>(unchanged) / static_cast<double>(total) : 0.0;
  previous_ = current;
  total_ += ratio;
  ++count_;
  return ratio;
}

at::Tensor binary_pattern(const at::Tensor& quantized) { return quantized.detach().gt(0); }

std::vector<std::pair<std::string, at::Tensor>> binary_kernels(const torch::nn::Module& model) {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    const auto* layer = dynamic_cast<const nn::QuantLayer*>(item.value().get());
    if (!layer) continue;
    std::vector<nn::QuantizedParameter> binary;
    for (auto& p : layer->quantized_parameters()) {
      if (p.quantizer && p.quantizer->precision() == 1) binary.push_back(p);
    }
    for (const auto& p : binary) {
      std::string name = item.key().empty() ? std::string("model") : item.key();
      if (binary.size() > 1) name += "." + p.name;
      out.emplace_back(name, quantizers::apply(p.quantizer, p.latent).detach());
    }
  }
  return out;
}

void FlipRatioCallback::measure(train::Context& ctx) {
  for (const auto& [name, kernel] : binary_kernels(*ctx.model)) {
    ratios_[name].update(binary_pattern(kernel));
  }
}

double FlipRatioCallback::mean() const {
  double sum = 0;
  for (const auto& kv : ratios_) sum += kv.second.result();
  return ratios_.empty() ? 0.0 : sum / static_cast<double>(ratios_.size());
}

void FlipRatioCallback::on_train_begin(train::Context& ctx) {
  ratios_.clear();
  measure(ctx);  // records the starting signs
}

void FlipRatioCallback::on_epoch_begin(train::Context&) {
  for (auto& kv : ratios_) kv.second.reset_states();
}

void FlipRatioCallback::on_batch_end(train::Context& ctx) {
  if (!options_.every_step || ratios_.empty()) return;
  measure(ctx);
  ctx.progress["flip"] = mean();
}

void FlipRatioCallback::on_epoch_end(train::Context& ctx, nlohmann::json& metrics) {
  if (ratios_.empty()) return;
  if (!options_.every_step) measure(ctx);
  nlohmann::json per_layer = nlohmann::json::object();
  for (const auto& [name, ratio] : ratios_) per_layer[name] = ratio.result();
  metrics["flip_ratio"] = per_layer;
  ctx.progress["flip"] = mean();
}

}  // namespace onebit::metrics
