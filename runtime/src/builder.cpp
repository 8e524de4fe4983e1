#include "onebit/runtime/builder.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "op_table.h"
#include "ops.h"

namespace onebit::runtime {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& message) {
  throw std::invalid_argument("ModelBuilder::" + what + ": " + message);
}

// Thermometer planes are read by binary layers only (their dot is what the planes encode).
void check_planes_kernel(const std::string& what, std::int64_t planes, bool binary_kernel) {
  if (planes > 1 && !binary_kernel) {
    fail(what, "a thermometer input needs a binary kernel (binary_kernel(true))");
  }
}

// An op of k-bit levels (quantize_levels, thermometer) reading x, k_bit in [1, max_k].
Op k_bit_op(OpType type, ValueRef x, int k_bit, int max_k, const std::string& what) {
  if (k_bit < 1 || k_bit > max_k) {
    fail(what, "'k_bit' = " + std::to_string(k_bit) + ", expected 1 to " + std::to_string(max_k));
  }
  Op op;
  op.type = type;
  op.inputs = {x.id};
  op.ints["k_bit"] = {k_bit};
  return op;
}

void check_size(const std::string& what, const std::string& arg, std::size_t found,
                std::size_t expected) {
  if (found != expected) {
    fail(what, "'" + arg + "' has " + std::to_string(found) + " values, expected " +
                   std::to_string(expected));
  }
}

// Both checks scan without branches (they run on every weight each time a layer is built, and
// the training path builds layers every step); the position is searched only after a failure.
void check_finite(const std::string& what, const std::string& arg, const std::vector<float>& v) {
  std::uint32_t bad = 0;
  for (const float x : v) {
    std::uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    bad |= static_cast<std::uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
  }
  if (!bad) return;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      fail(what, "'" + arg + "'[" + std::to_string(i) + "] = " + std::to_string(v[i]) +
                     ", expected a finite value");
    }
  }
}

void check_binary(const std::string& what, const std::vector<float>& w) {
  std::uint32_t bad = 0;
  for (const float x : w) {
    std::uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    bad |= static_cast<std::uint32_t>((bits & 0x7FFFFFFFu) != 0x3F800000u);  // |x| != 1
  }
  if (!bad) return;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (w[i] != 1.0f && w[i] != -1.0f) {
      fail(what, "binary kernel weight[" + std::to_string(i) + "] = " + std::to_string(w[i]) +
                     ", expected exactly +1 or -1 (pass the quantized kernel)");
    }
  }
}

// A +-1 kernel given packed (`conv2d_packed`, `dense_packed`) as a bits tensor of `shape`.
Tensor packed_weight(const std::string& what, bool binary_kernel, std::vector<std::int64_t> shape,
                     std::vector<BitWord> bits) {
  if (!binary_kernel) fail(what, "packed weights need binary_kernel(true)");
  Tensor t{"weight", DType::kBits, std::move(shape), std::move(bits)};
  check_size(what, "packed weight words", t.data.size(),
             words_for_bits(static_cast<std::size_t>(t.numel())));
  return t;
}

// Pads for one axis; "same" follows TensorFlow/Larq: output = ceil(in / stride).
std::pair<std::int64_t, std::int64_t> same_pads(std::int64_t in, std::int64_t k, std::int64_t s,
                                                std::int64_t d) {
  const std::int64_t out = (in + s - 1) / s;
  const std::int64_t total = std::max<std::int64_t>((out - 1) * s + (k - 1) * d + 1 - in, 0);
  return {total / 2, total - total / 2};
}

// Smallest integer dot d in [-k, k] with float(d) * m + b >= 0 (m >= 0), evaluated exactly as
// the runtime's float output path does; k + 1 when there is none. The expression is
// non-decreasing in d, so a binary search finds the boundary.
std::int32_t threshold_for(float m, float b, std::int64_t k) {
  const auto positive = [&](std::int64_t d) { return static_cast<float>(d) * m + b >= 0.0f; };
  std::int64_t lo = -k, hi = k + 1;  // answer in [lo, hi]
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (positive(mid))
      hi = mid;
    else
      lo = mid + 1;
  }
  return static_cast<std::int32_t>(lo);
}

/// Fusion passes over a model copy. Removing an op redirects its consumers to its input.
/// In a graph, a chain of ops fuses only where every intermediate value has exactly one use (one
/// input slot of one live op, and not the model output): a value that also feeds a shortcut
/// (add, concat) or a second branch must stay materialized as it is.
class Fuser {
 public:
  explicit Fuser(Model& m) : m_(m), dead_(m.ops.size(), false) {}

  void run() {
    for (std::size_t i = 0; i < m_.ops.size(); ++i) swap_flatten_sign(i);
    for (std::size_t i = 0; i < m_.ops.size(); ++i) fuse_pool_bn_sign(i);
    for (std::size_t i = 0; i < m_.ops.size(); ++i) fold_batch_norm(i);
    for (std::size_t i = 0; i < m_.ops.size(); ++i) fuse_sign(i);
    compact();
  }

 private:
  // Op producing value v if it is live and of `type`, else nullptr.
  Op* producer(std::int32_t v, OpType type) {
    if (v < 1 || dead_[v - 1] || m_.ops[v - 1].type != type) return nullptr;
    return &m_.ops[v - 1];
  }
  // Uses of value v: input slots of live ops, plus one when it is the model output.
  std::size_t uses(std::int32_t v) const {
    std::size_t n = m_.output == v ? 1 : 0;
    for (std::size_t i = 0; i < m_.ops.size(); ++i) {
      if (dead_[i]) continue;
      for (std::int32_t in : m_.ops[i].inputs) n += in == v ? 1 : 0;
    }
    return n;
  }
  // True when op `op` is the only use of value v (so v may disappear into a fusion).
  bool sole_consumer(std::int32_t v, std::size_t op) const {
    if (uses(v) != 1) return false;
    for (std::int32_t in : m_.ops[op].inputs) {
      if (in == v) return true;
    }
    return false;
  }
  static bool has_fusion(const Op& op, std::uint8_t flag) {
    const detail::OpDef* def = detail::find_op_def(static_cast<std::uint32_t>(op.type));
    return def != nullptr && (def->fusion & flag) != 0;
  }
  static bool identity_transform(const Op& op) {
    return op.attr("output_bits", {0})[0] == 0 && op.tensors.count("multiplier") == 0 &&
           op.tensors.count("bias") == 0;
  }
  // Op `into` absorbs an op named `name`: it keeps its own name and appends "+name" unless
  // `name` is empty or already one of its '+'-separated parts (an unnamed op takes `name`).
  static void merge_name(Op& into, const std::string& name) {
    if (name.empty()) return;
    if (into.name.empty()) {
      into.name = name;
      return;
    }
    for (std::size_t begin = 0;;) {
      const std::size_t end = into.name.find('+', begin);
      if (into.name.compare(begin, end == std::string::npos ? end : end - begin, name) == 0) return;
      if (end == std::string::npos) break;
      begin = end + 1;
    }
    into.name += "+" + name;
  }
  void remove(std::size_t i) {
    dead_[i] = true;
    const std::int32_t from = static_cast<std::int32_t>(i + 1), to = m_.ops[i].inputs[0];
    for (Op& op : m_.ops) {
      for (std::int32_t& in : op.inputs) in = in == from ? to : in;
    }
    if (m_.output == from) m_.output = to;
  }

  // flatten -> sign  ==>  sign -> flatten (so the sign can fuse into the layer before).
  void swap_flatten_sign(std::size_t i) {
    if (dead_[i] || m_.ops[i].type != OpType::kQuantize) return;
    const std::int32_t v = m_.ops[i].inputs[0];
    Op* flatten = producer(v, OpType::kFlatten);
    if (flatten == nullptr || !sole_consumer(v, i)) return;
    flatten->type = OpType::kQuantize;
    m_.ops[i].type = OpType::kFlatten;
    std::swap(flatten->name, m_.ops[i].name);  // names stay with what the ops compute
  }

  // Binary thresholds from (multiplier, bias); channels with a negative multiplier get their
  // filter negated so that the comparison is always "dot < threshold".
  std::vector<bool> set_thresholds(Op& op, const float* mult, const float* bias) {
    Tensor& w = m_.tensors[op.tensors.at("weight")];
    // The dot runs over the input planes: each stored weight bit counts once per plane.
    const std::int64_t out = w.shape[0], per = w.numel() / out,
                       range = per * op.attr("input_planes", {1})[0];
    std::vector<std::int32_t> threshold(static_cast<std::size_t>(out));
    std::vector<bool> negative(static_cast<std::size_t>(out), false);
    for (std::int64_t o = 0; o < out; ++o) {
      float mo = mult != nullptr ? mult[o] : 1.0f;
      const float bo = bias != nullptr ? bias[o] : 0.0f;
      if (mo < 0.0f) {
        negative[o] = true;
        mo = -mo;
        for (std::int64_t i = o * per; i < (o + 1) * per; ++i) {
          set_bit(w.data.data(), static_cast<std::size_t>(i), !get_bit(w.data.data(), i));
        }
      }
      threshold[o] = threshold_for(mo, bo, range);
    }
    op.tensors.erase("multiplier");
    op.tensors.erase("bias");
    op.ints["output_bits"] = {1};
    m_.tensors.push_back(Tensor::from_ints(w.name + ".threshold", {out}, threshold));
    op.tensors["threshold"] = static_cast<std::int32_t>(m_.tensors.size() - 1);
    return negative;
  }

  // binary conv -> max pool -> batch norm -> sign  ==>  thresholded conv -> binary max pool.
  // BN is monotone per channel: increasing channels pool with AND (max of +-1), decreasing
  // channels (negative multiplier) with OR (the max before BN becomes a min after it).
  void fuse_pool_bn_sign(std::size_t i) {
    if (dead_[i] || m_.ops[i].type != OpType::kQuantize) return;
    const std::int32_t bn_v = m_.ops[i].inputs[0];
    Op* bn = producer(bn_v, OpType::kBatchNorm);
    if (bn == nullptr || !sole_consumer(bn_v, i)) return;
    const std::int32_t pool_v = bn->inputs[0];
    Op* pool = producer(pool_v, OpType::kMaxPool2d);
    if (pool == nullptr || !sole_consumer(pool_v, static_cast<std::size_t>(bn_v - 1))) return;
    const std::int32_t conv_v = pool->inputs[0];
    Op* conv = producer(conv_v, OpType::kBinaryConv2d);
    if (conv == nullptr || !identity_transform(*conv) ||
        !sole_consumer(conv_v, static_cast<std::size_t>(pool_v - 1))) {
      return;
    }
    const std::vector<float> mult(m_.tensors[bn->tensors.at("multiplier")].floats(),
                                  m_.tensors[bn->tensors.at("multiplier")].floats() +
                                      m_.tensors[bn->tensors.at("multiplier")].numel());
    const std::vector<float> bias(m_.tensors[bn->tensors.at("bias")].floats(),
                                  m_.tensors[bn->tensors.at("bias")].floats() + mult.size());
    const std::vector<bool> negative = set_thresholds(*conv, mult.data(), bias.data());
    std::vector<float> min_channels(negative.size());
    for (std::size_t c = 0; c < negative.size(); ++c) min_channels[c] = negative[c] ? -1.0f : 1.0f;
    m_.tensors.push_back(Tensor::from_signs("pool" + std::to_string(pool_v) + ".min_channels",
                                            {static_cast<std::int64_t>(negative.size())},
                                            min_channels));
    pool->type = OpType::kBinaryMaxPool2d;
    pool->tensors["min_channels"] = static_cast<std::int32_t>(m_.tensors.size() - 1);
    merge_name(*conv, bn->name);  // the conv's thresholds compute the batch norm and the sign
    merge_name(*conv, m_.ops[i].name);
    remove(i);
    remove(static_cast<std::size_t>(bn_v - 1));
  }

  // conv/dense without output transform -> batch norm  ==>  conv/dense with multiplier/bias.
  // Exact: the op's float(acc) * 1 + 0 equals acc, so acc * m + b is computed identically.
  void fold_batch_norm(std::size_t i) {
    if (dead_[i] || m_.ops[i].type != OpType::kBatchNorm) return;
    const std::int32_t v = m_.ops[i].inputs[0];
    if (v < 1 || dead_[v - 1] || !sole_consumer(v, i)) return;
    Op& op = m_.ops[v - 1];
    if (!has_fusion(op, detail::kFoldsBatchNorm) || !identity_transform(op)) return;
    op.tensors["multiplier"] = m_.ops[i].tensors.at("multiplier");
    op.tensors["bias"] = m_.ops[i].tensors.at("bias");
    merge_name(op, m_.ops[i].name);
    remove(i);
  }

  // binary conv/dense with float output -> sign  ==>  bit-packed output via thresholds.
  void fuse_sign(std::size_t i) {
    if (dead_[i] || m_.ops[i].type != OpType::kQuantize) return;
    const std::int32_t v = m_.ops[i].inputs[0];
    if (v < 1 || dead_[v - 1] || !sole_consumer(v, i)) return;
    Op& op = m_.ops[v - 1];
    if (!has_fusion(op, detail::kThresholdsSign) || op.attr("output_bits", {0})[0] != 0) return;
    const float* mult =
        op.tensors.count("multiplier") ? m_.tensors[op.tensors["multiplier"]].floats() : nullptr;
    const float* bias =
        op.tensors.count("bias") ? m_.tensors[op.tensors["bias"]].floats() : nullptr;
    const std::vector<float> m(
        mult, mult == nullptr ? mult : mult + m_.tensors[op.tensors["weight"]].shape[0]);
    const std::vector<float> b(
        bias, bias == nullptr ? bias : bias + m_.tensors[op.tensors["weight"]].shape[0]);
    set_thresholds(op, m.empty() ? nullptr : m.data(), b.empty() ? nullptr : b.data());
    merge_name(op, m_.ops[i].name);
    remove(i);
  }

  void compact() {
    std::vector<std::int32_t> value_map(m_.ops.size() + 1, -1);
    value_map[0] = 0;
    std::vector<Op> ops;
    for (std::size_t i = 0; i < m_.ops.size(); ++i) {
      if (dead_[i]) continue;
      Op op = m_.ops[i];
      for (std::int32_t& in : op.inputs) in = value_map[in];
      ops.push_back(std::move(op));
      value_map[i + 1] = static_cast<std::int32_t>(ops.size());
    }
    std::vector<std::int32_t> tensor_map(m_.tensors.size(), -1);
    std::vector<Tensor> tensors;
    for (Op& op : ops) {
      for (auto& [role, index] : op.tensors) {
        if (tensor_map[index] < 0) {
          tensor_map[index] = static_cast<std::int32_t>(tensors.size());
          tensors.push_back(m_.tensors[index]);
        }
        index = tensor_map[index];
      }
    }
    m_.output = value_map[m_.output];
    m_.ops = std::move(ops);
    m_.tensors = std::move(tensors);
  }

  Model& m_;
  std::vector<bool> dead_;
};

}  // namespace

ModelBuilder::ModelBuilder(BuilderOptions options) : options_(options) {}

ValueRef ModelBuilder::input(const std::vector<std::int64_t>& chw) {
  if (!values_.empty()) fail("input", "called twice; the model has one input");
  if (chw.size() != 1 && chw.size() != 3) {
    fail("input",
         "shape has rank " + std::to_string(chw.size()) + ", expected {C, H, W} or {features}");
  }
  for (std::int64_t d : chw) {
    if (d < 1) fail("input", "dimension " + std::to_string(d) + ", expected >= 1");
  }
  model_.input_shape = chw;
  values_.push_back(chw.size() == 3 ? ValueShape{DType::kFloat32, chw[0], chw[1], chw[2]}
                                    : ValueShape{DType::kFloat32, chw[0], 1, 1});
  return ValueRef{0};
}

const ModelBuilder::ValueShape& ModelBuilder::value(ValueRef x, const std::string& what) const {
  if (x.id < 0 || static_cast<std::size_t>(x.id) >= values_.size()) {
    fail(what, "value id " + std::to_string(x.id) + " does not exist (call input() first)");
  }
  return values_[static_cast<std::size_t>(x.id)];
}

std::int32_t ModelBuilder::add_tensor(Tensor t) {
  t.name = "op" + std::to_string(model_.ops.size()) + "." + t.name;
  model_.tensors.push_back(std::move(t));
  return static_cast<std::int32_t>(model_.tensors.size() - 1);
}

ValueRef ModelBuilder::add_op(Op op, const std::string& what) {
  std::vector<detail::ValueInfo> inputs;
  for (std::int32_t v : op.inputs) {
    const ValueShape& s = value(ValueRef{v}, what);
    if (s.planes > 1 && op.type != OpType::kBinaryConv2d && op.type != OpType::kBinaryDense) {
      fail(what, "input value " + std::to_string(v) +
                     " holds thermometer planes, which only a binary conv2d or dense reads");
    }
    inputs.push_back(detail::ValueInfo{s.dtype, s.c, s.h, s.w});
  }
  detail::ValueInfo out;
  op.name = name_scope_;
  const std::string where = detail::op_where(model_.ops.size(), op);
  try {
    detail::prepare_op(model_, op, inputs, out, where);
  } catch (const ModelError& e) {
    fail(what, e.what());
  }
  model_.ops.push_back(std::move(op));
  values_.push_back(ValueShape{out.dtype, out.c, out.h, out.w});
  return ValueRef{static_cast<std::int32_t>(values_.size() - 1)};
}

ValueRef ModelBuilder::sign(ValueRef x) {
  if (value(x, "sign").dtype != DType::kFloat32) fail("sign", "input is already binary");
  Op op;
  op.type = OpType::kQuantize;
  op.inputs = {x.id};
  return add_op(std::move(op), "sign");
}

ValueRef ModelBuilder::conv2d(ValueRef x, const Conv2dParams& p, const std::vector<float>& weight,
                              const std::vector<float>& bias) {
  const std::string what = "conv2d";
  const ValueShape& in = value(x, what);
  const std::int64_t cin = conv2d_input_channels(in, p, what);
  const std::int64_t kh = p.kernel_h, kw = p.kernel_w;
  check_size(what, "weight", weight.size(),
             static_cast<std::size_t>(p.out_channels * cin * kh * kw));
  check_finite(what, "weight", weight);
  if (p.is_binary_kernel) check_binary(what, weight);
  std::vector<float> ohwi(weight.size());  // OIHW -> OHWI (channels innermost, as packed)
  for (std::int64_t o = 0; o < p.out_channels; ++o) {
    for (std::int64_t i = 0; i < cin; ++i) {
      for (std::int64_t y = 0; y < kh; ++y) {
        for (std::int64_t z = 0; z < kw; ++z) {
          ohwi[((o * kh + y) * kw + z) * cin + i] = weight[((o * cin + i) * kh + y) * kw + z];
        }
      }
    }
  }
  const std::vector<std::int64_t> wshape{p.out_channels, kh, kw, cin};
  return conv2d_op(x, p,
                   p.is_binary_kernel ? Tensor::from_signs("weight", wshape, ohwi)
                                      : Tensor::from_floats("weight", wshape, ohwi),
                   bias);
}

ValueRef ModelBuilder::conv2d_packed(ValueRef x, const Conv2dParams& p,
                                     std::vector<BitWord> weight_bits,
                                     const std::vector<float>& bias) {
  const std::string what = "conv2d";
  const ValueShape& in = value(x, what);
  const std::int64_t cin = conv2d_input_channels(in, p, what);
  return conv2d_op(
      x, p,
      packed_weight(what, p.is_binary_kernel, {p.out_channels, p.kernel_h, p.kernel_w, cin},
                    std::move(weight_bits)),
      bias);
}

std::int64_t ModelBuilder::conv2d_input_channels(const ValueShape& in, const Conv2dParams& p,
                                                 const std::string& what) const {
  if (p.out_channels < 1 || p.groups < 1 || (in.c / in.planes) % p.groups != 0 ||
      p.out_channels % p.groups != 0) {
    fail(what, "out_channels " + std::to_string(p.out_channels) + " and input channels " +
                   std::to_string(in.c / in.planes) + " must be positive multiples of groups " +
                   std::to_string(p.groups));
  }
  if (p.kernel_h < 1 || p.kernel_w < 1) {
    fail(what, "kernel " + std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w) +
                   " must be at least 1x1");
  }
  return in.c / in.planes / p.groups;
}

ValueRef ModelBuilder::conv2d_op(ValueRef x, const Conv2dParams& p, Tensor weight,
                                 const std::vector<float>& bias) {
  const std::string what = "conv2d";
  const ValueShape& in = value(x, what);
  check_planes_kernel(what, in.planes, p.is_binary_kernel);
  if (!bias.empty())
    check_size(what, "bias", bias.size(), static_cast<std::size_t>(p.out_channels));
  check_finite(what, "bias", bias);
  if (p.pad_value != 0.0f && p.pad_value != 1.0f) {
    fail(what, "pad_value " + std::to_string(p.pad_value) + ", expected 0 or 1");
  }
  const bool binary_input = in.dtype == DType::kBits;
  if (binary_input && !p.is_binary_kernel) {
    fail(what,
         "binary (sign) input with a float kernel is not supported; set binary_kernel(true) "
         "or remove the sign() before this layer");
  }
  if (!binary_input && p.pad_value != 0.0f) fail(what, "one-padding needs a binary input");
  const std::int64_t kh = p.kernel_h, kw = p.kernel_w;
  Op op;
  op.type = binary_input ? OpType::kBinaryConv2d : OpType::kConv2d;
  op.inputs = {x.id};
  op.ints["kernel"] = {kh, kw};
  op.ints["stride"] = {p.stride_h, p.stride_w};
  op.ints["dilation"] = {p.dilation_h, p.dilation_w};
  op.ints["groups"] = {p.groups};
  std::vector<std::int64_t> pads{p.pad_top, p.pad_left, p.pad_bottom, p.pad_right};
  if (p.padding_mode == PaddingMode::kValid) pads = {0, 0, 0, 0};
  if (p.padding_mode == PaddingMode::kSame) {
    const auto [t, b] = same_pads(in.h, kh, p.stride_h, p.dilation_h);
    const auto [l, r] = same_pads(in.w, kw, p.stride_w, p.dilation_w);
    pads = {t, l, b, r};
  }
  op.ints["pads"] = pads;
  if (binary_input) op.ints["zero_padding"] = {p.pad_value == 0.0f ? 1 : 0};
  if (in.planes > 1) op.ints["input_planes"] = {in.planes};
  op.tensors["weight"] = add_tensor(std::move(weight));
  if (!bias.empty()) {
    op.tensors["bias"] = add_tensor(Tensor::from_floats("bias", {p.out_channels}, bias));
  }
  return add_op(std::move(op), what);
}

ValueRef ModelBuilder::dense(ValueRef x, const DenseParams& p, const std::vector<float>& weight,
                             const std::vector<float>& bias) {
  const std::string what = "dense";
  const std::int64_t features = dense_input_features(value(x, what), p, what);
  check_size(what, "weight", weight.size(), static_cast<std::size_t>(p.out_features * features));
  check_finite(what, "weight", weight);
  if (p.is_binary_kernel) check_binary(what, weight);
  const std::vector<std::int64_t> wshape{p.out_features, features};
  return dense_op(x, p,
                  p.is_binary_kernel ? Tensor::from_signs("weight", wshape, weight)
                                     : Tensor::from_floats("weight", wshape, weight),
                  bias);
}

ValueRef ModelBuilder::dense_packed(ValueRef x, const DenseParams& p,
                                    std::vector<BitWord> weight_bits,
                                    const std::vector<float>& bias) {
  const std::string what = "dense";
  const std::int64_t features = dense_input_features(value(x, what), p, what);
  return dense_op(
      x, p,
      packed_weight(what, p.is_binary_kernel, {p.out_features, features}, std::move(weight_bits)),
      bias);
}

std::int64_t ModelBuilder::dense_input_features(const ValueShape& in, const DenseParams& p,
                                                const std::string& what) const {
  if (in.h != 1 || in.w != 1) fail(what, "input is spatial; call flatten() first");
  if (p.out_features < 1) fail(what, "out_features must be >= 1");
  return in.c / in.planes;
}

ValueRef ModelBuilder::dense_op(ValueRef x, const DenseParams& p, Tensor weight,
                                const std::vector<float>& bias) {
  const std::string what = "dense";
  const ValueShape& in = value(x, what);
  if (!bias.empty())
    check_size(what, "bias", bias.size(), static_cast<std::size_t>(p.out_features));
  check_finite(what, "bias", bias);
  const bool binary_input = in.dtype == DType::kBits;
  if (binary_input && !p.is_binary_kernel) {
    fail(what, "binary (sign) input with a float kernel is not supported");
  }
  check_planes_kernel(what, in.planes, p.is_binary_kernel);
  Op op;
  op.type = binary_input ? OpType::kBinaryDense : OpType::kDense;
  op.inputs = {x.id};
  if (in.planes > 1) op.ints["input_planes"] = {in.planes};
  op.tensors["weight"] = add_tensor(std::move(weight));
  if (!bias.empty()) {
    op.tensors["bias"] = add_tensor(Tensor::from_floats("bias", {p.out_features}, bias));
  }
  return add_op(std::move(op), what);
}

ValueRef ModelBuilder::batch_norm(ValueRef x, const std::vector<float>& multiplier,
                                  const std::vector<float>& bias) {
  const std::string what = "batch_norm";
  const ValueShape& in = value(x, what);
  if (in.dtype != DType::kFloat32) fail(what, "input is binary; batch norm needs float input");
  check_size(what, "multiplier", multiplier.size(), static_cast<std::size_t>(in.c));
  check_size(what, "bias", bias.size(), static_cast<std::size_t>(in.c));
  check_finite(what, "multiplier", multiplier);
  check_finite(what, "bias", bias);
  Op op;
  op.type = OpType::kBatchNorm;
  op.inputs = {x.id};
  op.tensors["multiplier"] = add_tensor(Tensor::from_floats("multiplier", {in.c}, multiplier));
  op.tensors["bias"] = add_tensor(Tensor::from_floats("bias", {in.c}, bias));
  return add_op(std::move(op), what);
}

ValueRef ModelBuilder::batch_norm_stats(ValueRef x, const std::vector<float>& gamma,
                                        const std::vector<float>& beta,
                                        const std::vector<float>& mean,
                                        const std::vector<float>& var, float eps) {
  const std::size_t c = mean.size();
  check_size("batch_norm_stats", "var", var.size(), c);
  if (!gamma.empty()) check_size("batch_norm_stats", "gamma", gamma.size(), c);
  if (!beta.empty()) check_size("batch_norm_stats", "beta", beta.size(), c);
  std::vector<float> mult(c), bias(c);
  for (std::size_t i = 0; i < c; ++i) {
    const double m =
        (gamma.empty() ? 1.0 : gamma[i]) / std::sqrt(static_cast<double>(var[i]) + eps);
    mult[i] = static_cast<float>(m);
    bias[i] = static_cast<float>((beta.empty() ? 0.0 : beta[i]) - mean[i] * m);
  }
  return batch_norm(x, mult, bias);
}

std::vector<std::int64_t> ModelBuilder::pool_attrs(const Pool2dParams& p, const ValueShape& in,
                                                   Op& op, const std::string&) const {
  const std::int64_t sh = p.stride_h > 0 ? p.stride_h : p.kernel_h;
  const std::int64_t sw = p.stride_w > 0 ? p.stride_w : p.kernel_w;
  std::vector<std::int64_t> pads{p.pad_top, p.pad_left, p.pad_bottom, p.pad_right};
  if (p.padding_mode == PaddingMode::kValid) pads = {0, 0, 0, 0};
  if (p.padding_mode == PaddingMode::kSame) {
    const auto [t, b] = same_pads(in.h, p.kernel_h, sh, 1);
    const auto [l, r] = same_pads(in.w, p.kernel_w, sw, 1);
    pads = {t, l, b, r};
  }
  op.ints["kernel"] = {p.kernel_h, p.kernel_w};
  op.ints["stride"] = {sh, sw};
  op.ints["pads"] = pads;
  op.ints["count_include_pad"] = {p.count_include_pad ? 1 : 0};
  return pads;
}

ValueRef ModelBuilder::max_pool2d(ValueRef x, const Pool2dParams& p) {
  const ValueShape& in = value(x, "max_pool2d");
  Op op;
  op.type = in.dtype == DType::kBits ? OpType::kBinaryMaxPool2d : OpType::kMaxPool2d;
  op.inputs = {x.id};
  pool_attrs(p, in, op, "max_pool2d");
  op.ints.erase("count_include_pad");
  return add_op(std::move(op), "max_pool2d");
}

ValueRef ModelBuilder::avg_pool2d(ValueRef x, const Pool2dParams& p) {
  const ValueShape& in = value(x, "avg_pool2d");
  Op op;
  op.type = OpType::kAvgPool2d;
  op.inputs = {x.id};
  pool_attrs(p, in, op, "avg_pool2d");
  return add_op(std::move(op), "avg_pool2d");
}

ValueRef ModelBuilder::global_avg_pool2d(ValueRef x) {
  value(x, "global_avg_pool2d");
  Op op;
  op.type = OpType::kGlobalAvgPool2d;
  op.inputs = {x.id};
  return add_op(std::move(op), "global_avg_pool2d");
}

ValueRef ModelBuilder::add(ValueRef a, ValueRef b) {
  const ValueShape& sa = value(a, "add");
  const ValueShape& sb = value(b, "add");
  if (sa.c != sb.c || sa.h != sb.h || sa.w != sb.w) {
    fail("add", "'b' has shape " + shape_string(sb) + ", expected the shape of 'a' (" +
                    shape_string(sa) + ")");
  }
  Op op;
  op.type = OpType::kAdd;
  op.inputs = {a.id, b.id};
  return add_op(std::move(op), "add");
}

ValueRef ModelBuilder::concat(const std::vector<ValueRef>& xs) {
  const std::string what = "concat";
  if (xs.size() < 2 || xs.size() > detail::kMaxOpInputs) {
    fail(what, "'xs' has " + std::to_string(xs.size()) + " values, expected 2 to " +
                   std::to_string(detail::kMaxOpInputs));
  }
  const ValueShape& first = value(xs[0], what);
  Op op;
  op.type = OpType::kConcat;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const ValueShape& s = value(xs[i], what);
    if (s.h != first.h || s.w != first.w) {
      fail(what, "'xs[" + std::to_string(i) + "]' has shape " + shape_string(s) +
                     ", expected H,W = " + std::to_string(first.h) + "x" + std::to_string(first.w) +
                     " as 'xs[0]' (" + shape_string(first) + ")");
    }
    op.inputs.push_back(xs[i].id);
  }
  return add_op(std::move(op), what);
}

ValueRef ModelBuilder::relu(ValueRef x) {
  value(x, "relu");
  Op op;
  op.type = OpType::kRelu;
  op.inputs = {x.id};
  return add_op(std::move(op), "relu");
}

ValueRef ModelBuilder::prelu(ValueRef x, const std::vector<float>& alpha) {
  const ValueShape& in = value(x, "prelu");
  if (alpha.size() != 1) check_size("prelu", "alpha", alpha.size(), static_cast<std::size_t>(in.c));
  check_finite("prelu", "alpha", alpha);
  Op op;
  op.type = OpType::kPrelu;
  op.inputs = {x.id};
  op.tensors["alpha"] =
      add_tensor(Tensor::from_floats("alpha", {static_cast<std::int64_t>(alpha.size())}, alpha));
  return add_op(std::move(op), "prelu");
}

ValueRef ModelBuilder::flatten(ValueRef x) {
  value(x, "flatten");
  Op op;
  op.type = OpType::kFlatten;
  op.inputs = {x.id};
  return add_op(std::move(op), "flatten");
}

ValueRef ModelBuilder::softmax(ValueRef x) {
  value(x, "softmax");
  Op op;
  op.type = OpType::kSoftmax;
  op.inputs = {x.id};
  return add_op(std::move(op), "softmax");
}

const ModelBuilder::ValueShape& ModelBuilder::float_value(ValueRef x,
                                                          const std::string& what) const {
  const ValueShape& s = value(x, what);
  if (s.dtype != DType::kFloat32) {
    fail(what, "'x' has shape " + shape_string(s) + ", expected a float value (" + what +
                   " does not take bits; apply it before sign())");
  }
  return s;
}

ValueRef ModelBuilder::sigmoid(ValueRef x) {
  float_value(x, "sigmoid");
  Op op;
  op.type = OpType::kSigmoid;
  op.inputs = {x.id};
  return add_op(std::move(op), "sigmoid");
}

ValueRef ModelBuilder::mul(ValueRef a, ValueRef b) {
  const ValueShape& sa = value(a, "mul");
  const ValueShape& sb = value(b, "mul");
  const bool same = sa.c == sb.c && sa.h == sb.h && sa.w == sb.w;
  const bool per_channel = sa.c == sb.c && sb.h == 1 && sb.w == 1;
  if (!same && !per_channel) {
    fail("mul", "'b' has shape " + shape_string(sb) + ", expected the shape of 'a' (" +
                    shape_string(sa) + ") or " + std::to_string(sa.c) +
                    "x1x1 (one factor per channel of 'a')");
  }
  Op op;
  op.type = OpType::kMul;
  op.inputs = {a.id, b.id};
  return add_op(std::move(op), "mul");
}

ValueRef ModelBuilder::slice_channels(ValueRef x, std::int64_t begin, std::int64_t end) {
  const std::string what = "slice_channels";
  const ValueShape& in = value(x, what);
  if (begin < 0) fail(what, "'begin' = " + std::to_string(begin) + ", expected >= 0");
  if (begin >= end) {
    fail(what, "'begin' = " + std::to_string(begin) + " is not below 'end' = " +
                   std::to_string(end) + ", expected begin < end (a slice of at least 1 channel)");
  }
  if (end > in.c) {
    fail(what, "'end' = " + std::to_string(end) + ", expected at most the " + std::to_string(in.c) +
                   " channels of 'x' (" + shape_string(in) + ")");
  }
  Op op;
  op.type = OpType::kSliceChannels;
  op.inputs = {x.id};
  op.ints["begin"] = {begin};
  op.ints["end"] = {end};
  return add_op(std::move(op), what);
}

ValueRef ModelBuilder::clip(ValueRef x, float lo, float hi) {
  const std::string what = "clip";
  float_value(x, what);
  if (std::isnan(lo)) fail(what, "'lo' = nan, expected a number");
  if (std::isnan(hi)) fail(what, "'hi' = nan, expected a number");
  if (lo > hi) {
    fail(what, "'lo' = " + detail::float_string(lo) +
                   " is above 'hi' = " + detail::float_string(hi) + ", expected lo <= hi");
  }
  Op op;
  op.type = OpType::kClip;
  op.inputs = {x.id};
  op.ints["lo"] = {detail::float_to_attr(lo)};
  op.ints["hi"] = {detail::float_to_attr(hi)};
  return add_op(std::move(op), what);
}

ValueRef ModelBuilder::quantize_levels(ValueRef x, int k_bit) {
  float_value(x, "quantize_levels");
  return add_op(k_bit_op(OpType::kQuantizeLevels, x, k_bit, 16, "quantize_levels"),
                "quantize_levels");
}

ValueRef ModelBuilder::thermometer(ValueRef x, int k_bit) {
  float_value(x, "thermometer");
  const ValueRef y =
      add_op(k_bit_op(OpType::kThermometer, x, k_bit, 6, "thermometer"), "thermometer");
  values_[static_cast<std::size_t>(y.id)].planes = (std::int64_t{1} << k_bit) - 1;
  return y;
}

void ModelBuilder::set_name_scope(const std::string& name) {
  if (name.size() > 1024) {
    fail("set_name_scope",
         "name of " + std::to_string(name.size()) + " bytes, expected at most 1024");
  }
  name_scope_ = name;
}

void ModelBuilder::output(ValueRef x) {
  value(x, "output");
  model_.output = x.id;
  has_output_ = true;
}

void ModelBuilder::set_metadata(const std::string& key, const std::string& value) {
  model_.metadata[key] = value;
}

std::string ModelBuilder::shape_string(const ValueShape& s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w) + " (" +
         dtype_name(s.dtype) + ")";
}

std::vector<std::int64_t> ModelBuilder::shape(ValueRef x) const {
  const ValueShape& s = value(x, "shape");
  return {s.c, s.h, s.w};
}

bool ModelBuilder::is_bits(ValueRef x) const { return value(x, "is_bits").dtype == DType::kBits; }

Model ModelBuilder::build() const {
  if (!has_output_) fail("build", "no output; call output(x) first");
  Model m = model_;
  if (options_.fuse) Fuser(m).run();
  return m;
}

std::size_t ModelBuilder::save(const std::string& path) const { return save_model(build(), path); }

}  // namespace onebit::runtime
