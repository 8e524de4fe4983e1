#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <stdexcept>

#include "onebit/optim/bop.h"
#include "onebit/optim/case_optimizer.h"
#include "onebit/train/trainer.h"

namespace onebit::train {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        nn::Graph& model) {
  const auto& extra = options.optimizer_options;
  if (options.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(model->parameters(),
                                                torch::optim::AdamOptions(options.lr));
  }
  if (options.optimizer == "sgd") {
    const double momentum = extra.value("momentum", 0.9);
    return std::make_unique<torch::optim::SGD>(
        model->parameters(), torch::optim::SGDOptions(options.lr).momentum(momentum));
  }
  if (options.optimizer == "bop") {
    // Bop for the binary kernels, Adam with options.lr for every other parameter.
    for (const auto& item : extra.items()) {
      if (item.key() != "threshold" && item.key() != "gamma") {
        throw std::invalid_argument("optimizer \"bop\": unknown option \"" + item.key() +
                                    "\" (known: threshold, gamma)");
      }
    }
    const optim::BopOptions bop(extra.value("threshold", 1e-6), extra.value("gamma", 1e-3));
    const double lr = options.lr;
    auto binary = optim::is_binary_in(*model);
    bool any_binary = false;
    for (const auto& p : model->parameters()) any_binary = any_binary || binary("", p);
    if (!any_binary) {
      throw std::invalid_argument("optimizer \"bop\": model \"" + options.model +
                                  "\" has no binary kernel to train with Bop (a float model?); "
                                  "use --optimizer adam");
    }
    return std::make_unique<optim::CaseOptimizer>(
        model->named_parameters(),
        std::vector<optim::OptimizerCase>{{binary,
                                           [bop](std::vector<at::Tensor> ps) {
                                             return std::make_unique<optim::Bop>(std::move(ps),
                                                                                 bop);
                                           },
                                           "bop"}},
        [lr](std::vector<at::Tensor> ps) {
          return std::make_unique<torch::optim::Adam>(std::move(ps), torch::optim::AdamOptions(lr));
        },
        "adam");
  }
  throw std::invalid_argument("unknown optimizer \"" + options.optimizer +
                              "\" (known: adam, sgd, bop)");
}

}  // namespace onebit::train
