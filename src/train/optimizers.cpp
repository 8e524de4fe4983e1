#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <stdexcept>

#include "onebit/train/trainer.h"

namespace onebit::train {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        torch::nn::Sequential& model) {
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
  throw std::invalid_argument("unknown optimizer \"" + options.optimizer +
                              "\" (known: adam, sgd)");
}

}  // namespace onebit::train
