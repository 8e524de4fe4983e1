#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <functional>
#include <stdexcept>
#include <string>

#include "onebit/optim/bop.h"
#include "onebit/optim/case_optimizer.h"
#include "onebit/optim/fused_adam.h"
#include "onebit/train/trainer.h"

namespace onebit::train {
namespace {

/// Parameter groups for decoupled weight decay: real-valued weights with two or more dimensions
/// decay, latent binary weights (`binary`), biases and batch-norm parameters do not.
template <typename Options>
std::vector<torch::optim::OptimizerParamGroup> decay_groups(
    const std::vector<at::Tensor>& params, const std::function<bool(const at::Tensor&)>& binary,
    Options decayed, double weight_decay) {
  std::vector<at::Tensor> decay, keep;
  for (const auto& p : params) (p.dim() >= 2 && !binary(p) ? decay : keep).push_back(p);
  Options kept = decayed;
  kept.weight_decay(0);
  decayed.weight_decay(weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(decay, std::make_unique<Options>(decayed));
  if (!keep.empty()) groups.emplace_back(keep, std::make_unique<Options>(kept));
  return groups;
}

// optimizer_options' "fused" (default true): onebit's one-pass Adam/AdamW step
// (optim/fused_adam.h: same state and checkpoints, results equal to float rounding), or false
// for LibTorch's own step.
bool fused_adam(const nlohmann::json& extra, const std::string& optimizer) {
  if (!extra.contains("fused")) return true;
  if (!extra.at("fused").is_boolean()) {
    throw std::invalid_argument("optimizer \"" + optimizer +
                                "\": option \"fused\" must be true or "
                                "false, got " +
                                extra.at("fused").dump());
  }
  return extra.at("fused").get<bool>();
}

template <typename Params>
std::unique_ptr<torch::optim::Optimizer> make_adam(bool fused, Params params,
                                                   const torch::optim::AdamOptions& o) {
  if (fused) return std::make_unique<optim::FusedAdam>(std::move(params), o);
  return std::make_unique<torch::optim::Adam>(std::move(params), o);
}

template <typename Params>
std::unique_ptr<torch::optim::Optimizer> make_adamw(bool fused, Params params,
                                                    const torch::optim::AdamWOptions& o) {
  if (fused) return std::make_unique<optim::FusedAdamW>(std::move(params), o);
  return std::make_unique<torch::optim::AdamW>(std::move(params), o);
}

}  // namespace

void clear_gradients(nn::Graph& model) {
  for (auto& p : model->parameters()) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        nn::Graph& model) {
  const auto& extra = options.optimizer_options;
  const double wd = options.weight_decay;
  auto is_binary = optim::is_binary_in(*model);
  const auto binary = [is_binary](const at::Tensor& p) { return is_binary("", p); };
  if (options.optimizer == "adam") {
    for (const auto& item : extra.items()) {
      if (item.key() != "fused") {
        throw std::invalid_argument("optimizer \"adam\": unknown option \"" + item.key() +
                                    "\" (known: fused)");
      }
    }
    const bool fused = fused_adam(extra, "adam");
    if (wd > 0) {
      return make_adamw(
          fused,
          decay_groups(model->parameters(), binary, torch::optim::AdamWOptions(options.lr), wd),
          torch::optim::AdamWOptions(options.lr).weight_decay(0));
    }
    return make_adam(fused, model->parameters(), torch::optim::AdamOptions(options.lr));
  }
  if (options.optimizer == "sgd") {
    const double momentum = extra.value("momentum", 0.9);
    const auto sgd = torch::optim::SGDOptions(options.lr).momentum(momentum);
    if (wd > 0) {
      return std::make_unique<torch::optim::SGD>(decay_groups(model->parameters(), binary, sgd, wd),
                                                 sgd);
    }
    return std::make_unique<torch::optim::SGD>(model->parameters(), sgd);
  }
  if (options.optimizer == "bop") {
    // Bop for the binary kernels, Adam with options.lr for every other parameter.
    for (const auto& item : extra.items()) {
      if (item.key() != "threshold" && item.key() != "gamma" && item.key() != "fused") {
        throw std::invalid_argument("optimizer \"bop\": unknown option \"" + item.key() +
                                    "\" (known: threshold, gamma, fused)");
      }
    }
    const bool fused = fused_adam(extra, "bop");
    const optim::BopOptions bop(extra.value("threshold", 1e-6), extra.value("gamma", 1e-3));
    const double lr = options.lr;
    bool any_binary = false;
    for (const auto& p : model->parameters()) any_binary = any_binary || binary(p);
    if (!any_binary) {
      throw std::invalid_argument("optimizer \"bop\": model \"" + options.model +
                                  "\" has no binary kernel to train with Bop (a float model?); "
                                  "use --optimizer adam");
    }
    return std::make_unique<optim::CaseOptimizer>(
        model->named_parameters(),
        std::vector<optim::OptimizerCase>{{is_binary,
                                           [bop](std::vector<at::Tensor> ps) {
                                             return std::make_unique<optim::Bop>(std::move(ps),
                                                                                 bop);
                                           },
                                           "bop"}},
        [lr, wd, fused](std::vector<at::Tensor> ps) -> std::unique_ptr<torch::optim::Optimizer> {
          if (wd > 0) {
            // Bop's kernels are elsewhere: every 2-D+ tensor here is a real-valued weight.
            return make_adamw(fused,
                              decay_groups(
                                  ps, [](const at::Tensor&) { return false; },
                                  torch::optim::AdamWOptions(lr), wd),
                              torch::optim::AdamWOptions(lr).weight_decay(0));
          }
          return make_adam(fused, std::move(ps), torch::optim::AdamOptions(lr));
        },
        "adam");
  }
  throw std::invalid_argument("unknown optimizer \"" + options.optimizer +
                              "\" (known: adam, sgd, bop)");
}

}  // namespace onebit::train
