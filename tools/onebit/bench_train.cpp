// `onebit bench --train`: images/s of training steps on LibTorch's float kernels and on
// onebit's binary kernels (nn::TrainingKernels), per thread count, with the split of a step
// between forward, backward and optimizer.

#include "bench_train.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/optimizer.h>

#include <chrono>
#include <iomanip>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "commands.h"
#include "onebit/constraints.h"
#include "onebit/nn/training_kernels.h"
#include "onebit/runtime/bench.h"
#include "onebit/runtime/kernels.h"
#include "onebit/train/op_profile.h"
#include "onebit/train/trainer.h"
#include "timing.h"

namespace onebit::cli {
namespace {

// Ops per path in the --profile table (the JSON has them all).
constexpr int kProfileRows = 15;

struct StepTimes {
  double forward = 0, backward = 0, optimizer = 0, step = 0;
  std::vector<train::OpProfile::Op> ops;  // with --profile: over all timed steps
  size_t steps = 0;                       // timed steps
};

// Median phase times of training steps on one batch of random images until `min_seconds`
// have passed (at least 5 steps, after 3 warm-up steps); with `profile`, the ops' self times
// per timed step.
StepTimes time_steps(const TrainBenchArgs& a, nn::TrainingKernels kernels, int threads,
                     bool profile) {
  nn::set_intra_op_threads(threads);
  nn::retain_freed_memory();
  nn::TrainingKernelsGuard guard(kernels);
  at::manual_seed(1);
  ZooModel z = build_zoo_model(a.zoo);
  nn::Graph model = z.model;
  model->train();
  train::TrainOptions o;
  o.model = z.name;
  o.optimizer = a.optimizer;
  if (a.libtorch_adam) o.optimizer_options["fused"] = false;
  auto optimizer = train::make_optimizer(o, model);
  std::vector<int64_t> shape = {a.batch_size};
  shape.insert(shape.end(), z.options.input_shape.begin(), z.options.input_shape.end());
  const at::Tensor x = nn::training_layout(at::randn(shape), nn::uses_runtime_kernels(*model));
  const at::Tensor y = at::randint(z.options.num_classes, {a.batch_size}, at::kLong);
  std::vector<double> fwd, bwd, opt, step;
  std::optional<train::OpProfile> ops;
  if (profile) ops.emplace();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    train::clear_gradients(model);
    const at::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    const auto t1 = std::chrono::steady_clock::now();
    loss.backward();
    const auto t2 = std::chrono::steady_clock::now();
    optimizer->step();
    apply_constraints(*model);
    const auto t3 = std::chrono::steady_clock::now();
    if (!std::isfinite(loss.item<double>())) {
      throw std::runtime_error("bench --train: the loss became " +
                               std::to_string(loss.item<double>()));
    }
    if (i < 3) {  // warm-up
      if (ops && i == 2) ops->clear();
      continue;
    }
    const auto s = [](auto d) { return std::chrono::duration<double>(d).count(); };
    fwd.push_back(s(t1 - t0));
    bwd.push_back(s(t2 - t1));
    opt.push_back(s(t3 - t2));
    step.push_back(s(t3 - t0));
    if (step.size() >= 5 && seconds_since(start) >= a.min_seconds) break;
  }
  StepTimes t{median(fwd), median(bwd), median(opt), median(step), {}, step.size()};
  if (ops) t.ops = ops->ops();
  return t;
}

}  // namespace

void bench_training(const TrainBenchArgs& a) {
  if (a.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
  if (a.threads.empty()) throw std::invalid_argument("--thread-counts needs at least one count");
  for (int t : a.threads) {
    if (t < 1) throw std::invalid_argument("--thread-counts: every count must be >= 1");
  }
  const nn::detail::ConvGradient conv_gradient = nn::detail::parse_conv_gradient(a.conv_gradient);
  const std::string name = zoo::canonical_name(a.zoo.model.empty() ? "larq-mnist" : a.zoo.model);
  TrainBenchArgs args = a;
  args.zoo.model = name;
  nlohmann::json rows = nlohmann::json::array();
  nlohmann::json profiles = nlohmann::json::array();
  for (const int threads : a.threads) {
    double float_step = 0;
    for (const auto kernels : {nn::TrainingKernels::kFloat, nn::TrainingKernels::kBinary}) {
      nn::detail::set_conv_gradient(conv_gradient);
      const bool profile = a.profile && threads == a.threads.front();
      const StepTimes t = time_steps(args, kernels, threads, profile);
      nn::detail::set_conv_gradient(nn::detail::ConvGradient::kAuto);
      if (kernels == nn::TrainingKernels::kFloat) float_step = t.step;
      rows.push_back({{"kernels", nn::training_kernels_name(kernels)},
                      {"threads", threads},
                      {"images_per_second", static_cast<double>(a.batch_size) / t.step},
                      {"step_ms", t.step * 1e3},
                      {"forward_ms", t.forward * 1e3},
                      {"backward_ms", t.backward * 1e3},
                      {"optimizer_ms", t.optimizer * 1e3},
                      {"speedup_vs_float", float_step / t.step}});
      if (!profile) continue;
      nlohmann::json ops = nlohmann::json::array();
      const auto steps = static_cast<double>(t.steps);
      double total = 0;
      for (const auto& op : t.ops) total += op.self_seconds / steps;
      for (const auto& op : t.ops) {
        ops.push_back({{"op", op.name},
                       {"calls_per_step", static_cast<double>(op.calls) / steps},
                       {"ms_per_step", op.self_seconds / steps * 1e3},
                       {"share_of_ops", op.self_seconds / steps / total}});
      }
      profiles.push_back(
          {{"kernels", nn::training_kernels_name(kernels)}, {"threads", threads}, {"ops", ops}});
    }
  }
  nlohmann::json j = {{"model", name},
                      {"batch_size", a.batch_size},
                      {"optimizer", a.optimizer},
                      {"conv_gradient", a.conv_gradient},
                      {"cpu", runtime::cpu_model_name()},
                      {"isa", runtime::isa_name(runtime::active_kernels().isa)},
                      {"train", rows}};
  if (a.profile) j["profile"] = profiles;
  if (a.json) {
    print_json(j);
    return;
  }
  std::cout << "training " << name << ", batch " << a.batch_size << ", " << a.optimizer
            << ", conv gradients " << a.conv_gradient << ", " << j["cpu"].get<std::string>()
            << ", runtime kernels " << j["isa"].get<std::string>()
            << "\nmedian per step: forward (with the loss), backward, optimizer step (with the "
               "constraints)\n"
            << std::setw(8) << "kernels" << std::setw(9) << "threads" << std::setw(10) << "images/s"
            << std::setw(10) << "step ms" << std::setw(12) << "forward ms" << std::setw(13)
            << "backward ms" << std::setw(14) << "optimizer ms" << std::setw(10) << "vs float"
            << "\n";
  for (const auto& r : rows) {
    std::cout << std::setw(8) << r["kernels"].get<std::string>() << std::setw(9)
              << r["threads"].get<int>() << std::fixed << std::setprecision(0) << std::setw(10)
              << r["images_per_second"].get<double>() << std::setprecision(2) << std::setw(10)
              << r["step_ms"].get<double>() << std::setw(12) << r["forward_ms"].get<double>()
              << std::setw(13) << r["backward_ms"].get<double>() << std::setw(14)
              << r["optimizer_ms"].get<double>() << std::setw(9)
              << r["speedup_vs_float"].get<double>() << "x\n";
  }
  for (const auto& p : profiles) {
    std::cout << "\n"
              << p["kernels"].get<std::string>() << " path, " << p["threads"].get<int>()
              << " thread(s): self time per step of the ops and autograd nodes (the profile's "
                 "own cost included)\n"
              << std::setw(10) << "ms/step" << std::setw(8) << "share" << std::setw(8) << "calls"
              << "  op\n";
    int shown = 0;
    for (const auto& op : p["ops"]) {
      if (shown++ == kProfileRows) break;
      std::cout << std::fixed << std::setprecision(2) << std::setw(10)
                << op["ms_per_step"].get<double>() << std::setprecision(1) << std::setw(7)
                << 100.0 * op["share_of_ops"].get<double>() << "%" << std::setprecision(0)
                << std::setw(8) << op["calls_per_step"].get<double>() << "  "
                << op["op"].get<std::string>() << "\n";
    }
  }
  std::cout << std::flush;
}

}  // namespace onebit::cli
