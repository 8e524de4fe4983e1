#include "onebit/optim/scheduler.h"

#include <c10/util/Exception.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "onebit/optim/bop.h"
#include "onebit/optim/case_optimizer.h"

namespace onebit::optim {
namespace schedules {
namespace {
void require_positive(const char* what, int64_t v) {
  if (v <= 0) {
    throw std::invalid_argument(std::string(what) + " must be > 0, got " + std::to_string(v));
  }
}
}  // namespace

Schedule constant(double value) {
  return [value](int64_t) { return value; };
}

Schedule cosine_decay(double initial, int64_t decay_steps, double alpha) {
  require_positive("cosine_decay: decay_steps", decay_steps);
  return [=](int64_t t) {
    const double x = static_cast<double>(std::min(std::max<int64_t>(t, 0), decay_steps)) /
                     static_cast<double>(decay_steps);
    const double pi = std::acos(-1.0);
    return initial * (alpha + (1 - alpha) * 0.5 * (1 + std::cos(pi * x)));
  };
}

Schedule step_decay(double initial, double factor, int64_t every) {
  require_positive("step_decay: every", every);
  return [=](int64_t t) {
    return initial * std::pow(factor, static_cast<double>(std::max<int64_t>(t, 0) / every));
  };
}

Schedule exponential_decay(double initial, double rate, int64_t decay_steps) {
  require_positive("exponential_decay: decay_steps", decay_steps);
  return [=](int64_t t) {
    return initial * std::pow(rate, static_cast<double>(t) / static_cast<double>(decay_steps));
  };
}

Schedule one_cycle(double peak, int64_t total, double warmup_fraction, double div_factor,
                   double final_div_factor) {
  require_positive("one_cycle: total", total);
  if (!(warmup_fraction > 0 && warmup_fraction < 1) || !(div_factor >= 1) ||
      !(final_div_factor >= 1)) {
    std::ostringstream msg;
    msg << "one_cycle: need 0 < warmup_fraction < 1 and factors >= 1, got " << warmup_fraction
        << ", " << div_factor << ", " << final_div_factor;
    throw std::invalid_argument(msg.str());
  }
  const double start = peak / div_factor, end = start / final_div_factor;
  const int64_t up = std::max<int64_t>(1, static_cast<int64_t>(warmup_fraction * total));
  const int64_t down = std::max<int64_t>(1, total - up);
  return [=](int64_t t) {
    const double pi = std::acos(-1.0);
    const auto anneal = [&](double from, double to, double x) {
      return to + (from - to) * 0.5 * (1 + std::cos(pi * std::min(std::max(x, 0.0), 1.0)));
    };
    if (t < up) return anneal(start, peak, static_cast<double>(t) / static_cast<double>(up));
    return anneal(peak, end, static_cast<double>(t - up) / static_cast<double>(down));
  };
}

Schedule warmup(Schedule schedule, int64_t warmup_steps) {
  if (!schedule) throw std::invalid_argument("warmup: the schedule is empty");
  if (warmup_steps < 0) {
    throw std::invalid_argument("warmup: warmup_steps must be >= 0, got " +
                                std::to_string(warmup_steps));
  }
  if (warmup_steps == 0) return schedule;
  return [schedule = std::move(schedule), warmup_steps](int64_t t) {
    if (t < warmup_steps) {
      return schedule(0) * static_cast<double>(t + 1) / static_cast<double>(warmup_steps + 1);
    }
    return schedule(t - warmup_steps);
  };
}

Schedule by_name(const std::string& name, double initial, int64_t total, int64_t steps_per_period,
                 int64_t warmup_steps) {
  if (steps_per_period < 1) {
    throw std::invalid_argument("by_name: steps_per_period must be >= 1, got " +
                                std::to_string(steps_per_period));
  }
  if (warmup_steps < 0 || (warmup_steps > 0 && warmup_steps >= total)) {
    throw std::invalid_argument("schedule \"" + name + "\": the warm-up (" +
                                std::to_string(warmup_steps) +
                                " steps) must be shorter than the run (" + std::to_string(total) +
                                " steps)");
  }
  const int64_t rest = std::max<int64_t>(total - warmup_steps, 1);
  Schedule inner;
  if (name == "constant") {
    inner = constant(initial);
  } else if (name == "cosine") {
    inner = cosine_decay(initial, rest);
  } else if (name == "step") {
    // x0.1 after each third of the run, rounded to whole periods (epochs).
    const int64_t periods = std::max<int64_t>(rest / steps_per_period, 1);
    inner = step_decay(initial, 0.1, std::max<int64_t>(periods / 3, 1) * steps_per_period);
  } else if (name == "one-cycle") {
    if (warmup_steps != 0) {
      throw std::invalid_argument(
          "schedule \"one-cycle\" has its own warm-up (the first 30% of the run): set no "
          "separate warm-up");
    }
    inner = one_cycle(initial, rest);
  } else {
    throw std::invalid_argument("unknown schedule \"" + name +
                                "\" (known: constant, cosine, step, one-cycle)");
  }
  return warmup(std::move(inner), warmup_steps);
}

}  // namespace schedules

namespace {

// Sets (value != nullptr) or reads (out) `name` on one group's options; false if it has none.
bool access(torch::optim::OptimizerOptions& options, const std::string& name, const double* value,
            double* out) {
  if (auto* bop = dynamic_cast<BopOptions*>(&options)) {
    if (name == "gamma") {
      if (value) bop->gamma(*value);
      *out = bop->gamma();
      return true;
    }
    if (name == "threshold") {
      if (value) bop->threshold(*value);
      *out = bop->threshold();
      return true;
    }
    return false;
  }
  if (dynamic_cast<CaseOptimizerOptions*>(&options)) return false;
  if (name == "momentum") {
    auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&options);
    if (!sgd) return false;
    if (value) sgd->momentum(*value);
    *out = sgd->momentum();
    return true;
  }
  if (name == "lr") {
    try {
      if (value) options.set_lr(*value);
      *out = options.get_lr();
      return true;
    } catch (const c10::Error&) {  // an optimizer without a learning rate
      return false;
    }
  }
  return false;
}

// Applies `access` to every group of `optimizer` (through CaseOptimizers); returns how many had it.
int visit(torch::optim::Optimizer& optimizer, const std::string& name, const double* value,
          double* first) {
  int found = 0;
  if (auto* c = dynamic_cast<CaseOptimizer*>(&optimizer)) {
    for (size_t i = 0; i < c->num_optimizers(); ++i) {
      found += visit(c->optimizer(i), name, value, found ? nullptr : first);
      if (!value && found) return found;
    }
    return found;
  }
  for (auto& group : optimizer.param_groups()) {
    double v = 0;
    if (access(group.options(), name, value, &v)) {
      if (!found && first) *first = v;
      ++found;
      if (!value) return found;
    }
  }
  return found;
}

void check_name(const std::string& name) {
  if (name != "lr" && name != "gamma" && name != "threshold" && name != "momentum") {
    throw std::invalid_argument("unknown hyperparameter \"" + name +
                                "\" (known: lr, momentum, gamma, threshold)");
  }
}

}  // namespace

void set_hyperparameter(torch::optim::Optimizer& optimizer, const std::string& name, double value) {
  check_name(name);
  double ignored = 0;
  if (visit(optimizer, name, &value, &ignored) == 0) {
    throw std::invalid_argument("the optimizer has no hyperparameter \"" + name +
                                "\" (lr: LibTorch's optimizers, momentum: SGD, gamma and "
                                "threshold: Bop)");
  }
}

double get_hyperparameter(torch::optim::Optimizer& optimizer, const std::string& name) {
  check_name(name);
  double v = 0;
  if (visit(optimizer, name, nullptr, &v) == 0) {
    throw std::invalid_argument("the optimizer has no hyperparameter \"" + name + "\"");
  }
  return v;
}

HyperparameterScheduler::HyperparameterScheduler(Schedule schedule, std::string hyperparameter,
                                                 UpdateFreq update_freq, std::string optimizer)
    : schedule_(std::move(schedule)),
      hyperparameter_(std::move(hyperparameter)),
      update_freq_(update_freq),
      optimizer_(std::move(optimizer)),
      value_(std::numeric_limits<double>::quiet_NaN()) {
  if (!schedule_) throw std::invalid_argument("HyperparameterScheduler: empty schedule");
  check_name(hyperparameter_);
  key_ = optimizer_.empty() ? hyperparameter_ : optimizer_ + "/" + hyperparameter_;
}

void HyperparameterScheduler::apply(train::Context& ctx, int64_t t) {
  if (!ctx.optimizer) throw std::invalid_argument("HyperparameterScheduler: no optimizer");
  torch::optim::Optimizer* target = ctx.optimizer;
  if (!optimizer_.empty()) {
    auto* c = dynamic_cast<CaseOptimizer*>(ctx.optimizer);
    if (!c) {
      throw std::invalid_argument("HyperparameterScheduler: optimizer \"" + optimizer_ +
                                  "\" was named but the training optimizer is not a "
                                  "CaseOptimizer");
    }
    bool is_index = optimizer_.find_first_not_of("0123456789") == std::string::npos;
    bool named = false;
    for (size_t i = 0; i < c->num_optimizers(); ++i)
      named = named || c->optimizer_name(i) == optimizer_;
    target = is_index && !named ? &c->optimizer(std::stoul(optimizer_)) : &c->optimizer(optimizer_);
  }
  const double v = schedule_(t);
  if (!std::isfinite(v)) {
    std::ostringstream s;
    s << "HyperparameterScheduler: schedule(" << t << ") for \"" << key_ << "\" is " << v;
    throw std::invalid_argument(s.str());
  }
  set_hyperparameter(*target, hyperparameter_, v);
  value_ = v;
}

void HyperparameterScheduler::on_train_begin(train::Context& ctx) {
  if (update_freq_ == UpdateFreq::kStep) apply(ctx, ctx.step);
}

void HyperparameterScheduler::on_epoch_begin(train::Context& ctx) {
  if (update_freq_ == UpdateFreq::kEpoch) apply(ctx, ctx.epoch - 1);
}

void HyperparameterScheduler::on_batch_end(train::Context& ctx) {
  if (update_freq_ == UpdateFreq::kStep) apply(ctx, ctx.step);
}

void HyperparameterScheduler::on_epoch_end(train::Context&, nlohmann::json& metrics) {
  metrics[key_] = value_;
}

}  // namespace onebit::optim
