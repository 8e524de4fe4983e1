#include "onebit/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/nn/modules/batchnorm.h>

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "../json_integer.h"
#include "onebit/constraints.h"
#include "onebit/io.h"
#include "onebit/metrics.h"
#include "onebit/nn/batch_norm.h"
#include "onebit/nn/training_kernels.h"
#include "onebit/optim/scheduler.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/distributed.h"
#include "onebit/train/report.h"
#include "progress.h"

namespace onebit::train {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

nlohmann::json TrainOptions::to_json() const {
  return {{"model", model},
          {"model_options", model_options.to_json()},
          {"dataset", dataset},
          {"data_dir", data_dir},
          {"epochs", epochs},
          {"batch_size", batch_size},
          {"lr", lr},
          {"seed", seed},
          {"optimizer", optimizer},
          {"optimizer_options", optimizer_options},
          {"out_dir", out_dir},
          {"threads", threads},
          {"train_limit", train_limit},
          {"test_limit", test_limit},
          {"progress", progress},
          {"resume", resume},
          {"weights", weights},
          {"lr_schedule", lr_schedule},
          {"warmup_epochs", warmup_epochs},
          {"gamma_schedule", gamma_schedule},
          {"training_kernels", training_kernels},
          {"weight_decay", weight_decay},
          {"label_smoothing", label_smoothing},
          {"augment", augment},
          {"crop_padding", crop_padding},
          {"bn_reestimate_batches", bn_reestimate_batches},
          {"val_split", val_split},
          {"teacher", teacher},
          {"distill_weight", distill_weight},
          {"distill_temperature", distill_temperature},
          {"attention_weight", attention_weight},
          {"attention_nodes", attention_nodes}};
}

TrainOptions TrainOptions::from_json(const nlohmann::json& j) {
  TrainOptions o;
  if (!j.is_object()) throw std::invalid_argument("train options must be a JSON object");
  for (const auto& item : j.items()) {
    const auto& k = item.key();
    const auto& v = item.value();
    try {
      if (k == "model")
        o.model = v.get<std::string>();
      else if (k == "model_options")
        o.model_options = zoo::ModelOptions::from_json(v);
      else if (k == "dataset")
        o.dataset = v.get<std::string>();
      else if (k == "data_dir")
        o.data_dir = v.get<std::string>();
      else if (k == "epochs")
        o.epochs = detail::json_integer<int>(v, "train option \"epochs\"");
      else if (k == "batch_size")
        o.batch_size = detail::json_integer<int64_t>(v, "train option \"batch_size\"");
      else if (k == "lr")
        o.lr = v.get<double>();
      else if (k == "seed")
        o.seed = detail::json_integer<uint64_t>(v, "train option \"seed\"");
      else if (k == "optimizer")
        o.optimizer = v.get<std::string>();
      else if (k == "optimizer_options")
        o.optimizer_options = v;
      else if (k == "out_dir")
        o.out_dir = v.get<std::string>();
      else if (k == "weights")
        o.weights = v.get<std::string>();
      else if (k == "threads")
        o.threads = detail::json_integer<int>(v, "train option \"threads\"");
      else if (k == "train_limit")
        o.train_limit = detail::json_integer<int64_t>(v, "train option \"train_limit\"");
      else if (k == "test_limit")
        o.test_limit = detail::json_integer<int64_t>(v, "train option \"test_limit\"");
      else if (k == "progress")
        o.progress = v.get<bool>();
      else if (k == "resume")
        o.resume = v.get<std::string>();
      else if (k == "lr_schedule")
        o.lr_schedule = v.get<std::string>();
      else if (k == "warmup_epochs")
        o.warmup_epochs = v.get<double>();
      else if (k == "gamma_schedule")
        o.gamma_schedule = v.get<std::string>();
      else if (k == "training_kernels")
        o.training_kernels = v.get<std::string>();
      else if (k == "weight_decay")
        o.weight_decay = v.get<double>();
      else if (k == "label_smoothing")
        o.label_smoothing = v.get<double>();
      else if (k == "augment")
        o.augment = v.get<bool>();
      else if (k == "crop_padding")
        o.crop_padding = detail::json_integer<int>(v, "train option \"crop_padding\"");
      else if (k == "bn_reestimate_batches")
        o.bn_reestimate_batches =
            detail::json_integer<int64_t>(v, "train option \"bn_reestimate_batches\"");
      else if (k == "val_split")
        o.val_split = v.get<double>();
      else if (k == "teacher")
        o.teacher = v.get<std::string>();
      else if (k == "distill_weight")
        o.distill_weight = v.get<double>();
      else if (k == "distill_temperature")
        o.distill_temperature = v.get<double>();
      else if (k == "attention_weight")
        o.attention_weight = v.get<double>();
      else if (k == "attention_nodes")
        o.attention_nodes = v.get<std::vector<std::string>>();
      else
        throw std::invalid_argument("unknown train option \"" + k + "\"");
    } catch (const nlohmann::json::exception&) {
      throw std::invalid_argument("train option \"" + k + "\" has the wrong type: " + v.dump());
    }
  }
  return o;
}

std::pair<at::Tensor, int64_t> loss_and_correct(const at::Tensor& logits, const at::Tensor& labels,
                                                double label_smoothing) {
  const auto log_p = at::log_softmax(logits, 1);
  auto loss = at::nll_loss(log_p, labels);
  if (label_smoothing > 0) {
    loss = (1 - label_smoothing) * loss - label_smoothing * log_p.mean(1).mean();
  }
  int64_t correct = logits.argmax(1).eq(labels).sum().item<int64_t>();
  return {loss, correct};
}

EvalResult evaluate(nn::Graph model, const data::Dataset& set, int64_t batch_size) {
  const bool was_training = model->is_training();
  model->eval();
  at::NoGradGuard no_grad;
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  const int64_t n = set.size();
  const bool runtime_layers = nn::uses_runtime_kernels(*model);
  for (int64_t b = 0; b < n; b += batch_size) {
    const int64_t e = std::min(n, b + batch_size);
    auto logits = model->forward(nn::training_layout(set.images.slice(0, b, e), runtime_layers));
    auto [loss, c] = loss_and_correct(logits, set.labels.slice(0, b, e));
    loss_sum += loss.item<double>() * static_cast<double>(e - b);
    correct += c;
  }
  model->train(was_training);
  r.count = n;
  r.loss = n ? loss_sum / static_cast<double>(n) : 0;
  r.accuracy = n ? static_cast<double>(correct) / static_cast<double>(n) : 0;
  return r;
}

namespace {

void validate(const TrainOptions& o, const data::Dataset& train_set) {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (o.epochs < 1) fail("epochs must be >= 1, got " + std::to_string(o.epochs));
  if (o.batch_size < 1) fail("batch_size must be >= 1, got " + std::to_string(o.batch_size));
  if (!(o.lr > 0) || !std::isfinite(o.lr)) {
    std::ostringstream s;
    s << "lr must be a positive number, got " << o.lr;
    fail(s.str());
  }
  if (o.threads < 0) fail("threads must be >= 0, got " + std::to_string(o.threads));
  if (train_set.size() == 0) fail("the training set is empty");
  if (o.out_dir.empty()) fail("out_dir must not be empty");
  const auto in_range = [&](const char* name, double v, double lo, double hi, bool hi_open) {
    if (!(v >= lo && (hi_open ? v < hi : v <= hi))) {
      std::ostringstream msg;
      msg << name << " must be in [" << lo << ", " << hi << (hi_open ? ")" : "]") << ", got " << v;
      fail(msg.str());
    }
  };
  in_range("warmup_epochs", o.warmup_epochs, 0, o.epochs, true);
  in_range("weight_decay", o.weight_decay, 0, 1, false);
  in_range("label_smoothing", o.label_smoothing, 0, 1, true);
  in_range("crop_padding", o.crop_padding, 0, 1024, false);
  in_range("val_split", o.val_split, 0, 0.5, false);
  in_range("distill_weight", o.distill_weight, 0, 1, false);
  in_range("distill_temperature", o.distill_temperature, 1e-3, 1e3, false);
  in_range("attention_weight", o.attention_weight, 0, 1e6, false);
  if (o.teacher.empty() && o.attention_weight > 0) {
    fail("attention_weight needs a teacher (the model whose attention maps are matched)");
  }
  if (o.attention_weight > 0 && o.attention_nodes.empty()) {
    fail("attention_weight needs attention_nodes (graph node names, e.g. block outputs)");
  }
  if (o.bn_reestimate_batches < 0) {
    fail("bn_reestimate_batches must be >= 0, got " + std::to_string(o.bn_reestimate_batches));
  }
  if (o.training_kernels != "binary" && o.training_kernels != "float") {
    fail("training_kernels \"" + o.training_kernels +
         "\" is unknown: expected \"binary\" (onebit's runtime kernels) or \"float\" "
         "(LibTorch's float operations)");
  }
  if (o.gamma_schedule != "constant" && o.gamma_schedule != "auto" && o.optimizer != "bop") {
    fail("gamma_schedule \"" + o.gamma_schedule + "\" needs optimizer \"bop\", not \"" +
         o.optimizer + "\"");
  }
}

/// NaN or infinite inputs would silently poison batch-norm statistics: refuse them up front.
void check_finite(const data::Dataset& set, const char* which) {
  if (set.size() == 0) return;
  auto bad = set.images.reshape({set.size(), -1}).isfinite().logical_not().any(1);
  if (!bad.any().item<bool>()) return;
  const int64_t first = bad.nonzero()[0][0].item<int64_t>();
  const int64_t count = bad.sum().item<int64_t>();
  throw std::invalid_argument(std::string("the ") + which + " set has " + std::to_string(count) +
                              " image(s) with NaN or infinite values (first: index " +
                              std::to_string(first) + ")");
}

void append_line(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::app);
  out << j.dump() << "\n";
  if (!out) throw std::runtime_error(path + ": cannot append metrics");
}

std::atomic<int> g_stop{0};
static_assert(std::atomic<int>::is_always_lock_free, "request_stop must be async-signal-safe");

/// The state of LibTorch's default CPU generator (dropout, user layers) as hex, and back.
std::string generator_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  const at::Tensor state = gen.get_state().contiguous();
  const auto* p = state.data_ptr<uint8_t>();
  static const char* digits = "0123456789abcdef";
  std::string hex;
  hex.reserve(static_cast<size_t>(state.numel()) * 2);
  for (int64_t i = 0; i < state.numel(); ++i) {
    hex += digits[p[i] >> 4];
    hex += digits[p[i] & 15];
  }
  return hex;
}

void set_generator_state(const std::string& hex, const std::string& where) {
  if (hex.size() % 2 != 0 || hex.empty()) {
    throw std::runtime_error(where + ": the stored random generator state is damaged");
  }
  auto state = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
  auto* p = state.data_ptr<uint8_t>();
  const auto nibble = [&](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw std::runtime_error(where + ": the stored random generator state is damaged");
  };
  for (size_t i = 0; i < hex.size() / 2; ++i) {
    p[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  }
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  try {
    gen.set_state(state);
  } catch (const c10::Error& e) {
    throw std::runtime_error(where + ": the stored random generator state is damaged (" +
                             e.what_without_backtrace() + ")");
  }
}

/// Removes the temporary files (NAME.tmp.PID.N, see io::atomic_write) that a killed writer left in
/// `dir`; files of a process that still runs stay.
void remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const auto at = name.find(".tmp.");
    if (at == std::string::npos) continue;
    const std::string rest = name.substr(at + 5);
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || rest.find_first_not_of("0123456789") != dot) {
      continue;
    }
    const long pid = std::strtol(rest.substr(0, dot).c_str(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      fs::remove(entry.path(), ec);
    }
  }
}

/// A generator for one (epoch, batch) of a run: the same stream whether or not the run was
/// interrupted before that batch.
at::Generator batch_generator(uint64_t seed, int epoch, int64_t batch, int rank) {
  uint64_t h = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) * 0xBF58476D1CE4E5B9ULL +
               static_cast<uint64_t>(batch) * 0x94D049BB133111EBULL +
               static_cast<uint64_t>(rank) * 0xD6E8FEB86659FD93ULL;
  h ^= h >> 31;
  return at::detail::createCPUGenerator(h);
}

/// A batch-norm layer's momentum, whatever its class.
struct BatchNormRef {
  std::function<void(double)> set_momentum;
  std::function<void()> reset_statistics;
  std::function<void()> restore_momentum;
};

template <typename Impl>
bool torch_batch_norm(torch::nn::Module& m, std::vector<BatchNormRef>& out) {
  auto* bn = dynamic_cast<Impl*>(&m);
  if (bn == nullptr || !bn->options.track_running_stats()) return bn != nullptr;
  const auto momentum = bn->options.momentum();
  out.push_back({[bn](double v) { bn->options.momentum() = v; },
                 [bn] { bn->reset_running_stats(); },
                 [bn, momentum] { bn->options.momentum() = momentum; }});
  return true;
}

std::vector<BatchNormRef> batch_norm_layers(torch::nn::Module& model) {
  std::vector<BatchNormRef> out;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* bn = dynamic_cast<nn::BatchNormImpl*>(m.get())) {
      out.push_back({[bn](double v) { bn->options.momentum(v); },
                     [bn] {
                       bn->running_mean.zero_();
                       bn->running_var.fill_(1);
                     },
                     [bn, momentum = bn->options.momentum()] { bn->options.momentum(momentum); }});
      continue;
    }
    torch_batch_norm<torch::nn::BatchNorm1dImpl>(*m, out) ||
        torch_batch_norm<torch::nn::BatchNorm2dImpl>(*m, out) ||
        torch_batch_norm<torch::nn::BatchNorm3dImpl>(*m, out);
  }
  return out;
}

}  // namespace

void request_stop() { g_stop.store(1); }
bool stop_requested() { return g_stop.load() != 0; }

at::Tensor distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                             double temperature) {
  if (student_logits.sizes() != teacher_logits.sizes()) {
    std::ostringstream msg;
    msg << "distillation: the student's logits " << student_logits.sizes() << " and the teacher's "
        << teacher_logits.sizes() << " differ (other classes?)";
    throw std::invalid_argument(msg.str());
  }
  const auto log_s = at::log_softmax(student_logits / temperature, 1);
  const auto log_t = at::log_softmax(teacher_logits / temperature, 1);
  return (log_t.exp() * (log_t - log_s)).sum(1).mean() * (temperature * temperature);
}

at::Tensor attention_loss(const std::vector<at::Tensor>& student_maps,
                          const std::vector<at::Tensor>& teacher_maps) {
  if (student_maps.size() != teacher_maps.size() || student_maps.empty()) {
    throw std::invalid_argument("attention_loss: " + std::to_string(student_maps.size()) +
                                " student and " + std::to_string(teacher_maps.size()) +
                                " teacher maps (need the same, at least one)");
  }
  const auto attention = [](const at::Tensor& x) {
    auto a = x.pow(2).mean(1).flatten(1);
    return a / a.norm(2, {1}, true).clamp_min(1e-12);
  };
  at::Tensor total;
  for (size_t i = 0; i < student_maps.size(); ++i) {
    const auto& s = student_maps[i];
    const auto& t = teacher_maps[i];
    if (s.dim() != 4 || t.dim() != 4 || s.size(0) != t.size(0) || s.size(2) != t.size(2) ||
        s.size(3) != t.size(3)) {
      std::ostringstream msg;
      msg << "attention_loss: pair " << i << " has student " << s.sizes() << " and teacher "
          << t.sizes() << " (need [N, C, H, W] with the same N, H, W)";
      throw std::invalid_argument(msg.str());
    }
    auto term = (attention(s) - attention(t.detach())).norm(2, {1}).mean();
    total = total.defined() ? total + term : term;
  }
  return total / static_cast<double>(student_maps.size());
}

at::Tensor random_crop_flip(const at::Tensor& images, int64_t padding, at::Generator generator) {
  if (images.dim() != 4) {
    std::ostringstream msg;
    msg << "random_crop_flip: expected images [N, C, H, W], got " << images.sizes();
    throw std::invalid_argument(msg.str());
  }
  const int64_t n = images.size(0), h = images.size(2), w = images.size(3);
  auto offsets = at::randint(0, 2 * padding + 1, {n, 2}, generator, at::kLong);
  auto flips = at::randint(0, 2, {n}, generator, at::kLong);
  const auto padded = padding > 0
                          ? at::constant_pad_nd(images, {padding, padding, padding, padding}, -1.0)
                          : images;
  auto out = at::empty_like(images);
  const auto* off = offsets.data_ptr<int64_t>();
  const auto* flip = flips.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    auto crop =
        padded[i].slice(1, off[2 * i], off[2 * i] + h).slice(2, off[2 * i + 1], off[2 * i + 1] + w);
    out[i].copy_(flip[i] ? crop.flip({2}) : crop);
  }
  return out;
}

void reestimate_batch_norm(nn::Graph model, const at::Tensor& images, const at::Tensor& order,
                           int64_t batch_size, int64_t batches) {
  auto layers = batch_norm_layers(*model);
  const int64_t n = order.size(0);
  if (batch_size < 2) throw std::invalid_argument("reestimate_batch_norm: batch_size must be >= 2");
  batches = std::min(batches, n / batch_size);  // whole batches only
  if (layers.empty() || batches <= 0) return;
  const bool was_training = model->is_training();
  const auto restore = [&] {
    for (auto& l : layers) l.restore_momentum();
    model->train(was_training);
  };
  model->train();
  at::NoGradGuard no_grad;
  const bool runtime_layers = nn::uses_runtime_kernels(*model);
  try {
    for (auto& l : layers) l.reset_statistics();
    // running = (1 - 1/(k+1)) running + batch/(k+1): after k+1 batches, their exact mean (the
    // first, with momentum 1, replaces the reset statistics).
    for (int64_t k = 0; k < batches; ++k) {
      for (auto& l : layers) l.set_momentum(1.0 / static_cast<double>(k + 1));
      model->forward(nn::training_layout(
          images.index_select(0, order.slice(0, k * batch_size, (k + 1) * batch_size)),
          runtime_layers));
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
}

namespace {

/// Where an interrupted epoch stopped, and its running totals.
struct Position {
  int epoch = 0;
  int64_t batch = 0;  ///< batches of `epoch` done
  double loss_sum = 0, seconds = 0;
  int64_t correct = 0, seen = 0;
};

std::vector<std::shared_ptr<Callback>> schedule_callbacks(const TrainOptions& o,
                                                          int64_t steps_per_epoch) {
  std::vector<std::shared_ptr<Callback>> out;
  const int64_t total = steps_per_epoch * o.epochs;
  const auto warmup = static_cast<int64_t>(std::llround(o.warmup_epochs * steps_per_epoch));
  if (o.lr_schedule != "constant" || warmup > 0) {
    out.push_back(std::make_shared<optim::HyperparameterScheduler>(
        optim::schedules::by_name(o.lr_schedule, o.lr, total, steps_per_epoch, warmup), "lr",
        optim::UpdateFreq::kStep));
  } else {
    optim::schedules::by_name(o.lr_schedule, o.lr, total);  // the name is checked either way
  }
  const std::string gamma_schedule = o.gamma_schedule != "auto" ? o.gamma_schedule
                                     : o.optimizer == "bop"     ? "cosine"
                                                                : "constant";
  if (gamma_schedule != "constant") {
    out.push_back(std::make_shared<optim::HyperparameterScheduler>(
        optim::schedules::by_name(gamma_schedule, o.optimizer_options.value("gamma", 1e-3), total,
                                  steps_per_epoch),
        "gamma", optim::UpdateFreq::kStep, "bop"));
  }
  return out;
}

}  // namespace

TrainResult fit(nn::Graph model, const data::Dataset& full_train_set, const data::Dataset& test_set,
                const TrainOptions& options,
                const std::vector<std::shared_ptr<Callback>>& user_callbacks) {
  validate(options, full_train_set);
  check_finite(full_train_set, "training");
  check_finite(test_set, "test");
  // The last val_split of the training images select the best checkpoint.
  data::Dataset train_set = full_train_set, val_set;
  if (options.val_split > 0) {
    const int64_t total = full_train_set.size();
    const int64_t held = std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(options.val_split * static_cast<double>(total))));
    if (held >= total) throw std::invalid_argument("val_split leaves no training image");
    train_set = full_train_set.head(total - held);
    val_set = {full_train_set.images.slice(0, total - held),
               full_train_set.labels.slice(0, total - held), full_train_set.num_classes};
  }
  nn::set_intra_op_threads(options.threads);
  nn::retain_freed_memory();
  const nn::TrainingKernelsGuard kernels(nn::parse_training_kernels(options.training_kernels));
  const bool runtime_layers = nn::uses_runtime_kernels(*model);
  // Data parallelism (distributed.h): rank 0 alone writes files and progress.
  DataParallel parallel(options.process_group, model);
  const bool root = parallel.is_root();
  if (root) {
    fs::create_directories(options.out_dir);
    remove_stale_temporaries(options.out_dir);
  }
  const fs::path out(options.out_dir);
  const std::string metrics_path = (out / "metrics.jsonl").string();
  const std::string ckpt_path = (out / "checkpoint.pt").string();
  const std::string best_path = (out / "best.pt").string();

  const int64_t n = train_set.size();
  const int64_t steps = (n + options.batch_size - 1) / options.batch_size;
  auto callbacks = schedule_callbacks(options, steps);
  callbacks.insert(callbacks.end(), user_callbacks.begin(), user_callbacks.end());

  nn::Graph teacher{nullptr};
  if (!options.teacher.empty()) {
    teacher = load_checkpoint(options.teacher).model;
    teacher->eval();
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  }
  auto optimizer = make_optimizer(options, model);
  int first_epoch = 1;
  int64_t step = 0;
  Position position;
  double best_accuracy = -1;
  int best_epoch = 0;
  if (!options.resume.empty()) {
    const auto ck = load_checkpoint(options.resume);
    load_model_state(options.resume, model);
    load_optimizer_state(options.resume, *optimizer);
    const auto& c = ck.config;
    try {
      using detail::json_integer;
      first_epoch = json_integer<int>(c.at("epoch"), "checkpoint \"epoch\"") + 1;
      step = c.contains("step") ? json_integer<int64_t>(c.at("step"), "checkpoint \"step\"") : 0;
      best_accuracy = c.value("best_accuracy", -1.0);
      best_epoch = c.contains("best_epoch")
                       ? json_integer<int>(c.at("best_epoch"), "checkpoint \"best_epoch\"")
                       : 0;
      if (c.contains("position")) {
        const auto& p = c.at("position");
        position = {json_integer<int>(p.at("epoch"), "checkpoint position \"epoch\""),
                    json_integer<int64_t>(p.at("batch"), "checkpoint position \"batch\""),
                    p.at("loss_sum").get<double>(),
                    p.at("seconds").get<double>(),
                    json_integer<int64_t>(p.at("correct"), "checkpoint position \"correct\""),
                    json_integer<int64_t>(p.at("seen"), "checkpoint position \"seen\"")};
        if (position.epoch != first_epoch || position.batch < 0 || position.batch > steps) {
          throw std::runtime_error("position (epoch " + std::to_string(position.epoch) +
                                   ", batch " + std::to_string(position.batch) +
                                   ") does not fit this run's " + std::to_string(steps) +
                                   " batches per epoch (other data or batch size?)");
        }
      }
      if (c.contains("generator"))
        set_generator_state(c.at("generator").get<std::string>(), ck.path);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(ck.path + ": the stored training position is damaged (" + e.what() +
                               ")");
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(ck.path + ": the stored training position is damaged (" + e.what() +
                               ")");
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      if (what.rfind(ck.path, 0) == 0) throw;
      throw std::runtime_error(ck.path + ": " + what);
    }
  } else if (root) {
    std::ofstream(metrics_path, std::ios::trunc);  // a fresh run starts a fresh log
  }
  if (root) {
    auto config = options.to_json();
    config["resume"] = "";  // config.json reproduces the run from its start
    io::atomic_write_text((out / "config.json").string(), config.dump(2) + "\n");
  }
  parallel.broadcast_state();

  Context ctx{model, optimizer.get(), first_epoch, step, {}};
  for (auto& cb : callbacks) cb->on_train_begin(ctx);

  TrainResult result;
  result.checkpoint = ckpt_path;
  result.best_checkpoint = best_path;
  result.epochs = first_epoch - 1;
  result.best_accuracy = std::max(best_accuracy, 0.0);
  result.best_epoch = best_epoch;
  double train_seconds = 0;
  int64_t trained_images = 0;
  const auto config_for = [&](int epoch) {
    return nlohmann::json{{"train", options.to_json()},
                          {"epoch", epoch},
                          {"step", step},
                          {"world_size", parallel.world_size()},
                          {"best_accuracy", best_accuracy},
                          {"best_epoch", best_epoch},
                          {"generator", generator_state()}};
  };
  // Ctrl-C (request_stop): every rank stops at the same step; single processes at once,
  // data-parallel ranks agree every 16 steps (a sum of their flags).
  const auto stop_now = [&](int64_t batch) {
    if (parallel.world_size() == 1) return stop_requested();
    if (batch % 16 != 0) return false;
    return parallel.sum({stop_requested() ? 1.0 : 0.0})[0] > 0;
  };

  for (int epoch = first_epoch; epoch <= options.epochs; ++epoch) {
    ctx.epoch = epoch;
    for (auto& cb : callbacks) cb->on_epoch_begin(ctx);
    model->train();
    auto gen = at::detail::createCPUGenerator(options.seed * 1000003ULL + epoch);
    auto perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    int64_t first_batch = 0;
    double loss_sum = 0, resumed_seconds = 0;
    int64_t correct = 0, seen = 0;
    if (position.epoch == epoch) {
      first_batch = position.batch;
      loss_sum = position.loss_sum;
      correct = position.correct;
      seen = position.seen;
      resumed_seconds = position.seconds;
    }
    ProgressBar bar(options.progress && root, epoch, options.epochs, steps, first_batch);
    const auto start = Clock::now();
    const auto elapsed = [&] {
      return resumed_seconds + std::chrono::duration<double>(Clock::now() - start).count();
    };
    for (int64_t s = first_batch; s < steps; ++s) {
      auto global_idx =
          perm.slice(0, s * options.batch_size, std::min(n, (s + 1) * options.batch_size));
      auto idx = parallel.shard(global_idx);
      const int64_t b = idx.size(0);
      clear_gradients(model);
      double loss_value = 0;
      int64_t c = 0;
      if (b == 0) {  // fewer images than ranks in the last batch: this rank adds zero gradients
        parallel.reduce_gradients();
      } else {
        auto x = train_set.images.index_select(0, idx);
        auto y = train_set.labels.index_select(0, idx);
        if (options.augment) {
          x = random_crop_flip(x, options.crop_padding,
                               batch_generator(options.seed, epoch, s, parallel.rank()));
        }
        x = nn::training_layout(x, runtime_layers);
        std::vector<at::Tensor> maps, teacher_maps;
        at::Tensor teacher_logits;
        if (teacher) {
          at::NoGradGuard no_grad;
          teacher_logits =
              options.attention_weight > 0
                  ? teacher->forward_with_taps(x, options.attention_nodes, teacher_maps)
                  : teacher->forward(x);
        }
        auto logits = options.attention_weight > 0
                          ? model->forward_with_taps(x, options.attention_nodes, maps)
                          : model->forward(x);
        auto [loss, correct_now] = loss_and_correct(logits, y, options.label_smoothing);
        if (teacher) {
          loss = (1 - options.distill_weight) * loss +
                 options.distill_weight *
                     distillation_loss(logits, teacher_logits, options.distill_temperature);
          if (options.attention_weight > 0) {
            loss = loss + options.attention_weight * attention_loss(maps, teacher_maps);
          }
        }
        loss_value = loss.item<double>();
        c = correct_now;
        if (!std::isfinite(loss_value)) {
          std::ostringstream msg;
          msg << "training diverged: the loss is " << loss_value << " at epoch " << epoch
              << ", step " << s + 1 << " of " << steps << " (lr " << options.lr
              << "); lower the learning rate or check the input data for NaNs";
          throw std::runtime_error(msg.str());
        }
        const double scale = parallel.loss_scale(b, global_idx.size(0));
        (scale == 1.0 ? loss : loss * scale).backward();
        parallel.reduce_gradients();
      }
      optimizer->step();
      apply_constraints(*model);
      ctx.step = ++step;
      for (auto& cb : callbacks) cb->on_batch_end(ctx);
      loss_sum += loss_value * static_cast<double>(b);
      correct += c;
      seen += b;
      const double secs = elapsed();
      // All ranks' images, about (shards differ by at most one image).
      const double all_seen = static_cast<double>(seen) * parallel.world_size();
      bar.update(s + 1, seen ? loss_sum / seen : 0, seen ? static_cast<double>(correct) / seen : 0,
                 secs > 0 ? all_seen / secs : 0, ctx.progress);
      if (s + 1 < steps && stop_now(s + 1)) {
        if (root) {
          auto config = config_for(epoch - 1);
          config["position"] = {{"epoch", epoch},     {"batch", s + 1}, {"loss_sum", loss_sum},
                                {"correct", correct}, {"seen", seen},   {"seconds", secs}};
          save_checkpoint(ckpt_path, model, optimizer.get(), config);
        }
        bar.finish("interrupted");
        g_stop.store(0);
        throw Interrupted("interrupted at epoch " + std::to_string(epoch) + ", batch " +
                          std::to_string(s + 1) + " of " + std::to_string(steps) +
                          "; the checkpoint " + ckpt_path + " holds this position");
      }
    }
    const double secs = elapsed();
    if (parallel.world_size() > 1) {  // epoch totals over all ranks; one set of BN statistics
      auto totals =
          parallel.sum({loss_sum, static_cast<double>(correct), static_cast<double>(seen)});
      loss_sum = totals[0];
      correct = static_cast<int64_t>(totals[1]);
      seen = static_cast<int64_t>(totals[2]);
    }
    if (options.bn_reestimate_batches > 0) {
      // Each rank its shard of the first batches of this epoch's order, then the average.
      std::vector<at::Tensor> parts;
      for (int64_t k = 0; k < std::min(options.bn_reestimate_batches, steps); ++k) {
        parts.push_back(parallel.shard(
            perm.slice(0, k * options.batch_size, std::min(n, (k + 1) * options.batch_size))));
      }
      const int64_t local_batch = parts.empty() ? 0 : parts.front().size(0);
      if (local_batch > 1) {
        reestimate_batch_norm(model, train_set.images, at::cat(parts), local_batch,
                              static_cast<int64_t>(parts.size()));
      }
    }
    if (parallel.world_size() > 1) parallel.average_buffers();
    train_seconds += secs;
    trained_images += seen;
    auto test = evaluate(model, test_set, 256, parallel);
    nlohmann::json metrics = {{"epoch", epoch},
                              {"step", step},
                              {"train_loss", seen ? loss_sum / seen : 0},
                              {"train_accuracy", seen ? static_cast<double>(correct) / seen : 0},
                              {"test_loss", test.loss},
                              {"test_accuracy", test.accuracy},
                              {"images_per_second", secs > 0 ? seen / secs : 0},
                              {"seconds", secs}};
    double selection = test.accuracy;
    if (val_set.size() > 0) {
      auto val = evaluate(model, val_set, 256, parallel);
      metrics["val_loss"] = val.loss;
      metrics["val_accuracy"] = val.accuracy;
      selection = val.accuracy;
    }
    for (auto& cb : callbacks) cb->on_epoch_end(ctx, metrics);
    const bool improved = selection > best_accuracy;
    if (improved) {
      best_accuracy = selection;
      best_epoch = epoch;
    }
    metrics["best_epoch"] = best_epoch;
    if (root) {
      append_line(metrics_path, metrics);
      auto config = config_for(epoch);
      config["test_accuracy"] = test.accuracy;
      if (improved) save_checkpoint(best_path, model, nullptr, config);
      save_checkpoint(ckpt_path, model, optimizer.get(), config);
    }
    std::ostringstream summary;
    summary.setf(std::ios::fixed);
    summary.precision(2);
    summary << "epoch " << epoch << "/" << options.epochs << ": train loss "
            << (seen ? loss_sum / seen : 0) << ", train acc " << (seen ? 100.0 * correct / seen : 0)
            << "%, test acc " << 100.0 * test.accuracy << "%";
    if (val_set.size() > 0) summary << ", val acc " << 100.0 * selection << "%";
    summary << ", " << static_cast<int64_t>(secs > 0 ? seen / secs : 0) << " img/s"
            << (improved ? " (best)" : "");
    bar.finish(summary.str());
    result.test_accuracy = test.accuracy;
    result.test_loss = test.loss;
    result.epochs = epoch;
    result.best_accuracy = best_accuracy;
    result.best_epoch = best_epoch;
    result.history.push_back(metrics);
    if (epoch < options.epochs && stop_now(0)) {
      g_stop.store(0);
      throw Interrupted("interrupted after epoch " + std::to_string(epoch) + "; the checkpoint " +
                        ckpt_path + " holds this position");
    }
  }
  if (result.history.empty()) {  // resumed a finished run: report the stored model
    auto test = evaluate(model, test_set, 256, parallel);
    result.test_accuracy = test.accuracy;
    result.test_loss = test.loss;
  }
  result.images_per_second = train_seconds > 0 ? trained_images / train_seconds : 0;
  return result;
}

TrainResult train(const TrainOptions& options,
                  const std::vector<std::shared_ptr<Callback>>& callbacks) {
  auto train_set =
      data::load(options.dataset, data::Split::kTrain, options.data_dir).head(options.train_limit);
  auto test_set =
      data::load(options.dataset, data::Split::kTest, options.data_dir).head(options.test_limit);
  auto model_options = options.model_options;
  model_options.input_shape = {train_set.images.size(1), train_set.images.size(2),
                               train_set.images.size(3)};
  model_options.num_classes = train_set.num_classes;
  at::manual_seed(options.seed);
  auto model = zoo::build(options.model, model_options);
  if (!options.weights.empty()) load_model_state(options.weights, model);
  TrainOptions effective = options;
  effective.model_options = model_options;
  // `onebit train` logs the flip ratio of every binary kernel (and shows the mean as "flip").
  auto all_callbacks = callbacks;
  all_callbacks.push_back(std::make_shared<metrics::FlipRatioCallback>());
  // ... and writes out_dir/report.html after every epoch (last, so that it shows every metric).
  if (!options.process_group || options.process_group->rank() == 0) {  // rank 0 alone writes
    all_callbacks.push_back(std::make_shared<ReportCallback>(
        effective, model_options.input_shape, options.model + ": " + options.out_dir));
  }
  return fit(model, train_set, test_set, effective, all_callbacks);
}

}  // namespace onebit::train
