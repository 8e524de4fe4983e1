#pragma once
/// \file
/// CaseOptimizer: trains different subsets of a model's parameters with different optimizers,
/// chosen by predicates (Larq's `CaseOptimizer`, modeled after `tf.case`).
///
/// Each parameter goes to the one optimizer whose predicate claims it; a parameter claimed by
/// two predicates is an error, and so is a (predicate, optimizer) pair that claims nothing.
/// Unclaimed parameters go to the default optimizer, or, without one, are not trained (with a
/// warning). Because a LibTorch optimizer is built over a fixed list of tensors, each optimizer is
/// given as a factory that receives exactly the parameters it trains:
///
/// ```
/// using namespace onebit::optim;
/// CaseOptimizer opt(
///     model->named_parameters(),
///     {{is_binary_in(*model),
///       [](std::vector<at::Tensor> ps) {
///         return std::make_unique<Bop>(std::move(ps), BopOptions(1e-6, 1e-3));
///       },
///       "bop"}},
///     [](std::vector<at::Tensor> ps) {   // default: every other parameter
///       return std::make_unique<torch::optim::Adam>(std::move(ps),
///                                                   torch::optim::AdamOptions(0.01));
///     });
/// opt.zero_grad(); loss.backward(); opt.step();
/// opt.optimizer("bop");                 // the inner Bop, e.g. to change its gamma
/// ```
///
/// `step()` steps every inner optimizer, `zero_grad()` clears the gradient of every parameter
/// (untrained ones included), and `save`/`load` write and read every inner optimizer's state into
/// one archive, so a CaseOptimizer goes into a checkpoint like any LibTorch optimizer.

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>
#include <torch/ordered_dict.h>

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace onebit::optim {

/// Decides whether an optimizer trains a parameter. Built from any callable taking either
/// `(const std::string& name, const at::Tensor& param)` or `(const at::Tensor& param)` and
/// returning bool; `name` is the parameter's name in the model, e.g. "0.weight".
class ParamPredicate {
 public:
  /// The function type stored.
  using Fn = std::function<bool(const std::string& name, const at::Tensor& param)>;

  ParamPredicate() = default;
  /// From a callable `bool(const std::string& name, const at::Tensor& param)`.
  template <typename F,
            std::enable_if_t<std::is_invocable_r_v<bool, F, const std::string&, const at::Tensor&>,
                             int> = 0>
  ParamPredicate(F f) : fn_(std::move(f)) {}  // NOLINT(google-explicit-constructor)
  /// From a callable `bool(const at::Tensor& param)` (Larq's form).
  template <
      typename F,
      std::enable_if_t<!std::is_invocable_r_v<bool, F, const std::string&, const at::Tensor&> &&
                           std::is_invocable_r_v<bool, F, const at::Tensor&>,
                       int> = 0>
  ParamPredicate(F f)  // NOLINT(google-explicit-constructor)
      : fn_([g = std::move(f)](const std::string&, const at::Tensor& p) { return g(p); }) {}

  /// Whether the parameter `name` / `param` is claimed.
  bool operator()(const std::string& name, const at::Tensor& param) const {
    return fn_(name, param);
  }
  /// False for a default-constructed (empty) predicate.
  explicit operator bool() const { return static_cast<bool>(fn_); }

 private:
  Fn fn_;
};

/// Builds an optimizer over exactly the given parameters.
using OptimizerFactory =
    std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor> params)>;

/// One (predicate, optimizer) pair of a CaseOptimizer.
struct OptimizerCase {
  ParamPredicate predicate;  ///< which parameters this optimizer trains
  OptimizerFactory make;     ///< builds the optimizer over the claimed parameters
  std::string name;          ///< label used in errors and by `CaseOptimizer::optimizer(name)`;
                             ///< empty: "optimizer_<index>"
};

/// The (empty) options of a CaseOptimizer's own parameter groups: the hyperparameters live in
/// the inner optimizers.
struct CaseOptimizerOptions : public torch::optim::OptimizerCloneableOptions<CaseOptimizerOptions> {
};

/// Applies different optimizers to different parameters (see the file comment for an example).
class CaseOptimizer : public torch::optim::Optimizer {
 public:
  /// Assigns each of `named_parameters` (e.g. `model->named_parameters()`) to the optimizer of
  /// the one case whose predicate claims it, or to `default_optimizer`, and builds the inner
  /// optimizers (cases in order, then the default, named `default_name`). Throws
  /// std::invalid_argument when a parameter is claimed by two cases (naming it and both
  /// optimizers), when a case claims no parameter, when a predicate or factory is empty, when two
  /// optimizers share a name, or when there is neither a case nor a default. Without a default,
  /// unclaimed parameters are left untrained and `onebit::warn` names them.
  CaseOptimizer(const torch::OrderedDict<std::string, at::Tensor>& named_parameters,
                std::vector<OptimizerCase> cases, OptimizerFactory default_optimizer = nullptr,
                std::string default_name = "default");

  /// Evaluates `closure` once (if given), then steps every inner optimizer. Returns the loss
  /// from the closure, or an undefined tensor.
  at::Tensor step(LossClosure closure = nullptr) override;
  /// Writes every inner optimizer's state (each into its own sub-archive).
  void save(torch::serialize::OutputArchive& archive) const override;
  /// Reads the state written by `save` into the inner optimizers. Throws std::runtime_error if the
  /// archive holds a different number of optimizers or parameters per optimizer.
  void load(torch::serialize::InputArchive& archive) override;

  /// Number of inner optimizers (cases, plus one for the default optimizer if given).
  size_t num_optimizers() const { return inner_.size(); }
  /// Inner optimizer `index` (cases in order, then the default). Throws std::out_of_range.
  torch::optim::Optimizer& optimizer(size_t index);
  /// Inner optimizer by name. Throws std::invalid_argument listing the names.
  torch::optim::Optimizer& optimizer(const std::string& name);
  /// Name of inner optimizer `index`.
  const std::string& optimizer_name(size_t index) const;
  /// Names of the parameters trained by inner optimizer `index`, in model order.
  const std::vector<std::string>& parameter_names(size_t index) const;
  /// Names of the parameters no optimizer trains (only without a default optimizer).
  const std::vector<std::string>& untrained_parameters() const { return untrained_; }

 private:
  struct Plan;
  CaseOptimizer(Plan plan, const std::vector<OptimizerCase>& cases,
                const OptimizerFactory& default_optimizer);
  static Plan make_plan(const torch::OrderedDict<std::string, at::Tensor>& named_parameters,
                        const std::vector<OptimizerCase>& cases, bool has_default,
                        const std::string& default_name);
  static std::vector<torch::optim::OptimizerParamGroup> groups_of(const Plan& plan);

  struct Inner {
    std::string name;
    std::vector<std::string> parameter_names;
    std::unique_ptr<torch::optim::Optimizer> optimizer;
  };
  std::vector<Inner> inner_;
  std::vector<std::string> untrained_;
};

}  // namespace onebit::optim
