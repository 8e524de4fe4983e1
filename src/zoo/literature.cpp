// The published BNN architectures of Larq Zoo (literature and sota) and ReActNet-A, written
// from their definitions: quantizers per layer, constraints, shortcut kind, batch-norm
// placement and settings, transitions and heads as published. Differences that a PyTorch-layout
// library forces are listed in docs/zoo.md (the head outputs logits; Keras "same" max pooling
// with a 3x3 window is PyTorch's padding 1; "same" average pooling is ceil mode).

#include "literature.h"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "onebit/constraints.h"
#include "onebit/quantizers.h"
#include "zoo_util.h"

namespace onebit::zoo::detail {
namespace {

using nn::Value;

/// The quantizers and constraint of a model's binary layers; all null in the float copy.
struct Quant {
  quantizers::QuantizerSpec input, kernel;
  constraints::ConstraintSpec constraint;
};

Quant quant(const ModelOptions& o, quantizers::QuantizerSpec input,
            quantizers::QuantizerSpec kernel, constraints::ConstraintSpec constraint) {
  if (!o.quantized) return {};
  if (!o.binary_weights) return {std::move(input), nullptr, nullptr};
  return {std::move(input), std::move(kernel), std::move(constraint)};
}

quantizers::QuantizerSpec ste_sign(double clip) {
  return quantizers::QuantizerSpec(std::make_shared<quantizers::SteSign>(clip));
}

constraints::ConstraintSpec weight_clip(double clip) {
  return constraints::ConstraintSpec(std::make_shared<constraints::WeightClip>(clip));
}

/// A convolution without bias and without quantizers (a float layer), Keras "same" padding.
nn::QuantConv2dOptions float_conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return nn::QuantConv2dOptions(in, out, k).stride(stride).padding(torch::kSame).bias(false);
}

/// A binary convolution: `q`'s quantizers and constraint, no bias, Keras "same" padding.
nn::QuantConv2dOptions binary_conv(int64_t in, int64_t out, int64_t k, const Quant& q,
                                   int64_t stride = 1) {
  return float_conv(in, out, k, stride)
      .input_quantizer(q.input)
      .kernel_quantizer(q.kernel)
      .kernel_constraint(q.constraint);
}

nn::QuantDenseOptions dense(int64_t in, int64_t out, bool bias) {
  return nn::QuantDenseOptions(in, out).bias(bias);
}

/// Keras MaxPool2D(k, strides=2, padding="same") for odd k: PyTorch padding k / 2 gives Keras'
/// output size ceil(n / 2) on every input.
torch::nn::MaxPool2d same_max_pool(int64_t k, int64_t stride) {
  return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(k).stride(stride).padding(k / 2));
}

/// Keras "same" pooling with window = stride (2x2, stride 2): PyTorch's ceil mode, which pads
/// the end and leaves the padding out of averages, exactly as Keras does.
torch::nn::AvgPool2d same_avg_pool2() {
  return torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2).stride(2).ceil_mode(true));
}
torch::nn::MaxPool2d same_max_pool2() {
  return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2).ceil_mode(true));
}

/// Global average pooling, flatten and a dense classifier with bias (Larq Zoo's heads).
void classifier(nn::Graph& g, Value x, int64_t channels, const ModelOptions& o,
                const std::string& prefix = "head") {
  x = g->call(prefix + "_pool",
              torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)), x);
  x = g->call(prefix + "_flatten", torch::nn::Flatten(), x);
  x = g->call(prefix + "_dense", nn::QuantDense(dense(channels, o.num_classes, true)), x);
  g->output(x);
}

Value relu(nn::Graph& g, const std::string& name, Value x) {
  return g->call(name, torch::nn::ReLU(), x);
}

// ---- BinaryAlexNet (Hubara et al. 2016, Larq Zoo's binary_alexnet) ---------------------------

nn::Graph binary_alexnet(const ModelOptions& o) {
  check_input("binary-alexnet", o, 57);
  const Quant q = quant(o, "ste_sign", "ste_sign", "weight_clip");
  nn::Graph g;
  Value x = g->input();
  int64_t h = o.input_shape[1], w = o.input_shape[2];
  int64_t channels = o.input_shape[0];
  int n = 0;
  // Conv (binary kernel; float input in the first layer), optional 3x3/2 max pool, batch norm
  // without scale.
  auto conv_block = [&](int64_t features, int64_t k, int64_t stride, bool pool, bool first) {
    const std::string name = "conv" + std::to_string(++n);
    nn::QuantConv2dOptions c = binary_conv(channels, features, k, q, stride);
    if (first) c.input_quantizer(nullptr);
    x = g->call(name, nn::QuantConv2d(c), x);
    h = ceil_div(h, stride);
    w = ceil_div(w, stride);
    if (pool) {
      x = g->call(name + "_pool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2)),
                  x);
      h = valid_out(h, 3, 2);
      w = valid_out(w, 3, 2);
    }
    x = g->call(name + "_bn", batch_norm(features, o, 0.9, 1e-3, /*scale=*/false), x);
    channels = features;
  };
  conv_block(64, 11, 4, true, true);
  conv_block(192, 5, 1, true, false);
  conv_block(384, 3, 1, false, false);
  conv_block(384, 3, 1, false, false);
  conv_block(256, 3, 1, true, false);
  // Larq Zoo reshapes to 1x1 and uses 1x1 binary convolutions: binary dense layers.
  x = g->call("flatten", torch::nn::Flatten(), x);
  int64_t features = channels * h * w;
  int d = 0;
  for (int64_t units : {int64_t{4096}, int64_t{4096}, o.num_classes}) {
    const std::string name = "dense" + std::to_string(++d);
    x = g->call(name,
                nn::QuantDense(dense(features, units, false)
                                   .input_quantizer(q.input)
                                   .kernel_quantizer(q.kernel)
                                   .kernel_constraint(q.constraint)),
                x);
    x = g->call(name + "_bn", batch_norm(units, o, 0.9, 1e-3, /*scale=*/false), x);
    features = units;
  }
  g->output(x);
  return g;
}

// ---- XNOR-Net (Rastegari et al. 2016, Larq Zoo's xnornet) -------------------------------------

nn::Graph xnornet(const ModelOptions& o) {
  check_input("xnornet", o, 57);
  const Quant q = quant(o, "ste_sign", "xnor_weight_scale", "weight_clip");
  nn::Graph g;
  Value x = g->input();
  int64_t h = ceil_div(o.input_shape[1], 4), w = ceil_div(o.input_shape[2], 4);
  x = g->call("conv1", nn::QuantConv2d(float_conv(o.input_shape[0], 96, 11, 4)), x);
  x = g->call("conv1_bn", batch_norm(96, o, 0.9, 1e-5, false), x);
  x = relu(g, "conv1_relu", x);
  auto pool = [&](const std::string& name) {
    x = g->call(name, torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2)), x);
    h = valid_out(h, 3, 2);
    w = valid_out(w, 3, 2);
  };
  pool("conv1_pool");
  x = g->call("conv1_pool_bn", batch_norm(96, o, 0.9, 1e-4, false), x);
  int64_t channels = 96;
  struct Layer {
    int64_t features, k;
    bool pool;
  };
  int n = 1;
  for (const Layer& l :
       {Layer{256, 5, true}, Layer{384, 3, false}, Layer{384, 3, false}, Layer{256, 3, true}}) {
    const std::string name = "conv" + std::to_string(++n);
    x = g->call(name, nn::QuantConv2d(binary_conv(channels, l.features, l.k, q)), x);
    if (l.pool) pool(name + "_pool");
    x = g->call(name + "_bn", batch_norm(l.features, o, 0.9, 1e-4, false), x);
    channels = l.features;
  }
  // A 6x6 "valid" binary convolution to 4096 channels: the first fully connected layer of
  // AlexNet at 224x224. Smaller inputs get a kernel as large as the feature map.
  const int64_t kh = std::min<int64_t>(6, h), kw = std::min<int64_t>(6, w);
  x = g->call("fc1",
              nn::QuantConv2d(nn::QuantConv2dOptions(channels, 4096, {kh, kw})
                                  .bias(false)
                                  .input_quantizer(q.input)
                                  .kernel_quantizer(q.kernel)
                                  .kernel_constraint(q.constraint)),
              x);
  h = h - kh + 1;
  w = w - kw + 1;
  x = g->call("fc1_bn", batch_norm(4096, o, 0.9, 1e-4, false), x);
  x = g->call("fc2", nn::QuantConv2d(binary_conv(4096, 4096, 1, q)), x);
  x = g->call("fc2_bn", batch_norm(4096, o, 0.9, 1e-3, false), x);
  x = relu(g, "fc2_relu", x);
  x = g->call("flatten", torch::nn::Flatten(), x);
  x = g->call("logits", nn::QuantDense(dense(4096 * h * w, o.num_classes, false)), x);
  g->output(x);
  return g;
}

// ---- DoReFa-Net (Zhou et al. 2016, Larq Zoo's dorefanet) -------------------------------------

nn::Graph dorefanet(const ModelOptions& o) {
  check_input("dorefanet", o, 44);
  const Quant q =
      quant(o, quantizers::QuantizerSpec(std::make_shared<quantizers::DoReFa>(2, "activations")),
            "magnitude_aware_sign_unclipped", nullptr);
  nn::Graph g;
  Value x = g->input();
  // The float first layer: 12x12 stride 4 "valid", with bias.
  x = g->call("conv1", nn::QuantConv2d(nn::QuantConv2dOptions(o.input_shape[0], 96, 12).stride(4)),
              x);
  int64_t h = valid_out(o.input_shape[1], 12, 4), w = valid_out(o.input_shape[2], 12, 4);
  int64_t channels = 96;
  int n = 1;
  // 2-bit activations, binary (per-layer scaled) kernel, batch norm without scale, then a 3x3/2
  // max pool ("same" or "valid").
  auto conv_block = [&](int64_t filters, int64_t k, bool pool, bool pool_same) {
    const std::string name = "conv" + std::to_string(++n);
    x = g->call(name, nn::QuantConv2d(binary_conv(channels, filters, k, q)), x);
    x = g->call(name + "_bn", batch_norm(filters, o, 0.9, 1e-4, false), x);
    if (pool) {
      if (pool_same) {
        x = g->call(name + "_pool", same_max_pool(3, 2), x);
        h = ceil_div(h, 2);
        w = ceil_div(w, 2);
      } else {
        x = g->call(name + "_pool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2)),
                    x);
        h = valid_out(h, 3, 2);
        w = valid_out(w, 3, 2);
      }
    }
    channels = filters;
  };
  conv_block(256, 5, true, true);
  conv_block(384, 3, true, true);
  conv_block(384, 3, false, false);
  conv_block(256, 3, true, false);
  x = g->call("flatten", torch::nn::Flatten(), x);
  int64_t features = channels * h * w;
  for (int i = 1; i <= 2; ++i) {
    const std::string name = "fc" + std::to_string(i);
    x = g->call(name,
                nn::QuantDense(dense(features, 4096, false)
                                   .input_quantizer(q.input)
                                   .kernel_quantizer(q.kernel)
                                   .kernel_constraint(q.constraint)),
                x);
    x = g->call(name + "_bn", batch_norm(4096, o, 0.9, 1e-4, false), x);
    features = 4096;
  }
  // Larq Zoo's clip_by_value_activation: clip to [0, 1].
  x = g->call("fc2_clip", torch::nn::Hardtanh(torch::nn::HardtanhOptions().min_val(0).max_val(1)),
              x);
  x = g->call("logits", nn::QuantDense(dense(4096, o.num_classes, true)), x);
  g->output(x);
  return g;
}

// ---- Bi-Real Net 18 (Liu et al. 2018, Larq Zoo's birealnet) ----------------------------------

nn::Graph birealnet(const ModelOptions& o) {
  check_input("birealnet", o, 2);
  const Quant q = quant(o, "approx_sign", "magnitude_aware_sign", "weight_clip");
  const int64_t filters = 64;
  nn::Graph g;
  Value x = g->input();
  x = g->call("stem_conv", nn::QuantConv2d(float_conv(o.input_shape[0], filters, 7, 2)), x);
  x = g->call("stem_bn", batch_norm(filters, o, 0.8, 1e-3), x);
  x = g->call("stem_pool", same_max_pool(3, 2), x);
  int64_t channels = filters;
  int n = 0;
  // x + BN(conv(sign(x))), the shortcut average-pooled and projected where channels double.
  auto residual_block = [&](int64_t out) {
    const std::string name = "block" + std::to_string(++n);
    Value shortcut = x;
    if (out != channels) {
      shortcut = g->call(name + "_down_pool", same_avg_pool2(), shortcut);
      shortcut =
          g->call(name + "_down_conv", nn::QuantConv2d(float_conv(channels, out, 1)), shortcut);
      shortcut = g->call(name + "_down_bn", batch_norm(out, o, 0.8, 1e-3), shortcut);
    }
    Value y =
        g->call(name + "_conv",
                nn::QuantConv2d(binary_conv(channels, out, 3, q, out == channels ? 1 : 2)), x);
    y = g->call(name + "_bn", batch_norm(out, o, 0.8, 1e-3), y);
    x = g->add({y, shortcut}, name + "_add");
    channels = out;
  };
  for (int i = 0; i < 4; ++i) residual_block(filters);
  for (int stage = 0; stage < 3; ++stage) {
    residual_block(channels * 2);
    for (int i = 0; i < 3; ++i) residual_block(channels);
  }
  classifier(g, x, channels, o);
  return g;
}

// ---- The float stems of ResNet-E and BinaryDenseNet ------------------------------------------

/// Inputs under 50 pixels: a 3x3 convolution only. ImageNet: 7x7/2 convolution, batch norm,
/// ReLU, 3x3/2 max pool (and, for ResNet-E, one more batch norm).
Value small_or_imagenet_stem(nn::Graph& g, const ModelOptions& o, int64_t filters,
                             bool bn_after_pool) {
  Value x = g->input();
  if (o.input_shape[1] < 50) {
    return g->call("stem_conv", nn::QuantConv2d(float_conv(o.input_shape[0], filters, 3)), x);
  }
  x = g->call("stem_conv", nn::QuantConv2d(float_conv(o.input_shape[0], filters, 7, 2)), x);
  x = g->call("stem_bn", batch_norm(filters, o, 0.9, 1e-5), x);
  x = relu(g, "stem_relu", x);
  x = g->call("stem_pool", same_max_pool(3, 2), x);
  if (bn_after_pool) x = g->call("stem_pool_bn", batch_norm(filters, o, 0.9, 1e-5), x);
  return x;
}

// ---- Binary ResNet-E 18 (Bethge et al. 2019, Larq Zoo's binary_resnet_e_18) --------------------

nn::Graph binary_resnet_e18(const ModelOptions& o) {
  check_input("binary-resnet-e18", o, 2);
  const Quant q = quant(o, ste_sign(1.25), ste_sign(1.25), weight_clip(1.25));
  nn::Graph g;
  Value x = small_or_imagenet_stem(g, o, 64, /*bn_after_pool=*/true);
  int64_t channels = 64;
  int n = 0;
  const std::vector<int64_t> stage_filters = {64, 128, 256, 512};
  for (std::size_t stage = 0; stage < stage_filters.size(); ++stage) {
    const int64_t filters = stage_filters[stage];
    for (int layer = 0; layer < 4; ++layer) {
      const int64_t stride = stage == 0 || layer != 0 ? 1 : 2;
      const std::string name = "block" + std::to_string(++n);
      Value residual = x;
      if (channels != filters) {
        residual = g->call(name + "_down_pool", same_avg_pool2(), residual);
        residual = g->call(name + "_down_conv", nn::QuantConv2d(float_conv(channels, filters, 1)),
                           residual);
        residual = g->call(name + "_down_bn", batch_norm(filters, o, 0.9, 1e-5), residual);
      }
      Value y =
          g->call(name + "_conv", nn::QuantConv2d(binary_conv(channels, filters, 3, q, stride)), x);
      y = g->call(name + "_bn", batch_norm(filters, o, 0.9, 1e-5), y);
      x = g->add({y, residual}, name + "_add");
      channels = filters;
    }
  }
  x = relu(g, "relu", x);
  classifier(g, x, channels, o);
  return g;
}

// ---- BinaryDenseNet 28/37/37-dilated/45 (Bethge et al. 2019, Larq Zoo) ------------------------

struct DenseNetSpec {
  const char* name;
  std::vector<int> layers;
  std::vector<double> reduction;
  std::vector<int64_t> dilation;
};

nn::Graph binary_densenet(const ModelOptions& o, const DenseNetSpec& spec) {
  check_input(spec.name, o, 8);
  const Quant q = quant(o, ste_sign(1.3), ste_sign(1.3), weight_clip(1.3));
  const int64_t growth = 64;
  nn::Graph g;
  Value x = small_or_imagenet_stem(g, o, 64, /*bn_after_pool=*/false);
  int64_t channels = 64;
  for (std::size_t block = 0; block < spec.layers.size(); ++block) {
    for (int layer = 1; layer <= spec.layers[block]; ++layer) {
      const std::string name = "dense" + std::to_string(block + 1) + "_" + std::to_string(layer);
      Value y = g->call(name + "_bn", batch_norm(channels, o, 0.9, 1e-5), x);
      y = g->call(
          name + "_conv",
          nn::QuantConv2d(binary_conv(channels, growth, 3, q).dilation(spec.dilation[block])), y);
      x = g->concat({x, y}, name + "_concat");
      channels += growth;
    }
    if (block + 1 < spec.layers.size()) {
      const std::string name = "transition" + std::to_string(block + 1);
      x = g->call(name + "_bn", batch_norm(channels, o, 0.9, 1e-5), x);
      if (spec.dilation[block + 1] == 1) {
        x = g->call(name + "_pool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)),
                    x);
      }
      x = relu(g, name + "_relu", x);
      // Python: round(channels // reduction / 32) * 32, round half to even.
      const double reduced = std::floor(static_cast<double>(channels) / spec.reduction[block]);
      const int64_t out = static_cast<int64_t>(std::nearbyint(reduced / 32.0)) * 32;
      x = g->call(name + "_conv", nn::QuantConv2d(float_conv(channels, out, 1)), x);
      channels = out;
    }
  }
  x = g->call("head_bn", batch_norm(channels, o, 0.9, 1e-5), x);
  x = relu(g, "head_relu", x);
  classifier(g, x, channels, o);
  return g;
}

// ---- MeliusNet 22 (Bethge et al. 2020, Larq Zoo's meliusnet22) --------------------------------

nn::Graph meliusnet22(const ModelOptions& o) {
  check_input("meliusnet22", o, 4);
  const Quant q = quant(o, ste_sign(1.3), ste_sign(1.3), weight_clip(1.3));
  auto norm = [&](int64_t c) { return batch_norm(c, o, 0.9, 1e-5); };
  nn::Graph g;
  Value x = g->input();
  // Stem: 3x3/2 convolution, then two grouped 3x3 convolutions (4 and 8 groups), each followed
  // by batch norm and ReLU, then 2x2 max pooling.
  x = g->call("stem_s0_conv", nn::QuantConv2d(float_conv(o.input_shape[0], 32, 3, 2)), x);
  x = g->call("stem_s0_bn", norm(32), x);
  x = relu(g, "stem_s0_relu", x);
  x = g->call("stem_s1_groupconv", nn::QuantConv2d(float_conv(32, 32, 3).groups(4)), x);
  x = g->call("stem_s1_bn", norm(32), x);
  x = relu(g, "stem_s1_relu", x);
  x = g->call("stem_s2_groupconv", nn::QuantConv2d(float_conv(32, 64, 3).groups(8)), x);
  x = g->call("stem_s2_bn", norm(64), x);
  x = relu(g, "stem_s2_relu", x);
  x = g->call("stem_pool", same_max_pool2(), x);
  int64_t channels = 64;
  const std::vector<int> blocks = {4, 5, 4, 4};
  const std::vector<int64_t> transitions = {160, 224, 256, 0};
  for (std::size_t section = 0; section < blocks.size(); ++section) {
    for (int block = 0; block < blocks[section]; ++block) {
      const std::string name =
          "section_" + std::to_string(section) + "_block_" + std::to_string(block);
      // Dense block: append 64 binary feature maps.
      Value w = g->call(name + "_dense_bn", norm(channels), x);
      w = g->call(name + "_dense_binconv", nn::QuantConv2d(binary_conv(channels, 64, 3, q)), w);
      x = g->concat({x, w}, name + "_dense_concat");
      channels += 64;
      // Improvement block: add 64 binary feature maps into the last 64 channels.
      w = g->call(name + "_improve_bn", norm(channels), x);
      w = g->call(name + "_improve_binconv", nn::QuantConv2d(binary_conv(channels, 64, 3, q)), w);
      const Value head =
          g->call(name + "_improve_keep", nn::Slice(nn::SliceOptions(0, channels - 64)), x);
      Value tail =
          g->call(name + "_improve_tail", nn::Slice(nn::SliceOptions(channels - 64, channels)), x);
      tail = g->add({tail, w}, name + "_improve_add");
      x = g->concat({head, tail}, name + "_improve_merge");
    }
    if (transitions[section] != 0) {
      const std::string name = "section_" + std::to_string(section) + "_transition";
      x = g->call(name + "_bn", norm(channels), x);
      x = g->call(name + "_maxpool", same_max_pool2(), x);
      x = relu(g, name + "_relu", x);
      x = g->call(name + "_pw", nn::QuantConv2d(float_conv(channels, transitions[section], 1)), x);
      channels = transitions[section];
    }
  }
  x = g->call("head_bn", norm(channels), x);
  x = relu(g, "head_relu", x);
  classifier(g, x, channels, o);
  return g;
}

// ---- Real-to-Binary Net (Martinez et al. 2020, Larq Zoo's RealToBinaryNet, BNN variant) -------

nn::Graph real_to_binary_net(const ModelOptions& o) {
  check_input("real-to-binary-net", o, 2);
  const Quant q = quant(o, "ste_sign", "ste_sign", "weight_clip");
  const double momentum = 0.99;
  const int64_t scaling_r = 8;
  nn::Graph g;
  Value x = g->input();
  x = g->call("block_1_conv2d", nn::QuantConv2d(float_conv(o.input_shape[0], 64, 7, 2)), x);
  x = g->call("block_1_batch_norm", batch_norm(64, o, momentum, 1e-3), x);
  x = relu(g, "block_1_relu", x);
  x = g->call("block_1_pool", same_max_pool(3, 2), x);
  int64_t channels = 64;
  // One half of a binary block: BN -> sign -> binary conv -> data-dependent scaling (global
  // pool of the conv input -> dense/r + ReLU -> dense + sigmoid -> multiply) -> PReLU -> + the
  // (projected) shortcut.
  auto half_block = [&](const std::string& name, bool downsample) {
    const int64_t out = downsample ? channels * 2 : channels;
    Value shortcut = x;
    if (out != channels) {
      shortcut = g->call(name + "_shortcut_pool", same_avg_pool2(), shortcut);
      shortcut = g->call(name + "_shortcut_conv2d", nn::QuantConv2d(float_conv(channels, out, 1)),
                         shortcut);
      shortcut =
          g->call(name + "_shortcut_batch_norm", batch_norm(out, o, momentum, 1e-3), shortcut);
    }
    const Value conv_input =
        g->call(name + "_batch_norm", batch_norm(channels, o, momentum, 1e-3), x);
    const Value conv_output =
        g->call(name + "_conv2d",
                nn::QuantConv2d(binary_conv(channels, out, 3, q, downsample ? 2 : 1)), conv_input);
    Value z =
        g->call(name + "_scaling_pool",
                torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)), conv_input);
    z = g->call(name + "_scaling_flatten", torch::nn::Flatten(), z);
    z = g->call(name + "_scaling_dense_reduce",
                nn::QuantDense(dense(channels, channels / scaling_r, false)), z);
    z = relu(g, name + "_scaling_relu", z);
    z = g->call(name + "_scaling_dense_expand",
                nn::QuantDense(dense(channels / scaling_r, out, false)), z);
    z = g->call(name + "_scaling_sigmoid", torch::nn::Sigmoid(), z);
    Value y = g->call(name + "_scaling_multiplication", nn::Multiply(), {conv_output, z});
    // Keras' PReLU(shared_axes=[1, 2]): one slope per channel, initialized to 0.
    y = g->call(name + "_prelu",
                torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(out).init(0.0)), y);
    x = g->add({y, shortcut}, name + "_skip_add");
    channels = out;
  };
  for (int block = 2; block < 10; ++block) {
    const std::string name = "block_" + std::to_string(block);
    half_block(name + "a", block % 2 == 0 && block > 3);
    half_block(name + "b", false);
  }
  classifier(g, x, channels, o, "block_10");
  return g;
}

// ---- QuickNet small/regular/large (Bannink et al. 2021, Larq Zoo sota) ------------------------

nn::Graph quicknet(const ModelOptions& o, const char* model, const std::vector<int>& blocks,
                   const std::vector<int64_t>& filters) {
  // Three transitions of a 2x2 stride-1 max pool and a stride-2 blur after the stride-4 stem.
  check_input(model, o, 29);
  const Quant q = quant(o, ste_sign(1.25), ste_sign(1.25), weight_clip(1.25));
  nn::Graph g;
  Value x = g->input();
  // Stem: 3x3/2 convolution to filters/4, BN, ReLU, 3x3/2 depthwise convolution, BN without
  // scale and center, 1x1 convolution to filters, BN (Keras' default BN settings).
  const int64_t f0 = filters[0];
  x = g->call("stem_conv", nn::QuantConv2d(float_conv(o.input_shape[0], f0 / 4, 3, 2)), x);
  x = g->call("stem_bn", batch_norm(f0 / 4, o, 0.99, 1e-3), x);
  x = relu(g, "stem_relu", x);
  x = g->call(
      "stem_depthwise",
      nn::QuantDepthwiseConv2d(
          nn::QuantDepthwiseConv2dOptions(f0 / 4, 3).stride(2).padding(torch::kSame).bias(false)),
      x);
  x = g->call("stem_depthwise_bn", batch_norm(f0 / 4, o, 0.99, 1e-3, false, false), x);
  x = g->call("stem_pointwise", nn::QuantConv2d(float_conv(f0 / 4, f0, 1)), x);
  x = g->call("stem_pointwise_bn", batch_norm(f0, o, 0.99, 1e-3), x);
  int64_t channels = f0;
  int n = 0, t = 0;
  for (std::size_t section = 0; section < blocks.size(); ++section) {
    for (int layer = 0; layer < blocks[section]; ++layer) {
      if (filters[section] != channels) {
        // Transition: ReLU, 2x2 stride-1 max pool, fixed 3x3/2 blur pool, 1x1 conv, BN.
        const std::string name = "transition" + std::to_string(++t);
        x = relu(g, name + "_relu", x);
        x = g->call(name + "_maxpool",
                    torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(1)), x);
        x = g->call(name + "_blurpool", nn::BlurPool2d(nn::BlurPool2dOptions(channels).stride(2)),
                    x);
        x = g->call(name + "_conv", nn::QuantConv2d(float_conv(channels, filters[section], 1)), x);
        x = g->call(name + "_bn", batch_norm(filters[section], o, 0.9, 1e-5), x);
        channels = filters[section];
      }
      // Residual block: x + BN(ReLU(binary conv(x))), one-padded.
      const std::string name = "block" + std::to_string(++n);
      Value y =
          g->call(name + "_conv",
                  nn::QuantConv2d(
                      binary_conv(channels, channels, 3, q).pad_values(o.quantized ? 1.0 : 0.0)),
                  x);
      y = relu(g, name + "_relu", y);
      y = g->call(name + "_bn", batch_norm(channels, o, 0.9, 1e-5), y);
      x = g->add({y, x}, name + "_add");
    }
  }
  x = relu(g, "head_relu", x);
  classifier(g, x, channels, o);
  return g;
}

// ---- ReActNet-A (Liu et al. 2020): MobileNet-V1 layout, RSign and RPReLU ---------------------

nn::Graph reactnet_a(const ModelOptions& o) {
  check_input("reactnet-a", o, 2);
  const Quant q = quant(o, "approx_sign", "magnitude_aware_sign", nullptr);
  // PyTorch's BatchNorm2d defaults, as in the authors' code.
  auto norm = [&](int64_t c) { return batch_norm(c, o, 0.9, 1e-5); };
  auto bias = [](int64_t c) { return nn::LearnableBias(nn::LearnableBiasOptions(c)); };
  auto prelu = [](int64_t c) {
    return torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(c));
  };
  auto bconv = [&](int64_t in, int64_t out, int64_t k, int64_t stride) {
    return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, k)
                               .stride(stride)
                               .padding(k / 2)
                               .bias(false)
                               .input_quantizer(q.input)
                               .kernel_quantizer(q.kernel)
                               .kernel_constraint(q.constraint));
  };
  nn::Graph g;
  Value x = g->input();
  x = g->call("stem_conv",
              nn::QuantConv2d(
                  nn::QuantConv2dOptions(o.input_shape[0], 32, 3).stride(2).padding(1).bias(false)),
              x);
  x = g->call("stem_bn", norm(32), x);
  const std::vector<int64_t> stage = {32,  64,  128, 128, 256, 256,  512,
                                      512, 512, 512, 512, 512, 1024, 1024};
  for (std::size_t i = 1; i < stage.size(); ++i) {
    const int64_t in = stage[i - 1], out = stage[i];
    const int64_t stride = in != out && out != 64 ? 2 : 1;
    const std::string name = "block" + std::to_string(i);
    // 3x3 part: RSign (shift, sign) -> binary 3x3 conv -> BN, + shortcut, RPReLU.
    Value y = g->call(name + "_move11", bias(in), x);
    y = g->call(name + "_conv3x3", bconv(in, in, 3, stride), y);
    y = g->call(name + "_bn1", norm(in), y);
    Value shortcut = x;
    if (stride == 2) {
      // Ceil mode: odd feature maps (small inputs) keep the strided convolution's size.
      shortcut = g->call(name + "_pool", same_avg_pool2(), x);
    }
    Value out1 = g->add({shortcut, y}, name + "_add1");
    out1 = g->call(name + "_move12", bias(in), out1);
    out1 = g->call(name + "_prelu1", prelu(in), out1);
    out1 = g->call(name + "_move13", bias(in), out1);
    // 1x1 part: RSign -> binary 1x1 conv(s) -> BN, + out1; two of them concatenated where the
    // channels double.
    const Value signed_in = g->call(name + "_move21", bias(in), out1);
    Value out2;
    if (in == out) {
      out2 = g->call(name + "_conv1x1", bconv(in, out, 1, 1), signed_in);
      out2 = g->call(name + "_bn2", norm(out), out2);
      out2 = g->add({out2, out1}, name + "_add2");
    } else {
      std::vector<Value> halves;
      for (int half = 1; half <= 2; ++half) {
        const std::string h = name + "_down" + std::to_string(half);
        Value v = g->call(h + "_conv1x1", bconv(in, in, 1, 1), signed_in);
        v = g->call(h + "_bn", norm(in), v);
        halves.push_back(g->add({v, out1}, h + "_add"));
      }
      out2 = g->concat(halves, name + "_concat");
    }
    out2 = g->call(name + "_move22", bias(out), out2);
    out2 = g->call(name + "_prelu2", prelu(out), out2);
    x = g->call(name + "_move23", bias(out), out2);
  }
  classifier(g, x, stage.back(), o);
  return g;
}

}  // namespace

const std::vector<ZooEntry>& literature_models() {
  static const std::vector<ZooEntry> entries = {
      {"binary-alexnet", "BinaryAlexNet (Hubara et al. 2016): binary AlexNet, binary dense head",
       binary_alexnet},
      {"xnornet", "XNOR-Net (Rastegari et al. 2016): AlexNet, per-channel scaled binary weights",
       xnornet},
      {"dorefanet", "DoReFa-Net (Zhou et al. 2016): AlexNet, 2-bit activations, binary weights",
       dorefanet},
      {"birealnet", "Bi-Real Net 18 (Liu et al. 2018): float shortcut around every binary conv",
       birealnet},
      {"binary-resnet-e18", "Binary ResNet-E 18 (Bethge et al. 2019)", binary_resnet_e18},
      {"binary-densenet28", "BinaryDenseNet 28 (Bethge et al. 2019)",
       [](const ModelOptions& o) {
         return binary_densenet(o,
                                {"binary-densenet28", {6, 6, 6, 5}, {2.7, 2.7, 2.2}, {1, 1, 1, 1}});
       }},
      {"binary-densenet37", "BinaryDenseNet 37 (Bethge et al. 2019)",
       [](const ModelOptions& o) {
         return binary_densenet(o,
                                {"binary-densenet37", {6, 8, 12, 6}, {3.3, 3.3, 4}, {1, 1, 1, 1}});
       }},
      {"binary-densenet37-dilated", "BinaryDenseNet 37 dilated (Bethge et al. 2019)",
       [](const ModelOptions& o) {
         return binary_densenet(
             o, {"binary-densenet37-dilated", {6, 8, 12, 6}, {3.3, 3.3, 4}, {1, 1, 2, 4}});
       }},
      {"binary-densenet45", "BinaryDenseNet 45 (Bethge et al. 2019)",
       [](const ModelOptions& o) {
         return binary_densenet(o,
                                {"binary-densenet45", {6, 12, 14, 8}, {2.7, 3.3, 4}, {1, 1, 1, 1}});
       }},
      {"meliusnet22", "MeliusNet 22 (Bethge et al. 2020): dense and improvement blocks",
       meliusnet22},
      {"real-to-binary-net",
       "Real-to-Binary Net (Martinez et al. 2020): data-dependent scaling, PReLU",
       real_to_binary_net},
      {"quicknet-small", "QuickNet Small (Larq Zoo sota, Bannink et al. 2021)",
       [](const ModelOptions& o) {
         return quicknet(o, "quicknet-small", {4, 4, 4, 4}, {32, 64, 256, 512});
       }},
      {"quicknet", "QuickNet (Larq Zoo sota, Bannink et al. 2021)",
       [](const ModelOptions& o) {
         return quicknet(o, "quicknet", {4, 4, 4, 4}, {64, 128, 256, 512});
       }},
      {"quicknet-large", "QuickNet Large (Larq Zoo sota, Bannink et al. 2021)",
       [](const ModelOptions& o) {
         return quicknet(o, "quicknet-large", {6, 8, 12, 6}, {64, 128, 256, 512});
       }},
      {"reactnet-a", "ReActNet-A (Liu et al. 2020): MobileNet-V1 layout, RSign and RPReLU",
       reactnet_a},
  };
  return entries;
}

}  // namespace onebit::zoo::detail
