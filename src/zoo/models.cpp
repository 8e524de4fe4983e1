#include "onebit/zoo/models.h"

#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <sstream>
#include <stdexcept>

#include "onebit/nn.h"

namespace onebit::zoo {
namespace {

struct Binary {
  bool on;
  quantizers::QuantizerSpec q(const char* id) const {
    return on ? quantizers::QuantizerSpec(id) : nullptr;
  }
  constraints::ConstraintSpec clip() const {
    return on ? constraints::ConstraintSpec("weight_clip") : nullptr;
  }
};

nn::BatchNorm batch_norm(int64_t c, const ModelOptions& o) {
  return nn::BatchNorm(
      nn::BatchNormOptions(c).momentum(o.bn_momentum).eps(o.bn_eps).scale(false));
}

void check_input(const std::string& name, const ModelOptions& o, int64_t min_hw) {
  if (o.input_shape.size() != 3 || o.input_shape[0] <= 0 || o.input_shape[1] < min_hw ||
      o.input_shape[2] < min_hw) {
    std::ostringstream msg;
    msg << name << ": input_shape must be C,H,W with H, W >= " << min_hw << ", got [";
    for (size_t i = 0; i < o.input_shape.size(); ++i) msg << (i ? "," : "") << o.input_shape[i];
    msg << "]";
    throw std::invalid_argument(msg.str());
  }
  if (o.num_classes < 2) throw std::invalid_argument(name + ": num_classes must be >= 2");
}

// Larq's MNIST tutorial: conv 32 (float input, binary kernel) - pool - BN - conv 64 - pool - BN
// - conv 64 - BN - flatten - dense 64 - BN - dense 10 - BN, no biases, BN without scale.
torch::nn::Sequential larq_mnist(const ModelOptions& o) {
  check_input("larq-mnist", o, 22);
  const Binary b{o.quantized};
  const int64_t c = o.input_shape[0];
  const int64_t h = ((o.input_shape[1] - 2) / 2 - 2) / 2 - 2;
  const int64_t w = ((o.input_shape[2] - 2) / 2 - 2) / 2 - 2;
  auto conv = [&](int64_t in, int64_t out, bool binary_input) {
    return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 3)
                               .bias(false)
                               .input_quantizer(binary_input ? b.q("ste_sign") : nullptr)
                               .kernel_quantizer(b.q("ste_sign"))
                               .kernel_constraint(b.clip()));
  };
  auto dense = [&](int64_t in, int64_t out) {
    return nn::QuantDense(nn::QuantDenseOptions(in, out)
                              .bias(false)
                              .input_quantizer(b.q("ste_sign"))
                              .kernel_quantizer(b.q("ste_sign"))
                              .kernel_constraint(b.clip()));
  };
  return torch::nn::Sequential(
      conv(c, 32, false), torch::nn::MaxPool2d(2), batch_norm(32, o),
      conv(32, 64, true), torch::nn::MaxPool2d(2), batch_norm(64, o),
      conv(64, 64, true), batch_norm(64, o),
      torch::nn::Flatten(),
      dense(64 * h * w, 64), batch_norm(64, o),
      dense(64, o.num_classes), batch_norm(o.num_classes, o));
}

// A fully binarized MLP: float input to the first layer, binary everything else.
torch::nn::Sequential bnn_mlp(const ModelOptions& o) {
  check_input("bnn-mlp", o, 1);
  const Binary b{o.quantized};
  const int64_t in = o.input_shape[0] * o.input_shape[1] * o.input_shape[2];
  auto dense = [&](int64_t i, int64_t out, bool binary_input) {
    return nn::QuantDense(nn::QuantDenseOptions(i, out)
                              .bias(false)
                              .input_quantizer(binary_input ? b.q("ste_sign") : nullptr)
                              .kernel_quantizer(b.q("ste_sign"))
                              .kernel_constraint(b.clip()));
  };
  return torch::nn::Sequential(torch::nn::Flatten(),
                               dense(in, 512, false), batch_norm(512, o),
                               dense(512, 512, true), batch_norm(512, o),
                               dense(512, o.num_classes, true), batch_norm(o.num_classes, o));
}

}  // namespace

nlohmann::json ModelOptions::to_json() const {
  return {{"quantized", quantized},       {"bn_momentum", bn_momentum}, {"bn_eps", bn_eps},
          {"input_shape", input_shape}, {"num_classes", num_classes}};
}

ModelOptions ModelOptions::from_json(const nlohmann::json& j) {
  ModelOptions o;
  if (!j.is_object()) throw std::invalid_argument("model options must be a JSON object, got " + j.dump());
  for (const auto& item : j.items()) {
    const auto& k = item.key();
    const auto& v = item.value();
    try {
      if (k == "quantized") o.quantized = v.get<bool>();
      else if (k == "bn_momentum") o.bn_momentum = v.get<double>();
      else if (k == "bn_eps") o.bn_eps = v.get<double>();
      else if (k == "input_shape") o.input_shape = v.get<std::vector<int64_t>>();
      else if (k == "num_classes") o.num_classes = v.get<int64_t>();
      else throw std::invalid_argument("unknown model option \"" + k + "\"");
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("model option \"" + k + "\" has the wrong type: " + v.dump());
    }
  }
  return o;
}

std::vector<std::string> model_names() { return {"larq-mnist", "bnn-mlp"}; }

torch::nn::Sequential build(const std::string& name, const ModelOptions& options) {
  if (name == "larq-mnist") return larq_mnist(options);
  if (name == "bnn-mlp") return bnn_mlp(options);
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model \"" + name + "\" (known: " + known + ")");
}

}  // namespace onebit::zoo
