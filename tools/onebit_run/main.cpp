// onebit-run: the runtime's own command-line tool, for the machine a model is deployed on. It
// links onebit_runtime alone (no LibTorch), so it can be copied to an edge device or a server
// next to a `.obnn` file and tell how fast the model runs there and where its time goes:
//
//   onebit-run bench quicknet.obnn --threads 1,2 --profile   latency, memory, per-op profile
//   onebit-run peak                                          this core's binary peak per ISA
//   onebit-run conv --shapes 64x56x56,256x14x14 --threads 2  binary 3x3 convs, % of that peak
//   onebit-run run quicknet.obnn --input images.f32          class scores of given images
//
// `onebit bench` (the training tool) reports the same fields under the same names, plus the
// LibTorch baselines that need LibTorch.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/runtime_report.h"
#include "onebit/runtime/bench.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"
#include "onebit/runtime/version.h"

namespace onebit::run_tool {
namespace {

void print_json(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

void check_threads(const std::vector<int>& threads) {
  if (threads.empty()) throw std::invalid_argument("--threads: give at least one thread count");
  for (int t : threads) {
    if (t < 1) {
      throw std::invalid_argument("--threads: thread counts must be >= 1, got " +
                                  std::to_string(t));
    }
  }
}

// Loads `path`, timing the load; the file's size in bytes.
runtime::Interpreter load(const std::string& path, double& load_ms, std::size_t& file_bytes,
                          const runtime::InterpreterOptions& options = {}) {
  std::error_code ec;
  file_bytes = std::filesystem::file_size(path, ec);
  if (ec) throw std::runtime_error("cannot read model file \"" + path + "\": " + ec.message());
  const auto t0 = std::chrono::steady_clock::now();
  runtime::Interpreter net = runtime::Interpreter::from_file(path, options);
  load_ms = runtime::seconds_since(t0) * 1e3;
  return net;
}

struct BenchArgs {
  std::string model;
  std::vector<int> threads = {1, 2};
  std::int64_t batch = 1;
  double min_seconds = 0.5;
  int profile_runs = 20;
  bool profile = false, json = false, no_chains = false;
};

// `bench`: median batch-1 latency per thread count (and images/s at --batch), load time, file
// size, activation arena, peak resident memory; with --profile the per-op medians.
void bench(const BenchArgs& a) {
  check_threads(a.threads);
  if (a.batch < 1) throw std::invalid_argument("--batch must be >= 1");
  if (!(a.min_seconds > 0)) throw std::invalid_argument("--min-seconds must be > 0");
  double load_ms = 0;
  std::size_t file_bytes = 0;
  runtime::InterpreterOptions options;
  options.chain_per_element_ops = !a.no_chains;
  runtime::Interpreter net = load(a.model, load_ms, file_bytes, options);
  nlohmann::json j = tools::model_facts(net, a.model, file_bytes, load_ms);
  std::size_t per_image = 1;
  for (std::int64_t d : net.input_shape()) per_image *= static_cast<std::size_t>(d);
  // Random normal images (fixed seed): a BNN's speed does not depend on the values.
  std::vector<float> images(per_image * static_cast<std::size_t>(a.batch));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (float& v : images) v = normal(rng);
  nlohmann::json rows = nlohmann::json::array();
  for (int threads : a.threads) {
    net.set_threads(threads);
    nlohmann::json t = {{"threads", threads}};
    t["runtime_ms"] = 1e3 * runtime::median_seconds_per_run(
                                [&] { net.run(images.data(), per_image, 1); }, a.min_seconds);
    if (a.batch > 1) {
      const double s = runtime::median_seconds_per_run(
          [&] { net.run(images.data(), images.size(), static_cast<std::size_t>(a.batch)); },
          a.min_seconds);
      t["batch"] = a.batch;
      t["images_per_second"] = static_cast<double>(a.batch) / s;
    }
    rows.push_back(t);
  }
  j["latency_batch1"] = rows;
  if (a.profile) {
    net.set_threads(a.threads.front());
    j["profile"] = tools::profile_json(
        runtime::profile_model(net, images.data(), per_image, 1, a.profile_runs));
  }
  j["peak_rss_bytes"] = runtime::peak_rss_bytes();
  if (a.json) {
    print_json(j);
    return;
  }
  tools::print_model_facts(std::cout, j);
  std::cout << "batch-1 latency, median ms";
  if (a.batch > 1) std::cout << "; images/s at batch " << a.batch;
  std::cout << ":\n" << std::setw(8) << "threads" << std::setw(12) << "ms";
  if (a.batch > 1) std::cout << std::setw(12) << "images/s";
  std::cout << "\n";
  for (const auto& t : rows) {
    std::cout << std::setw(8) << t["threads"].get<int>() << std::fixed << std::setprecision(3)
              << std::setw(12) << t["runtime_ms"].get<double>();
    if (a.batch > 1) {
      std::cout << std::setprecision(0) << std::setw(12) << t["images_per_second"].get<double>();
    }
    std::cout << "\n";
  }
  if (a.profile) tools::print_profile(std::cout, j["profile"], a.threads.front());
  std::cout << std::flush;
}

struct ConvArgs {
  std::vector<std::string> shapes;
  std::vector<int> threads = {1};
  double min_seconds = 0.2;
  int repeats = 3;
  bool json = false;
};

// `conv`: binary 3x3 convolutions (one-padding, packed input, packed output) as a share of this
// core's measured peak; the median of --repeats measurements per shape and thread count.
void conv(const ConvArgs& a) {
  check_threads(a.threads);
  if (a.repeats < 1) throw std::invalid_argument("--repeats must be >= 1");
  if (!(a.min_seconds > 0)) throw std::invalid_argument("--min-seconds must be > 0");
  std::vector<runtime::BinaryConvShape> shapes;
  for (const auto& s : a.shapes.empty() ? tools::default_conv_shapes() : a.shapes) {
    shapes.push_back(tools::parse_conv_shape(s));
  }
  const nlohmann::json peaks = tools::measured_peaks();
  if (a.json) {
    print_json(peaks);
  } else {
    tools::print_peaks(std::cout, peaks);
    std::cout << "binary 3x3 conv, batch 1, kernels "
              << runtime::isa_name(runtime::active_kernels().isa)
              << ", % of the measured peak of that ISA x threads\n"
              << std::left << std::setw(12) << "shape" << std::right << std::setw(8) << "threads"
              << std::setw(14) << "binary GMAC/s" << std::setw(10) << "% peak" << std::setw(12)
              << "binary us" << std::endl;
  }
  for (const auto& shape : shapes) {
    for (int threads : a.threads) {
      const runtime::BenchResult b =
          tools::median_binary_conv(shape, threads, a.min_seconds, a.repeats);
      if (a.json) {
        print_json(tools::binary_conv_json(b));
        continue;
      }
      std::cout << std::left << std::setw(12) << b.shape << std::right << std::setw(8) << threads
                << std::fixed << std::setprecision(0) << std::setw(14) << b.binary_macs_per_s * 1e-9
                << std::setprecision(1) << std::setw(10) << b.percent_of_peak << std::setw(12)
                << b.seconds_per_run * 1e6 << std::endl;
    }
  }
}

struct RunArgs {
  std::string model, input, output;
  int threads = 1;
  bool json = false;
};

// `run`: the model on images from a raw little-endian float32 file (N x C x H x W, N read off
// the file's size); prints each image's top class and score, or writes all scores to --output.
void run(const RunArgs& a) {
  if (a.threads < 1) throw std::invalid_argument("--threads must be >= 1");
  double load_ms = 0;
  std::size_t file_bytes = 0;
  runtime::Interpreter net = load(a.model, load_ms, file_bytes);
  net.set_threads(a.threads);
  std::size_t per_image = 1;
  for (std::int64_t d : net.input_shape()) per_image *= static_cast<std::size_t>(d);
  std::ifstream in(a.input, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open input file \"" + a.input + "\"");
  const auto bytes = static_cast<std::size_t>(in.tellg());
  const auto shape = net.input_shape();
  const std::string shape_text =
      std::to_string(shape[0]) + "x" + std::to_string(shape[1]) + "x" + std::to_string(shape[2]);
  if (bytes == 0 || bytes % (per_image * sizeof(float)) != 0) {
    throw std::runtime_error("input file \"" + a.input + "\" holds " + std::to_string(bytes) +
                             " bytes, not a whole number of " + shape_text + " float32 images (" +
                             std::to_string(per_image * sizeof(float)) + " bytes each)");
  }
  const std::size_t batch = bytes / (per_image * sizeof(float));
  std::vector<float> images(batch * per_image);
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(images.data()), static_cast<std::streamsize>(bytes))) {
    throw std::runtime_error("cannot read input file \"" + a.input + "\"");
  }
  std::vector<float> scores;
  try {
    scores = net.run(images, batch);  // rejects NaN and infinite inputs, saying where
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("input file \"" + a.input + "\": " + e.what());
  }
  const std::size_t classes = net.output_size();
  if (!a.output.empty()) {
    const std::string tmp = a.output + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(scores.data()),
                static_cast<std::streamsize>(scores.size() * sizeof(float)));
      if (!out.flush()) throw std::runtime_error("cannot write \"" + tmp + "\"");
    }
    std::filesystem::rename(tmp, a.output);
  }
  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t n = 0; n < batch; ++n) {
    const float* s = scores.data() + n * classes;
    const auto top = static_cast<std::size_t>(std::max_element(s, s + classes) - s);
    rows.push_back({{"image", n}, {"class", top}, {"score", s[top]}});
  }
  if (a.json) {
    print_json({{"model", a.model}, {"images", batch}, {"classes", classes}, {"top", rows}});
    return;
  }
  std::cout << batch << " image(s) of " << shape_text << ", " << classes << " outputs each"
            << (a.output.empty() ? "" : "; all scores written to " + a.output) << "\n";
  for (const auto& r : rows) {
    std::cout << "image " << r["image"].get<std::size_t>() << ": class "
              << r["class"].get<std::size_t>() << " (score " << r["score"].get<float>() << ")\n";
  }
}

}  // namespace
}  // namespace onebit::run_tool

int main(int argc, char** argv) {
  using namespace onebit::run_tool;
  CLI::App app{std::string("onebit-run ") + onebit::runtime::version() +
               ": run and time converted onebit models (.obnn) with the runtime alone"};
  app.require_subcommand(1);

  BenchArgs b;
  auto* bench_cmd = app.add_subcommand("bench", "Latency, memory and per-op profile of a model");
  bench_cmd->add_option("model", b.model, "The .obnn model file")->required();
  bench_cmd->add_option("--threads", b.threads, "Thread counts, e.g. 1,2")
      ->delimiter(',')
      ->capture_default_str();
  bench_cmd->add_option("--batch", b.batch, "Also images/s at this batch size (> 1)")
      ->capture_default_str();
  bench_cmd->add_option("--min-seconds", b.min_seconds, "Minimum timed seconds per measurement")
      ->capture_default_str();
  bench_cmd->add_flag("--profile", b.profile, "Per-op profile on the first thread count");
  bench_cmd->add_option("--profile-runs", b.profile_runs, "Profiled runs (medians over them)")
      ->capture_default_str();
  bench_cmd->add_flag("--no-chains", b.no_chains,
                      "Run consecutive per-element ops one by one (a profile time for each)");
  bench_cmd->add_flag("--json", b.json, "One JSON line");
  bench_cmd->callback([&] { bench(b); });

  bool peak_json = false;
  auto* peak_cmd = app.add_subcommand("peak", "This core's measured binary peak for each ISA");
  peak_cmd->add_flag("--json", peak_json, "One JSON line");
  peak_cmd->callback([&] {
    const nlohmann::json p = onebit::tools::measured_peaks();
    if (peak_json) {
      print_json(p);
    } else {
      onebit::tools::print_peaks(std::cout, p);
    }
  });

  ConvArgs c;
  auto* conv_cmd = app.add_subcommand("conv", "Binary 3x3 convolutions as a share of the peak");
  conv_cmd->add_option("--shapes", c.shapes, "CxHxW shapes, e.g. 64x56x56,256x14x14")
      ->delimiter(',');
  conv_cmd->add_option("--threads", c.threads, "Thread counts, e.g. 1,2")
      ->delimiter(',')
      ->capture_default_str();
  conv_cmd->add_option("--min-seconds", c.min_seconds, "Minimum timed seconds per measurement")
      ->capture_default_str();
  conv_cmd->add_option("--repeats", c.repeats, "Measurements per shape; the median is reported")
      ->capture_default_str();
  conv_cmd->add_flag("--json", c.json, "One JSON line for the peaks, then one per shape");
  conv_cmd->callback([&] { conv(c); });

  RunArgs r;
  auto* run_cmd = app.add_subcommand("run", "Class scores of images from a raw float32 file");
  run_cmd->add_option("model", r.model, "The .obnn model file")->required();
  run_cmd->add_option("--input", r.input, "Raw little-endian float32 images, N x C x H x W")
      ->required();
  run_cmd->add_option("--output", r.output, "Write all N x classes scores here (float32)");
  run_cmd->add_option("--threads", r.threads, "Threads")->capture_default_str();
  run_cmd->add_flag("--json", r.json, "One JSON line");
  run_cmd->callback([&] { run(r); });

  const std::vector<std::string> commands{"bench", "peak", "conv", "run"};
  if (argc > 1 && argv[1][0] != '-' &&
      std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
    std::cerr << "onebit-run: error: unknown command \"" << argv[1]
              << "\" (commands: bench, peak, conv, run; --help for more)" << std::endl;
    return 1;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "onebit-run: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
