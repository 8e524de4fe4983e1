// onebit bench: binary 3x3 convolutions of ResNet-style BNNs (MAC/s, percent of peak, speedup
// over LibTorch's float conv2d on the same threads) and the whole larq-mnist model (runtime vs
// LibTorch eval mode).

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/QEngine.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/runtime_report.h"
#include "bench_train.h"
#include "commands.h"
#include "onebit/convert.h"
#include "onebit/runtime/bench.h"
#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"
#include "onebit/train/checkpoint.h"
#include "onebit/zoo/models.h"
#include "timing.h"
#include "zoo_args.h"

namespace onebit::cli {
namespace {

std::string pick_quantized_engine() {
  const auto& supported = at::globalContext().supportedQEngines();
  auto has = [&](c10::QEngine e) {
    return std::find(supported.begin(), supported.end(), e) != supported.end();
  };
  std::vector<std::pair<c10::QEngine, const char*>> preferred;
#if TORCH_VERSION_MAJOR >= 2
  preferred.emplace_back(c10::QEngine::X86, "x86");
#endif
  preferred.emplace_back(c10::QEngine::FBGEMM, "fbgemm");
  preferred.emplace_back(c10::QEngine::ONEDNN, "onednn");
  preferred.emplace_back(c10::QEngine::QNNPACK, "qnnpack");
  for (const auto& [engine, name] : preferred) {
    if (has(engine)) {
      at::globalContext().setQEngine(engine);
      return name;
    }
  }
  return "";
}

// Median time of LibTorch's int8 conv (quantized::conv2d on its quantized engine: quint8
// activations in channels-last layout, per-tensor qint8 weights prepacked once, requantized
// quint8 output) for the float conv's `x` and `w`; the input is quantized outside the timing, as
// it would be by the layer before. Negative when this LibTorch has no quantized engine or op.
double int8_conv_seconds(const at::Tensor& x, const at::Tensor& w, int64_t pad, double min_seconds,
                         std::string& engine) {
  engine = pick_quantized_engine();
  if (engine.empty()) return -1;
  try {
    const double x_scale = x.abs().max().item<double>() / 127.0;
    const double w_scale = w.abs().max().item<double>() / 127.0;
    const at::Tensor qx = at::quantize_per_tensor(x, x_scale, 128, at::kQUInt8)
                              .contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor qw = at::quantize_per_tensor(w, w_scale, 0, at::kQInt8);
    auto& dispatcher = c10::Dispatcher::singleton();
    const auto prepack = dispatcher.findSchemaOrThrow("quantized::conv2d_prepack", "");
    const auto conv = dispatcher.findSchemaOrThrow("quantized::conv2d", "new");
    torch::jit::Stack stack{qw,
                            c10::IValue(),
                            std::vector<int64_t>{1, 1},
                            std::vector<int64_t>{pad, pad},
                            std::vector<int64_t>{1, 1},
                            int64_t{1}};
    prepack.callBoxed(&stack);
    const c10::IValue packed = stack.at(0);
    // Output scale: the float conv's output range over the 255 levels of quint8.
    const double out_scale =
        std::max(at::conv2d(x, w, {}, 1, pad).abs().max().item<double>() / 127.0, 1e-6);
    return median_seconds_per_run(
        [&] {
          torch::jit::Stack s{qx, packed, out_scale, int64_t{128}};
          conv.callBoxed(&s);
        },
        min_seconds);
  } catch (const std::exception& e) {
    engine += std::string(" (failed: ") + e.what() + ")";
    return -1;
  }
}

// One conv shape: the median of `repeats` runtime measurements (bench_binary_conv) and the
// median times of LibTorch's float conv2d and of its int8 conv (same shape, 3x3, padding 1, no
// bias, same threads).
nlohmann::json bench_shape(const runtime::BinaryConvShape& shape, int threads, double min_seconds,
                           int repeats) {
  const runtime::BenchResult b = tools::median_binary_conv(shape, threads, min_seconds, repeats);

  at::set_num_threads(threads);
  at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({shape.batch, shape.channels, shape.height, shape.width});
  const at::Tensor w = at::randn({shape.channels, shape.channels, shape.kernel, shape.kernel});
  const int64_t pad = shape.kernel / 2;
  const double float_seconds = median_seconds_per_run([&] { at::conv2d(x, w, {}, 1, pad); },
                                                      min_seconds * static_cast<double>(repeats));
  std::string engine;
  const double int8_seconds =
      int8_conv_seconds(x, w, pad, min_seconds * static_cast<double>(repeats), engine);

  nlohmann::json out = tools::binary_conv_json(b);
  out["float_us"] = float_seconds * 1e6;
  out["float_macs_per_s"] = static_cast<double>(shape.binary_macs()) / float_seconds;
  out["speedup_vs_float"] = float_seconds / b.seconds_per_run;
  out["int8_engine"] = engine;
  if (int8_seconds > 0) {
    out["int8_us"] = int8_seconds * 1e6;
    out["speedup_vs_int8"] = int8_seconds / b.seconds_per_run;
  } else {
    out["int8_us"] = nullptr;
    out["speedup_vs_int8"] = nullptr;
  }
  return out;
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
    j["activation_bytes" + b] = net.activation_bytes(static_cast<size_t>(batch));
    j["live_activation_bytes" + b] = net.live_activation_bytes(static_cast<size_t>(batch));
    j["runtime_images_per_second" + b] = static_cast<double>(batch) / rt_s;
    j["torch_images_per_second" + b] = static_cast<double>(batch) / torch_s;
    j["speedup" + b] = torch_s / rt_s;
  }
  return j;
}

/// Arguments of `onebit bench --model`.
struct ModelBenchArgs {
  ZooModelArgs zoo;
  std::vector<int> threads = {1, 2};
  double min_seconds = 0.3;
  bool profile = false, json = false, no_baseline = false;
};

// `onebit bench --model NAME`: the zoo model converted and timed at batch 1 (median latency
// per thread count, load time, memory), next to LibTorch running the same BNN and its float
// copy in the same process; optionally a per-op profile.
void bench_zoo_model(const ModelBenchArgs& a) {
  const ZooModel z = build_zoo_model(a.zoo);
  const std::string& name = z.name;
  const zoo::ModelOptions& options = z.options;
  nn::Graph model = z.model;
  const auto& shape = options.input_shape;
  const std::string path =
      (std::filesystem::temp_directory_path() / ("onebit_bench_" + name + ".obnn")).string();
  runtime::save_model(convert(model, shape), path);
  const std::size_t file_bytes = std::filesystem::file_size(path);
  std::vector<float> image(static_cast<std::size_t>(shape[0] * shape[1] * shape[2]));
  {
    const at::Tensor x = at::randn({shape[0], shape[1], shape[2]}).contiguous();
    std::copy(x.data_ptr<float>(), x.data_ptr<float>() + x.numel(), image.begin());
  }
  const auto t0 = std::chrono::steady_clock::now();
  runtime::Interpreter net = runtime::Interpreter::from_file(path);
  const double load_ms = seconds_since(t0) * 1e3;
  std::filesystem::remove(path);
  nlohmann::json j = tools::model_facts(net, name, file_bytes, load_ms);
  j["num_classes"] = options.num_classes;
  nlohmann::json per_threads = nlohmann::json::array();
  nn::Graph float_copy(nullptr);
  if (!a.no_baseline) {
    ZooModelArgs f = a.zoo;
    f.quantized = false;
    f.weights.clear();
    float_copy = build_zoo_model(f).model;
  }
  at::NoGradGuard no_grad;
  const at::Tensor batch1 =
      torch::from_blob(image.data(), {1, shape[0], shape[1], shape[2]}).clone();
  for (int threads : a.threads) {
    if (threads < 1) throw std::invalid_argument("--threads must be >= 1");
    net.set_threads(threads);
    at::set_num_threads(threads);
    nlohmann::json t = {{"threads", threads}};
    const double rt =
        median_seconds_per_run([&] { net.run(image.data(), image.size(), 1); }, a.min_seconds);
    t["runtime_ms"] = rt * 1e3;
    if (!a.no_baseline) {
      const double bnn = median_seconds_per_run([&] { model->forward(batch1); }, a.min_seconds);
      const double fl = median_seconds_per_run([&] { float_copy->forward(batch1); }, a.min_seconds);
      t["torch_bnn_ms"] = bnn * 1e3;
      t["torch_float_ms"] = fl * 1e3;
      t["speedup_vs_torch_float"] = fl / rt;
    }
    per_threads.push_back(t);
  }
  j["latency_batch1"] = per_threads;
  j["peak_rss_bytes"] = runtime::peak_rss_bytes();
  if (a.profile) {
    net.set_threads(a.threads.front());
    j["profile"] =
        tools::profile_json(runtime::profile_model(net, image.data(), image.size(), 1, 20));
  }
  if (a.json) {
    print_json(j);
    return;
  }
  tools::print_model_facts(std::cout, j);
  std::cout << "batch-1 latency, median ms:\n"
            << std::setw(8) << "threads" << std::setw(12) << "onebit" << std::setw(14)
            << "LibTorch BNN" << std::setw(16) << "LibTorch float" << std::setw(10) << "speedup\n";
  for (const auto& t : per_threads) {
    std::cout << std::setw(8) << t["threads"].get<int>() << std::setprecision(2) << std::setw(12)
              << t["runtime_ms"].get<double>();
    if (!a.no_baseline) {
      std::cout << std::setw(14) << t["torch_bnn_ms"].get<double>() << std::setw(16)
                << t["torch_float_ms"].get<double>() << std::setprecision(1) << std::setw(9)
                << t["speedup_vs_torch_float"].get<double>() << "x";
    }
    std::cout << "\n";
  }
  if (a.profile) tools::print_profile(std::cout, j["profile"], a.threads.front());
  std::cout << std::flush;
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
  auto m = std::make_shared<ModelBenchArgs>();
  auto tr = std::make_shared<TrainBenchArgs>();
  auto train_flag = std::make_shared<bool>(false);
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
  cmd->add_option("--model", m->zoo.model,
                  "Time this zoo model end to end instead (batch 1: latency per thread count, "
                  "load time, memory, LibTorch BNN and float copy in the same run)");
  cmd->add_option("--input-shape", m->zoo.input_shape,
                  "With --model: input C,H,W (default: the model's)");
  cmd->add_option("--classes", m->zoo.classes,
                  "With --model: number of classes (default: the model's)");
  cmd->add_option("--weights", m->zoo.weights,
                  "With --model: load the weights of this onebit checkpoint (file or directory)");
  cmd->add_option("--thread-counts", m->threads,
                  "With --model: thread counts to time (default 1,2)")
      ->delimiter(',');
  cmd->add_flag("--profile", m->profile,
                "With --model: per-op time and share (binary vs float) at the first thread count; "
                "with --train: each path's ops and autograd nodes by self time per step");
  cmd->add_flag("--no-baseline", m->no_baseline, "With --model: skip the LibTorch timings");
  cmd->add_flag("--train", *train_flag,
                "Time training steps of --model (default larq-mnist) on LibTorch's float kernels "
                "and on onebit's binary kernels, per --thread-counts: images/s and the split "
                "between forward, backward and optimizer");
  cmd->add_option("--batch-size", tr->batch_size, "With --train: batch size")
      ->capture_default_str();
  cmd->add_option("--optimizer", tr->optimizer, "With --train: adam, sgd or bop")
      ->capture_default_str();
  cmd->add_flag("--libtorch-adam", tr->libtorch_adam,
                "With --train: LibTorch's Adam step instead of onebit's one-pass one (to compare)");
  cmd->add_option("--conv-gradient", tr->conv_gradient,
                  "With --train: the binary path's convolution gradients: auto (per layer, the "
                  "faster on this CPU), libtorch (oneDNN) or products (onebit's matrix products "
                  "where they won on AVX2 CPUs)")
      ->capture_default_str();
  cmd->callback([a, m, tr, train_flag] {
    if (*train_flag) {
      tr->zoo = m->zoo;
      tr->threads = m->threads;
      tr->json = a->json;
      tr->profile = m->profile;
      tr->min_seconds = std::max(a->min_seconds, 0.05) * 10.0;
      bench_training(*tr);
      return;
    }
    if (!m->zoo.model.empty()) {
      m->json = a->json;
      m->min_seconds = std::max(a->min_seconds, 0.05) * 3.0;
      bench_zoo_model(*m);
      return;
    }
    if (a->threads < 1) throw std::invalid_argument("--threads must be >= 1");
    if (a->repeats < 1) throw std::invalid_argument("--repeats must be >= 1");
    if (!(a->min_seconds > 0)) throw std::invalid_argument("--min-seconds must be > 0");
    std::vector<runtime::BinaryConvShape> shapes;
    for (const auto& s : a->shapes.empty() ? tools::default_conv_shapes() : a->shapes) {
      shapes.push_back(tools::parse_conv_shape(s));
    }
    const nlohmann::json peaks = tools::measured_peaks();
    if (a->json) {
      print_json(peaks);
    } else {
      tools::print_peaks(std::cout, peaks);
      std::cout << "binary 3x3 conv, batch 1, " << a->threads << " thread(s), kernels "
                << runtime::isa_name(runtime::active_kernels().isa)
                << ", % of the measured peak of that ISA x threads; float: LibTorch's conv2d; "
                   "int8: LibTorch's quantized::conv2d ("
                << pick_quantized_engine() << ")\n"
                << std::left << std::setw(12) << "shape" << std::right << std::setw(14)
                << "binary GMAC/s" << std::setw(10) << "% peak" << std::setw(12) << "binary us"
                << std::setw(12) << "float us" << std::setw(10) << "vs float" << std::setw(12)
                << "int8 us" << std::setw(10) << "vs int8" << std::endl;
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
                << std::setw(10) << r["speedup_vs_float"].get<double>();
      if (r["int8_us"].is_number()) {
        std::cout << std::setw(12) << r["int8_us"].get<double>() << std::setw(10)
                  << r["speedup_vs_int8"].get<double>();
      } else {
        std::cout << std::setw(22) << "(no int8 engine)";
      }
      std::cout << std::endl;
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
              << " thread(s), activation arena at batch 1 / 64: " << std::setprecision(1)
              << m["activation_bytes_batch1"].get<double>() / 1024.0 << " / "
              << m["activation_bytes_batch64"].get<double>() / 1024.0 << " KiB (largest live set "
              << m["live_activation_bytes_batch1"].get<double>() / 1024.0 << " / "
              << m["live_activation_bytes_batch64"].get<double>() / 1024.0 << " KiB), images/s:\n"
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
