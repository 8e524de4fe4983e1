// onebit infer: run a .obnn model on a data set's test split with onebit_runtime; optionally
// compare every prediction with LibTorch's eval-mode model from the source checkpoint.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "commands.h"
#include "onebit/data/datasets.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/train/checkpoint.h"
#include "timing.h"

namespace onebit::cli {
namespace {

int64_t argmax(const float* v, int64_t n) {
  return static_cast<int64_t>(std::max_element(v, v + n) - v);
}

void add_infer(CLI::App& app) {
  struct Args {
    std::string model, dataset = "fashion-mnist", data_dir, checkpoint;
    int threads = 1;
    int64_t batch_size = 64, limit = 0, latency_samples = 500;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd =
      app.add_subcommand("infer",
                         "Run a .obnn model on a test set: accuracy, images/s, latency; with "
                         "--checkpoint also LibTorch's agreement");
  cmd->add_option("--model", a->model, "The .obnn model file")->required();
  cmd->add_option("--dataset", a->dataset, "Data set (fashion-mnist, mnist, cifar10)")
      ->capture_default_str();
  cmd->add_option("--data-dir", a->data_dir, "Directory of the data set files");
  cmd->add_option("--checkpoint", a->checkpoint,
                  "Checkpoint the model was converted from: also run LibTorch (eval mode) and "
                  "report the agreement of predicted classes");
  cmd->add_option("--threads", a->threads, "Threads of the runtime (and of LibTorch)")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->batch_size, "Images per run for the throughput")
      ->capture_default_str();
  cmd->add_option("--limit", a->limit, "Use only the first N test images (0: all)");
  cmd->add_option("--latency-samples", a->latency_samples,
                  "Images timed one by one (batch 1) for latency_ms, the median")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the result as one JSON line");
  cmd->callback([a] {
    if (a->threads < 1) throw std::invalid_argument("--threads must be >= 1");
    if (a->batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
    runtime::InterpreterOptions ro;
    ro.threads = a->threads;
    const runtime::Interpreter net = runtime::Interpreter::from_file(a->model, ro);
    const data::Dataset test =
        data::load(a->dataset, data::Split::kTest, a->data_dir).head(a->limit);
    const at::Tensor images = test.images.contiguous();
    const int64_t n = test.size();
    const std::vector<int64_t> in_shape = net.input_shape();
    int64_t per_image = 1;
    for (int64_t d : in_shape) per_image *= d;
    if (n == 0 || images.numel() != n * per_image) {
      throw std::invalid_argument(a->model + ": expects images of " + std::to_string(per_image) +
                                  " values, but " + a->dataset + " has images of shape " +
                                  c10::str(images.sizes()));
    }
    const int64_t classes = static_cast<int64_t>(net.output_size());
    const float* pixels = images.data_ptr<float>();
    const int64_t* labels = test.labels.data_ptr<int64_t>();

    // Throughput over the whole set in batches, and the predictions.
    // images/s is the median over batches of (images / seconds): on a shared machine the wall
    // time of the whole loop also counts the time other processes held the core.
    std::vector<float> logits(static_cast<size_t>(n * classes));
    std::vector<double> seconds_per_image;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < n; s += a->batch_size) {
      const int64_t b = std::min(a->batch_size, n - s);
      const auto b0 = std::chrono::steady_clock::now();
      const std::vector<float> out = net.run(
          pixels + s * per_image, static_cast<size_t>(b * per_image), static_cast<size_t>(b));
      seconds_per_image.push_back(seconds_since(b0) / static_cast<double>(b));
      std::copy(out.begin(), out.end(), logits.begin() + s * classes);
    }
    const double seconds = seconds_since(t0);
    int64_t correct = 0;
    std::vector<int64_t> predicted(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      predicted[i] = argmax(logits.data() + i * classes, classes);
      correct += predicted[i] == labels[i] ? 1 : 0;
    }

    // Latency: batch 1, median over a sample of images.
    std::vector<double> latencies;
    const int64_t samples = std::min<int64_t>(std::max<int64_t>(a->latency_samples, 1), n);
    for (int64_t i = 0; i < samples; ++i) {
      const auto l0 = std::chrono::steady_clock::now();
      const std::vector<float> out =
          net.run(pixels + i * per_image, static_cast<size_t>(per_image), 1);
      latencies.push_back(seconds_since(l0));
    }

    nlohmann::json r = {{"model", a->model},
                        {"dataset", a->dataset},
                        {"count", n},
                        {"threads", a->threads},
                        {"batch_size", a->batch_size},
                        {"accuracy", static_cast<double>(correct) / static_cast<double>(n)},
                        {"images_per_second", 1.0 / median(seconds_per_image)},
                        {"wall_images_per_second", static_cast<double>(n) / seconds},
                        {"latency_ms", 1e3 * median(latencies)},
                        {"agreement", nullptr}};

    if (!a->checkpoint.empty()) {
      at::set_num_threads(a->threads);
      train::Checkpoint ck = train::load_checkpoint(a->checkpoint);
      ck.model->eval();
      at::NoGradGuard no_grad;
      int64_t same = 0, torch_correct = 0;
      double max_diff = 0.0;
      std::vector<double> torch_seconds_per_image;
      for (int64_t s = 0; s < n; s += a->batch_size) {
        const int64_t b = std::min(a->batch_size, n - s);
        const auto b0 = std::chrono::steady_clock::now();
        const at::Tensor out = ck.model->forward(images.narrow(0, s, b)).contiguous();
        torch_seconds_per_image.push_back(seconds_since(b0) / static_cast<double>(b));
        if (out.dim() != 2 || out.size(1) != classes) {
          throw std::invalid_argument(a->checkpoint + ": LibTorch output shape " +
                                      c10::str(out.sizes()) + " does not match the model's " +
                                      std::to_string(classes) + " outputs per image");
        }
        const float* o = out.data_ptr<float>();
        for (int64_t i = 0; i < b; ++i) {
          const int64_t cls = argmax(o + i * classes, classes);
          same += cls == predicted[s + i] ? 1 : 0;
          torch_correct += cls == labels[s + i] ? 1 : 0;
          for (int64_t c = 0; c < classes; ++c) {
            max_diff = std::max<double>(
                max_diff, std::fabs(o[i * classes + c] - logits[(s + i) * classes + c]));
          }
        }
      }
      r["agreement"] = static_cast<double>(same) / static_cast<double>(n);
      r["disagreements"] = n - same;
      r["max_abs_logit_diff"] = max_diff;
      r["torch_accuracy"] = static_cast<double>(torch_correct) / static_cast<double>(n);
      r["torch_images_per_second"] = 1.0 / median(torch_seconds_per_image);
    }

    if (a->json) {
      print_json(r);
      return;
    }
    std::cout << std::fixed << std::setprecision(2)
              << "accuracy: " << 100.0 * r["accuracy"].get<double>() << "% on " << n << " images\n"
              << std::setprecision(0) << "throughput: " << r["images_per_second"].get<double>()
              << " images/s (batch " << a->batch_size << ", " << a->threads << " thread"
              << (a->threads == 1 ? "" : "s") << ", median over batches; wall clock "
              << r["wall_images_per_second"].get<double>() << ")\n"
              << std::setprecision(3) << "latency: " << r["latency_ms"].get<double>()
              << " ms per image (batch 1, median of " << samples << ")\n";
    if (!a->checkpoint.empty()) {
      std::cout << std::setprecision(4)
                << "agreement with LibTorch: " << 100.0 * r["agreement"].get<double>() << "% ("
                << r["disagreements"] << " differ), max |logit difference| " << std::scientific
                << std::setprecision(2) << r["max_abs_logit_diff"].get<double>() << "\n"
                << std::fixed << std::setprecision(2) << "LibTorch: accuracy "
                << 100.0 * r["torch_accuracy"].get<double>() << "%, " << std::setprecision(0)
                << r["torch_images_per_second"].get<double>() << " images/s\n";
    }
    std::cout << std::flush;
  });
}

const Registrar infer_cmd(50, add_infer);

}  // namespace
}  // namespace onebit::cli
