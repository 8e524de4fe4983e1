#pragma once
/// \file
/// The converter: turns a trained model (an `nn::Graph`, or a `torch::nn::Sequential`) into an
/// `onebit::runtime::Model` (binary kernels as bits, batch norm folded, float layers kept float)
/// and writes `.obnn` files for `onebit_runtime`. It walks the model trace (onebit/trace.h) and
/// calls each node's `LayerKind::lower` (onebit/registry.h) with a `Lowering`.
///
/// ```
/// auto model = onebit::zoo::build("larq-mnist");           // or train::load_checkpoint(dir).model
/// onebit::runtime::Model m = onebit::convert(model, {1, 28, 28});
/// onebit::runtime::Interpreter net(m);                      // logits equal LibTorch's eval mode
/// auto r = onebit::convert_checkpoint("runs/larq-mnist", "mnist.obnn");
/// ```
///
/// Layers understood (anything else is an error naming the node and its kind):
/// - `onebit::nn::QuantConv2d`, `onebit::nn::QuantDense`: an input quantizer whose
///   `forward_kind()` is `kSign` (`ste_sign`, `approx_sign`, `swish_sign`, or a custom quantizer
///   declared as a sign) becomes a `sign` op; `noop` or none keeps the input float. A 1-bit kernel
///   quantizer whose values are exactly +-1 gives a binary kernel (stored as bits);
///   `magnitude_aware_sign` gives a +-1 kernel followed by a per-channel scale (folded into the
///   next batch norm by the runtime builder); no kernel quantizer, or a multi-bit one (its
///   quantized values), gives float weights. Bias is kept.
/// - `onebit::nn::BatchNorm`, `torch::nn::BatchNorm1d/2d` (running statistics required).
/// - `torch::nn::Conv2d` (zero padding mode), `torch::nn::Linear`, `torch::nn::MaxPool2d`
///   (dilation 1, no ceil mode), `torch::nn::AvgPool2d` (no ceil mode, no divisor override),
///   `torch::nn::Flatten` (start_dim 1, end_dim -1), `torch::nn::ReLU`, `torch::nn::Softmax`
///   (dim 1), `torch::nn::AdaptiveAvgPool2d` (output 1x1: global average pooling),
///   `torch::nn::Dropout` (the identity in eval mode), `onebit::nn::Quantizer` modules with a sign
///   forward (a `sign` op) or `noop`, and the merges `onebit::nn::Add` and `onebit::nn::Concat`.
///
/// Exactness: the binary layers' integer results equal LibTorch's exactly. When a batch norm
/// whose input holds such integers feeds a sign (possibly through flatten or max pooling), its
/// (every consumer of its output, through flatten or max pooling, applies a sign) the
/// runtime multiplier/bias are chosen so that the sign of every possible integer input in
/// [-K, K] equals the sign LibTorch's own batch norm module gives (evaluated once at conversion),
/// so float rounding in the fold can never flip a bit. Float layers (the first and last ones)
/// agree with LibTorch up to float rounding.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "onebit/nn/graph.h"
#include "onebit/quantizers.h"
#include "onebit/runtime/builder.h"
#include "onebit/runtime/model.h"
#include "onebit/trace.h"

namespace onebit {

/// Options of `convert`.
struct ConvertOptions {
  /// Let the runtime builder fuse ops (batch norm into layers, sign into thresholds, binary max
  /// pooling). Fused and unfused models compute identical results.
  bool fuse = true;
  /// Match LibTorch's sign decisions after batch norm on integer inputs exactly (see the file
  /// comment). Off: the batch norm is folded from its statistics only.
  bool exact_thresholds = true;
  /// k-bit activations (DoReFa's quantizer in "activations" mode) into a layer with a +-1 kernel
  /// run on packed bits when k is at most this: the input becomes 2^k - 1 thermometer bit planes
  /// (`ModelBuilder::thermometer`) and the layer a binary one over them, exact up to float
  /// rounding of the output affine. Larger k (or 0 here) keeps them as float levels and a float
  /// layer; the planes' binary work grows as 2^k - 1 while a float layer's does not.
  int max_thermometer_bits = 3;
  /// The `.obnn` format version `convert_to_file` writes (`runtime::serialize_model`): the
  /// newest by default; an older one for an older runtime (3 when no layer uses thermometer
  /// planes). A model that needs a newer version is an error naming the op.
  std::uint32_t format_version = runtime::kModelFormatVersion;
  /// Free-form strings stored in the file (e.g. "model", "checkpoint").
  std::map<std::string, std::string> metadata;
};

/// What a lower function returns: the runtime value of the node's output.
struct Lowered {
  runtime::ValueRef value;  ///< the node's output in the runtime model
  /// K when `value` holds the exact integer dot products of a binary layer (in [-K, K]), so that
  /// a following batch norm can choose exact sign thresholds; 0 otherwise.
  int64_t integer_range = 0;
};

/// What a layer kind's lower function works with: the runtime builder, the node being lowered
/// and facts about its inputs and consumers.
class Lowering {
 public:
  /// The runtime model under construction.
  runtime::ModelBuilder& builder() { return *builder_; }
  /// The traced node being lowered.
  const TracedNode& node() const { return trace_->nodes[index_]; }
  /// The converter's options.
  const ConvertOptions& options() const { return *options_; }
  /// Number of inputs of the node.
  std::size_t num_inputs() const { return node().inputs.size(); }
  /// The runtime value of input `i`.
  runtime::ValueRef input(std::size_t i = 0) const;
  /// `Lowered::integer_range` of input `i`.
  int64_t integer_range(std::size_t i = 0) const;
  /// True when every consumer of the node's output applies a sign to it, directly or through
  /// layers whose kind `keeps_sign` (flatten, max pooling); false for the model output.
  bool sign_follows() const;
  /// Applies an input quantizer to `x`: a sign (`forward_kind() == kSign`, checked on probe
  /// values) becomes one `sign` op per value (shared by all its consumers), the identity or none
  /// returns `x`, anything else throws std::invalid_argument.
  runtime::ValueRef quantize_input(runtime::ValueRef x, const quantizers::QuantizerPtr& q);

 private:
  friend class Converter;
  Lowering() = default;
  runtime::ModelBuilder* builder_ = nullptr;
  const ModelTrace* trace_ = nullptr;
  std::size_t index_ = 0;
  const std::vector<Lowered>* values_ = nullptr;
  std::map<int32_t, runtime::ValueRef>* signs_ = nullptr;
  const ConvertOptions* options_ = nullptr;
};

/// Converts `model` (evaluated in eval mode; its mode is restored) for inputs of one image of
/// shape `input_shape` ({C, H, W} or {features}). Throws std::invalid_argument naming the node,
/// its kind, the value found and what is supported.
runtime::Model convert(nn::Graph model, const std::vector<int64_t>& input_shape,
                       const ConvertOptions& options = {});

/// What a converted model stores.
struct ModelStorage {
  int64_t binary_weights = 0;  ///< weights of binary kernels, one bit each in the file
  int64_t stored_numbers = 0;  ///< float32/int32 numbers (float weights, biases, thresholds, ...)
  std::size_t payload_bytes = 0;  ///< sum of the tensors' storage sizes (without alignment)
};

/// Counts the tensors of a runtime model by kind.
ModelStorage storage_of(const runtime::Model& model);

/// Result of `convert_checkpoint`.
struct ConvertResult {
  std::string out_path;        ///< the `.obnn` file written
  std::string checkpoint;      ///< the checkpoint file read
  std::string model_name;      ///< zoo model name from the checkpoint config ("" if none)
  std::size_t file_bytes = 0;  ///< size of the `.obnn` file
  ModelStorage storage;        ///< what it stores
  /// Larq-summary model size in bits (1 bit per binary weight, 32 per other number, batch norm
  /// counted as 2 numbers per channel), from `onebit::summary`.
  int64_t summary_bits = 0;
  /// The same model with every weight in float32, in bits (`ModelSummary::fp32_memory_bits`).
  int64_t float32_bits = 0;
};

/// Loads a checkpoint (file or training output directory), converts its model with the input
/// shape of its training config, stores metadata (model name, checkpoint path, epoch, test
/// accuracy) and writes `out_path` atomically.
/// Converts `model` (eval mode) for `input_shape` and writes it to `out_path` atomically, with
/// the storage and summary sizes in the result (checkpoint left empty).
ConvertResult convert_to_file(nn::Graph model, const std::vector<int64_t>& input_shape,
                              const std::string& out_path, const ConvertOptions& options = {},
                              const std::string& model_name = "");

ConvertResult convert_checkpoint(const std::string& checkpoint, const std::string& out_path,
                                 const ConvertOptions& options = {});

}  // namespace onebit
