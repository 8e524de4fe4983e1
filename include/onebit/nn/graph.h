#pragma once
/// \file
/// Graph models: networks with shortcuts and branches (Bi-Real Net's float shortcuts, DenseNet's
/// concatenations), built in the style of Keras' functional API and run as a LibTorch module.
///
/// ```
/// namespace nn = onebit::nn;
/// nn::Graph g;                                   // one input
/// nn::Value x = g->input();
/// nn::Value y = g->call("conv", nn::QuantConv2d(nn::QuantConv2dOptions(32, 32, 3)
///                                   .padding(torch::kSame).bias(false)
///                                   .input_quantizer("ste_sign").kernel_quantizer("ste_sign")
///                                   .kernel_constraint("weight_clip")), x);
/// y = g->call("bn", nn::BatchNorm(32), y);
/// x = g->add({x, y});                            // the float shortcut
/// g->output(x);
/// at::Tensor out = g->forward(images);           // a torch::nn::Module like any other
/// ```
///
/// A `Graph` is what every onebit API takes (fit, evaluate, checkpoints, summary, save/load,
/// convert, the zoo). A `torch::nn::Sequential` converts to one implicitly: the chain graph shares
/// the Sequential's modules (same parameters, same names). Graphs nest: a `Graph` may be called
/// as a layer of another graph.

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace onebit::nn {

/// A value of a graph under construction: the graph input or the output of a node.
struct Value {
  int id = -1;  ///< 0 is the graph input, node i produces value i + 1
};

/// One node of a graph: a layer module applied to one value, or a merge module (Add, Concat)
/// applied to several.
struct GraphNode {
  std::string name;             ///< unique within the graph; the module's registered name
  torch::nn::AnyModule module;  ///< the layer
  std::vector<int> inputs;      ///< value ids
  bool multi_input = false;     ///< forward takes std::vector<at::Tensor> (Add, Concat)
};

/// Elementwise sum of two or more values of the same shape (Keras' `add`): the shortcut merge.
class AddImpl : public torch::nn::Cloneable<AddImpl> {
 public:
  AddImpl() = default;
  void reset() override {}
  /// Sum of `xs` (at least two tensors of one shape).
  at::Tensor forward(const std::vector<at::Tensor>& xs);
};
TORCH_MODULE(Add);

/// Concatenation of two or more values along the channel axis (dim 1; Keras' `concatenate` on
/// channels-last data): DenseNet's merge.
class ConcatImpl : public torch::nn::Cloneable<ConcatImpl> {
 public:
  ConcatImpl() = default;
  void reset() override {}
  /// `xs` concatenated along dim 1 (at least two tensors that agree on every other dim).
  at::Tensor forward(const std::vector<at::Tensor>& xs);
};
TORCH_MODULE(Concat);

/// A directed acyclic graph of layers with one input and one output; see the file comment.
class GraphImpl : public torch::nn::Module {
 public:
  /// An empty graph (its output is its input until `output` is called).
  GraphImpl() : torch::nn::Module("onebit::nn::Graph") {}
  /// The chain graph of a Sequential: node i is the Sequential's child i, under the same name,
  /// sharing the module (and so its parameters).
  explicit GraphImpl(const torch::nn::Sequential& sequential);

  /// The graph input.
  Value input() const { return Value{0}; }
  /// Calls `module` on `x` and returns its output. `name` must be unique in the graph and
  /// free of '.'; an empty name gives the node's index ("0", "1", ...), like a Sequential.
  template <typename ModuleHolder>
  Value call(const std::string& name, ModuleHolder module, Value x) {
    return add_node(name, torch::nn::AnyModule(std::move(module)), {x}, false);
  }
  /// `call` with the node's index as its name.
  template <typename ModuleHolder>
  Value call(ModuleHolder module, Value x) {
    return call("", std::move(module), x);
  }
  /// Calls a merge module (forward takes std::vector<at::Tensor>) on several values.
  template <typename ModuleHolder>
  Value call(const std::string& name, ModuleHolder module, const std::vector<Value>& xs) {
    return add_node(name, torch::nn::AnyModule(std::move(module)), xs, true);
  }
  /// Calls a Sequential on `x`, as a nested chain graph (its modules are shared).
  Value call(const std::string& name, const torch::nn::Sequential& sequential, Value x);
  /// Adds a node with an already type-erased module. `multi_input`: the module's forward takes
  /// std::vector<at::Tensor>.
  Value add_node(const std::string& name, torch::nn::AnyModule module,
                 const std::vector<Value>& inputs, bool multi_input);
  /// Elementwise sum of `xs` (an `Add` node).
  Value add(const std::vector<Value>& xs, const std::string& name = "");
  /// Channel concatenation of `xs` (a `Concat` node).
  Value concat(const std::vector<Value>& xs, const std::string& name = "");
  /// Marks the graph output (by default the last node's output).
  void output(Value v);

  /// Runs the graph. Values are freed after their last use.
  at::Tensor forward(const at::Tensor& x);
  /// Runs the graph and also returns, in `tapped`, the outputs of the nodes named in `taps`
  /// (top-level node names; e.g. for knowledge distillation's attention matching). Throws
  /// std::out_of_range naming an unknown node and listing the known ones.
  at::Tensor forward_with_taps(const at::Tensor& x, const std::vector<std::string>& taps,
                               std::vector<at::Tensor>& tapped);

  /// The module of node `index` (in execution order), e.g.
  /// `graph[0]->as<onebit::nn::QuantDense>()`. Throws std::out_of_range naming the index.
  std::shared_ptr<torch::nn::Module> operator[](std::size_t index) const;
  /// The module of the node named `name`; throws std::out_of_range naming it.
  std::shared_ptr<torch::nn::Module> node(const std::string& name) const;

  /// The nodes in execution order.
  const std::vector<GraphNode>& nodes() const { return nodes_; }
  /// The output value id.
  int output_id() const;

 private:
  void check_value(Value v, const std::string& what) const;
  at::Tensor run(const at::Tensor& x, const std::vector<int>& taps, std::vector<at::Tensor>* tapped);

  std::vector<GraphNode> nodes_;
  int output_ = -1;  // -1: the last node
};

/// Module holder of `GraphImpl`. Converts implicitly from `torch::nn::Sequential`, so every API
/// that takes a Graph takes a Sequential too.
class Graph : public torch::nn::ModuleHolder<GraphImpl> {
 public:
  using torch::nn::ModuleHolder<GraphImpl>::ModuleHolder;
  /// A new, empty graph.
  Graph() : ModuleHolder(std::make_shared<GraphImpl>()) {}
  /// The chain graph of `sequential` (shares its modules).
  Graph(const torch::nn::Sequential& sequential)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<GraphImpl>(sequential)) {}
};

}  // namespace onebit::nn
