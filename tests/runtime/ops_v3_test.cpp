// Format version 3 ops (sigmoid, mul, slice_channels, clip, quantize_levels) through
// ModelBuilder + Interpreter against the scalar references of reference_net.h: odd shapes
// (C = 1, 3, 65, 130; H, W = 1, 5, 7), float and bits inputs where allowed, fed by a chain that
// fuses (so fused and unfused models differ), 1 and 3 threads, every ISA, and a round trip
// through the file bytes. Then every builder error path and corrupted attributes in files.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

using testing::error_of;

using testing::all_tables;
using testing::ConvSpec;
using testing::Nchw;

struct Shape {
  std::int64_t c, h, w;
};

std::vector<Shape> odd_shapes() {
  std::vector<Shape> shapes;
  for (std::int64_t c : {1, 3, 65, 130}) {
    for (std::int64_t h : {1, 5, 7}) {
      for (std::int64_t w : {1, 5, 7}) shapes.push_back({c, h, w});
    }
  }
  return shapes;
}

std::string shape_name(const Shape& s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
}

// The value an op under test reads comes out of a chain that fusion rewrites:
//   float: 1x1 float conv (C -> C) -> batch norm              (the BN folds into the conv)
//   bits:  sign -> 1x1 binary conv (C -> C) -> batch norm -> sign  (a thresholded conv)
struct Chain {
  bool bits = false;
  std::vector<float> w, m, b;
};

Chain random_chain(std::int64_t c, bool bits, std::mt19937& rng) {
  Chain ch{bits, {}, {}, {}};
  const auto n = static_cast<std::size_t>(c * c);
  // Float: values spread around [0, 1] so that clip and quantize_levels see every regime.
  ch.w = bits ? testing::random_signs(n, rng)
              : testing::random_normal(n, rng, 1.0f / std::sqrt(static_cast<float>(c)));
  ch.m = testing::random_normal(static_cast<std::size_t>(c), rng, bits ? 1.0f : 0.6f);
  ch.b = testing::random_normal(static_cast<std::size_t>(c), rng, bits ? 2.0f : 0.3f);
  for (float& v : ch.b) v += bits ? 0.0f : 0.5f;
  return ch;
}

ValueRef add_chain(ModelBuilder& b, ValueRef x, const Chain& ch) {
  const std::int64_t c = b.shape(x)[0];
  if (ch.bits) {
    x = b.conv2d(b.sign(x), Conv2dParams(c, 1).binary_kernel(true), ch.w);
    return b.sign(b.batch_norm(x, ch.m, ch.b));
  }
  return b.batch_norm(b.conv2d(x, Conv2dParams(c, 1), ch.w), ch.m, ch.b);
}

Nchw chain_ref(const Nchw& x, const Chain& ch) {
  const Nchw in = ch.bits ? testing::sign_ref(x) : x;
  const Nchw y = testing::bn_ref(testing::conv_ref(in, ch.w, ConvSpec{x.c, 1}), ch.m, ch.b);
  return ch.bits ? testing::sign_ref(y) : y;
}

// One configuration of an op under test: `build` applies it to the chain output `y` (the model
// input `x` is there for a second operand), `ref` computes the same on NCHW floats.
struct OpCase {
  std::string what;
  std::function<ValueRef(ModelBuilder&, ValueRef y, ValueRef x)> build;
  std::function<Nchw(const Nchw& y, const Nchw& x)> ref;
};

// For every odd shape and every chain kind in `chain_bits`: fused and unfused models against
// the reference, and the fused model must really have fused the chain.
void check_op(const std::vector<bool>& chain_bits,
              const std::function<std::vector<OpCase>(const Shape&)>& cases, unsigned seed) {
  std::mt19937 rng(seed);
  for (const Shape& s : odd_shapes()) {
    const std::int64_t batch = 3;
    const Nchw x{batch, s.c, s.h, s.w, testing::random_normal(batch * s.c * s.h * s.w, rng)};
    for (bool bits : chain_bits) {
      const Chain ch = random_chain(s.c, bits, rng);
      const Nchw y = chain_ref(x, ch);
      for (const OpCase& oc : cases(s)) {
        const std::vector<float> expected = oc.ref(y, x).v;
        std::size_t fused_ops = 0;
        for (bool fuse : {true, false}) {
          ModelBuilder b({fuse});
          const ValueRef in = b.input({s.c, s.h, s.w});
          b.output(oc.build(b, add_chain(b, in, ch), in));
          const Model m = b.build();
          if (fuse) {
            fused_ops = m.ops.size();
          } else {
            EXPECT_LT(fused_ops, m.ops.size()) << "the chain must fuse";
          }
          testing::expect_runs_and_round_trips(m, x, expected,
                                               oc.what + " on " + shape_name(s) +
                                                   (bits ? " bits" : " float") +
                                                   (fuse ? " fused" : " unfused"));
        }
      }
    }
  }
}

// ---- sigmoid -------------------------------------------------------------------------------

TEST(Sigmoid, MatchesScalarMathOnOddShapesFusedAndUnfused) {
  check_op(
      {false},
      [](const Shape&) {
        return std::vector<OpCase>{
            {"sigmoid", [](ModelBuilder& b, ValueRef y, ValueRef) { return b.sigmoid(y); },
             [](const Nchw& y, const Nchw&) { return testing::sigmoid_ref(y); }}};
      },
      101);
}

TEST(Sigmoid, SaturatesWithoutNaN) {
  ModelBuilder b;
  b.output(b.sigmoid(b.input({7})));
  const std::vector<float> x{
      -1000.0f, -88.0f, -0.0f, 0.0f, 20.0f, 1000.0f, std::numeric_limits<float>::infinity()};
  InterpreterOptions o;
  o.non_finite = NonFiniteInput::kPropagate;  // the infinity is meant
  const std::vector<float> y = Interpreter(b.build(), o).run(x, 1);
  EXPECT_EQ(y, testing::sigmoid_ref(Nchw{1, 7, 1, 1, x}).v);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[2], 0.5f);
  EXPECT_EQ(y[5], 1.0f);
  EXPECT_EQ(y[6], 1.0f);
}

// ---- mul -----------------------------------------------------------------------------------

TEST(Mul, SameShapeAndPerChannelFloatAndBitsMatchScalarMath) {
  // a: the chain output (float or bits). b: the model input x or sign(x) (a's shape), or
  // global_avg_pool(x) or its sign (C,1,1: one factor per channel).
  check_op(
      {false, true},
      [](const Shape&) {
        using testing::global_avgpool_ref;
        using testing::sign_ref;
        return std::vector<OpCase>{
            {"mul(y, x)", [](ModelBuilder& b, ValueRef y, ValueRef x) { return b.mul(y, x); },
             [](const Nchw& y, const Nchw& x) { return testing::mul_ref(y, x); }},
            {"mul(y, sign x)",
             [](ModelBuilder& b, ValueRef y, ValueRef x) { return b.mul(y, b.sign(x)); },
             [](const Nchw& y, const Nchw& x) { return testing::mul_ref(y, sign_ref(x)); }},
            {"mul(y, gap x)",
             [](ModelBuilder& b, ValueRef y, ValueRef x) {
               return b.mul(y, b.global_avg_pool2d(x));
             },
             [](const Nchw& y, const Nchw& x) {
               return testing::mul_ref(y, global_avgpool_ref(x));
             }},
            {"mul(y, sign gap x)",
             [](ModelBuilder& b, ValueRef y, ValueRef x) {
               return b.mul(y, b.sign(b.global_avg_pool2d(x)));
             },
             [](const Nchw& y, const Nchw& x) {
               return testing::mul_ref(y, sign_ref(global_avgpool_ref(x)));
             }},
            {"mul(x, y)", [](ModelBuilder& b, ValueRef y, ValueRef x) { return b.mul(x, y); },
             [](const Nchw& y, const Nchw& x) { return testing::mul_ref(x, y); }},
        };
      },
      102);
}

// ---- slice_channels ------------------------------------------------------------------------

// A few slices of C channels: all, first, last, and unaligned ranges inside.
std::vector<std::pair<std::int64_t, std::int64_t>> slices_of(std::int64_t c) {
  std::vector<std::pair<std::int64_t, std::int64_t>> all{
      {0, c}, {0, 1}, {c - 1, c}, {1, c}, {c / 3, 2 * c / 3 + 1}, {c / 2, c - c / 4}};
  std::vector<std::pair<std::int64_t, std::int64_t>> valid;
  for (const auto& r : all) {
    if (0 <= r.first && r.first < r.second && r.second <= c &&
        std::find(valid.begin(), valid.end(), r) == valid.end()) {
      valid.push_back(r);
    }
  }
  return valid;
}

TEST(SliceChannels, FloatAndBitsMatchScalarMathOnOddShapes) {
  check_op(
      {false, true},
      [](const Shape& s) {
        std::vector<OpCase> cases;
        for (const auto& [begin, end] : slices_of(s.c)) {
          cases.push_back({"slice [" + std::to_string(begin) + ", " + std::to_string(end) + ")",
                           [begin = begin, end = end](ModelBuilder& b, ValueRef y, ValueRef) {
                             const ValueRef z = b.slice_channels(y, begin, end);
                             EXPECT_EQ(b.is_bits(z), b.is_bits(y));
                             EXPECT_EQ(b.shape(z), (std::vector<std::int64_t>{
                                                       end - begin, b.shape(y)[1], b.shape(y)[2]}));
                             return z;
                           },
                           [begin = begin, end = end](const Nchw& y, const Nchw&) {
                             return testing::slice_ref(y, begin, end);
                           }});
        }
        return cases;
      },
      103);
}

// Bits slices at every begin (every bit offset within a word and across words) keep the
// output's padding bits 0: a binary 1x1 conv after the slice reads every word of it.
TEST(SliceChannels, BitsAtEveryOffsetStayPackedWithZeroPadding) {
  std::mt19937 rng(104);
  const std::int64_t c = 130, h = 2, w = 3, batch = 2;
  const Nchw x{batch, c, h, w, testing::random_normal(batch * c * h * w, rng)};
  const Nchw s = testing::sign_ref(x);
  for (std::int64_t begin = 0; begin < c; ++begin) {
    for (std::int64_t len : {1, 63, 64, 65, 130}) {
      const std::int64_t end = std::min(begin + len, c);
      if (len == 130 && end != c) continue;  // "to the end"
      const auto wt = testing::random_signs(static_cast<std::size_t>(5 * (end - begin)), rng);
      ModelBuilder b;
      const ValueRef z = b.slice_channels(b.sign(b.input({c, h, w})), begin, end);
      ASSERT_TRUE(b.is_bits(z));
      b.output(b.conv2d(z, Conv2dParams(5, 1).binary_kernel(true), wt));
      const Nchw expected =
          testing::conv_ref(testing::slice_ref(s, begin, end), wt, ConvSpec{5, 1});
      const Model m = b.build();
      for (const KernelTable* t : all_tables()) {
        EXPECT_EQ(Interpreter(m, {1, t}).run(x.v, batch), expected.v)
            << "[" << begin << ", " << end << ") on " << isa_name(t->isa);
      }
    }
  }
}

// ---- clip ----------------------------------------------------------------------------------

TEST(Clip, MatchesScalarMathOnOddShapesFusedAndUnfused) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<float, float>> bounds{{-0.5f, 0.75f}, {0.0f, 6.0f}, {-1.0f, 1.0f},
                                                    {0.25f, 0.25f}, {-inf, 0.5f}, {0.5f, inf}};
  check_op(
      {false},
      [&](const Shape&) {
        std::vector<OpCase> cases;
        for (const auto& [lo, hi] : bounds) {
          std::ostringstream what;
          what << "clip(" << lo << ", " << hi << ")";
          cases.push_back({what.str(),
                           [lo = lo, hi = hi](ModelBuilder& b, ValueRef y, ValueRef) {
                             return b.clip(y, lo, hi);
                           },
                           [lo = lo, hi = hi](const Nchw& y, const Nchw&) {
                             return testing::clip_ref(y, lo, hi);
                           }});
        }
        return cases;
      },
      105);
}

// ---- quantize_levels -----------------------------------------------------------------------

TEST(QuantizeLevels, MatchesScalarMathOnOddShapesFusedAndUnfused) {
  check_op(
      {false},
      [](const Shape&) {
        std::vector<OpCase> cases;
        for (int k : {1, 2, 3, 4, 8, 16}) {
          cases.push_back(
              {"quantize_levels(" + std::to_string(k) + ")",
               [k](ModelBuilder& b, ValueRef y, ValueRef) { return b.quantize_levels(y, k); },
               [k](const Nchw& y, const Nchw&) { return testing::levels_ref(y, k); }});
        }
        return cases;
      },
      106);
}

TEST(QuantizeLevels, RoundsHalfToEvenAndClipsToZeroOne) {
  const std::vector<float> x{-2.0f, -0.0f, 0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 3.0f, 1.0f / 6.0f};
  for (int k = 1; k <= 16; ++k) {
    ModelBuilder b;
    b.output(b.quantize_levels(b.input({static_cast<std::int64_t>(x.size())}), k));
    const std::vector<float> y = Interpreter(b.build()).run(x, 1);
    EXPECT_EQ(y, testing::levels_ref(Nchw{1, static_cast<std::int64_t>(x.size()), 1, 1, x}, k).v)
        << "k=" << k;
    const float n = static_cast<float>((1 << k) - 1);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[6], 1.0f);
    EXPECT_EQ(y[7], 1.0f);
    // 0.5 * n = 2^(k-1) - 0.5 is a tie: to the even neighbour, 2^(k-1) (k >= 2) or 0 (k = 1).
    EXPECT_EQ(y[4], k == 1 ? 0.0f : static_cast<float>(1 << (k - 1)) / n) << "k=" << k;
  }
  // Hand-computed: k = 1 gives {0, 1}; k = 2 gives thirds.
  ModelBuilder b;
  b.output(b.quantize_levels(b.input({4}), 2));
  EXPECT_EQ(Interpreter(b.build()).run({0.1f, 0.2f, 0.5f, 0.9f}, 1),
            (std::vector<float>{0.0f, 1.0f / 3.0f, 2.0f / 3.0f, 1.0f}));
}

// ---- a network with every new op ----------------------------------------------------------

// Stem float conv + BN, clip (hardtanh), a binary conv block whose output is scaled per channel
// by a squeeze-and-excite gate (global pool, dense, sigmoid, mul) with a float shortcut, a split
// into a DoReFa-quantized float part and a packed bits part (odd offset), and a head.
struct Net {
  std::int64_t c = 12, h = 7, w = 5, mid = 16, split = 5;
  std::vector<float> stem_w, stem_m, stem_b, conv_w, conv_m, conv_b, se_w, se_b, bits_w, bits_m,
      bits_b, head_w;
};

Net random_net(std::mt19937& rng) {
  Net n;
  n.stem_w = testing::random_normal(n.mid * n.c * 9, rng, 0.2f);
  n.stem_m = testing::random_normal(n.mid, rng);
  n.stem_b = testing::random_normal(n.mid, rng, 0.5f);
  n.conv_w = testing::random_signs(n.mid * n.mid * 9, rng);
  n.conv_m = testing::random_normal(n.mid, rng, 0.1f);
  n.conv_b = testing::random_normal(n.mid, rng);
  n.se_w = testing::random_normal(n.mid * n.mid, rng, 0.3f);
  n.se_b = testing::random_normal(n.mid, rng);
  n.bits_w = testing::random_signs(8 * (n.mid - n.split) * 9, rng);
  n.bits_m = testing::random_normal(8, rng);
  n.bits_b = testing::random_normal(8, rng, 3.0f);
  n.head_w = testing::random_normal(10 * (n.split + 8), rng);
  return n;
}

Model build_net(const Net& n, bool fuse) {
  ModelBuilder b({fuse});
  const ValueRef x = b.input({n.c, n.h, n.w});
  b.set_name_scope("stem");
  ValueRef y = b.conv2d(x, Conv2dParams(n.mid, 3).padding(1, 1), n.stem_w);
  b.set_name_scope("stem_bn");
  y = b.batch_norm(y, n.stem_m, n.stem_b);
  b.set_name_scope("act");
  y = b.clip(y, -1.0f, 1.0f);
  b.set_name_scope("block1_conv");
  ValueRef c =
      b.conv2d(b.sign(y), Conv2dParams(n.mid, 3).padding(1, 1).binary_kernel(true), n.conv_w);
  b.set_name_scope("block1_bn");
  c = b.batch_norm(c, n.conv_m, n.conv_b);
  b.set_name_scope("se");
  ValueRef g = b.dense(b.flatten(b.global_avg_pool2d(c)), DenseParams(n.mid), n.se_w, n.se_b);
  g = b.sigmoid(g);
  b.set_name_scope("se_scale");
  ValueRef z = b.add(b.mul(c, g), y);
  b.set_name_scope("dorefa");
  const ValueRef q = b.quantize_levels(b.clip(b.slice_channels(z, 0, n.split), 0.0f, 1.0f), 2);
  b.set_name_scope("bits");
  ValueRef t = b.slice_channels(b.sign(z), n.split, n.mid);
  t = b.conv2d(t, Conv2dParams(8, 3).padding(1, 1).binary_kernel(true), n.bits_w);
  t = b.sign(b.batch_norm(t, n.bits_m, n.bits_b));
  b.set_name_scope("head");
  b.output(b.dense(b.flatten(b.global_avg_pool2d(b.concat({q, t}))), DenseParams(10), n.head_w));
  return b.build();
}

std::vector<float> net_ref(const Net& n, const Nchw& x) {
  using namespace testing;
  const ConvSpec pad1{n.mid, 3, 1, 1, 1, 1, 1, 1, 1};
  const Nchw y = clip_ref(bn_ref(conv_ref(x, n.stem_w, pad1), n.stem_m, n.stem_b), -1.0f, 1.0f);
  const Nchw c = bn_ref(conv_ref(sign_ref(y), n.conv_w, pad1), n.conv_m, n.conv_b);
  Nchw g = dense_ref(global_avgpool_ref(c), n.se_w, n.mid);
  for (std::size_t i = 0; i < g.v.size(); ++i) g.v[i] += n.se_b[i % n.mid];
  const Nchw z = add_ref(mul_ref(c, sigmoid_ref(g)), y);
  const Nchw q = levels_ref(clip_ref(slice_ref(z, 0, n.split), 0.0f, 1.0f), 2);
  ConvSpec bits_spec = pad1;
  bits_spec.out = 8;
  const Nchw t = sign_ref(bn_ref(
      conv_ref(slice_ref(sign_ref(z), n.split, n.mid), n.bits_w, bits_spec), n.bits_m, n.bits_b));
  return dense_ref(global_avgpool_ref(concat_ref({q, t})), n.head_w, 10).v;
}

TEST(OpsV3, SqueezeExciteDoReFaSplitNetworkMatchesFloatMath) {
  std::mt19937 rng(107);
  const Net n = random_net(rng);
  const Nchw x{3, n.c, n.h, n.w, testing::random_normal(3 * n.c * n.h * n.w, rng)};
  const std::vector<float> expected = net_ref(n, x);
  const Model fused = build_net(n, true), unfused = build_net(n, false);
  EXPECT_LT(fused.ops.size(), unfused.ops.size());
  testing::expect_runs_and_round_trips(fused, x, expected, "fused");
  testing::expect_runs_and_round_trips(unfused, x, expected, "unfused");
}

// ---- op names through fusion ---------------------------------------------------------------

std::vector<std::string> op_names(const Model& m) {
  std::vector<std::string> names;
  for (const Op& op : m.ops) names.push_back(op.name);
  return names;
}

TEST(OpNames, FusedOpsJoinTheNamesOfWhatTheyAbsorbed) {
  std::mt19937 rng(108);
  const Net n = random_net(rng);
  const Model fused = build_net(n, true), unfused = build_net(n, false);
  const std::vector<std::string> names = op_names(fused);
  for (const char* want : {"stem+stem_bn", "act", "block1_conv+block1_bn", "bits+bits"}) {
    const bool found = std::find(names.begin(), names.end(), want) != names.end();
    EXPECT_EQ(found, std::string(want) != "bits+bits") << want;
  }
  EXPECT_EQ(fused.ops[0].name, "stem+stem_bn");
  EXPECT_EQ(fused.ops[0].type, OpType::kConv2d);
  for (const Op& op : unfused.ops) EXPECT_EQ(op.name.find('+'), std::string::npos) << op.name;

  // Chains: unnamed conv + named BN takes the BN's name; equal names are not repeated; the
  // flatten/sign swap keeps each name with its op; pool + BN + sign fold into the conv.
  ModelBuilder b;
  ValueRef x = b.sign(b.input({8, 6, 6}));
  x = b.conv2d(x, Conv2dParams(8, 3).padding(1, 1).binary_kernel(true),
               testing::random_signs(8 * 8 * 9, rng));
  b.set_name_scope("bn0");
  x = b.batch_norm(x, testing::random_normal(8, rng), testing::random_normal(8, rng));
  b.set_name_scope("b1");
  x = b.conv2d(b.sign(x), Conv2dParams(8, 3).binary_kernel(true),
               testing::random_signs(8 * 8 * 9, rng));
  x = b.sign(b.batch_norm(x, testing::random_normal(8, rng), testing::random_normal(8, rng)));
  b.set_name_scope("c2");
  x = b.conv2d(x, Conv2dParams(8, 1).binary_kernel(true), testing::random_signs(64, rng));
  b.set_name_scope("p2");
  x = b.max_pool2d(x, Pool2dParams(2));
  b.set_name_scope("bn2");
  x = b.batch_norm(x, testing::random_normal(8, rng), testing::random_normal(8, rng));
  b.set_name_scope("s2");
  x = b.sign(x);
  b.set_name_scope("c3");
  x = b.conv2d(x, Conv2dParams(8, 1).binary_kernel(true), testing::random_signs(64, rng));
  b.set_name_scope("bn3");
  x = b.batch_norm(x, testing::random_normal(8, rng), testing::random_normal(8, rng));
  b.set_name_scope("flat");
  x = b.flatten(x);
  b.set_name_scope("sgn");
  x = b.sign(x);
  b.set_name_scope("fc");
  b.output(b.dense(x, DenseParams(3).binary_kernel(true), testing::random_signs(3 * 32, rng)));
  EXPECT_EQ(b.name_scope(), "fc");
  const Model m = b.build();
  // The sign of block b1 reads bn0's output, so conv0's thresholds compute it: "bn0+b1".
  EXPECT_EQ(op_names(m), (std::vector<std::string>{"", "bn0+b1", "b1", "c2+bn2+s2", "p2",
                                                   "c3+bn3+sgn", "flat", "fc"}));
  EXPECT_EQ(m.ops[6].type, OpType::kFlatten);
}

TEST(OpNames, ErrorsNameTheOp) {
  ModelBuilder b;
  b.set_name_scope("act3");
  const ValueRef y = b.clip(b.input({4, 2, 2}), 0.0f, 1.0f);
  b.output(y);
  Model m = b.build();
  m.ops[0].ints["hi"] = {-1};
  const std::string e = error_of([&] { Interpreter{m}; });
  EXPECT_NE(e.find("op 0 (clip \"act3\"): attribute 'hi' value -1 out of range"), std::string::npos)
      << e;
  const std::string e2 = error_of([&] { b.set_name_scope(std::string(1025, 'x')); });
  EXPECT_NE(e2.find("ModelBuilder::set_name_scope: name of 1025 bytes, expected at most 1024"),
            std::string::npos)
      << e2;
}

// ---- builder errors ------------------------------------------------------------------------

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  std::string e;
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << parts[0];
    return;
  } catch (const std::invalid_argument& ex) {
    e = ex.what();
  }
  for (const std::string& p : parts) EXPECT_NE(e.find(p), std::string::npos) << e;
}

TEST(Builder, NewOpsRejectBadArgumentsWithClearMessages) {
  ModelBuilder b;
  const ValueRef x = b.input({8, 5, 5});
  const ValueRef s = b.sign(x);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Float-only ops on bits.
  expect_error([&] { b.sigmoid(s); },
               {"ModelBuilder::sigmoid", "'x' has shape 8x5x5 (bits)", "expected a float value"});
  expect_error([&] { b.clip(s, 0.0f, 1.0f); }, {"ModelBuilder::clip", "(bits)"});
  expect_error([&] { b.quantize_levels(s, 2); }, {"ModelBuilder::quantize_levels", "(bits)"});
  // mul shapes.
  EXPECT_NO_THROW(b.mul(x, b.max_pool2d(x, Pool2dParams(5))));  // 8x1x1: per channel
  expect_error([&] { b.mul(x, b.slice_channels(x, 0, 4)); },
               {"ModelBuilder::mul: 'b' has shape 4x5x5 (float32)",
                "expected the shape of 'a' (8x5x5 (float32)) or 8x1x1 (one factor per channel"});
  expect_error([&] { b.mul(x, b.global_avg_pool2d(b.slice_channels(x, 0, 4))); },
               {"'b' has shape 4x1x1"});
  expect_error([&] { b.mul(b.global_avg_pool2d(x), x); },
               {"'b' has shape 8x5x5", "expected the shape of 'a' (8x1x1"});
  expect_error([&] { b.mul(x, b.avg_pool2d(x, Pool2dParams(2))); }, {"'b' has shape 8x2x2"});
  expect_error([&] { b.mul(x, ValueRef{99}); }, {"ModelBuilder::mul", "value id 99"});
  // slice_channels ranges.
  expect_error([&] { b.slice_channels(x, 3, 3); },
               {"ModelBuilder::slice_channels: 'begin' = 3 is not below 'end' = 3"});
  expect_error([&] { b.slice_channels(x, 5, 2); }, {"'begin' = 5 is not below 'end' = 2"});
  expect_error([&] { b.slice_channels(s, 2, 9); },
               {"'end' = 9, expected at most the 8 channels of 'x' (8x5x5 (bits))"});
  expect_error([&] { b.slice_channels(x, -1, 2); }, {"'begin' = -1, expected >= 0"});
  // clip bounds.
  expect_error([&] { b.clip(x, 1.0f, 0.5f); },
               {"ModelBuilder::clip: 'lo' = 1 is above 'hi' = 0.5, expected lo <= hi"});
  expect_error([&] { b.clip(x, nan, 1.0f); }, {"'lo' = nan, expected a number"});
  expect_error([&] { b.clip(x, 0.0f, nan); }, {"'hi' = nan, expected a number"});
  // k_bit range.
  expect_error([&] { b.quantize_levels(x, 0); },
               {"ModelBuilder::quantize_levels: 'k_bit' = 0, expected 1 to 16"});
  expect_error([&] { b.quantize_levels(x, 17); }, {"'k_bit' = 17, expected 1 to 16"});
  expect_error([&] { b.quantize_levels(x, -3); }, {"'k_bit' = -3"});
  // The builder is still usable after its errors.
  b.output(b.quantize_levels(b.clip(x, 0.0f, 1.0f), 16));
  EXPECT_NO_THROW(b.build());
}

// ---- corrupted attributes in files ---------------------------------------------------------

// Builds input -> slice (0, 5) -> clip (0, 1) -> quantize_levels (3) -> sigmoid -> mul by the
// per-channel gate of the model input, named after their op, then lets `corrupt` damage the
// model before it is written and prepared from the file bytes; returns the ModelError message.
std::string file_error(const std::function<void(Model&)>& corrupt) {
  ModelBuilder b;
  const ValueRef x = b.input({8, 3, 3});
  b.set_name_scope("s");
  ValueRef y = b.slice_channels(x, 0, 5);
  b.set_name_scope("c");
  y = b.clip(y, 0.0f, 1.0f);
  b.set_name_scope("q");
  y = b.quantize_levels(y, 3);
  b.set_name_scope("g");
  y = b.sigmoid(y);
  b.set_name_scope("m");
  b.output(b.mul(y, b.global_avg_pool2d(b.slice_channels(x, 3, 8))));
  Model m = b.build();
  corrupt(m);
  const auto bytes = serialize_model(m);
  try {
    Interpreter::from_bytes(bytes.data(), bytes.size());
  } catch (const ModelError& e) {
    return e.what();
  }
  return "no error";
}

TEST(ModelFile, CorruptedAttributesOfNewOpsNameTheOp) {
  const std::int64_t nan_bits = 0x7FC00000;
  struct Case {
    std::size_t op;
    std::function<void(Op&)> corrupt;
    std::string expected;
  };
  const std::vector<Case> cases{
      {0, [](Op& op) { op.ints["begin"] = {5}; },
       "op 0 (slice_channels \"s\"): attributes 'begin' = 5, 'end' = 5, expected 0 <= begin < "
       "end <= 8 (the channels of the input, 8x3x3)"},
      {0, [](Op& op) { op.ints["end"] = {9}; }, "'begin' = 0, 'end' = 9, expected"},
      {0, [](Op& op) { op.ints["begin"] = {-1}; }, "'begin' = -1"},
      {0, [](Op& op) { op.ints.erase("end"); },
       "op 0 (slice_channels \"s\"): missing attribute 'end'"},
      {0,
       [](Op& op) {
         op.ints["begin"] = {0, 1};
       },
       "op 0 (slice_channels \"s\"): attribute 'begin' has 2 values, expected 1"},
      {1, [](Op& op) { op.ints["lo"] = {op.ints["hi"][0] + 1}; },
       "op 1 (clip \"c\"): attribute 'lo' (1.00000012) is above attribute 'hi' (1), expected "
       "lo <= hi"},
      {1, [&](Op& op) { op.ints["hi"] = {nan_bits}; },
       "op 1 (clip \"c\"): attribute 'hi' value 2143289344 is the bit pattern of a NaN"},
      {1, [](Op& op) { op.ints["lo"] = {std::int64_t{1} << 32}; },
       "op 1 (clip \"c\"): attribute 'lo' value 4294967296 out of range [0, 4294967295]"},
      {1, [](Op& op) { op.ints.erase("lo"); }, "op 1 (clip \"c\"): missing attribute 'lo'"},
      {2, [](Op& op) { op.ints["k_bit"] = {17}; },
       "op 2 (quantize_levels \"q\"): attribute 'k_bit' value 17 out of range [1, 16]"},
      {2, [](Op& op) { op.ints["k_bit"] = {0}; }, "attribute 'k_bit' value 0 out of range"},
      {2, [](Op& op) { op.ints.clear(); }, "op 2 (quantize_levels \"q\"): missing attribute"},
      {6,
       [](Op& op) {
         op.inputs = {4, 0};
       },
       "op 6 (mul \"m\"): input 1 has shape 8x3x3, expected the shape of input 0 (5x3x3) or "
       "5x1x1"},
      {3,
       [](Op& op) {
         op.inputs = {0};
         op.type = OpType::kSliceChannels;
       },
       "op 3 (slice_channels \"g\"): missing attribute 'begin'"},
  };
  EXPECT_EQ(file_error([](Model&) {}), "no error");
  for (const Case& c : cases) {
    const std::string e = file_error([&](Model& m) {
      ASSERT_LT(c.op, m.ops.size());
      c.corrupt(m.ops[c.op]);
    });
    EXPECT_NE(e.find(c.expected), std::string::npos) << e;
  }
  // A clip's bits input (not float) is rejected by the op table's dtype check.
  const std::string e = file_error([](Model& m) {
    Op sign;
    sign.type = OpType::kQuantize;
    sign.inputs = {0};
    m.ops.insert(m.ops.begin(), sign);
    for (std::size_t i = 1; i < m.ops.size(); ++i) {
      for (std::int32_t& v : m.ops[i].inputs) v += v == 0 ? 0 : 1;
    }
    m.ops[2].inputs = {1};  // clip reads the bits
    m.output += 1;
  });
  EXPECT_NE(e.find("op 2 (clip \"c\"): input 0 has dtype bits, expected float32"),
            std::string::npos)
      << e;
}

}  // namespace
}  // namespace onebit::runtime
