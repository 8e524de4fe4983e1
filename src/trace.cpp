#include "onebit/trace.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace onebit {
namespace {

// The shape of a value traced at batch sizes 1 (`a`) and 2 (`b`): -1 on every axis whose size
// follows the batch.
std::vector<int64_t> shape_of(const at::Tensor& a, const at::Tensor& b) {
  std::vector<int64_t> s(a.sizes().begin(), a.sizes().end());
  if (a.dim() != b.dim()) {  // the rank depends on the batch: only axis 0 can be the batch
    if (!s.empty()) s[0] = -1;
    return s;
  }
  for (std::size_t d = 0; d < s.size(); ++d) {
    if (b.size(static_cast<int64_t>(d)) != s[d]) s[d] = -1;
  }
  return s;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

class Tracer {
 public:
  explicit Tracer(ModelTrace& out) : out_(out) {}

  /// Traces `graph` whose input is trace value `input` (holding `x`); returns the trace value of
  /// its output.
  int walk(nn::GraphImpl& graph, const std::string& prefix, int input,
           const std::string& top_level = "") {
    std::vector<int> map = {input};  // graph value id -> trace value id
    for (auto& node : graph.nodes()) {
      const std::string path = prefix.empty() ? node.name : prefix + "." + node.name;
      const std::string top = top_level.empty() ? path : top_level;
      std::vector<int> inputs;
      for (int v : node.inputs) inputs.push_back(map[static_cast<std::size_t>(v)]);
      auto module = node.module.ptr();
      if (auto* inner = dynamic_cast<nn::GraphImpl*>(module.get())) {
        map.push_back(walk(*inner, path, inputs.at(0), top));
        continue;
      }
      TracedNode t;
      t.name = path;
      t.top_level = top;
      t.module = module;
      t.inputs = inputs;
      t.kind = find_layer_kind(*module, &t.options);
      t.type = t.kind ? t.kind->name : short_type_name(*module);
      if (!t.kind && !module->children().empty()) {
        throw std::invalid_argument(unregistered_message(path, *module, "trace"));
      }
      torch::nn::AnyModule callable = node.module;  // shares the module
      // The node at both batch sizes.
      auto run = [&](const std::vector<at::Tensor>& values) {
        try {
          if (node.multi_input) {
            std::vector<at::Tensor> xs;
            for (int v : inputs) xs.push_back(values[static_cast<std::size_t>(v)]);
            return callable.forward<at::Tensor>(std::move(xs));
          }
          return callable.forward<at::Tensor>(values[static_cast<std::size_t>(inputs[0])]);
        } catch (const std::exception& e) {
          std::ostringstream msg;
          msg << "the forward pass fails at node \"" << path << "\" (" << t.type
              << ") on input(s) of shape";
          for (int v : inputs) msg << " " << values[static_cast<std::size_t>(v)].sizes();
          msg << ": " << first_line(e.what());
          throw std::runtime_error(msg.str());
        }
      };
      const at::Tensor y = run(values_);
      const at::Tensor y2 = run(values2_);
      t.output_shape = shape_of(y, y2);
      values_.push_back(y);
      values2_.push_back(y2);
      out_.nodes.push_back(std::move(t));
      map.push_back(static_cast<int>(out_.nodes.size()));
    }
    return map[static_cast<std::size_t>(graph.output_id())];
  }

  std::vector<at::Tensor> values_;   // at batch size 1
  std::vector<at::Tensor> values2_;  // at batch size 2

 private:
  ModelTrace& out_;
};

}  // namespace

std::vector<std::size_t> ModelTrace::consumers(int value) const {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const auto& in = nodes[i].inputs;
    if (std::find(in.begin(), in.end(), value) != in.end()) out.push_back(i);
  }
  return out;
}

std::vector<int64_t> ModelTrace::shape(int value) const {
  if (value == 0) {
    std::vector<int64_t> s = {-1};
    s.insert(s.end(), input_shape.begin(), input_shape.end());
    return s;
  }
  return nodes.at(static_cast<std::size_t>(value - 1)).output_shape;
}

std::string unregistered_message(const std::string& node, const torch::nn::Module& module,
                                 const std::string& what) {
  const std::string type = short_type_name(module);
  std::string msg =
      what + ": node \"" + node + "\" is a " + type + ", which is not a registered layer kind";
  if (!module.children().empty()) {
    msg += " and has sub-modules, so its forward pass (e.g. a shortcut) cannot be seen";
  }
  return msg +
         "; build it from registered layers with onebit::nn::Graph (call, add, concat), or "
         "register " +
         type + " with onebit::register_layer (see docs/graph.md)";
}

ModelTrace trace(nn::Graph model, const std::vector<int64_t>& input_shape) {
  if (input_shape.empty() ||
      std::any_of(input_shape.begin(), input_shape.end(), [](int64_t d) { return d <= 0; })) {
    std::string s;
    for (auto d : input_shape) s += (s.empty() ? "" : ",") + std::to_string(d);
    throw std::invalid_argument(
        "input_shape must be non-empty positive sizes (e.g. 1,28,28), got [" + s + "]");
  }
  ModelTrace out;
  out.input_shape = input_shape;
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  const bool was_training = model->is_training();
  model->eval();
  try {
    at::NoGradGuard no_grad;
    auto params = model->parameters();
    auto options = params.empty() ? at::TensorOptions().dtype(at::kFloat) : params[0].options();
    Tracer tracer(out);
    tracer.values_.push_back(at::zeros(shape, options));
    shape[0] = 2;
    tracer.values2_.push_back(at::zeros(shape, options));
    out.output = tracer.walk(*model, "", 0);
  } catch (...) {
    model->train(was_training);
    throw;
  }
  model->train(was_training);
  return out;
}

}  // namespace onebit
