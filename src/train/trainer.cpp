#include "onebit/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "onebit/constraints.h"
#include "onebit/io.h"
#include "onebit/metrics.h"
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
          {"weights", weights}};
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
        o.epochs = v.get<int>();
      else if (k == "batch_size")
        o.batch_size = v.get<int64_t>();
      else if (k == "lr")
        o.lr = v.get<double>();
      else if (k == "seed")
        o.seed = v.get<uint64_t>();
      else if (k == "optimizer")
        o.optimizer = v.get<std::string>();
      else if (k == "optimizer_options")
        o.optimizer_options = v;
      else if (k == "out_dir")
        o.out_dir = v.get<std::string>();
      else if (k == "weights")
        o.weights = v.get<std::string>();
      else if (k == "threads")
        o.threads = v.get<int>();
      else if (k == "train_limit")
        o.train_limit = v.get<int64_t>();
      else if (k == "test_limit")
        o.test_limit = v.get<int64_t>();
      else if (k == "progress")
        o.progress = v.get<bool>();
      else if (k == "resume")
        o.resume = v.get<std::string>();
      else
        throw std::invalid_argument("unknown train option \"" + k + "\"");
    } catch (const nlohmann::json::exception&) {
      throw std::invalid_argument("train option \"" + k + "\" has the wrong type: " + v.dump());
    }
  }
  return o;
}

std::pair<at::Tensor, int64_t> loss_and_correct(const at::Tensor& logits,
                                                const at::Tensor& labels) {
  auto loss = at::nll_loss(at::log_softmax(logits, 1), labels);
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
  for (int64_t b = 0; b < n; b += batch_size) {
    const int64_t e = std::min(n, b + batch_size);
    auto logits = model->forward(set.images.slice(0, b, e));
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

}  // namespace

TrainResult fit(nn::Graph model, const data::Dataset& train_set, const data::Dataset& test_set,
                const TrainOptions& options,
                const std::vector<std::shared_ptr<Callback>>& callbacks) {
  validate(options, train_set);
  check_finite(train_set, "training");
  check_finite(test_set, "test");
  if (options.threads > 0) at::set_num_threads(options.threads);
  // Data parallelism (distributed.h): rank 0 alone writes files and progress.
  DataParallel parallel(options.process_group, model);
  const bool root = parallel.is_root();
  if (root) fs::create_directories(options.out_dir);
  const std::string metrics_path = (fs::path(options.out_dir) / "metrics.jsonl").string();
  const std::string ckpt_path = (fs::path(options.out_dir) / "checkpoint.pt").string();

  auto optimizer = make_optimizer(options, model);
  int first_epoch = 1;
  int64_t step = 0;
  if (!options.resume.empty()) {
    auto ck_config = load_checkpoint(options.resume).config;
    load_model_state(options.resume, model);
    load_optimizer_state(options.resume, *optimizer);
    first_epoch = ck_config.at("epoch").get<int>() + 1;
    step = ck_config.value("step", int64_t{0});
  } else if (root) {
    std::ofstream(metrics_path, std::ios::trunc);  // a fresh run starts a fresh log
  }
  if (root) {
    io::atomic_write_text((fs::path(options.out_dir) / "config.json").string(),
                          options.to_json().dump(2) + "\n");
  }
  parallel.broadcast_state();

  Context ctx{model, optimizer.get(), first_epoch, step, {}};
  for (auto& cb : callbacks) cb->on_train_begin(ctx);

  TrainResult result;
  result.checkpoint = ckpt_path;
  result.epochs = first_epoch - 1;
  const int64_t n = train_set.size();
  const int64_t steps = (n + options.batch_size - 1) / options.batch_size;
  double train_seconds = 0;
  int64_t trained_images = 0;

  for (int epoch = first_epoch; epoch <= options.epochs; ++epoch) {
    ctx.epoch = epoch;
    for (auto& cb : callbacks) cb->on_epoch_begin(ctx);
    model->train();
    auto gen = at::detail::createCPUGenerator(options.seed * 1000003ULL + epoch);
    auto perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    ProgressBar bar(options.progress && root, epoch, options.epochs, steps);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    const auto start = Clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      auto global_idx =
          perm.slice(0, s * options.batch_size, std::min(n, (s + 1) * options.batch_size));
      auto idx = parallel.shard(global_idx);
      const int64_t b = idx.size(0);
      optimizer->zero_grad();
      if (b == 0) {  // fewer images than ranks in the last batch: this rank adds zero gradients
        parallel.reduce_gradients();
        optimizer->step();
        apply_constraints(*model);
        ctx.step = ++step;
        for (auto& cb : callbacks) cb->on_batch_end(ctx);
        continue;
      }
      auto x = train_set.images.index_select(0, idx);
      auto y = train_set.labels.index_select(0, idx);
      auto logits = model->forward(x);
      auto [loss, c] = loss_and_correct(logits, y);
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        std::ostringstream msg;
        msg << "training diverged: the loss is " << loss_value << " at epoch " << epoch << ", step "
            << s + 1 << " of " << steps << " (lr " << options.lr
            << "); lower the learning rate or check the input data for NaNs";
        throw std::runtime_error(msg.str());
      }
      const double scale = parallel.loss_scale(b, global_idx.size(0));
      (scale == 1.0 ? loss : loss * scale).backward();
      parallel.reduce_gradients();
      optimizer->step();
      apply_constraints(*model);
      ctx.step = ++step;
      for (auto& cb : callbacks) cb->on_batch_end(ctx);
      loss_sum += loss_value * static_cast<double>(b);
      correct += c;
      seen += b;
      const double secs = std::chrono::duration<double>(Clock::now() - start).count();
      // All ranks' images, about (shards differ by at most one image).
      const double all_seen = static_cast<double>(seen) * parallel.world_size();
      bar.update(s + 1, loss_sum / seen, static_cast<double>(correct) / seen,
                 secs > 0 ? all_seen / secs : 0, ctx.progress);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (parallel.world_size() > 1) {  // epoch totals over all ranks; one set of BN statistics
      auto totals =
          parallel.sum({loss_sum, static_cast<double>(correct), static_cast<double>(seen)});
      loss_sum = totals[0];
      correct = static_cast<int64_t>(totals[1]);
      seen = static_cast<int64_t>(totals[2]);
      parallel.average_buffers();
    }
    train_seconds += secs;
    trained_images += seen;
    auto test = evaluate(model, test_set, 256, parallel);
    nlohmann::json metrics = {{"epoch", epoch},
                              {"step", step},
                              {"train_loss", loss_sum / seen},
                              {"train_accuracy", static_cast<double>(correct) / seen},
                              {"test_loss", test.loss},
                              {"test_accuracy", test.accuracy},
                              {"images_per_second", seen / secs},
                              {"seconds", secs}};
    for (auto& cb : callbacks) cb->on_epoch_end(ctx, metrics);
    if (root) {
      append_line(metrics_path, metrics);
      nlohmann::json config = {{"train", options.to_json()},
                               {"epoch", epoch},
                               {"step", step},
                               {"test_accuracy", test.accuracy},
                               {"world_size", parallel.world_size()}};
      save_checkpoint(ckpt_path, model, optimizer.get(), config);
    }
    std::ostringstream summary;
    summary.setf(std::ios::fixed);
    summary.precision(2);
    summary << "epoch " << epoch << "/" << options.epochs << ": train loss " << loss_sum / seen
            << ", train acc " << 100.0 * correct / seen << "%, test acc " << 100.0 * test.accuracy
            << "%, " << static_cast<int64_t>(seen / secs) << " img/s";
    bar.finish(summary.str());
    result.test_accuracy = test.accuracy;
    result.test_loss = test.loss;
    result.epochs = epoch;
    result.history.push_back(metrics);
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
