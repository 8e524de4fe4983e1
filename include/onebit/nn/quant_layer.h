#pragma once
/// \file
/// The interface every quantized layer implements: its latent kernels with their quantizers and
/// constraints, its input quantizer, and access to the quantized weights.

#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <string>
#include <vector>

#include "onebit/constraints.h"
#include "onebit/quantizers.h"

namespace torch::nn {
class Module;
}

namespace onebit::nn {

/// A latent (float) weight of a quantized layer, with the quantizer the forward pass applies to
/// it and the constraint applied after each optimizer step.
struct QuantizedParameter {
  std::string name;                       ///< parameter name inside the layer, e.g. "weight"
  at::Tensor latent;                      ///< the trained float values
  quantizers::QuantizerPtr quantizer;     ///< null: used as is (32 bits)
  constraints::ConstraintPtr constraint;  ///< null: none
  /// How the quantizer sees the kernel (a depthwise kernel's depth multiplier; see TensorRole).
  quantizers::TensorRole role = quantizers::TensorRole::kernel();
};

/// Mixed into every onebit layer module (QuantDense, QuantConv2d, ...).
class QuantLayer {
 public:
  virtual ~QuantLayer() = default;
  /// The quantizer applied to the layer's input, or null.
  virtual quantizers::QuantizerPtr input_quantizer() const = 0;
  /// The kernels (not the bias) with their quantizers and constraints.
  virtual std::vector<QuantizedParameter> quantized_parameters() const = 0;

  /// Applies each kernel's constraint in place.
  void apply_constraints();
  /// The weights as the forward pass uses them: `quantizer(latent)`, detached, by name.
  std::vector<std::pair<std::string, at::Tensor>> quantized_weights() const;

 protected:
  /// Warns when a binary kernel quantizer (precision 1, not NoOp) has no constraint (latent
  /// weights grow unbounded), naming the options as Larq does (`kernel_constraint`,
  /// `depthwise_constraint`, `pointwise_constraint`).
  static void warn_if_unconstrained(const std::string& layer, const quantizers::QuantizerPtr& q,
                                    const constraints::ConstraintPtr& c,
                                    const std::string& quantizer_option = "kernel_quantizer",
                                    const std::string& constraint_option = "kernel_constraint");
};

/// All parameters and buffers of `model` with every quantized kernel replaced by its quantized
/// value (e.g. exact +-1), keyed like `model.named_parameters()` / `named_buffers()`.
/// This answers Larq's most common question: "where are my binary weights?".
torch::OrderedDict<std::string, at::Tensor> quantized_state_dict(const torch::nn::Module& model);

}  // namespace onebit::nn
