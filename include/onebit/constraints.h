#pragma once
/// \file
/// Weight constraints applied after each optimizer step (Larq's `kernel_constraint`).
///
/// ```
/// auto layer = onebit::nn::QuantDense(onebit::nn::QuantDenseOptions(64, 10)
///                                         .kernel_quantizer("ste_sign")
///                                         .kernel_constraint("weight_clip"));
/// optimizer.step();
/// onebit::apply_constraints(*model);  // the training loop does this for you
/// ```

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace torch::nn {
class Module;
}

namespace onebit {
namespace constraints {

/// A projection applied in place to a parameter after each optimizer step.
class Constraint {
 public:
  virtual ~Constraint() = default;
  /// String id, e.g. "weight_clip".
  virtual std::string id() const = 0;
  /// Arguments, e.g. {"clip_value": 1.0}.
  virtual nlohmann::json config() const { return nlohmann::json::object(); }
  /// Applies the constraint to `param` in place (no autograd).
  virtual void apply(at::Tensor& param) const = 0;
  /// {"class_name": id(), "config": config()}.
  nlohmann::json to_json() const { return {{"class_name", id()}, {"config", config()}}; }
};

/// Shared handle to a constraint; null means none.
using ConstraintPtr = std::shared_ptr<const Constraint>;

/// Clips values to [-clip_value, clip_value] (Larq's WeightClip).
class WeightClip : public Constraint {
 public:
  /// `clip_value` > 0.
  explicit WeightClip(double clip_value = 1.0);
  std::string id() const override { return "weight_clip"; }
  nlohmann::json config() const override { return {{"clip_value", clip_value_}}; }
  void apply(at::Tensor& param) const override;
  /// The clip value.
  double clip_value() const { return clip_value_; }

 private:
  double clip_value_;
};

/// Makes a constraint from a string id ("weight_clip") or {"class_name", "config"}; null -> none.
/// Unknown ids or arguments throw std::invalid_argument.
ConstraintPtr from_json(const nlohmann::json& spec);

/// The JSON of `c`, or null for none.
nlohmann::json to_json(const ConstraintPtr& c);

/// A constraint argument: a string id, a constraint object, or nothing.
class ConstraintSpec {
 public:
  ConstraintSpec() = default;
  ConstraintSpec(std::nullptr_t) {}       // NOLINT(google-explicit-constructor)
  ConstraintSpec(const char* id);         // NOLINT(google-explicit-constructor)
  ConstraintSpec(const std::string& id);  // NOLINT(google-explicit-constructor)
  template <typename C, typename = std::enable_if_t<std::is_base_of_v<Constraint, C>>>
  ConstraintSpec(std::shared_ptr<C> c)  // NOLINT(google-explicit-constructor)
      : ptr_(std::move(c)) {}
  /// The constraint, or null.
  const ConstraintPtr& get() const { return ptr_; }
  explicit operator bool() const { return static_cast<bool>(ptr_); }

 private:
  ConstraintPtr ptr_;
};

}  // namespace constraints

/// Applies the kernel constraints of every quantized layer in `model` (recursively). Call it
/// after each optimizer step in your own training loop; `onebit::train` does it already.
void apply_constraints(torch::nn::Module& model);

}  // namespace onebit
