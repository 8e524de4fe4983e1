// Writes the seed corpora of the training-file fuzzers:
//   make_training_corpus CHECKPOINT_DIR CONFIG_DIR
// CHECKPOINT_DIR: a checkpoint of the tiny model with Adam state, and the model saved by
// onebit::save with latent and with quantized (bit) kernels. CONFIG_DIR: training configs and the
// architectures of zoo models with shortcuts, concatenation, depthwise and grouped convolutions,
// squeeze-excite scaling and every quantizer family they use.

#include <torch/optim/adam.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "onebit/serialize.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"
#include "training_fuzz_model.h"

namespace {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR CONFIG_DIR\n", argv[0]);
    return 2;
  }
  const std::string ck_dir = argv[1], cfg_dir = argv[2];
  std::filesystem::create_directories(ck_dir);
  std::filesystem::create_directories(cfg_dir);

  onebit::nn::Graph model = onebit::fuzz::tiny_model();
  torch::optim::Adam adam(model->parameters());
  model->train();
  auto loss = model->forward(torch::randn({4, 12})).sum();
  loss.backward();
  adam.step();
  onebit::train::TrainOptions options;
  options.model = "tiny";
  const nlohmann::json config = {{"train", options.to_json()}, {"epoch", 1}};
  onebit::train::save_checkpoint(ck_dir + "/checkpoint.pt", model, &adam, config);
  onebit::save(model, ck_dir + "/model.onebit");
  onebit::save(model, ck_dir + "/model-bits.onebit", /*quantized=*/true);

  write_text(cfg_dir + "/train-default.json", onebit::train::TrainOptions().to_json().dump());
  onebit::train::TrainOptions bop;
  bop.model = "bireal-mnist";
  bop.optimizer = "bop";
  bop.optimizer_options = {{"threshold", 1e-8}, {"gamma", 1e-4}};
  bop.model_options.input_shape = {1, 32, 32};
  bop.model_options.num_classes = 7;
  bop.model_options.bn_momentum = 0.1;
  write_text(cfg_dir + "/train-bop.json", bop.to_json().dump());
  write_text(cfg_dir + "/architecture-tiny.json",
             nlohmann::json{{"architecture", onebit::serialize::describe(model)}}.dump());
  const struct {
    const char* name;
    std::vector<int64_t> shape;
  } zoo[] = {{"larq-mnist", {}},
             {"bnn-mlp", {}},
             {"bireal-mnist", {}},
             {"densenet-mnist", {}},
             {"quicknet-small", {3, 32, 32}},
             {"meliusnet22", {3, 32, 32}},
             {"real-to-binary-net", {3, 32, 32}},
             {"reactnet-a", {3, 32, 32}},
             {"xnornet", {3, 64, 64}},
             {"dorefanet", {3, 64, 64}}};
  for (const auto& z : zoo) {
    onebit::zoo::ModelOptions o;
    o.input_shape = z.shape;
    o.num_classes = 10;
    const auto architecture = onebit::serialize::describe(onebit::zoo::build(z.name, o));
    write_text(cfg_dir + "/architecture-" + z.name + ".json", architecture.dump());
  }
  return 0;
}
