// onebit train / eval / models.

#include <signal.h>
#include <time.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "onebit/data/datasets.h"
#include "onebit/io.h"
#include "onebit/optim/scheduler.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/distributed.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace onebit::cli {
namespace {

/// This process's arguments, argv[0] first (empty if /proc/self/cmdline cannot be read).
std::vector<std::string> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  return args;
}

/// This process's command line without `--nproc N` / `--nproc=N`, argv[0] replaced by the
/// executable's path (what the local workers run).
std::vector<std::string> worker_command_line() {
  const std::vector<std::string> args = own_command_line();
  if (args.empty()) throw std::runtime_error("--nproc: cannot read /proc/self/cmdline");
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::vector<std::string> out{ec ? std::string("/proc/self/exe") : exe.string()};
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--nproc") {
      ++i;
    } else if (args[i].rfind("--nproc=", 0) != 0) {
      out.push_back(args[i]);
    }
  }
  return out;
}

/// A --config file: TrainOptions' JSON form, or a checkpoint config ({"train": {...}}).
nlohmann::json read_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open the config file");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": not a JSON config (" + e.what() + ")");
  }
  if (j.is_object() && j.contains("train") && j.at("train").is_object()) j = j.at("train");
  if (!j.is_object()) throw std::runtime_error(path + ": the config must be a JSON object");
  return j;
}

/// Shell-quotes one argument when it needs it.
std::string shell_quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789_-+=.,/:@%") == std::string::npos) {
    return arg;
  }
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// out_dir/command.txt: this process's exact command line and working directory.
void write_command(const std::string& out_dir) {
  std::string line;
  for (const auto& arg : own_command_line()) line += (line.empty() ? "" : " ") + shell_quote(arg);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  io::atomic_write_text(
      (std::filesystem::path(out_dir) / "command.txt").string(),
      "cd " + shell_quote(std::filesystem::current_path().string()) + " && " + line + "\n");
}

/// Ctrl-C: the first asks training to save its exact position and stop; another, more than two
/// seconds later, ends the process at once.
std::atomic<long long> g_first_interrupt_ns{0};

extern "C" void on_interrupt(int) {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const long long ns = static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec;
  const long long first = g_first_interrupt_ns.load();
  if (first != 0 && ns - first > 2000000000LL) {
    ::signal(SIGINT, SIG_DFL);
    ::raise(SIGINT);
    return;
  }
  if (first == 0) g_first_interrupt_ns.store(ns);
  train::request_stop();
}

void install_stop_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
}

void add_train(CLI::App& app) {
  auto opts = std::make_shared<train::TrainOptions>();
  auto json = std::make_shared<bool>(false);
  auto float_model = std::make_shared<bool>(false);
  auto no_progress = std::make_shared<bool>(false);
  opts->out_dir = "runs/larq-mnist";
  auto* cmd = app.add_subcommand("train", "Train a model from the zoo on a data set");
  // Options that a --config file can also set: CLI option -> key of TrainOptions' JSON form.
  auto keyed = std::make_shared<std::vector<std::pair<CLI::Option*, std::string>>>();
  const auto key = [keyed](CLI::Option* option, const std::string& json_key) {
    keyed->emplace_back(option, json_key);
    return option;
  };
  std::string names;
  for (const auto& n : zoo::model_names()) names += (names.empty() ? "" : ", ") + n;
  key(cmd->add_option("--model", opts->model,
                      "Model name (" + names + "; `onebit models` lists them)"),
      "model")
      ->capture_default_str();
  key(cmd->add_option("--dataset", opts->dataset, "Data set (fashion-mnist, mnist, cifar10)"),
      "dataset")
      ->capture_default_str();
  key(cmd->add_option(
          "--data-dir", opts->data_dir,
          "Directory of the data set files (default: the data set's standard location)"),
      "data_dir");
  key(cmd->add_option("--epochs", opts->epochs, "Number of epochs"), "epochs")
      ->capture_default_str();
  key(cmd->add_option("--batch-size", opts->batch_size, "Batch size"), "batch_size")
      ->capture_default_str();
  key(cmd->add_option("--lr", opts->lr, "Learning rate"), "lr")->capture_default_str();
  key(cmd->add_option("--seed", opts->seed, "Random seed"), "seed")->capture_default_str();
  key(cmd->add_option("--optimizer", opts->optimizer,
                      "Optimizer (adam, sgd, bop: Bop for binary kernels + Adam for the rest)"),
      "optimizer")
      ->capture_default_str();
  auto bop_threshold = std::make_shared<double>(0.0);
  auto bop_gamma = std::make_shared<double>(0.0);
  auto* threshold_opt =
      cmd->add_option("--bop-threshold", *bop_threshold, "Bop's flip threshold (default 1e-6)");
  auto* gamma_opt =
      cmd->add_option("--bop-gamma", *bop_gamma, "Bop's adaptivity rate gamma (default 1e-3)");
  key(cmd->add_option("--lr-schedule", opts->lr_schedule,
                      "Learning-rate schedule, updated every step (constant, cosine, step, "
                      "one-cycle)"),
      "lr_schedule")
      ->capture_default_str();
  key(cmd->add_option("--warmup-epochs", opts->warmup_epochs,
                      "Linear learning-rate warm-up over this many epochs (fractions allowed)"),
      "warmup_epochs")
      ->capture_default_str();
  key(cmd->add_option("--gamma-schedule", opts->gamma_schedule,
                      "Schedule of Bop's gamma, updated every step (auto: cosine for Bop; "
                      "constant, cosine, step, one-cycle)"),
      "gamma_schedule")
      ->capture_default_str();
  key(cmd->add_option(
          "--training-kernels", opts->training_kernels,
          "Kernels of quantized layers (binary: onebit's bit-packed kernels for "
          "every +-1 kernel, same outputs, 1.2-2.3x faster on one thread; float: LibTorch's float "
          "operations)"),
      "training_kernels")
      ->capture_default_str();
  key(cmd->add_option("--weight-decay", opts->weight_decay,
                      "Decoupled weight decay of real-valued weights (AdamW; never latent binary "
                      "weights, biases or batch norm)"),
      "weight_decay")
      ->capture_default_str();
  key(cmd->add_option("--label-smoothing", opts->label_smoothing, "Label smoothing in [0, 1)"),
      "label_smoothing")
      ->capture_default_str();
  key(cmd->add_flag("--augment", opts->augment,
                    "Random crop (after --crop-padding) and horizontal flip of training images"),
      "augment");
  key(cmd->add_option("--crop-padding", opts->crop_padding, "Padding of --augment's random crop"),
      "crop_padding")
      ->capture_default_str();
  key(cmd->add_option("--bn-reestimate-batches", opts->bn_reestimate_batches,
                      "Re-estimate batch-norm statistics over this many batches after each epoch "
                      "(0: off)"),
      "bn_reestimate_batches")
      ->capture_default_str();
  key(cmd->add_option("--val-split", opts->val_split,
                      "Hold out this fraction of the training set to pick best.pt (0: pick on the "
                      "test set)"),
      "val_split")
      ->capture_default_str();
  key(cmd->add_option("--teacher", opts->teacher,
                      "Distil from this checkpoint's model (file or run directory)"),
      "teacher");
  key(cmd->add_option("--distill-weight", opts->distill_weight,
                      "Weight a of the distillation term: (1 - a) CE + a T^2 KL"),
      "distill_weight")
      ->capture_default_str();
  key(cmd->add_option("--distill-temperature", opts->distill_temperature,
                      "Temperature T of the distillation term"),
      "distill_temperature")
      ->capture_default_str();
  key(cmd->add_option("--attention-weight", opts->attention_weight,
                      "Weight of Real-to-Binary's attention-matching loss (needs --teacher and "
                      "--attention-nodes)"),
      "attention_weight")
      ->capture_default_str();
  key(cmd->add_option("--attention-nodes", opts->attention_nodes,
                      "Graph nodes whose outputs are matched (names as in `onebit summary`)")
          ->delimiter(','),
      "attention_nodes");
  auto real_weights = std::make_shared<bool>(false);
  auto* real_weights_opt = cmd->add_flag(
      "--real-weights", *real_weights,
      "Keep the kernels real-valued, activations binary: stage 1 of two-stage training (stage 2: "
      "--weights STAGE1_DIR)");
  auto config_file = std::make_shared<std::string>();
  cmd->add_option("--config", *config_file,
                  "Read every option from this JSON file (a run's config.json, or any subset of "
                  "its keys); options given on the command line override it");
  key(cmd->add_option("--out", opts->out_dir,
                      "Output directory (checkpoint.pt, metrics.jsonl, config.json)"),
      "out_dir")
      ->capture_default_str();
  key(cmd->add_option("--threads", opts->threads, "Intra-op threads (0: LibTorch's default)"),
      "threads")
      ->capture_default_str();
  auto bn_momentum = std::make_shared<double>(0.0);
  auto* bn_momentum_opt = cmd->add_option(
      "--bn-momentum", *bn_momentum,
      "Batch-norm momentum, LibTorch convention (Keras 0.99 = 0.01; default: the model's own)");
  key(cmd->add_option("--train-limit", opts->train_limit,
                      "Use only the first N training images (0: all)"),
      "train_limit");
  key(cmd->add_option("--test-limit", opts->test_limit,
                      "Use only the first N test images (0: all)"),
      "test_limit");
  key(cmd->add_option("--weights", opts->weights,
                      "Start from the model weights of this checkpoint (fine-tuning); missing or "
                      "mis-shaped tensors are listed"),
      "weights");
  key(cmd->add_option("--resume", opts->resume,
                      "Continue training from this checkpoint (file or directory)"),
      "resume");
  auto nproc = std::make_shared<int>(1);
  auto dist = std::make_shared<train::DistributedOptions>();
  cmd->add_option("--nproc", *nproc,
                  "Train data-parallel in N local processes (Gloo over 127.0.0.1); --batch-size "
                  "stays the global batch, split over the processes. Multi-machine: run one "
                  "process per rank with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set instead "
                  "(docs/distributed.md)")
      ->capture_default_str();
  cmd->add_option("--dist-timeout", dist->timeout_seconds,
                  "Seconds a data-parallel rank waits for its peers (rendezvous and each "
                  "all-reduce) before failing")
      ->capture_default_str();
  cmd->add_option("--dist-backend", dist->backend, "Data-parallel backend (gloo)")
      ->capture_default_str();
  auto* float_opt = cmd->add_flag("--float", *float_model,
                                  "Train the float copy of the model (all quantizers off)");
  cmd->add_flag("--no-progress", *no_progress, "Do not draw the progress bar");
  cmd->add_flag("--json", *json, "Print the result as one JSON line");
  cmd->callback([=] {
    if (*nproc < 1)
      throw std::invalid_argument("--nproc must be >= 1, got " + std::to_string(*nproc));
    if (!config_file->empty()) {
      // The file's options, then those given on the command line.
      nlohmann::json j = read_config(*config_file);
      const nlohmann::json given = opts->to_json();
      for (const auto& [option, json_key] : *keyed) {
        if (option->count() > 0) j[json_key] = given.at(json_key);
      }
      try {
        *opts = train::TrainOptions::from_json(j);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(*config_file + ": " + e.what());
      }
    }
    const char* world_env = std::getenv("WORLD_SIZE");
    // The command that started the run (the launcher's, not its workers').
    const char* rank_env = std::getenv("RANK");
    if (std::getenv("ONEBIT_LOCAL_WORKER") == nullptr &&
        (rank_env == nullptr || std::string(rank_env) == "0")) {
      write_command(opts->out_dir);
    }
    if (*nproc > 1) {
      if (world_env != nullptr) {
        throw std::invalid_argument("--nproc " + std::to_string(*nproc) +
                                    " starts its own workers, but WORLD_SIZE is set (" + world_env +
                                    "): use one or the other");
      }
      dist->validate();
      // Each worker's trainer sizes OpenBLAS's own pool (nn::set_intra_op_threads).
      const std::vector<std::string> env{"ONEBIT_LOCAL_WORKER=1"};
      const int code = train::run_local_workers(worker_command_line(), *nproc, 5, env);
      // 130: interrupted; rank 0 has said how to continue.
      if (code != 0) throw CLI::RuntimeError(code);
      return;
    }
    if (world_env != nullptr) {
      auto env = train::DistributedOptions::from_env();
      env.timeout_seconds = dist->timeout_seconds;
      env.backend = dist->backend;
      if (env.world_size > 1) opts->process_group = std::make_shared<train::ProcessGroup>(env);
    }
    const bool root = !opts->process_group || opts->process_group->rank() == 0;
    if (float_opt->count() > 0) opts->model_options.quantized = false;
    if (real_weights_opt->count() > 0) opts->model_options.binary_weights = false;
    if (bn_momentum_opt->count() > 0) opts->model_options.bn_momentum = *bn_momentum;
    opts->progress = !*no_progress;
    if (threshold_opt->count() > 0) opts->optimizer_options["threshold"] = *bop_threshold;
    if (gamma_opt->count() > 0) opts->optimizer_options["gamma"] = *bop_gamma;
    train::TrainResult r;
    install_stop_handler();
    try {
      r = train::train(*opts);
    } catch (const train::DistributedError& e) {
      // A broken group's threads may still wait on the dead peer: skip the destructors.
      std::cerr << "onebit: error: " << e.what() << std::endl;
      std::_Exit(1);
    } catch (const train::Interrupted& e) {
      if (root) {
        std::cerr << "onebit: " << e.what() << "; continue with: onebit train --resume "
                  << opts->out_dir << " (and the same options)" << std::endl;
      }
      throw CLI::RuntimeError(130);
    }
    if (!root) return;
    if (*json) {
      print_json({{"test_accuracy", r.test_accuracy},
                  {"test_loss", r.test_loss},
                  {"epochs", r.epochs},
                  {"images_per_second", r.images_per_second},
                  {"checkpoint", r.checkpoint},
                  {"best_accuracy", r.best_accuracy},
                  {"best_epoch", r.best_epoch},
                  {"best_checkpoint", r.best_checkpoint}});
    } else {
      std::cout << std::fixed << std::setprecision(2)
                << "test accuracy: " << 100.0 * r.test_accuracy << "% after " << r.epochs
                << " epochs (" << std::setprecision(0) << r.images_per_second
                << " training images/s)\n"
                << "model saved to: " << r.checkpoint << "\n"
                << "best: " << 100.0 * r.best_accuracy << "% at epoch " << r.best_epoch << " ("
                << r.best_checkpoint << ")\n"
                << "report: "
                << (std::filesystem::path(r.checkpoint).parent_path() / "report.html").string()
                << std::endl;
    }
  });
}

void add_eval(CLI::App& app) {
  struct Args {
    std::string checkpoint, dataset, data_dir;
    int64_t limit = 0, batch_size = 256;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("eval", "Evaluate a checkpoint on a data set's test split");
  cmd->add_option("--checkpoint", a->checkpoint, "Checkpoint file or training output directory")
      ->required();
  cmd->add_option("--dataset", a->dataset, "Data set (default: the one it was trained on)");
  cmd->add_option("--data-dir", a->data_dir, "Directory of the data set files");
  cmd->add_option("--limit", a->limit, "Use only the first N test images (0: all)");
  cmd->add_option("--batch-size", a->batch_size, "Batch size")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the result as one JSON line");
  cmd->callback([a] {
    auto ck = train::load_checkpoint(a->checkpoint);
    const auto& t = ck.config.at("train");
    std::string dataset = a->dataset.empty() ? t.at("dataset").get<std::string>() : a->dataset;
    std::string dir =
        a->data_dir.empty() && a->dataset.empty() ? t.value("data_dir", "") : a->data_dir;
    auto test = data::load(dataset, data::Split::kTest, dir).head(a->limit);
    auto r = train::evaluate(ck.model, test, a->batch_size);
    if (a->json) {
      print_json({{"accuracy", r.accuracy},
                  {"loss", r.loss},
                  {"count", r.count},
                  {"checkpoint", ck.path}});
    } else {
      std::cout << std::fixed << std::setprecision(2) << "test accuracy: " << 100.0 * r.accuracy
                << "% on " << r.count << " images (loss " << std::setprecision(4) << r.loss << ")"
                << std::endl;
    }
  });
}

void add_models(CLI::App& app) {
  auto* cmd = app.add_subcommand("models", "List the models of the zoo");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json,
                "Print a JSON list of {name, description, input_shape, num_classes}");
  cmd->callback([json] {
    nlohmann::json list = nlohmann::json::array();
    size_t width = 0;
    for (const auto& name : zoo::model_names()) width = std::max(width, name.size());
    for (const auto& name : zoo::model_names()) {
      const zoo::ModelOptions o = zoo::resolve_options(name, {});
      if (*json) {
        list.push_back({{"name", name},
                        {"description", zoo::model_description(name)},
                        {"input_shape", o.input_shape},
                        {"num_classes", o.num_classes}});
      } else {
        std::cout << std::left << std::setw(static_cast<int>(width) + 2) << name
                  << zoo::model_description(name) << "\n";
      }
    }
    if (*json) print_json(list);
  });
}

const Registrar train_cmd(10, add_train);
const Registrar eval_cmd(20, add_eval);
const Registrar models_cmd(90, add_models);

}  // namespace
}  // namespace onebit::cli
