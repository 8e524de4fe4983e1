// The seed question, answered with onebit: binary weights in the forward pass, real-valued latent
// weights updated by the backward pass. Trains a tiny binary layer on a toy problem.
#include <onebit/nn.h>
#include <onebit/runtime/version.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  namespace nn = onebit::nn;
  // A dense layer whose kernel is binarized (sign) in the forward pass; the latent float kernel
  // is what the optimizer updates, clipped to [-1, 1] after each step.
  nn::QuantDense layer(nn::QuantDenseOptions(16, 1)
                           .kernel_quantizer("ste_sign")
                           .kernel_constraint("weight_clip"));
  torch::optim::Adam opt(layer->parameters(), torch::optim::AdamOptions(0.05));

  auto x = torch::randn({256, 16});
  auto y = x.sum(1, /*keepdim=*/true);  // all +1 weights solve this exactly
  for (int step = 0; step < 100; ++step) {
    opt.zero_grad();
    auto loss = torch::mse_loss(layer->forward(x), y);
    loss.backward();
    opt.step();
    onebit::apply_constraints(*layer);
  }
  auto binary = layer->quantized_weight();
  std::cout << "onebit runtime " << onebit::runtime::version() << "\n"
            << "binary weights: " << binary << "\n";
  // Every binary weight is exactly +-1 and the latent weights stay within the clip.
  bool ok = binary.abs().eq(1).all().item<bool>() && layer->weight.abs().le(1).all().item<bool>() &&
            binary.eq(1).all().item<bool>();
  std::cout << (ok ? "consumer example: OK" : "consumer example: FAILED") << std::endl;
  return ok ? 0 : 1;
}
