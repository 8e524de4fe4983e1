#include "onebit/zoo/models.h"

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "../json_integer.h"
#include "literature.h"
#include "onebit/log.h"
#include "onebit/nn.h"
#include "zoo_util.h"

namespace onebit::zoo {
namespace detail {

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

nn::BatchNorm batch_norm(int64_t channels, const ModelOptions& o, double keras_momentum, double eps,
                         bool scale, bool center) {
  return nn::BatchNorm(
      nn::BatchNormOptions(channels)
          // 1 - 0.9 is 0.09999999999999998 in doubles: round to 12 digits.
          .momentum(o.bn_momentum.value_or(std::round((1.0 - keras_momentum) * 1e12) / 1e12))
          .eps(o.bn_eps.value_or(eps))
          .scale(scale)
          .center(center));
}

}  // namespace detail

namespace {

using detail::check_input;

struct Binary {
  bool on;
  bool weights = true;  ///< false: real-valued kernels (two-stage training's first stage)
  quantizers::QuantizerSpec q(const char* id) const {
    return on ? quantizers::QuantizerSpec(id) : nullptr;
  }
  /// A kernel quantizer: none in the float copy or with real-valued weights.
  quantizers::QuantizerSpec kq(const char* id) const { return weights ? q(id) : nullptr; }
  constraints::ConstraintSpec clip() const {
    return on && weights ? constraints::ConstraintSpec("weight_clip") : nullptr;
  }
};

// onebit's own models: Keras' BN epsilon, LibTorch momentum 0.1 (Keras 0.9), no scale.
nn::BatchNorm batch_norm(int64_t c, const ModelOptions& o) {
  return detail::batch_norm(c, o, 0.9, 1e-3, /*scale=*/false);
}

// Larq's MNIST tutorial: conv 32 (float input, binary kernel) - pool - BN - conv 64 - pool - BN
// - conv 64 - BN - flatten - dense 64 - BN - dense 10 - BN, no biases, BN without scale.
nn::Graph larq_mnist(const ModelOptions& o) {
  check_input("larq-mnist", o, 22);
  const Binary b{o.quantized, o.binary_weights};
  const int64_t c = o.input_shape[0];
  const int64_t h = ((o.input_shape[1] - 2) / 2 - 2) / 2 - 2;
  const int64_t w = ((o.input_shape[2] - 2) / 2 - 2) / 2 - 2;
  auto conv = [&](int64_t in, int64_t out, bool binary_input) {
    return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 3)
                               .bias(false)
                               .input_quantizer(binary_input ? b.q("ste_sign") : nullptr)
                               .kernel_quantizer(b.kq("ste_sign"))
                               .kernel_constraint(b.clip()));
  };
  auto dense = [&](int64_t in, int64_t out) {
    return nn::QuantDense(nn::QuantDenseOptions(in, out)
                              .bias(false)
                              .input_quantizer(b.q("ste_sign"))
                              .kernel_quantizer(b.kq("ste_sign"))
                              .kernel_constraint(b.clip()));
  };
  return torch::nn::Sequential(conv(c, 32, false), torch::nn::MaxPool2d(2), batch_norm(32, o),
                               conv(32, 64, true), torch::nn::MaxPool2d(2), batch_norm(64, o),
                               conv(64, 64, true), batch_norm(64, o), torch::nn::Flatten(),
                               dense(64 * h * w, 64), batch_norm(64, o), dense(64, o.num_classes),
                               batch_norm(o.num_classes, o));
}

// A fully binarized MLP: float input to the first layer, binary everything else.
nn::Graph bnn_mlp(const ModelOptions& o) {
  check_input("bnn-mlp", o, 1);
  const Binary b{o.quantized, o.binary_weights};
  const int64_t in = o.input_shape[0] * o.input_shape[1] * o.input_shape[2];
  auto dense = [&](int64_t i, int64_t out, bool binary_input) {
    return nn::QuantDense(nn::QuantDenseOptions(i, out)
                              .bias(false)
                              .input_quantizer(binary_input ? b.q("ste_sign") : nullptr)
                              .kernel_quantizer(b.kq("ste_sign"))
                              .kernel_constraint(b.clip()));
  };
  return torch::nn::Sequential(torch::nn::Flatten(), dense(in, 512, false), batch_norm(512, o),
                               dense(512, 512, true), batch_norm(512, o),
                               dense(512, o.num_classes, true), batch_norm(o.num_classes, o));
}

// A binary 3x3 convolution in Larq's style: sign of the input, sign of the kernel (latent
// weights clipped to [-1, 1]), no bias, "same" padding with +1 (so the padded input stays
// binary and runs free on bit-packed data).
nn::QuantConv2d binary_conv(int64_t in, int64_t out, int64_t stride, const Binary& b) {
  return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 3)
                             .stride(stride)
                             .padding(torch::kSame)
                             .pad_values(b.on ? 1.0 : 0.0)
                             .bias(false)
                             .input_quantizer(b.q("ste_sign"))
                             .kernel_quantizer(b.kq("ste_sign"))
                             .kernel_constraint(b.clip()));
}

// The float first layer both graph models share: 3x3 conv to `channels`, 2x2 max pooling,
// batch norm (28x28 -> 14x14).
nn::Value float_stem(nn::Graph& g, int64_t channels, const ModelOptions& o) {
  nn::Value x = g->call(
      "stem_conv",
      nn::QuantConv2d(
          nn::QuantConv2dOptions(o.input_shape[0], channels, 3).padding(torch::kSame).bias(false)),
      g->input());
  x = g->call("stem_pool", torch::nn::MaxPool2d(2), x);
  return g->call("stem_bn", batch_norm(channels, o), x);
}

// The float classifier both graph models share: global average pooling, dense to the classes.
void float_head(nn::Graph& g, nn::Value x, int64_t channels, const ModelOptions& o) {
  x = g->call("pool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)), x);
  x = g->call("flatten", torch::nn::Flatten(), x);
  x = g->call("dense", nn::QuantDense(nn::QuantDenseOptions(channels, o.num_classes)), x);
  g->output(x);
}

// Bi-Real Net's idea at Fashion-MNIST size: a real-valued shortcut around every binary 3x3
// convolution, x <- x + BN(conv(sign(x))). Where the shape changes, the shortcut is average
// pooling (stride 2) and a float 1x1 convolution with batch norm, as in Bi-Real Net and Larq
// Zoo's BinaryResNetE. Stages: 32 channels at 14x14 (2 blocks), 64 at 7x7 (2), 128 at 7x7 (2).
nn::Graph bireal_mnist(const ModelOptions& o) {
  check_input("bireal-mnist", o, 8);
  const Binary b{o.quantized, o.binary_weights};
  nn::Graph g;
  nn::Value x = float_stem(g, 32, o);
  int64_t channels = 32;
  int block = 0;
  for (const auto& [out, stride] : std::vector<std::pair<int64_t, int64_t>>{
           {32, 1}, {32, 1}, {64, 2}, {64, 1}, {128, 1}, {128, 1}}) {
    const std::string n = "block" + std::to_string(++block);
    nn::Value shortcut = x;
    if (stride != 1 || out != channels) {
      if (stride != 1) {
        shortcut = g->call(n + "_down_pool",
                           torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(stride)), shortcut);
      }
      shortcut =
          g->call(n + "_down_conv",
                  nn::QuantConv2d(nn::QuantConv2dOptions(channels, out, 1).bias(false)), shortcut);
      shortcut = g->call(n + "_down_bn", batch_norm(out, o), shortcut);
    }
    nn::Value y = g->call(n + "_conv", binary_conv(channels, out, stride, b), x);
    y = g->call(n + "_bn", batch_norm(out, o), y);
    x = g->add({shortcut, y}, n + "_add");
    channels = out;
  }
  float_head(g, x, channels, o);
  return g;
}

// BinaryDenseNet's idea at Fashion-MNIST size: each layer appends `growth` binary feature maps
// to everything before it, x <- concat(x, conv(sign(BN(x)))). Two dense blocks of 3 layers
// (14x14, then 7x7) joined by a transition (max pooling, batch norm, float 1x1 convolution that
// halves the channels), as in Larq Zoo's BinaryDenseNet.
nn::Graph densenet_mnist(const ModelOptions& o) {
  check_input("densenet-mnist", o, 8);
  const Binary b{o.quantized, o.binary_weights};
  const int64_t growth = 32;
  nn::Graph g;
  nn::Value x = float_stem(g, 32, o);
  int64_t channels = 32;
  for (int block = 1; block <= 2; ++block) {
    if (block > 1) {
      const std::string t = "transition" + std::to_string(block - 1);
      x = g->call(t + "_pool", torch::nn::MaxPool2d(2), x);
      x = g->call(t + "_bn", batch_norm(channels, o), x);
      x = g->call(t + "_conv",
                  nn::QuantConv2d(nn::QuantConv2dOptions(channels, channels / 2, 1).bias(false)),
                  x);
      channels /= 2;
    }
    for (int layer = 1; layer <= 3; ++layer) {
      const std::string n = "dense" + std::to_string(block) + "_" + std::to_string(layer);
      nn::Value y = g->call(n + "_bn", batch_norm(channels, o), x);
      y = g->call(n + "_conv", binary_conv(channels, growth, 1, b), y);
      x = g->concat({x, y}, n + "_concat");
      channels += growth;
    }
  }
  x = g->call("head_bn", batch_norm(channels, o), x);
  float_head(g, x, channels, o);
  return g;
}

}  // namespace

nlohmann::json ModelOptions::to_json() const {
  return {{"quantized", quantized},
          {"binary_weights", binary_weights},
          {"bn_momentum", bn_momentum ? nlohmann::json(*bn_momentum) : nlohmann::json(nullptr)},
          {"bn_eps", bn_eps ? nlohmann::json(*bn_eps) : nlohmann::json(nullptr)},
          {"input_shape", input_shape},
          {"num_classes", num_classes}};
}

ModelOptions ModelOptions::from_json(const nlohmann::json& j) {
  ModelOptions o;
  if (!j.is_object())
    throw std::invalid_argument("model options must be a JSON object, got " + j.dump());
  for (const auto& item : j.items()) {
    const auto& k = item.key();
    const auto& v = item.value();
    try {
      if (k == "quantized")
        o.quantized = v.get<bool>();
      else if (k == "binary_weights")
        o.binary_weights = v.get<bool>();
      else if (k == "bn_momentum")
        o.bn_momentum = v.is_null() ? std::nullopt : std::optional<double>(v.get<double>());
      else if (k == "bn_eps")
        o.bn_eps = v.is_null() ? std::nullopt : std::optional<double>(v.get<double>());
      else if (k == "input_shape")
        o.input_shape = onebit::detail::json_integers<int64_t>(v, "model option \"input_shape\"");
      else if (k == "num_classes")
        o.num_classes = onebit::detail::json_integer<int64_t>(v, "model option \"num_classes\"");
      else
        throw std::invalid_argument("unknown model option \"" + k + "\"");
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("model option \"" + k + "\" has the wrong type: " + v.dump());
    }
  }
  return o;
}

namespace {

struct Entry {
  detail::ZooEntry entry;
  std::vector<int64_t> input_shape;
  int64_t num_classes;
};

const std::vector<Entry>& table() {
  static const std::vector<Entry> entries = [] {
    const std::vector<int64_t> mnist = {1, 28, 28}, imagenet = {3, 224, 224};
    std::vector<Entry> e = {
        {{"larq-mnist", "Larq's MNIST tutorial CNN: 3 binary convs, 2 binary dense layers",
          larq_mnist},
         mnist,
         10},
        {{"bnn-mlp", "A fully binarized MLP: 3 binary dense layers", bnn_mlp}, mnist, 10},
        {{"bireal-mnist", "Bi-Real-style shortcuts at Fashion-MNIST size (6 binary convs)",
          bireal_mnist},
         mnist,
         10},
        {{"densenet-mnist", "BinaryDenseNet-style blocks at Fashion-MNIST size (6 binary convs)",
          densenet_mnist},
         mnist,
         10},
    };
    for (const auto& l : detail::literature_models()) e.push_back({l, imagenet, 1000});
    return e;
  }();
  return entries;
}

std::string squash(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c != '-' && c != '_') out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

const Entry& find(const std::string& name) {
  const std::string key = squash(name);
  for (const auto& e : table()) {
    if (squash(e.entry.name) == key) return e;
  }
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model \"" + name + "\" (known: " + known + ")");
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& e : table()) names.emplace_back(e.entry.name);
  return names;
}

std::string canonical_name(const std::string& name) { return find(name).entry.name; }

std::string model_description(const std::string& name) { return find(name).entry.description; }

ModelOptions resolve_options(const std::string& name, ModelOptions options) {
  const Entry& e = find(name);
  if (options.input_shape.empty()) options.input_shape = e.input_shape;
  if (options.num_classes == 0) options.num_classes = e.num_classes;
  const auto& s = options.input_shape;
  constexpr int64_t kMaxSide = int64_t{1} << 16;
  if (s.size() != 3 || s[0] < 1 || s[1] < 1 || s[2] < 1 || s[0] > kMaxSide || s[1] > kMaxSide ||
      s[2] > kMaxSide) {
    std::string dims;
    for (int64_t d : s) dims += (dims.empty() ? "" : ",") + std::to_string(d);
    throw std::invalid_argument(std::string(e.entry.name) +
                                ": input_shape must be C,H,W with each in [1, " +
                                std::to_string(kMaxSide) + "], got [" + dims + "]");
  }
  if (options.num_classes < 1 || options.num_classes > (int64_t{1} << 24)) {
    throw std::invalid_argument(std::string(e.entry.name) +
                                ": num_classes must be in [1, 16777216], got " +
                                std::to_string(options.num_classes));
  }
  return options;
}

nn::Graph build(const std::string& name, const ModelOptions& options) {
  const Entry& e = find(name);
  // The published definitions are deliberate: DoReFa-Net's and ReActNet's binary kernels have no
  // weight constraint, so the layers' advice to add one is not passed on for zoo models.
  auto outer = std::make_shared<WarningHandler>();
  *outer = set_warning_handler([outer](const std::string& message) {
    if (message.find("has no constraint") != std::string::npos) return;
    if (*outer) {
      (*outer)(message);
    } else {
      std::cerr << "onebit: warning: " << message << std::endl;
    }
  });
  const WarningHandler previous = *outer;
  try {
    nn::Graph g = e.entry.build(resolve_options(name, options));
    set_warning_handler(previous);
    return g;
  } catch (...) {
    set_warning_handler(previous);
    throw;
  }
}

}  // namespace onebit::zoo
