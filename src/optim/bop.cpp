#include "onebit/optim/bop.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <sstream>
#include <stdexcept>
#include <unordered_set>

#include "onebit/precision.h"
#include "state_key.h"

namespace onebit::optim {
namespace {

double read_double(torch::serialize::InputArchive& archive, const char* key, double fallback) {
  c10::IValue v;
  return archive.try_read(key, v) ? v.toDouble() : fallback;
}

int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue v;
  archive.read(key, v);
  return v.toInt();
}

void check_options(const BopOptions& o) {
  if (!(o.threshold() >= 0)) {
    std::ostringstream s;
    s << "Bop: threshold must be >= 0, got " << o.threshold();
    throw std::invalid_argument(s.str());
  }
  if (!(o.gamma() >= 0 && o.gamma() <= 1)) {
    std::ostringstream s;
    s << "Bop: gamma must be in [0, 1], got " << o.gamma();
    throw std::invalid_argument(s.str());
  }
}

}  // namespace

void BopOptions::serialize(torch::serialize::InputArchive& archive) {
  threshold(read_double(archive, "threshold", threshold()));
  gamma(read_double(archive, "gamma", gamma()));
  c10::IValue v;
  if (archive.try_read("binarize_at_start", v)) binarize_at_start(v.toBool());
}

void BopOptions::serialize(torch::serialize::OutputArchive& archive) const {
  archive.write("threshold", c10::IValue(threshold()));
  archive.write("gamma", c10::IValue(gamma()));
  archive.write("binarize_at_start", c10::IValue(binarize_at_start()));
}

void BopParamState::serialize(torch::serialize::InputArchive& archive) {
  at::Tensor t;
  if (archive.try_read("m", t, /*is_buffer=*/true)) m(t);
  c10::IValue v;
  if (archive.try_read("step", v)) step(v.toInt());
}

void BopParamState::serialize(torch::serialize::OutputArchive& archive) const {
  if (m().defined()) archive.write("m", m(), /*is_buffer=*/true);
  archive.write("step", c10::IValue(step()));
}

Bop::Bop(std::vector<torch::optim::OptimizerParamGroup> param_groups, BopOptions defaults)
    : torch::optim::Optimizer(std::move(param_groups),
                              std::make_unique<BopOptions>(std::move(defaults))) {
  for (const auto& group : param_groups_) {
    check_options(static_cast<const BopOptions&>(group.options()));
  }
  check_parameters();
}

Bop::Bop(std::vector<at::Tensor> params, BopOptions defaults)
    : Bop(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(
              std::move(params))},
          std::move(defaults)) {}

void Bop::check_parameters() {
  at::NoGradGuard no_grad;
  for (auto& group : param_groups_) {
    const bool binarize = static_cast<const BopOptions&>(group.options()).binarize_at_start();
    for (size_t i = 0; i < group.params().size(); ++i) {
      auto& p = group.params()[i];
      if (!p.defined() || !at::isFloatingType(p.scalar_type())) {
        std::ostringstream s;
        s << "Bop: parameter " << i << " must be a floating-point tensor, got "
          << (p.defined() ? std::string(c10::toString(p.scalar_type())) : "an undefined tensor");
        throw std::invalid_argument(s.str());
      }
      if (binarize) p.copy_(at::where(p >= 0, at::ones_like(p), at::full_like(p, -1)));
    }
  }
}

void bop_update(at::Tensor& param, at::Tensor& m, const at::Tensor& grad, double threshold,
                double gamma) {
  at::NoGradGuard no_grad;
  m.add_(grad - m, gamma);  // m <- m + gamma (g - m)
  // Larq: w <- sign(-sign(w m - threshold) w), sign(0) = 0 inside and +1 outside. NaN stays NaN,
  // so that a diverged run is visible rather than silently binarized.
  const at::Tensor v = at::sign(param * m - threshold).neg_().mul_(param);
  param.copy_(
      at::where(v.ge(0), at::ones_like(param), at::where(v.lt(0), at::full_like(param, -1), v)));
}

at::Tensor Bop::step(LossClosure closure) {
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  at::NoGradGuard no_grad;
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const BopOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto& g = p.grad();
      if (g.is_sparse()) throw std::invalid_argument("Bop does not support sparse gradients");
      auto key = detail::state_key(p);
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto s = std::make_unique<BopParamState>();
        s->m(at::zeros_like(p, at::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<BopParamState&>(*it->second);
      bop_update(p, s.m(), g, options.threshold(), options.gamma());
      s.step(s.step() + 1);
    }
  }
  return loss;
}

void Bop::save(torch::serialize::OutputArchive& archive) const {
  archive.write("onebit_optimizer", c10::IValue(std::string("bop")));
  archive.write("param_groups/size", c10::IValue(static_cast<int64_t>(param_groups_.size())));
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& params = param_groups_[g].params();
    const std::string prefix = "param_groups/" + std::to_string(g);
    archive.write(prefix + "/size", c10::IValue(static_cast<int64_t>(params.size())));
    for (size_t i = 0; i < params.size(); ++i) {
      auto it = state_.find(detail::state_key(params[i]));
      if (it == state_.end()) continue;
      torch::serialize::OutputArchive sub;
      static_cast<const BopParamState&>(*it->second).serialize(sub);
      archive.write("state/" + std::to_string(g) + "/" + std::to_string(i), sub);
    }
  }
}

void Bop::load(torch::serialize::InputArchive& archive) {
  c10::IValue kind;
  if (!archive.try_read("onebit_optimizer", kind) || !kind.isString() ||
      kind.toStringRef() != "bop") {
    throw std::runtime_error("Bop::load: the archive does not hold a Bop state");
  }
  const int64_t groups = read_int(archive, "param_groups/size");
  if (groups != static_cast<int64_t>(param_groups_.size())) {
    throw std::runtime_error("Bop::load: the archive has " + std::to_string(groups) +
                             " parameter groups, this optimizer has " +
                             std::to_string(param_groups_.size()));
  }
  decltype(state_) loaded;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& params = param_groups_[g].params();
    const int64_t n = read_int(archive, "param_groups/" + std::to_string(g) + "/size");
    if (n != static_cast<int64_t>(params.size())) {
      throw std::runtime_error("Bop::load: parameter group " + std::to_string(g) + " has " +
                               std::to_string(n) + " parameters in the archive, " +
                               std::to_string(params.size()) + " in this optimizer");
    }
    for (size_t i = 0; i < params.size(); ++i) {
      torch::serialize::InputArchive sub;
      if (!archive.try_read("state/" + std::to_string(g) + "/" + std::to_string(i), sub)) continue;
      auto s = std::make_unique<BopParamState>();
      s->serialize(sub);
      if (!s->m().defined() || !s->m().sizes().equals(params[i].sizes())) {
        std::ostringstream msg;
        msg << "Bop::load: the moving average of parameter " << i << " of group " << g
            << " has shape "
            << (s->m().defined() ? c10::str(s->m().sizes()) : std::string("(missing)"))
            << ", the parameter has shape " << params[i].sizes();
        throw std::runtime_error(msg.str());
      }
      s->m(s->m().to(params[i].options()));
      loaded[detail::state_key(params[i])] = std::move(s);
    }
  }
  state_ = std::move(loaded);
}

at::Tensor Bop::moving_average(const at::Tensor& param) const {
  auto it = state_.find(detail::state_key(param));
  if (it == state_.end()) return {};
  return static_cast<const BopParamState&>(*it->second).m();
}

bool is_binary(const at::Tensor& param, const torch::nn::Module& model) {
  return parameter_precision(model, param) == 1;
}

ParamPredicate is_binary_in(const torch::nn::Module& model) {
  // Hold the tensors (so that their TensorImpl addresses stay valid) and look up by identity.
  auto binary = std::make_shared<std::vector<at::Tensor>>();
  auto ids = std::make_shared<std::unordered_set<const void*>>();
  const auto bits = parameter_precision(model);
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const auto& p = item.value();
    if (bits.at(item.key()) == 1 && ids->insert(p.unsafeGetTensorImpl()).second) {
      binary->push_back(p);
    }
  }
  return [binary, ids](const at::Tensor& p) {
    return p.defined() && ids->count(p.unsafeGetTensorImpl()) > 0;
  };
}

}  // namespace onebit::optim
