#pragma once
// What `onebit bench` and `onebit-run` report about this machine and a converted model, in one
// place: the measured binary peak of each ISA, the conv shapes they time, the model's facts
// (file, load time, activation arena, CPU and kernels) and the per-op profile, as JSON and as
// text. Both tools print the same fields under the same names, so that their output can be
// compared line by line.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "onebit/runtime/bench.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"

namespace onebit::tools {

/// Parses a `--shapes` entry "CxHxW" (e.g. 256x14x14) into a square 3x3 binary conv shape;
/// throws `std::invalid_argument` naming the text otherwise.
inline runtime::BinaryConvShape parse_conv_shape(const std::string& text) {
  runtime::BinaryConvShape s;
  char x1 = 0, x2 = 0;
  std::istringstream in(text);
  if (!(in >> s.channels >> x1 >> s.height >> x2 >> s.width) || x1 != 'x' || x2 != 'x' ||
      !in.eof() || s.channels < 1 || s.height < 1 || s.width < 1) {
    throw std::invalid_argument("--shapes: expected CxHxW like 256x14x14, got \"" + text + "\"");
  }
  return s;
}

/// The conv shapes timed by default: 64, 128, 256 and 512 channels at 56, 28, 14 and 7 pixels.
inline std::vector<std::string> default_conv_shapes() {
  std::vector<std::string> shapes;
  for (int c : {64, 128, 256, 512}) {
    for (int hw : {56, 28, 14, 7}) {
      shapes.push_back(std::to_string(c) + "x" + std::to_string(hw) + "x" + std::to_string(hw));
    }
  }
  return shapes;
}

/// This core's measured peak for every ISA it has (`runtime::binary_peak`, cached: the percent
/// of peak of every later measurement refers to the same one), with the CPU's name.
inline nlohmann::json measured_peaks() {
  nlohmann::json peaks = nlohmann::json::array();
  for (runtime::Isa isa : runtime::supported_isas()) {
    const runtime::BinaryPeak& p = runtime::binary_peak(isa);
    peaks.push_back({{"isa", runtime::isa_name(isa)},
                     {"binary_macs_per_s", p.binary_macs_per_s},
                     {"binary_macs_per_cycle", p.binary_macs_per_cycle},
                     {"clock_ghz", p.clock_hz * 1e-9}});
  }
  return {{"cpu", runtime::cpu_model_name()},
          {"active_isa", runtime::isa_name(runtime::active_kernels().isa)},
          {"peaks", peaks}};
}

/// The median (by time) of `repeats` >= 1 measurements of `runtime::bench_binary_conv`.
inline runtime::BenchResult median_binary_conv(const runtime::BinaryConvShape& shape, int threads,
                                               double min_seconds, int repeats) {
  std::vector<runtime::BenchResult> results;
  for (int r = 0; r < repeats; ++r) {
    results.push_back(runtime::bench_binary_conv(shape, threads, min_seconds));
  }
  std::sort(results.begin(), results.end(),
            [](const auto& x, const auto& y) { return x.seconds_per_run < y.seconds_per_run; });
  return results[results.size() / 2];
}

/// A binary conv measurement as JSON: shape, threads, ISA, MAC/s, percent of the measured peak
/// (with the peak per cycle and per second), clock, microseconds per run.
inline nlohmann::json binary_conv_json(const runtime::BenchResult& b) {
  return {{"shape", b.shape},
          {"threads", b.threads},
          {"isa", b.isa},
          {"binary_macs_per_s", b.binary_macs_per_s},
          {"percent_of_peak", b.percent_of_peak},
          {"peak_binary_macs_per_cycle", b.peak_binary_macs_per_cycle},
          {"peak_binary_macs_per_s", b.peak_binary_macs_per_s},
          {"clock_ghz", b.clock_hz * 1e-9},
          {"binary_us", b.seconds_per_run * 1e6}};
}

/// `measured_peaks` as text: a line per ISA.
inline void print_peaks(std::ostream& out, const nlohmann::json& peaks) {
  out << "measured peak of one core, " << peaks["cpu"].get<std::string>() << ":\n";
  for (const auto& p : peaks["peaks"]) {
    out << "  " << std::left << std::setw(10) << p["isa"].get<std::string>() << std::right
        << std::fixed << std::setprecision(0) << std::setw(8)
        << p["binary_macs_per_s"].get<double>() * 1e-9 << " G binary MAC/s" << std::setw(7)
        << p["binary_macs_per_cycle"].get<double>() << " per cycle at " << std::setprecision(2)
        << p["clock_ghz"].get<double>() << " GHz\n";
  }
}

/// The facts of a loaded model that do not depend on timing.
inline nlohmann::json model_facts(const runtime::Interpreter& net, const std::string& name,
                                  std::size_t file_bytes, double load_ms) {
  return {{"model", name},
          {"input_shape", net.input_shape()},
          {"num_classes", net.output_size()},
          {"isa", runtime::isa_name(runtime::active_kernels().isa)},
          {"cpu", runtime::cpu_model_name()},
          {"file_bytes", file_bytes},
          {"load_ms", load_ms},
          {"activation_bytes", net.activation_bytes(1)},
          {"live_activation_bytes", net.live_activation_bytes(1)},
          {"binary_macs", net.binary_macs_per_image()}};
}

/// A profile as JSON: {"ops": [{op, name, type, binary, ms, share, binary_macs, float_macs}],
/// "runs", "total_ms", "binary_ms", "binary_share"}.
inline nlohmann::json profile_json(const runtime::ModelProfile& p) {
  nlohmann::json rows = nlohmann::json::array();
  for (const runtime::OpProfile& r : p.ops) {
    rows.push_back({{"op", r.op.index},
                    {"name", r.op.name},
                    {"type", r.op.type},
                    {"binary", r.op.binary},
                    {"ms", r.median_seconds * 1e3},
                    {"share", r.share},
                    {"binary_macs", r.op.binary_macs},
                    {"float_macs", r.op.float_macs}});
  }
  return {{"ops", rows},
          {"runs", p.runs},
          {"total_ms", p.total_seconds * 1e3},
          {"binary_ms", p.binary_seconds * 1e3},
          {"binary_share", p.binary_share()}};
}

/// The facts of `model_facts` as two lines of text: name, input, CPU and kernels; file size,
/// load time, activation arena and peak resident memory.
inline void print_model_facts(std::ostream& out, const nlohmann::json& j) {
  const auto mib = [](std::size_t bytes) { return static_cast<double>(bytes) / 1048576.0; };
  const auto shape = j["input_shape"];
  out << j["model"].get<std::string>() << " " << shape[0] << "x" << shape[1] << "x" << shape[2]
      << ", " << j["cpu"].get<std::string>() << ", kernels " << j["isa"].get<std::string>() << "\n"
      << std::fixed << std::setprecision(1) << "file " << mib(j["file_bytes"].get<std::size_t>())
      << " MiB, load " << j["load_ms"].get<double>() << " ms, activation arena "
      << std::setprecision(2) << mib(j["activation_bytes"].get<std::size_t>())
      << " MiB (largest live set " << mib(j["live_activation_bytes"].get<std::size_t>()) << " MiB)"
      << std::setprecision(1);
  if (j.contains("peak_rss_bytes")) {
    out << ", peak RSS " << mib(j["peak_rss_bytes"].get<std::size_t>()) << " MiB";
  }
  out << "\n";
}

/// A `profile_json` as a table: one row per op (name, type, binary or float, ms, share).
inline void print_profile(std::ostream& out, const nlohmann::json& p, int threads) {
  out << "\nprofile (" << threads << " thread(s), median of " << p["runs"].get<int>()
      << " runs): " << std::fixed << std::setprecision(2) << p["total_ms"].get<double>()
      << " ms, binary ops " << std::setprecision(1) << 100.0 * p["binary_share"].get<double>()
      << "%\n"
      << std::left << std::setw(44) << "op" << std::setw(18) << "type" << std::right << std::setw(8)
      << "kind" << std::setw(10) << "ms" << std::setw(8) << "share\n";
  for (const auto& r : p["ops"]) {
    std::string label = r["name"].get<std::string>();
    if (label.size() > 42) label = label.substr(0, 39) + "...";
    out << std::left << std::setw(44) << label << std::setw(18) << r["type"].get<std::string>()
        << std::right << std::setw(8) << (r["binary"].get<bool>() ? "binary" : "float")
        << std::setprecision(3) << std::setw(10) << r["ms"].get<double>() << std::setprecision(1)
        << std::setw(7) << 100.0 * r["share"].get<double>() << "%\n";
  }
}

}  // namespace onebit::tools
