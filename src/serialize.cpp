#include "onebit/serialize.h"

#include <ATen/ATen.h>
#include <torch/serialize/archive.h>
#include <atomic>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "json_integer.h"
#include "onebit/io.h"
#include "onebit/log.h"
#include "onebit/nn.h"
#include "onebit/trace.h"

namespace onebit {
namespace serialize {
namespace {

using Json = nlohmann::json;

std::string known_kinds() {
  std::string known;
  for (const auto& n : layer_kind_names()) known += (known.empty() ? "" : ", ") + n;
  return known;
}

/// Checks that every quantizer in a layer's options can be rebuilt by `load` (custom ones must be
/// registered).
void check_quantizers(const Json& options, const std::string& where) {
  for (const auto& item : options.items()) {
    const auto& key = item.key();
    if (key.size() < 9 || key.compare(key.size() - 9, 9, "quantizer") != 0) continue;
    if (item.value().is_null()) continue;
    try {
      quantizers::from_json(item.value());
    } catch (const std::exception& e) {
      throw std::invalid_argument(where + ": " + key + " cannot be saved: " + e.what() +
                                  "; register custom quantizers with "
                                  "onebit::quantizers::register_custom before saving");
    }
  }
}

[[noreturn]] void bad_architecture(const std::string& what, const Json& found) {
  throw std::invalid_argument(what + ", got " + found.dump().substr(0, 200));
}

/// The node of a stored architecture at `index`: name, kind and inputs, checked.
struct StoredNode {
  std::string name;
  std::shared_ptr<const LayerKind> kind;
  Json options;
  std::vector<nn::Value> inputs;
};

StoredNode read_node(const Json& node, std::size_t index, std::size_t values, bool chain) {
  StoredNode out;
  out.name = std::to_string(index);
  if (node.is_object() && node.contains("name") && node.at("name").is_string()) {
    out.name = node.at("name").get<std::string>();
  }
  const std::string where = "layer \"" + out.name + "\"";
  if (!node.is_object() || !node.contains("type") || !node.at("type").is_string()) {
    bad_architecture(where + ": expected {\"name\", \"type\", \"options\"" +
                         std::string(chain ? "" : ", \"inputs\"") + "}",
                     node);
  }
  const auto type = node.at("type").get<std::string>();
  out.kind = layer_kind(type);
  if (!out.kind) {
    throw std::invalid_argument(where + ": unknown layer type \"" + type +
                                "\" (known: " + known_kinds() + ")");
  }
  out.options = node.contains("options") ? node.at("options") : Json::object();
  if (chain) {
    out.inputs = {nn::Value{static_cast<int>(values) - 1}};
    return out;
  }
  const Json* inputs = node.contains("inputs") ? &node.at("inputs") : nullptr;
  if (!inputs || !inputs->is_array() || inputs->empty()) {
    bad_architecture(where + ": \"inputs\" must be a non-empty list of value ids",
                     inputs ? *inputs : Json());
  }
  for (const auto& v : *inputs) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() >= static_cast<int64_t>(values)) {
      bad_architecture(
          where + ": inputs must be ids of earlier values (0.." + std::to_string(values - 1) + ")",
          *inputs);
    }
    out.inputs.push_back(nn::Value{v.get<int>()});
  }
  if (!out.kind->multi_input && out.inputs.size() != 1) {
    bad_architecture(where + " (" + type + "): takes one input", *inputs);
  }
  return out;
}

}  // namespace

Json describe(const nn::GraphImpl& graph) {
  Json nodes = Json::array();
  for (const auto& node : graph.nodes()) {
    const torch::nn::Module& m = *node.module.ptr();
    Json options;
    const auto kind = find_layer_kind(m, &options);
    if (!kind) throw std::invalid_argument(unregistered_message(node.name, m, "save"));
    const std::string where = "layer \"" + node.name + "\" (" + kind->name + ")";
    check_quantizers(options, where);
    nodes.push_back(
        {{"name", node.name}, {"type", kind->name}, {"options", options}, {"inputs", node.inputs}});
  }
  return {{"type", "Graph"}, {"nodes", nodes}, {"output", graph.output_id()}};
}

Json describe(const nn::Graph& graph) { return describe(*graph); }

namespace {
std::atomic<std::int64_t> g_max_parameters{BuildLimits{}.max_parameters};
}  // namespace

BuildLimits build_limits() { return BuildLimits{g_max_parameters.load()}; }

void set_build_limits(const BuildLimits& limits) {
  if (limits.max_parameters < 1) {
    throw std::invalid_argument("set_build_limits: max_parameters must be at least 1, got " +
                                std::to_string(limits.max_parameters));
  }
  g_max_parameters.store(limits.max_parameters);
}

nn::Graph build(const Json& architecture) {
  const bool chain = architecture.is_object() && architecture.value("type", "") == "Sequential";
  const char* list = chain ? "layers" : "nodes";
  if (!architecture.is_object() || (!chain && architecture.value("type", "") != "Graph") ||
      !architecture.contains(list) || !architecture.at(list).is_array()) {
    bad_architecture(
        "architecture must be {\"type\": \"Graph\", \"nodes\": [...], \"output\": id} (or a "
        "version-1 {\"type\": \"Sequential\", \"layers\": [...]})",
        architecture);
  }
  nn::Graph graph;
  std::size_t index = 0;
  const std::int64_t limit = build_limits().max_parameters;
  std::int64_t parameters = 0;
  for (const auto& entry : architecture.at(list)) {
    const StoredNode node = read_node(entry, index++, graph->nodes().size() + 1, chain);
    try {
      torch::nn::AnyModule module = node.kind->build(node.options);
      for (const auto& p : module.ptr()->parameters()) parameters += p.numel();
      if (parameters > limit) {
        throw std::invalid_argument("the model reaches " + std::to_string(parameters) +
                                    " parameters with this layer, more than the limit of " +
                                    std::to_string(limit) +
                                    " (onebit::serialize::set_build_limits)");
      }
      graph->add_node(node.name, std::move(module), node.inputs, node.kind->multi_input);
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw std::invalid_argument("layer \"" + node.name + "\" (" + node.kind->name +
                                  "): " + what.substr(0, what.find('\n')));
    }
  }
  if (!chain && architecture.contains("output")) {
    const Json& out = architecture.at("output");
    if (!out.is_number_integer() || out.get<int64_t>() < 0 ||
        out.get<int64_t>() > static_cast<int64_t>(graph->nodes().size())) {
      bad_architecture("architecture: \"output\" must be a value id in 0.." +
                           std::to_string(graph->nodes().size()),
                       out);
    }
    graph->output(nn::Value{out.get<int>()});
  }
  return graph;
}

void register_module_type(const std::string& type, DescribeFn describe_fn, BuildFn build_fn) {
  LayerKind kind;
  kind.name = type;
  kind.describe = std::move(describe_fn);
  kind.build = std::move(build_fn);
  register_layer(std::move(kind));
}

std::vector<std::string> module_types() { return layer_kind_names(); }

}  // namespace serialize

// ---- weights ----------------------------------------------------------------------------------

namespace {

using Json = nlohmann::json;
constexpr const char* kFormatName = "onebit-model";

/// Bits of a boolean tensor, 8 per byte, element i in bit i % 8 of byte i / 8 (LSB first).
at::Tensor pack_bits(const at::Tensor& bits) {
  auto flat = bits.reshape(-1).to(at::kLong);
  const int64_t n = flat.numel();
  const int64_t padded = (n + 7) / 8 * 8;
  if (padded != n) flat = at::constant_pad_nd(flat, {0, padded - n}, 0);
  auto weights = at::tensor({1, 2, 4, 8, 16, 32, 64, 128}, at::kLong);
  return (flat.view({-1, 8}) * weights).sum(1).to(at::kByte);
}

/// Inverse of pack_bits: `numel` values 0/1 as int64.
at::Tensor unpack_bits(const at::Tensor& packed, int64_t numel) {
  auto shifts = at::arange(8, at::kLong);
  auto bits = at::bitwise_and(packed.to(at::kLong).unsqueeze(1).__rshift__(shifts), 1);
  return bits.reshape(-1).slice(0, 0, numel);
}

std::string dtype_name(const at::Tensor& t) { return std::string(c10::toString(t.scalar_type())); }

std::vector<int64_t> shape_of(const at::Tensor& t) { return t.sizes().vec(); }

/// Per-output-channel magnitude if `q` is +-a[c] with a[c] > 0 (magnitude-aware sign), else
/// undefined.
at::Tensor channel_scale(const at::Tensor& q) {
  if (q.dim() < 1 || q.numel() == 0) return {};
  auto mag = q.abs().reshape({q.size(0), -1});
  auto scale = std::get<0>(mag.max(1));
  if (!at::equal(mag, scale.unsqueeze(1).expand_as(mag)) || !scale.gt(0).all().item<bool>()) {
    return {};
  }
  return scale.contiguous();
}

}  // namespace

void save(const nn::Graph& model, const std::string& path, bool quantized) {
  at::NoGradGuard no_grad;
  Json header = {{"format", kFormatName},
                 {"version", serialize::kFormatVersion},
                 {"architecture", serialize::describe(model)},
                 {"quantized", quantized}};
  std::map<const void*, nn::QuantizedParameter> kernels;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    if (const auto* layer = dynamic_cast<const nn::QuantLayer*>(item.value().get())) {
      for (const auto& p : layer->quantized_parameters()) {
        if (p.quantizer) kernels[p.latent.unsafeGetTensorImpl()] = p;
      }
    }
  }
  torch::serialize::OutputArchive archive;
  Json tensors = Json::array();
  auto add = [&](const std::string& name, const at::Tensor& value) {
    if (!value.defined()) return;
    const std::string key = "t" + std::to_string(tensors.size());
    Json entry = {{"name", name},
                  {"key", key},
                  {"shape", shape_of(value)},
                  {"dtype", dtype_name(value)},
                  {"encoding", "raw"}};
    at::Tensor stored = value.detach();
    auto k = kernels.find(value.unsafeGetTensorImpl());
    if (quantized && k != kernels.end()) {
      const auto& q = *k->second.quantizer;
      const auto& role = k->second.role;
      auto qv = q.quantize_as(stored, role);
      if (!at::equal(q.quantize_as(qv, role), qv)) {
        // The loaded model applies the quantizer again: store what reproduces the outputs.
        warn("save(" + path + "): quantizer \"" + q.id() + "\" of \"" + name +
             "\" does not map its own output to itself; storing the latent values");
      } else if (q.precision() == 1 && qv.abs().eq(1).all().item<bool>()) {
        entry["encoding"] = "pm1_bits";  // bit 1 = -1, as in the runtime's bit layout
        stored = pack_bits(qv.lt(0));
      } else if (q.precision() == 1 && (qv.eq(0) | qv.eq(1)).all().item<bool>()) {
        entry["encoding"] = "01_bits";
        stored = pack_bits(qv.gt(0));
      } else if (auto scale = q.precision() == 1 ? channel_scale(qv) : at::Tensor();
                 scale.defined()) {
        entry["encoding"] = "scaled_pm1_bits";
        entry["scale_key"] = key + "_scale";
        archive.write(key + "_scale", scale, /*is_buffer=*/true);
        stored = pack_bits(qv.lt(0));
      } else {
        entry["encoding"] = "quantized";
        stored = qv;
      }
    }
    archive.write(key, stored.contiguous().clone(), /*is_buffer=*/true);
    tensors.push_back(entry);
  };
  for (const auto& item : model->named_parameters(/*recurse=*/true)) add(item.key(), item.value());
  for (const auto& item : model->named_buffers(/*recurse=*/true)) add(item.key(), item.value());
  header["tensors"] = tensors;
  archive.write("onebit_model_version",
                c10::IValue(static_cast<int64_t>(serialize::kFormatVersion)));
  archive.write("header", c10::IValue(header.dump()));
  io::atomic_write(path, [&](const std::string& tmp) { archive.save_to(tmp); });
}

nn::Graph load(const std::string& path) {
  auto fail = [&](const std::string& what) -> void {
    throw std::runtime_error(path + ": " + what);
  };
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("model file not found");
  io::check_torch_archive(path);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail("not a readable onebit model (truncated or corrupt): " + what.substr(0, what.find('\n')));
  }
  c10::IValue header_value;
  if (!archive.try_read("header", header_value) || !header_value.isString()) {
    fail("not an onebit model file (no header); checkpoints are read with load_checkpoint");
  }
  Json header;
  try {
    header = Json::parse(header_value.toStringRef());
  } catch (const std::exception& e) {
    fail(std::string("corrupt header: ") + e.what());
  }
  if (header.value("format", "") != kFormatName) fail("not an onebit model file (format)");
  if (!header.contains("version") || !header.at("version").is_number_integer() ||
      header.at("version").get<int>() > serialize::kFormatVersion) {
    fail("unsupported format version " + header.value("version", Json()).dump() +
         " (this build reads up to " + std::to_string(serialize::kFormatVersion) + ")");
  }
  nn::Graph model(nullptr);
  try {
    model = serialize::build(header.at("architecture"));
  } catch (const std::exception& e) {
    fail(e.what());
  }

  std::map<std::string, at::Tensor> targets;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) targets[item.key()] = item.value();
  }
  for (const auto& item : model->named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) targets[item.key()] = item.value();
  }
  std::set<std::string> loaded;
  at::NoGradGuard no_grad;
  for (const auto& entry : header.value("tensors", Json::array())) {
    std::string name, key, encoding;
    std::vector<int64_t> shape;
    try {
      name = entry.at("name").get<std::string>();
      key = entry.at("key").get<std::string>();
      encoding = entry.at("encoding").get<std::string>();
      shape = detail::json_integers<int64_t>(entry.at("shape"), "tensor shape");
    } catch (const std::exception&) {
      fail("corrupt tensor entry " + entry.dump().substr(0, 200));
    }
    const std::string item = "tensor \"" + name + "\"";
    auto it = targets.find(name);
    if (it == targets.end()) fail(item + " does not belong to the rebuilt model");
    at::Tensor& target = it->second;
    if (shape != shape_of(target)) {
      std::ostringstream msg;
      msg << item << " has shape " << at::IntArrayRef(shape) << " but the model expects "
          << target.sizes();
      fail(msg.str());
    }
    if (entry.value("dtype", "") != dtype_name(target)) {
      fail(item + " has dtype " + entry.value("dtype", "?") + " but the model expects " +
           dtype_name(target));
    }
    at::Tensor stored;
    if (!archive.try_read(key, stored, /*is_buffer=*/true)) {
      fail(item + " is missing from the file (truncated or corrupt)");
    }
    at::Tensor value;
    const int64_t numel = target.numel();
    if (encoding == "raw" || encoding == "quantized") {
      value = stored;
    } else if (encoding == "pm1_bits" || encoding == "01_bits" || encoding == "scaled_pm1_bits") {
      if (stored.scalar_type() != at::kByte || stored.dim() != 1 ||
          stored.numel() != (numel + 7) / 8) {
        fail(item + ": packed bits have the wrong size (" + std::to_string(stored.numel()) +
             " bytes for " + std::to_string(numel) + " values)");
      }
      auto bits = unpack_bits(stored, numel).to(target.scalar_type());
      value = encoding == "01_bits" ? bits : 1 - 2 * bits;
      value = value.reshape(target.sizes());
      if (encoding == "scaled_pm1_bits") {
        at::Tensor scale;
        if (!archive.try_read(entry.value("scale_key", ""), scale, /*is_buffer=*/true) ||
            scale.dim() != 1 || target.dim() < 1 || scale.size(0) != target.size(0)) {
          fail(item + ": its per-channel scale is missing or mis-shaped");
        }
        std::vector<int64_t> view(target.dim(), 1);
        view[0] = -1;
        value = value * scale.to(target.scalar_type()).view(view);
      }
    } else {
      fail(item + " has an unknown encoding \"" + encoding + "\"");
    }
    if (value.sizes() != target.sizes() || value.scalar_type() != target.scalar_type()) {
      std::ostringstream msg;
      msg << item << ": stored values have shape " << value.sizes() << " and dtype "
          << dtype_name(value) << ", the model expects " << target.sizes() << " and "
          << dtype_name(target);
      fail(msg.str());
    }
    target.copy_(value);
    loaded.insert(name);
  }
  for (const auto& kv : targets) {
    if (!loaded.count(kv.first)) fail("no value stored for tensor \"" + kv.first + "\"");
  }
  model->eval();
  return model;
}

}  // namespace onebit
