// onebit bench: binary 3x3 convolutions of ResNet-style BNNs (MAC/s, percent of peak, speedup
// over LibTorch's float conv2d on the same threads) and the whole larq-mnist model (runtime vs
// LibTorch eval mode).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "commands.h"
#include "onebit/convert.h"
#include "onebit/runtime/bench.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"
#include "onebit/train/checkpoint.h"
#include "onebit/zoo/models.h"
#include "timing.h"

namespace onebit::cli {
namespace {

runtime::BinaryConvShape parse_conv_shape(const std::string& text) {
  runtime::BinaryConvShape s;
  char x1 = 0, x2 = 0;
  std::istringstream in(text);
  if (!(in >> s.channels >> x1 >> s.height >> x2 >> s.width) || x1 != 'x' || x2 != 'x' ||
      !in.eof() || s.channels < 1 || s.height < 1 || s.width < 1) {
    throw std::invalid_argument("--shapes: expected CxHxW like 256x14x14, got \"" + text + "\"");
  }
  return s;
}

std::vector<std::string> default_shapes() {
  std::vector<std::string> shapes;
  for (int c : {64, 128, 256, 512}) {
    for (int hw : {56, 28, 14, 7}) {
      shapes.push_back(std::to_string(c) + "x" + std::to_string(hw) + "x" + std::to_string(hw));
    }
  }
  return shapes;
}

// One conv shape: the median of `repeats` runtime measurements (bench_binary_conv) and the
// median time of LibTorch's float conv2d (same shape, 3x3, padding 1, no bias).
nlohmann::json bench_shape(const runtime::BinaryConvShape& shape, int threads, double min_seconds,
                           int repeats) {
  std::vector<runtime::BenchResult> results;
  for (int r = 0; r < repeats; ++r) {
    results.push_back(runtime::bench_binary_conv(shape, threads, min_seconds));
  }
  std::sort(results.begin(), results.end(),
            [](const auto& x, const auto& y) { return x.seconds_per_run < y.seconds_per_run; });
  const runtime::BenchResult& b = results[results.size() / 2];

  at::set_num_threads(threads);
  at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({shape.batch, shape.channels, shape.height, shape.width});
  const at::Tensor w = at::randn({shape.channels, shape.channels, shape.kernel, shape.kernel});
  const int64_t pad = shape.kernel / 2;
  const double float_seconds = median_seconds_per_run([&] { at::conv2d(x, w, {}, 1, pad); },
                                                      min_seconds * static_cast<double>(repeats));

  return {{"shape", b.shape},
          {"threads", threads},
          {"isa", b.isa},
          {"binary_macs_per_s", b.binary_macs_per_s},
          {"percent_of_peak", b.percent_of_peak},
          {"clock_ghz", b.clock_hz * 1e-9},
          {"binary_us", b.seconds_per_run * 1e6},
          {"float_us", float_seconds * 1e6},
          {"float_macs_per_s", static_cast<double>(shape.binary_macs()) / float_seconds},
          {"speedup_vs_float", float_seconds / b.seconds_per_run}};
}

// Whole-model images/s: the converted model in onebit_runtime vs the model in LibTorch
// eval mode, random images, batch 1 and 64.
nlohmann::json bench_model(nn::Graph model, const std::vector<int64_t>& input_shape,
                           const std::string& name, const std::string& source, int threads,
                           double min_seconds) {
  model->eval();
  runtime::InterpreterOptions ro;
  ro.threads = threads;
  const runtime::Interpreter net(convert(model, input_shape), ro);
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;
  nlohmann::json j = {{"model", name}, {"source", source}, {"threads", threads}};
  for (int64_t batch : {1, 64}) {
    std::vector<int64_t> shape{batch};
    shape.insert(shape.end(), input_shape.begin(), input_shape.end());
    const at::Tensor images = at::rand(shape).mul_(2).sub_(1).contiguous();
    const float* p = images.data_ptr<float>();
    const auto size = static_cast<size_t>(images.numel());
    const double rt_s =
        median_seconds_per_run([&] { net.run(p, size, static_cast<size_t>(batch)); }, min_seconds);
    const double torch_s = median_seconds_per_run([&] { model->forward(images); }, min_seconds);
    const std::string b = "_batch" + std::to_string(batch);
    j["runtime_images_per_second" + b] = static_cast<double>(batch) / rt_s;
    j["torch_images_per_second" + b] = static_cast<double>(batch) / torch_s;
    j["speedup" + b] = torch_s / rt_s;
  }
  return j;
}

void add_bench(CLI::App& app) {
  struct Args {
    int threads = 1, repeats = 3;
    double min_seconds = 0.1;
    std::vector<std::string> shapes;
    std::string model_checkpoint;
    bool json = false, no_model = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "bench",
      "Benchmark binary 3x3 convolutions (percent of peak, speedup vs LibTorch float) "
      "and the whole larq-mnist model (runtime vs LibTorch)");
  cmd->add_option("--threads", a->threads, "Threads (runtime and LibTorch)")->capture_default_str();
  cmd->add_option("--min-seconds", a->min_seconds, "Minimum timed seconds per measurement")
      ->capture_default_str();
  cmd->add_option("--repeats", a->repeats, "Measurements per conv shape; the median is reported")
      ->capture_default_str();
  cmd->add_option("--shapes", a->shapes,
                  "Conv shapes CxHxW (default: 64,128,256,512 channels x 56,28,14,7)")
      ->delimiter(',');
  cmd->add_option("--model-checkpoint", a->model_checkpoint,
                  "Time this trained model (default: an untrained larq-mnist; speed does not "
                  "depend on the weights)");
  cmd->add_flag("--no-model", a->no_model, "Skip the whole-model benchmark");
  cmd->add_flag("--json", a->json, "One JSON line per shape and for the model");
  cmd->callback([a] {
    if (a->threads < 1) throw std::invalid_argument("--threads must be >= 1");
    if (a->repeats < 1) throw std::invalid_argument("--repeats must be >= 1");
    if (!(a->min_seconds > 0)) throw std::invalid_argument("--min-seconds must be > 0");
    std::vector<runtime::BinaryConvShape> shapes;
    for (const auto& s : a->shapes.empty() ? default_shapes() : a->shapes) {
      shapes.push_back(parse_conv_shape(s));
    }
    if (!a->json) {
      std::cout << "binary 3x3 conv, batch 1, " << a->threads << " thread(s), kernels "
                << runtime::isa_name(runtime::active_kernels().isa) << "\n"
                << std::left << std::setw(12) << "shape" << std::right << std::setw(14)
                << "binary GMAC/s" << std::setw(10) << "% peak" << std::setw(12) << "binary us"
                << std::setw(12) << "float us" << std::setw(10) << "speedup" << std::endl;
    }
    for (const auto& shape : shapes) {
      const nlohmann::json r = bench_shape(shape, a->threads, a->min_seconds, a->repeats);
      if (a->json) {
        print_json(r);
        continue;
      }
      std::cout << std::left << std::setw(12) << r["shape"].get<std::string>() << std::right
                << std::fixed << std::setprecision(0) << std::setw(14)
                << r["binary_macs_per_s"].get<double>() * 1e-9 << std::setprecision(1)
                << std::setw(10) << r["percent_of_peak"].get<double>() << std::setw(12)
                << r["binary_us"].get<double>() << std::setw(12) << r["float_us"].get<double>()
                << std::setw(10) << r["speedup_vs_float"].get<double>() << std::endl;
    }
    if (a->no_model) return;
    nn::Graph model(nullptr);
    std::vector<int64_t> input_shape{1, 28, 28};
    std::string name = "larq-mnist", source = "untrained";
    if (!a->model_checkpoint.empty()) {
      train::Checkpoint ck = train::load_checkpoint(a->model_checkpoint);
      model = ck.model;
      const auto& t = ck.config.at("train");
      name = t.value("model", name);
      if (t.contains("model_options") && t.at("model_options").contains("input_shape")) {
        input_shape = t.at("model_options").at("input_shape").get<std::vector<int64_t>>();
      }
      source = ck.path;
    } else {
      model = zoo::build("larq-mnist");
    }
    const nlohmann::json m =
        bench_model(model, input_shape, name, source, a->threads, 3.0 * a->min_seconds);
    if (a->json) {
      print_json(m);
      return;
    }
    std::cout << "\nwhole model " << name << " (" << source << "), " << a->threads
              << " thread(s), images/s:\n"
              << std::setw(8) << "batch" << std::setw(12) << "runtime" << std::setw(12)
              << "LibTorch" << std::setw(10) << "speedup"
              << "\n";
    for (const char* b : {"_batch1", "_batch64"}) {
      std::cout << std::setw(8) << (std::string(b) == "_batch1" ? 1 : 64) << std::setprecision(0)
                << std::setw(12) << m["runtime_images_per_second" + std::string(b)].get<double>()
                << std::setw(12) << m["torch_images_per_second" + std::string(b)].get<double>()
                << std::setprecision(1) << std::setw(10)
                << m["speedup" + std::string(b)].get<double>() << "\n";
    }
    std::cout << std::flush;
  });
}

const Registrar bench_cmd(60, add_bench);

}  // namespace
}  // namespace onebit::cli
