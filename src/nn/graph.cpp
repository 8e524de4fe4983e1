#include "onebit/nn/graph.h"

#include <ATen/ATen.h>

#include <set>
#include <sstream>
#include <stdexcept>

namespace onebit::nn {
namespace {

std::string shapes_of(const std::vector<at::Tensor>& xs) {
  std::ostringstream s;
  for (std::size_t i = 0; i < xs.size(); ++i) s << (i ? ", " : "") << xs[i].sizes();
  return s.str();
}

}  // namespace

at::Tensor AddImpl::forward(const std::vector<at::Tensor>& xs) {
  if (xs.size() < 2) {
    throw std::invalid_argument("Add: needs at least 2 inputs, got " + std::to_string(xs.size()));
  }
  for (const auto& x : xs) {
    if (x.sizes() != xs[0].sizes()) {
      throw std::invalid_argument("Add: inputs must have one shape, got " + shapes_of(xs));
    }
  }
  at::Tensor sum = xs[0] + xs[1];
  for (std::size_t i = 2; i < xs.size(); ++i) sum = sum + xs[i];
  return sum;
}

at::Tensor ConcatImpl::forward(const std::vector<at::Tensor>& xs) {
  if (xs.size() < 2) {
    throw std::invalid_argument("Concat: needs at least 2 inputs, got " +
                                std::to_string(xs.size()));
  }
  for (const auto& x : xs) {
    bool ok = x.dim() == xs[0].dim() && x.dim() >= 2;
    for (int64_t d = 0; ok && d < x.dim(); ++d) ok = d == 1 || x.size(d) == xs[0].size(d);
    if (!ok) {
      throw std::invalid_argument(
          "Concat: inputs must agree on every dimension but the channels (dim 1), got " +
          shapes_of(xs));
    }
  }
  return at::cat(xs, 1);
}

GraphImpl::GraphImpl(const torch::nn::Sequential& sequential)
    : torch::nn::Module("onebit::nn::Graph") {
  const auto names = sequential->named_children();
  std::size_t i = 0;
  Value x = input();
  for (const auto& any : *sequential) {
    x = add_node(names[i++].key(), any, {x}, false);
  }
}

Value GraphImpl::call(const std::string& name, const torch::nn::Sequential& sequential, Value x) {
  return call(name, Graph(sequential), x);
}

void GraphImpl::check_value(Value v, const std::string& what) const {
  if (v.id < 0 || v.id > static_cast<int>(nodes_.size())) {
    throw std::invalid_argument("Graph: " + what + " uses value " + std::to_string(v.id) +
                                ", which is not a value of this graph (it has " +
                                std::to_string(nodes_.size() + 1) + " values)");
  }
}

Value GraphImpl::add_node(const std::string& name, torch::nn::AnyModule module,
                          const std::vector<Value>& inputs, bool multi_input) {
  const std::string node_name = name.empty() ? std::to_string(nodes_.size()) : name;
  const std::string what = "node \"" + node_name + "\"";
  if (node_name.find('.') != std::string::npos) {
    throw std::invalid_argument("Graph: " + what + ": names must not contain '.'");
  }
  for (const auto& n : nodes_) {
    if (n.name == node_name) throw std::invalid_argument("Graph: " + what + " already exists");
  }
  if (module.is_empty()) throw std::invalid_argument("Graph: " + what + " has no module");
  if (inputs.empty() || (!multi_input && inputs.size() != 1)) {
    throw std::invalid_argument("Graph: " + what + " takes " +
                                std::string(multi_input ? "one or more values" : "one value") +
                                ", got " + std::to_string(inputs.size()));
  }
  GraphNode node;
  node.name = node_name;
  node.multi_input = multi_input;
  for (const Value& v : inputs) {
    check_value(v, what);
    node.inputs.push_back(v.id);
  }
  register_module(node_name, module.ptr());
  node.module = std::move(module);
  nodes_.push_back(std::move(node));
  return Value{static_cast<int>(nodes_.size())};
}

namespace {

void check_merge(const std::vector<Value>& xs, const std::string& name, const char* what) {
  if (xs.size() < 2) {
    throw std::invalid_argument(std::string("Graph: ") + what + " node \"" + name +
                                "\" needs at least 2 values, got " + std::to_string(xs.size()));
  }
}

}  // namespace

Value GraphImpl::add(const std::vector<Value>& xs, const std::string& name) {
  check_merge(xs, name, "Add");
  return call(name, Add(), xs);
}

Value GraphImpl::concat(const std::vector<Value>& xs, const std::string& name) {
  check_merge(xs, name, "Concat");
  return call(name, Concat(), xs);
}

std::shared_ptr<torch::nn::Module> GraphImpl::operator[](std::size_t index) const {
  if (index >= nodes_.size()) {
    throw std::out_of_range("Graph: node index " + std::to_string(index) + " is out of range (" +
                            std::to_string(nodes_.size()) + " nodes)");
  }
  return nodes_[index].module.ptr();
}

std::shared_ptr<torch::nn::Module> GraphImpl::node(const std::string& name) const {
  for (const auto& n : nodes_) {
    if (n.name == name) return n.module.ptr();
  }
  throw std::out_of_range("Graph: no node named \"" + name + "\"");
}

void GraphImpl::output(Value v) {
  check_value(v, "output");
  output_ = v.id;
}

int GraphImpl::output_id() const {
  return output_ >= 0 ? output_ : static_cast<int>(nodes_.size());
}

at::Tensor GraphImpl::forward(const at::Tensor& x) { return run(x, {}, nullptr); }

at::Tensor GraphImpl::forward_with_taps(const at::Tensor& x, const std::vector<std::string>& taps,
                                        std::vector<at::Tensor>& tapped) {
  std::vector<int> ids;
  for (const auto& name : taps) {
    int id = -1;
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].name == name) id = static_cast<int>(i) + 1;
    }
    if (id < 0) {
      std::string known;
      for (const auto& n : nodes_) known += (known.empty() ? "" : ", ") + n.name;
      throw std::out_of_range("Graph: no node named \"" + name + "\" to tap (nodes: " + known +
                              ")");
    }
    ids.push_back(id);
  }
  return run(x, ids, &tapped);
}

at::Tensor GraphImpl::run(const at::Tensor& x, const std::vector<int>& taps,
                          std::vector<at::Tensor>* tapped) {
  const int out = output_id();
  // Last use of each value, so that large activations are freed as soon as possible.
  std::vector<int> last_use(nodes_.size() + 1, -1);
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    for (int v : nodes_[i].inputs) last_use[v] = static_cast<int>(i);
  }
  if (tapped != nullptr) tapped->assign(taps.size(), at::Tensor());
  std::vector<at::Tensor> values(nodes_.size() + 1);
  values[0] = x;
  for (std::size_t i = 0; i < nodes_.size() && static_cast<int>(i) < out; ++i) {
    GraphNode& node = nodes_[i];
    if (node.multi_input) {
      std::vector<at::Tensor> xs;
      xs.reserve(node.inputs.size());
      for (int v : node.inputs) xs.push_back(values[v]);
      values[i + 1] = node.module.forward<at::Tensor>(std::move(xs));
    } else {
      values[i + 1] = node.module.forward<at::Tensor>(values[node.inputs[0]]);
    }
    for (std::size_t t = 0; t < taps.size(); ++t) {
      if (taps[t] == static_cast<int>(i) + 1) (*tapped)[t] = values[i + 1];
    }
    for (int v : node.inputs) {
      if (last_use[v] == static_cast<int>(i) && v != out) values[v] = at::Tensor();
    }
  }
  return values[out];
}

}  // namespace onebit::nn
