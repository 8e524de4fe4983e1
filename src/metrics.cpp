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
    skip_next_ = false;
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
  if (skip_next_) {  // the first update after a reset only records (Larq)
    skip_next_ = false;
    return std::nullopt;
  }
  total_ += ratio;
  ++count_;
  return ratio;
}

at::Tensor binary_pattern(const at::Tensor& quantized) { return quantized.detach().gt(0); }

at::Tensor flip_pattern(const at::Tensor& quantized, int precision) {
  return precision == 1 ? binary_pattern(quantized) : quantized.detach();
}

std::vector<QuantizedKernel> quantized_kernels(const torch::nn::Module& model) {
  at::NoGradGuard no_grad;
  std::vector<QuantizedKernel> out;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    const auto* layer = dynamic_cast<const nn::QuantLayer*>(item.value().get());
    if (!layer) continue;
    std::vector<nn::QuantizedParameter> tracked;
    for (auto& p : layer->quantized_parameters()) {
      if (p.quantizer && p.quantizer->precision() < 32) tracked.push_back(p);
    }
    for (const auto& p : tracked) {
      std::string name = item.key().empty() ? std::string("model") : item.key();
      if (tracked.size() > 1) name += "." + p.name;
      out.push_back({name, quantizers::apply(p.quantizer, p.latent, p.role).detach(),
                     p.quantizer->precision()});
    }
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> binary_kernels(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& k : quantized_kernels(model)) {
    if (k.precision == 1) out.emplace_back(std::move(k.name), std::move(k.values));
  }
  return out;
}

void FlipRatioCallback::measure(train::Context& ctx) {
  for (const auto& k : quantized_kernels(*ctx.model)) {
    const auto ratio = ratios_[k.name].update(flip_pattern(k.values, k.precision));
    epoch_ratios_[k.name] = ratio.value_or(0.0);
  }
}

double FlipRatioCallback::mean() const {
  double sum = 0;
  if (options_.every_step) {
    for (const auto& kv : ratios_) sum += kv.second.result();
  } else {
    for (const auto& kv : epoch_ratios_) sum += kv.second;
  }
  return ratios_.empty() ? 0.0 : sum / static_cast<double>(ratios_.size());
}

void FlipRatioCallback::on_train_begin(train::Context& ctx) {
  ratios_.clear();
  epoch_ratios_.clear();
  measure(ctx);  // records the starting values
}

void FlipRatioCallback::on_epoch_begin(train::Context&) {
  // Keras resets every metric at the start of an epoch; epoch mode compares epoch ends instead.
  if (!options_.every_step) return;
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
  for (const auto& [name, ratio] : ratios_) {
    per_layer[name] = options_.every_step ? ratio.result() : epoch_ratios_.at(name);
  }
  metrics["flip_ratio"] = per_layer;
  ctx.progress["flip"] = mean();
}

}  // namespace onebit::metrics
