#include "onebit/optim/case_optimizer.h"

#include <ATen/ATen.h>
#include <torch/serialize/archive.h>

#include <set>
#include <stdexcept>

#include "onebit/log.h"

namespace onebit::optim {

struct CaseOptimizer::Plan {
  std::vector<std::string> names;                     // per optimizer
  std::vector<std::vector<std::string>> param_names;  // per optimizer
  std::vector<std::vector<at::Tensor>> params;        // per optimizer
  std::vector<std::string> untrained_names;
  std::vector<at::Tensor> untrained;
};

CaseOptimizer::Plan CaseOptimizer::make_plan(
    const torch::OrderedDict<std::string, at::Tensor>& named_parameters,
    const std::vector<OptimizerCase>& cases, bool has_default, const std::string& default_name) {
  if (cases.empty() && !has_default) {
    throw std::invalid_argument(
        "CaseOptimizer needs at least one (predicate, optimizer) pair or a default optimizer");
  }
  Plan plan;
  std::set<std::string> seen;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    std::string name = c.name.empty() ? "optimizer_" + std::to_string(i) : c.name;
    if (!c.predicate) {
      throw std::invalid_argument("CaseOptimizer: optimizer " + std::to_string(i) + " (\"" + name +
                                  "\") has an empty predicate");
    }
    if (!c.make) {
      throw std::invalid_argument("CaseOptimizer: optimizer " + std::to_string(i) + " (\"" + name +
                                  "\") has an empty optimizer factory");
    }
    plan.names.push_back(name);
  }
  if (has_default) plan.names.push_back(default_name);
  for (const auto& name : plan.names) {
    if (!seen.insert(name).second) {
      throw std::invalid_argument("CaseOptimizer: two optimizers are named \"" + name +
                                  "\"; names must be unique");
    }
  }
  plan.param_names.resize(plan.names.size());
  plan.params.resize(plan.names.size());
  auto label = [&](size_t i) { return std::to_string(i) + " (\"" + plan.names[i] + "\")"; };

  for (const auto& item : named_parameters) {
    const std::string& pname = item.key();
    const at::Tensor& p = item.value();
    int owner = -1;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (!cases[i].predicate(pname, p)) continue;
      if (owner >= 0) {
        throw std::invalid_argument(
            "CaseOptimizer: parameter \"" + pname + "\" is claimed by optimizer " + label(owner) +
            " and optimizer " + label(i) + "; a parameter may be claimed by at most one predicate");
      }
      owner = static_cast<int>(i);
    }
    if (owner < 0 && has_default) owner = static_cast<int>(cases.size());
    if (owner < 0) {
      plan.untrained_names.push_back(pname);
      plan.untrained.push_back(p);
    } else {
      plan.param_names[owner].push_back(pname);
      plan.params[owner].push_back(p);
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    if (plan.params[i].empty()) {
      throw std::invalid_argument("CaseOptimizer: optimizer " + label(i) +
                                  " claims no parameter; every (predicate, optimizer) pair must "
                                  "claim at least one of the " +
                                  std::to_string(named_parameters.size()) + " parameters");
    }
  }
  if (!plan.untrained_names.empty()) {
    std::string list;
    for (const auto& n : plan.untrained_names) list += (list.empty() ? "" : ", ") + n;
    warn(
        "CaseOptimizer: no default optimizer, so these parameters claimed by no optimizer are "
        "not trained: " +
        list);
  }
  return plan;
}

std::vector<torch::optim::OptimizerParamGroup> CaseOptimizer::groups_of(const Plan& plan) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (const auto& ps : plan.params) groups.emplace_back(ps);
  if (!plan.untrained.empty()) groups.emplace_back(plan.untrained);
  return groups;
}

CaseOptimizer::CaseOptimizer(const torch::OrderedDict<std::string, at::Tensor>& named_parameters,
                             std::vector<OptimizerCase> cases, OptimizerFactory default_optimizer,
                             std::string default_name)
    : CaseOptimizer(
          make_plan(named_parameters, cases, static_cast<bool>(default_optimizer), default_name),
          cases, default_optimizer) {}

CaseOptimizer::CaseOptimizer(Plan plan, const std::vector<OptimizerCase>& cases,
                             const OptimizerFactory& default_optimizer)
    : torch::optim::Optimizer(groups_of(plan), std::make_unique<CaseOptimizerOptions>()) {
  for (size_t i = 0; i < plan.names.size(); ++i) {
    const OptimizerFactory& make = i < cases.size() ? cases[i].make : default_optimizer;
    auto optimizer = make(plan.params[i]);
    if (!optimizer) {
      throw std::invalid_argument("CaseOptimizer: the factory of optimizer " + std::to_string(i) +
                                  " (\"" + plan.names[i] + "\") returned no optimizer");
    }
    inner_.push_back({plan.names[i], std::move(plan.param_names[i]), std::move(optimizer)});
  }
  untrained_ = std::move(plan.untrained_names);
}

at::Tensor CaseOptimizer::step(LossClosure closure) {
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& inner : inner_) inner.optimizer->step();
  return loss;
}

void CaseOptimizer::save(torch::serialize::OutputArchive& archive) const {
  archive.write("onebit_optimizer", c10::IValue(std::string("case")));
  archive.write("optimizers/size", c10::IValue(static_cast<int64_t>(inner_.size())));
  for (size_t i = 0; i < inner_.size(); ++i) {
    const std::string prefix = "optimizers/" + std::to_string(i);
    archive.write(prefix + "/name", c10::IValue(inner_[i].name));
    archive.write(prefix + "/params",
                  c10::IValue(static_cast<int64_t>(inner_[i].parameter_names.size())));
    torch::serialize::OutputArchive sub;
    inner_[i].optimizer->save(sub);
    archive.write(prefix + "/state", sub);
  }
}

void CaseOptimizer::load(torch::serialize::InputArchive& archive) {
  c10::IValue v;
  if (!archive.try_read("onebit_optimizer", v) || !v.isString() || v.toStringRef() != "case") {
    throw std::runtime_error(
        "CaseOptimizer::load: the archive does not hold a CaseOptimizer state");
  }
  archive.read("optimizers/size", v);
  if (v.toInt() != static_cast<int64_t>(inner_.size())) {
    throw std::runtime_error("CaseOptimizer::load: the archive holds " + std::to_string(v.toInt()) +
                             " optimizers, this one has " + std::to_string(inner_.size()));
  }
  for (size_t i = 0; i < inner_.size(); ++i) {
    const std::string prefix = "optimizers/" + std::to_string(i);
    archive.read(prefix + "/params", v);
    if (v.toInt() != static_cast<int64_t>(inner_[i].parameter_names.size())) {
      throw std::runtime_error(
          "CaseOptimizer::load: optimizer " + std::to_string(i) + " (\"" + inner_[i].name +
          "\") trains " + std::to_string(inner_[i].parameter_names.size()) +
          " parameters, the archive has state for " + std::to_string(v.toInt()));
    }
  }
  for (size_t i = 0; i < inner_.size(); ++i) {
    torch::serialize::InputArchive sub;
    archive.read("optimizers/" + std::to_string(i) + "/state", sub);
    inner_[i].optimizer->load(sub);
  }
}

torch::optim::Optimizer& CaseOptimizer::optimizer(size_t index) {
  if (index >= inner_.size()) {
    throw std::out_of_range("CaseOptimizer: optimizer index " + std::to_string(index) +
                            " out of range (it has " + std::to_string(inner_.size()) + ")");
  }
  return *inner_[index].optimizer;
}

torch::optim::Optimizer& CaseOptimizer::optimizer(const std::string& name) {
  std::string known;
  for (auto& inner : inner_) {
    if (inner.name == name) return *inner.optimizer;
    known += (known.empty() ? "" : ", ") + inner.name;
  }
  throw std::invalid_argument("CaseOptimizer: no optimizer named \"" + name +
                              "\" (known: " + known + ")");
}

const std::string& CaseOptimizer::optimizer_name(size_t index) const {
  if (index >= inner_.size()) {
    throw std::out_of_range("CaseOptimizer: optimizer index " + std::to_string(index) +
                            " out of range (it has " + std::to_string(inner_.size()) + ")");
  }
  return inner_[index].name;
}

const std::vector<std::string>& CaseOptimizer::parameter_names(size_t index) const {
  optimizer_name(index);  // range check
  return inner_[index].parameter_names;
}

}  // namespace onebit::optim
