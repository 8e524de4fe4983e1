#include "onebit/train/checkpoint.h"

#include <torch/serialize/archive.h>

#include <filesystem>
#include <stdexcept>

#include "onebit/io.h"
#include "onebit/serialize.h"
#include "onebit/zoo/models.h"

namespace onebit::train {
namespace fs = std::filesystem;

std::string checkpoint_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return (fs::path(path) / "checkpoint.pt").string();
  return path;
}

void save_checkpoint(const std::string& path, const nn::Graph& model,
                     torch::optim::Optimizer* optimizer, const nlohmann::json& config) {
  io::atomic_write(path, [&](const std::string& tmp) {
    torch::serialize::OutputArchive root;
    root.write("onebit_checkpoint_version", c10::IValue(static_cast<int64_t>(2)));
    // The architecture lets load_checkpoint rebuild models that are not in the zoo. A model
    // with a layer no kind describes still gets its weights and optimizer saved (training must
    // not stop at the end of an epoch); load_checkpoint then refuses to guess the model and
    // says why, and load_model_state reads the weights into the user's own model.
    nlohmann::json full = config;
    full.erase("architecture");
    full.erase("architecture_error");
    try {
      full["architecture"] = serialize::describe(model);
    } catch (const std::invalid_argument& e) {
      full["architecture_error"] = e.what();
    }
    root.write("config", c10::IValue(full.dump()));
    torch::serialize::OutputArchive model_archive;
    model->save(model_archive);
    root.write("model", model_archive);
    if (optimizer) {
      torch::serialize::OutputArchive optimizer_archive;
      optimizer->save(optimizer_archive);
      root.write("optimizer", optimizer_archive);
    }
    root.save_to(tmp);
  });
}

namespace {

torch::serialize::InputArchive open_archive(const std::string& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) throw std::runtime_error(file + ": checkpoint not found");
  torch::serialize::InputArchive root;
  try {
    root.load_from(file);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw std::runtime_error(file + ": not a readable onebit checkpoint (truncated or corrupt): " +
                             what.substr(0, what.find('\n')));
  }
  return root;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  const std::string file = checkpoint_file(path);
  auto root = open_archive(file);
  Checkpoint ck;
  ck.path = file;
  try {
    c10::IValue config;
    root.read("config", config);
    ck.config = nlohmann::json::parse(config.toStringRef());
    if (ck.config.contains("architecture")) {
      ck.model = serialize::build(ck.config.at("architecture"));
    } else if (ck.config.contains("architecture_error")) {
      throw std::runtime_error("the model's architecture could not be stored (" +
                               ck.config.at("architecture_error").get<std::string>() +
                               "); rebuild the model in code and read the weights with "
                               "onebit::train::load_model_state");
    } else {
      const auto& t = ck.config.at("train");
      ck.model = zoo::build(t.at("model").get<std::string>(),
                            zoo::ModelOptions::from_json(t.at("model_options")));
    }
    torch::serialize::InputArchive model_archive;
    root.read("model", model_archive);
    ck.model->load(model_archive);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw std::runtime_error(file + ": cannot load checkpoint: " + what.substr(0, what.find('\n')));
  }
  ck.model->eval();
  return ck;
}

void load_optimizer_state(const std::string& path, torch::optim::Optimizer& optimizer) {
  const std::string file = checkpoint_file(path);
  auto root = open_archive(file);
  try {
    torch::serialize::InputArchive archive;
    root.read("optimizer", archive);
    optimizer.load(archive);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw std::runtime_error(file +
                             ": cannot load optimizer state: " + what.substr(0, what.find('\n')));
  }
}

}  // namespace onebit::train

namespace onebit::train {

void load_model_state(const std::string& path, nn::Graph model) {
  const std::string file = checkpoint_file(path);
  auto root = open_archive(file);
  try {
    torch::serialize::InputArchive archive;
    root.read("model", archive);
    model->load(archive);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw std::runtime_error(file + ": cannot load model weights (different architecture?): " +
                             what.substr(0, what.find('\n')));
  }
}

}  // namespace onebit::train
