#pragma once
/// \file
/// Precision tagging: how many bits each parameter of a model has once quantized.
///
/// A kernel of a quantized layer (`nn::QuantLayer`) has the precision of its kernel quantizer
/// (1 for `ste_sign` or `NoOp(1)`, 2 for `ste_tern`, k for DoReFa); every other parameter (biases,
/// batch-norm scales, torch's own layers) has 32 bits. This is Larq's rule for
/// `Bop.is_binary_variable` and for the bit-widths of `larq.models.summary`.
///
/// ```
/// auto bits = onebit::parameter_precision(*model);   // {"0.weight": 1, "2.bias": 32, ...}
/// int b = onebit::parameter_precision(*model, model->parameters()[0]);
/// ```

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace torch::nn {
class Module;
}

namespace onebit {

/// Bits of every parameter of `model` (recursively), keyed like `model.named_parameters()`.
std::map<std::string, int> parameter_precision(const torch::nn::Module& model);

/// Bits of one parameter of `model`: the precision of the quantizer of the `QuantLayer` kernel
/// that is `param` (same tensor, not just equal values), 32 for any other tensor.
int parameter_precision(const torch::nn::Module& model, const at::Tensor& param);

}  // namespace onebit
