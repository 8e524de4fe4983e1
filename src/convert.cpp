#include "onebit/convert.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

#include "onebit/nn.h"
#include "onebit/summary.h"
#include "onebit/train/checkpoint.h"

namespace onebit {
namespace {

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

bool is_sign(const quantizers::QuantizerPtr& q) {
  return q && q->forward_kind() == quantizers::ForwardKind::kSign;
}

// Whether a node applies a sign to its (first) input: a quantized layer with a sign input
// quantizer, or a Quantizer module with a sign.
bool binarizes_input(const TracedNode& node) {
  if (const auto* q = dynamic_cast<const nn::QuantizerImpl*>(node.module.get())) {
    return is_sign(q->quantizer());
  }
  if (const auto* l = dynamic_cast<const nn::QuantLayer*>(node.module.get())) {
    return is_sign(l->input_quantizer());
  }
  return false;
}

bool only_signs_read(const ModelTrace& t, int value) {
  if (value == t.output) return false;
  const auto consumers = t.consumers(value);
  if (consumers.empty()) return false;
  for (std::size_t c : consumers) {
    const TracedNode& node = t.nodes[c];
    if (node.kind && node.kind->keeps_sign) {
      if (!only_signs_read(t, static_cast<int>(c) + 1)) return false;
    } else if (!binarizes_input(node)) {
      return false;
    }
  }
  return true;
}

std::string convertible_kinds() {
  std::string out;
  for (const auto& name : layer_kind_names()) {
    const auto kind = layer_kind(name);
    if (kind && kind->lower) out += (out.empty() ? "" : ", ") + name;
  }
  return out;
}

}  // namespace

runtime::ValueRef Lowering::input(std::size_t i) const {
  return (*values_)[static_cast<std::size_t>(node().inputs.at(i))].value;
}

int64_t Lowering::integer_range(std::size_t i) const {
  return (*values_)[static_cast<std::size_t>(node().inputs.at(i))].integer_range;
}

bool Lowering::sign_follows() const {
  return only_signs_read(*trace_, static_cast<int>(index_) + 1);
}

runtime::ValueRef Lowering::quantize_input(runtime::ValueRef x, const quantizers::QuantizerPtr& q) {
  if (!q || q->forward_kind() == quantizers::ForwardKind::kIdentity) return x;
  if (const auto* dorefa = dynamic_cast<const quantizers::DoReFa*>(q.get());
      dorefa != nullptr && dorefa->mode() == "activations") {
    // k-bit activations run as float levels (DoReFa-Net's 2-bit inputs).
    if (builder_->is_bits(x)) {
      fail("input quantizer " + quantizers::to_json(q).dump() +
           " on a binary (sign) value is not supported");
    }
    return builder_->quantize_levels(x, dorefa->k_bit());
  }
  if (!is_sign(q)) {
    fail("input quantizer " + quantizers::to_json(q).dump() +
         " is not supported; expected a sign (ste_sign, approx_sign, swish_sign, or a quantizer "
         "whose forward_kind() is kSign), dorefa_quantizer in activations mode, noop or none");
  }
  {
    // A declaration is a promise: check it where a wrong one would silently change results.
    at::NoGradGuard no_grad;
    const at::Tensor probe = at::tensor({-2.0f, -0.5f, -1e-6f, 0.0f, 1e-6f, 0.5f, 2.0f});
    const at::Tensor want = at::tensor({-1.0f, -1.0f, -1.0f, 1.0f, 1.0f, 1.0f, 1.0f});
    if (!at::equal(q->quantize(probe).to(at::kFloat), want)) {
      fail("input quantizer \"" + q->id() +
           "\" declares a sign forward but does not give +1 for x >= 0 and -1 for x < 0");
    }
  }
  if (builder_->is_bits(x)) return x;
  auto it = signs_->find(x.id);
  if (it == signs_->end()) it = signs_->emplace(x.id, builder_->sign(x)).first;
  return it->second;
}

class Converter {
 public:
  Converter(const ModelTrace& trace, const ConvertOptions& options)
      : trace_(trace), options_(options), b_(runtime::BuilderOptions{options.fuse}) {}

  runtime::Model run() {
    values_.push_back({b_.input(trace_.input_shape), 0});
    Lowering l;
    l.builder_ = &b_;
    l.trace_ = &trace_;
    l.values_ = &values_;
    l.signs_ = &signs_;
    l.options_ = &options_;
    for (std::size_t i = 0; i < trace_.nodes.size(); ++i) {
      const TracedNode& node = trace_.nodes[i];
      if (!node.kind) fail(unregistered_message(node.name, *node.module, "convert"));
      const std::string where = "convert: node \"" + node.name + "\" (" + node.type + "): ";
      if (!node.kind->lower) {
        fail(where + "this layer kind cannot be converted to the runtime (convertible: " +
             convertible_kinds() + ")");
      }
      l.index_ = i;
      // Runtime ops carry the node's name (profiles, error messages); fused ops join names.
      b_.set_name_scope(node.name);
      try {
        values_.push_back(node.kind->lower(l, *node.module));
      } catch (const std::exception& e) {
        std::string what = e.what();
        fail(where + what.substr(0, what.find('\n')));
      }
    }
    b_.output(values_[static_cast<std::size_t>(trace_.output)].value);
    for (const auto& [key, value] : options_.metadata) b_.set_metadata(key, value);
    b_.set_metadata("converter", "onebit::convert");
    return b_.build();
  }

 private:
  const ModelTrace& trace_;
  const ConvertOptions& options_;
  runtime::ModelBuilder b_;
  std::vector<Lowered> values_;
  std::map<int32_t, runtime::ValueRef> signs_;
};

runtime::Model convert(nn::Graph model, const std::vector<int64_t>& input_shape,
                       const ConvertOptions& options) {
  if (input_shape.size() != 1 && input_shape.size() != 3) {
    fail("convert: input_shape has " + std::to_string(input_shape.size()) +
         " dimensions, expected {C, H, W} or {features}");
  }
  ModelTrace t;
  try {
    t = trace(model, input_shape);
  } catch (const std::exception& e) {
    fail(std::string("convert: ") + e.what());
  }
  if (t.nodes.empty()) fail("convert: the model has no layers");
  const bool was_training = model->is_training();
  model->eval();
  try {
    runtime::Model m = Converter(t, options).run();
    model->train(was_training);
    return m;
  } catch (...) {
    model->train(was_training);
    throw;
  }
}

ModelStorage storage_of(const runtime::Model& model) {
  ModelStorage s;
  for (const runtime::Op& op : model.ops) {
    for (const auto& [role, index] : op.tensors) {
      const runtime::Tensor& t = model.tensors.at(static_cast<std::size_t>(index));
      if (t.dtype == runtime::DType::kBits && role == "weight") s.binary_weights += t.numel();
    }
  }
  for (const runtime::Tensor& t : model.tensors) {
    if (t.dtype != runtime::DType::kBits) s.stored_numbers += t.numel();
    s.payload_bytes += t.storage_bytes();
  }
  return s;
}

ConvertResult convert_to_file(nn::Graph model, const std::vector<int64_t>& input_shape,
                              const std::string& out_path, const ConvertOptions& options,
                              const std::string& model_name) {
  ConvertResult r;
  r.out_path = out_path;
  r.model_name = model_name;
  const runtime::Model m = convert(model, input_shape, options);
  r.file_bytes = runtime::save_model(m, out_path, options.format_version);
  r.storage = storage_of(m);
  const ModelSummary s = summary(model, input_shape, model_name.empty() ? "model" : model_name);
  r.summary_bits = s.memory_bits;
  r.float32_bits = s.fp32_memory_bits;
  return r;
}

ConvertResult convert_checkpoint(const std::string& checkpoint, const std::string& out_path,
                                 const ConvertOptions& options) {
  train::Checkpoint ck = train::load_checkpoint(checkpoint);
  std::vector<int64_t> input_shape{1, 28, 28};
  ConvertOptions opts = options;
  ConvertResult r;
  r.checkpoint = ck.path;
  r.out_path = out_path;
  if (ck.config.contains("train")) {
    const auto& t = ck.config.at("train");
    if (t.contains("model_options") && t.at("model_options").contains("input_shape")) {
      input_shape = t.at("model_options").at("input_shape").get<std::vector<int64_t>>();
    }
    r.model_name = t.value("model", std::string());
    opts.metadata.emplace("model", r.model_name);
    opts.metadata.emplace("dataset", t.value("dataset", std::string()));
  }
  opts.metadata.emplace("checkpoint", ck.path);
  if (ck.config.contains("epoch")) opts.metadata.emplace("epoch", ck.config.at("epoch").dump());
  if (ck.config.contains("test_accuracy")) {
    opts.metadata.emplace("test_accuracy", ck.config.at("test_accuracy").dump());
  }
  ConvertResult out = convert_to_file(ck.model, input_shape, out_path, opts, r.model_name);
  out.checkpoint = r.checkpoint;
  return out;
}

}  // namespace onebit
