#pragma once
// The small model whose files seed the checkpoint fuzzer (and which it reads weights into): a
// binary dense block with batch norm, a few kilobytes on disk.

#include "onebit/nn.h"

namespace onebit::fuzz {

inline nn::Graph tiny_model() {
  nn::Graph g;
  auto x = g->input();
  x = g->call("dense1",
              nn::QuantDense(nn::QuantDenseOptions(12, 8)
                                 .kernel_quantizer("ste_sign")
                                 .kernel_constraint("weight_clip")),
              x);
  x = g->call("bn", nn::BatchNorm(8), x);
  x = g->call("dense2",
              nn::QuantDense(nn::QuantDenseOptions(8, 4)
                                 .input_quantizer("ste_sign")
                                 .kernel_quantizer("ste_sign")
                                 .kernel_constraint("weight_clip")),
              x);
  g->output(x);
  return g;
}

}  // namespace onebit::fuzz
