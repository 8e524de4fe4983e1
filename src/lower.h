#pragma once
// Internal: the lower functions of the built-in layer kinds (registered in registry.cpp,
// implemented in lower.cpp). Each turns one traced node into runtime ops; see onebit/convert.h.

#include "onebit/convert.h"

namespace onebit::lower {

Lowered quant_dense(Lowering& l, const torch::nn::Module& m);
Lowered quant_conv2d(Lowering& l, const torch::nn::Module& m);
Lowered batch_norm(Lowering& l, const torch::nn::Module& m);
Lowered quantizer(Lowering& l, const torch::nn::Module& m);
Lowered add(Lowering& l, const torch::nn::Module& m);
Lowered concat(Lowering& l, const torch::nn::Module& m);
Lowered torch_conv2d(Lowering& l, const torch::nn::Module& m);
Lowered torch_linear(Lowering& l, const torch::nn::Module& m);
Lowered torch_batch_norm1d(Lowering& l, const torch::nn::Module& m);
Lowered torch_batch_norm2d(Lowering& l, const torch::nn::Module& m);
Lowered max_pool2d(Lowering& l, const torch::nn::Module& m);
Lowered avg_pool2d(Lowering& l, const torch::nn::Module& m);
Lowered adaptive_avg_pool2d(Lowering& l, const torch::nn::Module& m);
Lowered flatten(Lowering& l, const torch::nn::Module& m);
Lowered relu(Lowering& l, const torch::nn::Module& m);
Lowered softmax(Lowering& l, const torch::nn::Module& m);
/// Layers that are the identity in eval mode (dropout).
Lowered identity(Lowering& l, const torch::nn::Module& m);
Lowered quant_depthwise_conv2d(Lowering& l, const torch::nn::Module& m);
Lowered blur_pool2d(Lowering& l, const torch::nn::Module& m);
Lowered multiply(Lowering& l, const torch::nn::Module& m);
Lowered slice(Lowering& l, const torch::nn::Module& m);
Lowered learnable_bias(Lowering& l, const torch::nn::Module& m);
Lowered torch_prelu(Lowering& l, const torch::nn::Module& m);
Lowered sigmoid(Lowering& l, const torch::nn::Module& m);
Lowered torch_hardtanh(Lowering& l, const torch::nn::Module& m);
/// onebit's HardTanh: clip to [-1, 1].
Lowered hard_tanh(Lowering& l, const torch::nn::Module& m);

}  // namespace onebit::lower
