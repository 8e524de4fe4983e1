#include "onebit/train/checkpoint.h"

#include <torch/serialize/archive.h>
#include <torch/utils.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

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
  io::check_torch_archive(file);
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

namespace {

std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

/// What comparing a model with a stored archive found.
struct StateMatch {
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (model tensor, stored tensor)
  std::vector<std::string> missing, misshaped, unexpected;
};

// Walks `module` and `archive` together (Module::save writes parameters and buffers by name and
// every child as a nested archive under its name).
void match_state(const torch::nn::Module& module, torch::serialize::InputArchive& archive,
                 const std::string& prefix, StateMatch& m) {
  std::set<std::string> expected;
  auto tensor = [&](const std::string& name, const at::Tensor& t) {
    expected.insert(name);
    if (!t.defined()) return;
    at::Tensor stored;
    if (!archive.try_read(name, stored)) {
      m.missing.push_back(prefix + name + " " + shape_string(t.sizes()));
    } else if (stored.sizes() != t.sizes()) {
      m.misshaped.push_back(prefix + name + ": model " + shape_string(t.sizes()) + ", file " +
                            shape_string(stored.sizes()));
    } else {
      m.copies.emplace_back(t, stored);
    }
  };
  for (const auto& p : module.named_parameters(/*recurse=*/false)) tensor(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/false)) tensor(b.key(), b.value());
  for (const auto& c : module.named_children()) {
    expected.insert(c.key());
    torch::serialize::InputArchive child;
    if (!archive.try_read(c.key(), child)) {
      for (const auto& p : c.value()->named_parameters()) {
        m.missing.push_back(prefix + c.key() + "." + p.key() + " " +
                            shape_string(p.value().sizes()));
      }
      continue;
    }
    match_state(*c.value(), child, prefix + c.key() + ".", m);
  }
  for (const auto& key : archive.keys()) {
    if (!expected.count(key)) m.unexpected.push_back(prefix + key);
  }
}

std::string list(const std::vector<std::string>& items) {
  std::string s;
  const size_t shown = std::min<size_t>(items.size(), 12);
  for (size_t i = 0; i < shown; ++i) s += "\n  " + items[i];
  if (items.size() > shown) s += "\n  ... and " + std::to_string(items.size() - shown) + " more";
  return s;
}

}  // namespace

void load_model_state(const std::string& path, nn::Graph model) {
  const std::string file = checkpoint_file(path);
  auto root = open_archive(file);
  torch::serialize::InputArchive archive;
  if (!root.try_read("model", archive)) {
    throw std::runtime_error(file + ": holds no model weights (not a onebit checkpoint?)");
  }
  StateMatch m;
  match_state(*model, archive, "", m);
  if (!m.missing.empty() || !m.misshaped.empty() || !m.unexpected.empty()) {
    std::string msg = file +
                      ": the weights do not fit this model (different architecture, "
                      "input shape or class count?)";
    if (!m.missing.empty()) {
      msg += "\n" + std::to_string(m.missing.size()) +
             " tensor(s) missing from the file:" + list(m.missing);
    }
    if (!m.misshaped.empty()) {
      msg += "\n" + std::to_string(m.misshaped.size()) +
             " tensor(s) with another shape:" + list(m.misshaped);
    }
    if (!m.unexpected.empty()) {
      msg += "\n" + std::to_string(m.unexpected.size()) +
             " tensor(s) in the file the model has no place for:" + list(m.unexpected);
    }
    throw std::runtime_error(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [to, from] : m.copies) to.copy_(from);
}

}  // namespace onebit::train
