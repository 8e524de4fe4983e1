#include "onebit/summary.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>
#include <stdexcept>

#include "onebit/nn/quant_layer.h"
#include "onebit/trace.h"

namespace onebit {
namespace {

using torch::nn::Module;

/// Rethrows `e` (std::invalid_argument or std::runtime_error) with `prefix` before its message.
[[noreturn]] void throw_with_prefix(const std::exception& e, const std::string& prefix) {
  if (dynamic_cast<const std::invalid_argument*>(&e)) {
    throw std::invalid_argument(prefix + e.what());
  }
  throw std::runtime_error(prefix + e.what());
}

struct Weight {
  std::string name;
  int64_t count;
  int bits;
  bool trainable;
};

std::vector<Weight> weights_of(const Module& m) {
  std::map<const void*, int> kernel_bits;
  if (const auto* q = dynamic_cast<const nn::QuantLayer*>(&m)) {
    for (const auto& p : q->quantized_parameters()) {
      if (p.latent.defined()) {
        kernel_bits[p.latent.unsafeGetTensorImpl()] = quantizers::precision_of(p.quantizer);
      }
    }
  }
  std::vector<Weight> out;
  for (const auto& item : m.named_parameters(/*recurse=*/true)) {
    const auto& t = item.value();
    auto it = kernel_bits.find(t.unsafeGetTensorImpl());
    out.push_back(
        {item.key(), t.numel(), it == kernel_bits.end() ? 32 : it->second, t.requires_grad()});
  }
  // Batch norms (any layer with moving statistics): Larq keeps the moving statistics (fused
  // scale and offset) in place of beta and gamma.
  auto buffers = m.named_buffers(/*recurse=*/false);
  const auto* mean = buffers.find("running_mean");
  const auto* var = buffers.find("running_var");
  {
    auto drop = [&](const char* name) {
      out.erase(
          std::remove_if(out.begin(), out.end(), [&](const Weight& w) { return w.name == name; }),
          out.end());
    };
    if (mean && mean->defined()) {
      drop("bias");
      out.push_back({"running_mean", mean->numel(), 32, false});
    }
    if (var && var->defined()) {
      drop("weight");
      out.push_back({"running_var", var->numel(), 32, false});
    }
  }
  return out;
}

// Pixels of one output feature map: H*W (NCHW), L (NCL), 1 (NC).
std::optional<int64_t> output_pixels(const std::optional<std::vector<int64_t>>& shape) {
  if (!shape) return std::nullopt;
  if (shape->size() == 4) return (*shape)[2] * (*shape)[3];
  if (shape->size() == 3) return (*shape)[2];
  if (shape->size() == 2) return 1;
  return std::nullopt;
}

LayerSummary profile(const TracedNode& node) {
  const Module& m = *node.module;
  LayerSummary row;
  row.name = node.name + ":" + short_type_name(m);
  const auto* q = dynamic_cast<const nn::QuantLayer*>(&m);
  if (q && q->input_quantizer()) row.input_precision = q->input_quantizer()->precision();
  row.output_shape = node.output_shape;
  const auto weights = weights_of(m);
  for (const auto& w : weights) {
    row.params_by_bits[w.bits] += w.count;
    (w.trainable ? row.trainable_params : row.non_trainable_params) += w.count;
    row.memory_bits += w.bits * w.count;
    row.int8_memory_bits += std::min(w.bits, 8) * w.count;
    row.fp32_memory_bits += 32 * w.count;
  }
  const MacRule rule = node.kind ? node.kind->macs : MacRule::kUnknown;
  const auto pixels = output_pixels(row.output_shape);
  if (pixels && *pixels > 0 && rule != MacRule::kUnknown) {
    std::map<int, int64_t> macs;
    if (rule == MacRule::kWeights) {
      for (const auto& w : weights) {
        if (w.name.find("bias") != std::string::npos) continue;
        macs[std::max(row.input_precision.value_or(32), w.bits)] += w.count * *pixels;
      }
    }
    row.macs_by_bits = std::move(macs);
  }
  return row;
}

// Adds `row` (the next layer of a nested graph) to the graph's combined row: weights, memory and
// MACs add up (Larq counts a layer without a MAC rule as 0 inside a nested model), the output
// shape is the last layer's.
void merge_into(LayerSummary& combined, const LayerSummary& row) {
  for (const auto& [bits, n] : row.params_by_bits) combined.params_by_bits[bits] += n;
  combined.trainable_params += row.trainable_params;
  combined.non_trainable_params += row.non_trainable_params;
  combined.memory_bits += row.memory_bits;
  combined.int8_memory_bits += row.int8_memory_bits;
  combined.fp32_memory_bits += row.fp32_memory_bits;
  if (row.macs_by_bits) {
    for (const auto& [bits, n] : *row.macs_by_bits) (*combined.macs_by_bits)[bits] += n;
  }
  combined.output_shape = row.output_shape;
}

// ---- text tables in the layout of terminaltables' AsciiTable, as Larq prints them -----------

enum class Justify { kLeft, kRight };

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::string::size_type start = 0;
  while (true) {
    auto nl = s.find('\n', start);
    lines.push_back(s.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return lines;
}

std::string render_table(const std::vector<std::vector<std::string>>& rows,
                         const std::string& title, const std::vector<Justify>& justify,
                         bool heading_border, bool footing_border) {
  const size_t ncols = rows.empty() ? 0 : rows[0].size();
  std::vector<size_t> width(ncols, 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < ncols; ++c) {
      for (const auto& line : split_lines(row[c])) width[c] = std::max(width[c], line.size());
    }
  }
  size_t inner = 0;
  for (auto w : width) inner += w + 2;
  auto border = [&](const std::string& t) {
    std::string line = "+";
    if (!t.empty() && t.size() <= inner) {
      line += t + std::string(inner - t.size(), '-');
    } else {
      line += std::string(inner, '-');
    }
    return line + "+\n";
  };
  std::string out = border(title);
  for (size_t r = 0; r < rows.size(); ++r) {
    if (footing_border && r + 1 == rows.size() && rows.size() > 1) out += border("");
    std::vector<std::vector<std::string>> cells;
    size_t height = 1;
    for (size_t c = 0; c < ncols; ++c) {
      cells.push_back(split_lines(rows[r][c]));
      height = std::max(height, cells.back().size());
    }
    for (size_t h = 0; h < height; ++h) {
      out += "|";
      for (size_t c = 0; c < ncols; ++c) {
        const std::string text = h < cells[c].size() ? cells[c][h] : "";
        const std::string pad(width[c] - text.size(), ' ');
        out += " " + (justify[c] == Justify::kLeft ? text + pad : pad + text) + " ";
      }
      out += "|\n";
    }
    if (heading_border && r == 0 && rows.size() > 1) out += border("");
  }
  return out + border("");
}

std::string shape_string(const std::optional<std::vector<int64_t>>& shape) {
  if (!shape) return "?";
  std::string s = "(";
  for (size_t i = 0; i < shape->size(); ++i) s += (i ? ", " : "") + std::to_string((*shape)[i]);
  return s + (shape->size() == 1 ? ",)" : ")");
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Larq shows 0 as "0" and other memory as kB with two decimals.
std::string kilobytes(int64_t bits) { return bits == 0 ? "0" : fixed(bits / 8192.0, 2); }

int64_t count_bits(const std::map<int, int64_t>& m, int bits) {
  auto it = m.find(bits);
  return it == m.end() ? 0 : it->second;
}

}  // namespace

std::string format_number(double num) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", num);
  num = std::strtod(buf, nullptr);
  if (num < 1000) {
    std::snprintf(buf, sizeof buf, "%.3g", num);
    return buf;
  }
  if (num >= 1e15) {
    std::snprintf(buf, sizeof buf, "%.2E", num);
    return buf;
  }
  int magnitude = 0;
  while (std::abs(num) >= 1000 && magnitude < 4) {
    ++magnitude;
    num /= 1000.0;
  }
  static const char* const units[] = {"", " k", " M", " B", " T"};
  std::snprintf(buf, sizeof buf, "%.3g", num);
  return std::string(buf) + units[magnitude];
}

std::string format_memory(double bits) {
  static const char* const suffixes[] = {"B", "KiB", "MiB", "GiB"};
  const double bytes = bits / 8;
  double rounded = bytes;
  int i = 0;
  for (; i < 4; ++i) {
    rounded = bytes / std::pow(1024.0, i);
    if (rounded < 1024) break;
  }
  if (i == 4) i = 3;
  std::string digits = fixed(rounded, 2);  // e.g. "12345.67"
  const auto dot = digits.find('.');
  std::string integer = digits.substr(0, dot);
  std::string grouped;
  for (size_t k = 0; k < integer.size(); ++k) {
    if (k > 0 && (integer.size() - k) % 3 == 0) grouped += ',';
    grouped += integer[k];
  }
  return grouped + digits.substr(dot) + " " + suffixes[i];
}

std::vector<int> ModelSummary::param_bits() const {
  std::set<int> s;
  for (const auto& l : layers) {
    for (const auto& kv : l.params_by_bits) s.insert(kv.first);
  }
  return {s.begin(), s.end()};
}

std::vector<int> ModelSummary::mac_precisions() const {
  std::set<int> s;
  for (const auto& l : layers) {
    if (l.macs_by_bits) {
      for (const auto& kv : *l.macs_by_bits) s.insert(kv.first);
    }
  }
  return {s.begin(), s.end()};
}

int64_t ModelSummary::macs(int bits) const {
  int64_t n = 0;
  for (const auto& l : layers) {
    if (l.macs_by_bits) n += count_bits(*l.macs_by_bits, bits);
  }
  return n;
}

std::string ModelSummary::to_string(bool include_macs) const {
  const auto bits = param_bits();
  const auto precisions = include_macs ? mac_precisions() : std::vector<int>{};
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"Layer", "Input prec.\n(bit)", "Outputs"};
  for (int b : bits) header.push_back("# " + std::to_string(b) + "-bit\nx 1");
  header.push_back("Memory\n(kB)");
  for (int p : precisions) header.push_back(std::to_string(p) + "-bit MACs");
  rows.push_back(header);
  for (const auto& l : layers) {
    std::vector<std::string> row = {l.name,
                                    l.input_precision ? std::to_string(*l.input_precision) : "-",
                                    shape_string(l.output_shape)};
    for (int b : bits) row.push_back(std::to_string(count_bits(l.params_by_bits, b)));
    row.push_back(kilobytes(l.memory_bits));
    for (int p : precisions) {
      row.push_back(l.macs_by_bits ? std::to_string(count_bits(*l.macs_by_bits, p)) : "?");
    }
    rows.push_back(row);
  }
  std::vector<std::string> total = {"Total", "", ""};
  for (int b : bits) {
    int64_t n = 0;
    for (const auto& l : layers) n += count_bits(l.params_by_bits, b);
    total.push_back(std::to_string(n));
  }
  total.push_back(kilobytes(memory_bits));
  for (int p : precisions) total.push_back(std::to_string(macs(p)));
  rows.push_back(total);
  std::vector<Justify> justify(header.size(), Justify::kRight);
  justify[0] = Justify::kLeft;
  std::string out = render_table(rows, name + " stats", justify, true, true);

  std::vector<std::vector<std::string>> lines = {
      {"Total params", format_number(static_cast<double>(total_params))},
      {"Trainable params", format_number(static_cast<double>(trainable_params))},
      {"Non-trainable params", format_number(static_cast<double>(non_trainable_params))},
      {"Model size", format_memory(static_cast<double>(memory_bits))},
      {"Model size (8-bit FP weights)", format_memory(static_cast<double>(int8_memory_bits))},
      {"Float-32 Equivalent", format_memory(static_cast<double>(fp32_memory_bits))},
      {"Compression Ratio of Memory",
       fixed(
           static_cast<double>(memory_bits) / std::max(1e-8, static_cast<double>(fp32_memory_bits)),
           2)}};
  if (include_macs) {
    lines.push_back({"Number of MACs", format_number(static_cast<double>(total_macs))});
    if (binarized_mac_ratio > 0) {
      lines.push_back({"Ratio of MACs that are binarized", fixed(binarized_mac_ratio, 4)});
    }
    if (ternarized_mac_ratio > 0) {
      lines.push_back({"Ratio of MACs that are ternarized", fixed(ternarized_mac_ratio, 4)});
    }
  }
  out += render_table(lines, name + " summary", {Justify::kLeft, Justify::kLeft}, false, false);
  return out;
}

nlohmann::json ModelSummary::to_json() const {
  auto by_bits = [](const std::map<int, int64_t>& m) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& kv : m) j[std::to_string(kv.first)] = kv.second;
    return j;
  };
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& l : layers) {
    rows.push_back(
        {{"name", l.name},
         {"input_precision", l.input_precision ? nlohmann::json(*l.input_precision) : nullptr},
         {"output_shape", l.output_shape ? nlohmann::json(*l.output_shape) : nullptr},
         {"params_by_bits", by_bits(l.params_by_bits)},
         {"memory_bits", l.memory_bits},
         {"macs_by_bits", l.macs_by_bits ? by_bits(*l.macs_by_bits) : nullptr}});
  }
  return {{"layers", rows},
          {"totals",
           {{"total_params", total_params},
            {"trainable_params", trainable_params},
            {"non_trainable_params", non_trainable_params},
            {"memory_bits", memory_bits},
            {"int8_memory_bits", int8_memory_bits},
            {"fp32_memory_bits", fp32_memory_bits},
            {"total_macs", total_macs},
            {"binarized_mac_ratio", binarized_mac_ratio},
            {"ternarized_mac_ratio", ternarized_mac_ratio}}}};
}

ModelSummary summary(nn::Graph model, const std::vector<int64_t>& input_shape,
                     const std::string& name) {
  return summary(std::move(model), input_shape, name, SummaryOptions{});
}

ModelSummary summary(nn::Graph model, const std::vector<int64_t>& input_shape,
                     const std::string& name, const SummaryOptions& options) {
  ModelSummary out;
  out.name = name;
  ModelTrace t;
  try {
    t = trace(model, input_shape);
  } catch (const std::exception& e) {
    throw_with_prefix(e, "summary: ");
  }
  for (std::size_t i = 0; i < t.nodes.size(); ++i) {
    const TracedNode& node = t.nodes[i];
    LayerSummary row = profile(node);
    if (options.combine_nested && node.top_level != node.name) {
      // The first node of a nested graph opens its combined row; the following ones add to it.
      const bool first = i == 0 || t.nodes[i - 1].top_level != node.top_level;
      if (first) {
        LayerSummary combined;
        combined.name = node.top_level + ":Graph";
        combined.input_precision = row.input_precision;
        combined.macs_by_bits.emplace();
        out.layers.push_back(std::move(combined));
      }
      merge_into(out.layers.back(), row);
      continue;
    }
    out.layers.push_back(std::move(row));
  }
  for (const auto& l : out.layers) {
    out.trainable_params += l.trainable_params;
    out.non_trainable_params += l.non_trainable_params;
    out.memory_bits += l.memory_bits;
    out.int8_memory_bits += l.int8_memory_bits;
    out.fp32_memory_bits += l.fp32_memory_bits;
  }
  out.total_params = out.trainable_params + out.non_trainable_params;
  for (int p : out.mac_precisions()) out.total_macs += out.macs(p);
  const double denom = static_cast<double>(std::max<int64_t>(1, out.total_macs));
  out.binarized_mac_ratio = static_cast<double>(out.macs(1)) / denom;
  out.ternarized_mac_ratio = static_cast<double>(out.macs(2)) / denom;
  return out;
}

}  // namespace onebit
