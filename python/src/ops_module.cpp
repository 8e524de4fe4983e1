// libonebit_ops: onebit's training library as PyTorch operators (namespace `onebit`, visible to
// Python as torch.ops.onebit.* and to TorchScript). Loaded by python/onebit/_ops.py with
// torch.ops.load_library, so it shares the process's one LibTorch with Python's torch and needs
// no Python headers. The Python package builds its models in Python; everything that reads a
// model (summary, convert) goes through the architecture JSON of serialize::describe/build.

#include <torch/library.h>
#include <torch/nn/module.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "onebit/constraints.h"
#include "onebit/convert.h"
#include "onebit/optim/bop.h"
#include "onebit/quantizers.h"
#include "onebit/serialize.h"
#include "onebit/summary.h"
#include "onebit/zoo/models.h"

namespace {

using Json = nlohmann::json;

Json parse(const std::string& text, const std::string& what) {
  try {
    return Json::parse(text);
  } catch (const std::exception& e) {
    throw std::invalid_argument(what + ": not valid JSON (" + e.what() + ")");
  }
}

/// Quantizers by spec string (a JSON string id or {"class_name", "config"}): layers pass the
/// same string every step, so it is parsed once.
onebit::quantizers::QuantizerPtr quantizer(const std::string& spec) {
  static std::mutex mutex;
  static std::unordered_map<std::string, onebit::quantizers::QuantizerPtr> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(spec);
  if (it != cache.end()) return it->second;
  auto q = onebit::quantizers::from_json(parse(spec, "quantizer " + spec));
  if (!q) throw std::invalid_argument("quantizer " + spec + ": null is not a quantizer");
  return cache.emplace(spec, q).first->second;
}

onebit::quantizers::TensorRole role_of(int64_t role, int64_t depth_multiplier) {
  using onebit::quantizers::TensorRole;
  if (role == 0) {
    return depth_multiplier > 0 ? TensorRole::depthwise_kernel(depth_multiplier)
                                : TensorRole::kernel();
  }
  if (role == 1) return TensorRole::activation();
  throw std::invalid_argument("quantize: role must be 0 (kernel) or 1 (activation), got " +
                              std::to_string(role));
}

at::Tensor quantize(const at::Tensor& x, const std::string& spec, int64_t role,
                    int64_t depth_multiplier) {
  return (*quantizer(spec))(x, role_of(role, depth_multiplier));
}

at::Tensor quantizer_gradient(const at::Tensor& x, const at::Tensor& dy, const std::string& spec,
                              int64_t role, int64_t depth_multiplier) {
  return quantizer(spec)->gradient_as(x, dy, role_of(role, depth_multiplier));
}

const char* forward_kind_name(onebit::quantizers::ForwardKind k) {
  switch (k) {
    case onebit::quantizers::ForwardKind::kSign:
      return "sign";
    case onebit::quantizers::ForwardKind::kIdentity:
      return "identity";
    default:
      return "other";
  }
}

std::tuple<std::string, int64_t, std::string> quantizer_spec(const std::string& spec) {
  auto q = quantizer(spec);
  return {q->to_json().dump(), q->precision(), forward_kind_name(q->forward_kind())};
}

std::vector<std::string> quantizer_ids() { return onebit::quantizers::known_ids(); }

onebit::constraints::ConstraintPtr constraint(const std::string& spec) {
  auto c = onebit::constraints::from_json(parse(spec, "constraint " + spec));
  if (!c) throw std::invalid_argument("constraint " + spec + ": null is not a constraint");
  return c;
}

std::string constraint_spec(const std::string& spec) { return constraint(spec)->to_json().dump(); }

at::Tensor constrain(const at::Tensor& param, const std::string& spec) {
  at::NoGradGuard no_grad;
  at::Tensor out = param.detach().clone();
  constraint(spec)->apply(out);
  return out;
}

void bop_update(at::Tensor param, at::Tensor m, const at::Tensor& grad, double threshold,
                double gamma) {
  if (!param.sizes().equals(m.sizes()) || !param.sizes().equals(grad.sizes())) {
    throw std::invalid_argument("bop_update: param, m and grad must have one shape");
  }
  onebit::optim::bop_update(param, m, grad, threshold, gamma);
}

/// Builds the model of `architecture` and copies `tensors` into its parameters and buffers by
/// name. Every parameter and buffer of the built model must be given; a given name the model
/// does not have is an error, except "num_batches_tracked" of torch's batch norm, which onebit's
/// BatchNorm does not keep.
onebit::nn::Graph build_with_weights(const std::string& architecture,
                                     const std::vector<std::string>& names,
                                     const std::vector<at::Tensor>& tensors,
                                     const std::string& caller) {
  if (names.size() != tensors.size()) {
    throw std::invalid_argument(caller + ": " + std::to_string(names.size()) + " names but " +
                                std::to_string(tensors.size()) + " tensors");
  }
  onebit::nn::Graph g = onebit::serialize::build(parse(architecture, caller + ": architecture"));
  std::map<std::string, at::Tensor> targets;
  for (const auto& p : g->named_parameters(true)) targets[p.key()] = p.value();
  for (const auto& b : g->named_buffers(true)) targets[b.key()] = b.value();
  std::set<std::string> assigned;
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < names.size(); ++i) {
    auto it = targets.find(names[i]);
    if (it == targets.end()) {
      const std::string suffix = "num_batches_tracked";
      if (names[i].size() >= suffix.size() &&
          names[i].compare(names[i].size() - suffix.size(), suffix.size(), suffix) == 0) {
        continue;
      }
      throw std::invalid_argument(caller + ": the model has no parameter or buffer \"" + names[i] +
                                  "\"");
    }
    if (!it->second.sizes().equals(tensors[i].sizes())) {
      std::ostringstream s;
      s << caller << ": \"" << names[i] << "\" has shape " << it->second.sizes()
        << " in the model, got " << tensors[i].sizes();
      throw std::invalid_argument(s.str());
    }
    it->second.copy_(tensors[i]);
    assigned.insert(names[i]);
  }
  for (const auto& t : targets) {
    if (!assigned.count(t.first)) {
      throw std::invalid_argument(caller + ": no tensor given for \"" + t.first + "\"");
    }
  }
  g->eval();
  return g;
}

std::tuple<std::string, std::string> summary(const std::string& architecture,
                                             const std::vector<int64_t>& input_shape,
                                             const std::string& name,
                                             const std::vector<std::string>& names,
                                             const std::vector<at::Tensor>& tensors,
                                             bool include_macs) {
  auto g = build_with_weights(architecture, names, tensors, "summary");
  auto s = onebit::summary(g, input_shape, name);
  return {s.to_string(include_macs), s.to_json().dump()};
}

std::string convert(const std::string& architecture, const std::vector<int64_t>& input_shape,
                    const std::string& path, const std::vector<std::string>& names,
                    const std::vector<at::Tensor>& tensors, const std::string& model_name) {
  auto g = build_with_weights(architecture, names, tensors, "convert");
  onebit::ConvertOptions options;
  if (!model_name.empty()) options.metadata["model"] = model_name;
  const auto r = onebit::convert_to_file(g, input_shape, path, options, model_name);
  return Json{{"path", r.out_path},
              {"file_bytes", r.file_bytes},
              {"binary_weights", r.storage.binary_weights},
              {"stored_numbers", r.storage.stored_numbers},
              {"summary_bits", r.summary_bits},
              {"float32_bits", r.float32_bits}}
      .dump();
}

/// The C++ model's output for `x` (eval mode, no gradients): lets the tests compare the Python
/// layers with the C++ layers they describe.
at::Tensor forward(const std::string& architecture, const std::vector<std::string>& names,
                   const std::vector<at::Tensor>& tensors, const at::Tensor& x) {
  auto g = build_with_weights(architecture, names, tensors, "forward");
  at::NoGradGuard no_grad;
  return g->forward(x);
}

std::string describe(const std::string& architecture) {
  return onebit::serialize::describe(onebit::serialize::build(parse(architecture, "describe")))
      .dump();
}

std::string zoo_architecture(const std::string& name, const std::string& options) {
  const auto o = onebit::zoo::ModelOptions::from_json(parse(options, "zoo options"));
  return onebit::serialize::describe(onebit::zoo::build(name, o)).dump();
}

std::string zoo_resolve(const std::string& name, const std::string& options) {
  const auto o = onebit::zoo::ModelOptions::from_json(parse(options, "zoo options"));
  return onebit::zoo::resolve_options(name, o).to_json().dump();
}

std::vector<std::string> zoo_names() { return onebit::zoo::model_names(); }

}  // namespace

TORCH_LIBRARY(onebit, m) {
  m.def("quantize(Tensor x, str quantizer, int role=0, int depth_multiplier=0) -> Tensor",
        &quantize);
  m.def(
      "quantizer_gradient(Tensor x, Tensor dy, str quantizer, int role=0, "
      "int depth_multiplier=0) -> Tensor",
      &quantizer_gradient);
  m.def("quantizer_spec(str quantizer) -> (str, int, str)", &quantizer_spec);
  m.def("quantizer_ids() -> str[]", &quantizer_ids);
  m.def("constraint_spec(str constraint) -> str", &constraint_spec);
  m.def("constrain(Tensor param, str constraint) -> Tensor", &constrain);
  m.def(
      "bop_update(Tensor(a!) param, Tensor(b!) m, Tensor grad, float threshold, float gamma) -> ()",
      &bop_update);
  m.def(
      "summary(str architecture, int[] input_shape, str name, str[] names, Tensor[] tensors, "
      "bool include_macs=True) -> (str, str)",
      &summary);
  m.def(
      "convert(str architecture, int[] input_shape, str path, str[] names, Tensor[] tensors, "
      "str model_name) -> str",
      &convert);
  m.def("forward(str architecture, str[] names, Tensor[] tensors, Tensor x) -> Tensor", &forward);
  m.def("describe(str architecture) -> str", &describe);
  m.def("zoo_architecture(str name, str options) -> str", &zoo_architecture);
  m.def("zoo_resolve(str name, str options) -> str", &zoo_resolve);
  m.def("zoo_names() -> str[]", &zoo_names);
}
