// Graph models: shortcuts (add, also with bits inputs), concatenation (bits kept packed, float,
// mixed), strided and global average pooling, fusion that must stop at values with several
// consumers, the memory plan, and the op table. Everything against plain float math, fused and
// unfused, on every ISA, bit for bit.

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
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

// Parameters of one "sign -> binary conv 3x3 (zero-padding 1) -> batch norm [-> sign]" branch.
struct Branch {
  std::int64_t in = 0, out = 0;
  std::vector<float> w, m, b;
};

Branch random_branch(std::int64_t in, std::int64_t out, std::mt19937& rng) {
  Branch br{in, out, testing::random_signs(out * in * 9, rng), testing::random_normal(out, rng),
            testing::random_normal(out, rng, 4)};
  br.m[0] = -std::abs(br.m[0]);  // a negative multiplier: its filter is negated when fused
  if (out > 2) br.m[2] = 0.0f;   // a dead channel
  return br;
}

ConvSpec branch_spec(const Branch& br) { return ConvSpec{br.out, 3, 1, 1, 1, 1, 1, 1, 1, 0.0f}; }

// Builder side: `x` must already be bits.
ValueRef add_branch(ModelBuilder& b, ValueRef x, const Branch& br, bool sign_output) {
  ValueRef y = b.conv2d(x, Conv2dParams(br.out, 3).padding(1, 1).binary_kernel(true), br.w);
  y = b.batch_norm(y, br.m, br.b);
  return sign_output ? b.sign(y) : y;
}

// Float side: `x` must already be +-1.
Nchw branch_ref(const Nchw& x, const Branch& br, bool sign_output) {
  Nchw y = testing::bn_ref(testing::conv_ref(x, br.w, branch_spec(br)), br.m, br.b);
  return sign_output ? testing::sign_ref(y) : y;
}

// Runs `m` on every ISA with 1 and 3 threads and checks the result against `expected`.
void expect_runs_to(const Model& m, const Nchw& x, const std::vector<float>& expected,
                    const std::string& what) {
  for (const KernelTable* t : all_tables()) {
    for (int threads : {1, 3}) {
      EXPECT_EQ(Interpreter(m, {threads, t}).run(x.v, static_cast<std::size_t>(x.n)), expected)
          << what << " on " << isa_name(t->isa) << " with " << threads << " threads";
    }
  }
}

std::vector<OpType> op_types(const Model& m) {
  std::vector<OpType> types;
  for (const Op& op : m.ops) types.push_back(op.type);
  return types;
}

// ---- concat -------------------------------------------------------------------------------

struct Part {
  std::int64_t channels;
  bool bits;
};

TEST(Concat, BitsFloatAndMixedPartsMatchFloatMath) {
  const std::vector<std::vector<Part>> configs{
      {{64, true}, {64, true}},                         // whole-word copies
      {{40, true}, {24, true}},                         // shifted, output exactly one word
      {{70, true}, {130, true}, {5, true}},             // shifts across word boundaries
      {{1, true}, {63, true}, {64, true}, {65, true}},  // every alignment
      {{40, false}, {24, false}},                       // all float
      {{70, true}, {30, false}, {5, true}},             // mixed: float output, bits as +-1
  };
  std::mt19937 rng(21);
  const std::int64_t c = 12, h = 5, w = 4, batch = 2;
  const Nchw x{batch, c, h, w, testing::random_normal(batch * c * h * w, rng)};
  for (const auto& parts : configs) {
    std::vector<Branch> branches;
    std::int64_t total = 0;
    bool all_bits = true;
    for (const Part& p : parts) {
      branches.push_back(random_branch(c, p.channels, rng));
      total += p.channels;
      all_bits = all_bits && p.bits;
    }
    // A 1x1 conv after the concat reads every word of it: with bits, nonzero padding bits would
    // change its dot products.
    const auto w1 = testing::random_signs(7 * total, rng);
    std::vector<Nchw> ref_parts;
    for (std::size_t j = 0; j < parts.size(); ++j) {
      ref_parts.push_back(branch_ref(testing::sign_ref(x), branches[j], parts[j].bits));
    }
    const Nchw cat = testing::concat_ref(ref_parts);
    const Nchw after = testing::conv_ref(cat, w1, ConvSpec{7, 1, 1, 1, 1});
    for (bool then_conv : {false, true}) {
      for (bool fuse : {true, false}) {
        ModelBuilder b({fuse});
        const ValueRef s = b.sign(b.input({c, h, w}));
        std::vector<ValueRef> xs;
        for (std::size_t j = 0; j < parts.size(); ++j) {
          xs.push_back(add_branch(b, s, branches[j], parts[j].bits));
        }
        ValueRef y = b.concat(xs);
        EXPECT_EQ(b.is_bits(y), all_bits);
        EXPECT_EQ(b.shape(y), (std::vector<std::int64_t>{total, h, w}));
        if (then_conv) y = b.conv2d(y, Conv2dParams(7, 1).binary_kernel(true), w1);
        b.output(y);
        std::string what = "parts";
        for (const Part& p : parts) what += " " + std::to_string(p.channels) + (p.bits ? "b" : "f");
        expect_runs_to(b.build(), x, then_conv ? after.v : cat.v,
                       what + (then_conv ? " + 1x1 conv" : "") + (fuse ? " fused" : ""));
      }
    }
  }
}

TEST(Concat, SameValueTwiceAndInputOrder) {
  ModelBuilder b;
  const ValueRef x = b.input({3, 2, 2});
  b.output(b.concat({b.relu(x), x, b.sign(x)}));
  std::vector<float> in(12);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i) - 5.5f;
  const Nchw xr{1, 3, 2, 2, in};
  Nchw relu = xr;
  for (float& v : relu.v) v = std::max(v, 0.0f);
  EXPECT_EQ(Interpreter(b.build()).run(in, 1),
            testing::concat_ref({relu, xr, testing::sign_ref(xr)}).v);
}

TEST(Concat, RejectsMismatchedSpatialShapesAndFewerThanTwoInputs) {
  ModelBuilder b;
  const ValueRef x = b.input({4, 6, 6});
  const ValueRef pooled = b.max_pool2d(x, Pool2dParams(2));
  const std::string e1 = error_of([&] { b.concat({x, x, pooled}); });
  EXPECT_NE(e1.find("ModelBuilder::concat"), std::string::npos) << e1;
  EXPECT_NE(e1.find("'xs[2]' has shape 4x3x3"), std::string::npos) << e1;
  EXPECT_NE(e1.find("expected H,W = 6x6"), std::string::npos) << e1;
  const std::string e2 = error_of([&] { b.concat({x}); });
  EXPECT_NE(e2.find("'xs' has 1 values, expected 2 to 256"), std::string::npos) << e2;
  EXPECT_THROW(b.concat({x, ValueRef{42}}), std::invalid_argument);
}

// ---- add with bits inputs -----------------------------------------------------------------

TEST(Add, EitherInputMayBeBitsReadAsPlusMinusOne) {
  std::mt19937 rng(22);
  const std::int64_t c = 70, h = 4, w = 3, batch = 2;
  const Nchw x{batch, c, h, w, testing::random_normal(batch * c * h * w, rng)};
  const Nchw s = testing::sign_ref(x);
  const std::vector<std::pair<int, int>> cases{{0, 1}, {1, 0}, {1, 1}, {0, 0}};  // 1: sign(x)
  for (const auto& [ka, kb] : cases) {
    ModelBuilder b;
    const ValueRef in = b.input({c, h, w});
    const ValueRef sx = b.sign(in);
    const ValueRef y = b.add(ka ? sx : in, kb ? sx : in);
    EXPECT_FALSE(b.is_bits(y));
    b.output(y);
    expect_runs_to(b.build(), x, testing::add_ref(ka ? s : x, kb ? s : x).v,
                   "add(" + std::to_string(ka) + ", " + std::to_string(kb) + ")");
  }
}

TEST(Add, RejectsDifferentShapesNamingBoth) {
  ModelBuilder b;
  const ValueRef x = b.input({4, 6, 6});
  const std::string e = error_of([&] { b.add(x, b.sign(b.max_pool2d(x, Pool2dParams(2)))); });
  EXPECT_NE(e.find("ModelBuilder::add: 'b' has shape 4x3x3 (bits)"), std::string::npos) << e;
  EXPECT_NE(e.find("expected the shape of 'a' (4x6x6 (float32))"), std::string::npos) << e;
}

// ---- pooling -------------------------------------------------------------------------------

TEST(AvgPool, StridedPaddedFloatAndBitsMatchPyTorchMath) {
  struct Case {
    std::int64_t k, stride, pad;
    bool include_pad;
  };
  const std::vector<Case> cases{{2, 2, 0, true},  {3, 2, 1, true}, {3, 2, 1, false},
                                {3, 1, 1, false}, {2, 1, 0, true}, {3, 3, 0, true}};
  std::mt19937 rng(23);
  const std::int64_t c = 70, h = 7, w = 6, batch = 2;
  const Nchw x{batch, c, h, w, testing::random_normal(batch * c * h * w, rng)};
  for (const Case& cs : cases) {
    for (bool bits : {false, true}) {
      ModelBuilder b;
      ValueRef in = b.input({c, h, w});
      if (bits) in = b.sign(in);
      Pool2dParams p(cs.k);
      p.stride(cs.stride).padding(cs.pad, cs.pad);
      p.count_include_pad = cs.include_pad;
      const ValueRef y = b.avg_pool2d(in, p);
      EXPECT_FALSE(b.is_bits(y));
      b.output(y);
      const Nchw expected = testing::avgpool_ref(bits ? testing::sign_ref(x) : x, cs.k, cs.stride,
                                                 cs.pad, cs.include_pad);
      EXPECT_EQ(Interpreter(b.build()).output_shape(),
                (std::vector<std::int64_t>{c, expected.h, expected.w}));
      expect_runs_to(b.build(), x, expected.v,
                     "k" + std::to_string(cs.k) + " s" + std::to_string(cs.stride) + " p" +
                         std::to_string(cs.pad) + (cs.include_pad ? " incl" : " excl") +
                         (bits ? " bits" : " float"));
    }
  }
}

TEST(GlobalAvgPool, FloatAndBitsThenFlattenGiveChannelOrder) {
  std::mt19937 rng(24);
  const std::int64_t c = 70, h = 5, w = 3, batch = 3;
  const Nchw x{batch, c, h, w, testing::random_normal(batch * c * h * w, rng)};
  for (bool bits : {false, true}) {
    ModelBuilder b;
    ValueRef in = b.input({c, h, w});
    if (bits) in = b.sign(in);
    const ValueRef g = b.global_avg_pool2d(in);
    EXPECT_EQ(b.shape(g), (std::vector<std::int64_t>{c, 1, 1}));
    EXPECT_FALSE(b.is_bits(g));
    b.output(b.flatten(g));
    const Model m = b.build();
    EXPECT_EQ(Interpreter(m).output_shape(), (std::vector<std::int64_t>{c, 1, 1}));
    expect_runs_to(m, x, testing::global_avgpool_ref(bits ? testing::sign_ref(x) : x).v,
                   bits ? "bits" : "float");
  }
}

// ---- fusion in graphs ----------------------------------------------------------------------

// Bi-Real Net: x -> sign -> binary conv 3x3 -> BN -> y; y + x is the block output, and sign(y)
// starts the next block. BN folds into the conv (the conv has one consumer), but y feeds both
// the add and the sign, so the conv keeps its float output and the sign stays a quantize op.
Model build_bireal(const Branch& b1, const Branch& b2, bool fuse) {
  ModelBuilder b({fuse});
  const ValueRef x = b.input({b1.in, 6, 6});
  const ValueRef y = add_branch(b, b.sign(x), b1, false);
  const ValueRef r = b.add(y, x);
  const ValueRef q = add_branch(b, b.sign(y), b2, false);
  b.output(b.add(q, r));
  return b.build();
}

TEST(Fusion, BiRealBlockKeepsTheSharedBatchNormOutputFloat) {
  std::mt19937 rng(25);
  const std::int64_t c = 70, batch = 2;
  const Branch b1 = random_branch(c, c, rng), b2 = random_branch(c, c, rng);
  const Nchw x{batch, c, 6, 6, testing::random_normal(batch * c * 36, rng)};
  const Nchw y = branch_ref(testing::sign_ref(x), b1, false);
  const Nchw expected =
      testing::add_ref(branch_ref(testing::sign_ref(y), b2, false), testing::add_ref(y, x));
  const Model fused = build_bireal(b1, b2, true), unfused = build_bireal(b1, b2, false);
  EXPECT_EQ(op_types(fused),
            (std::vector<OpType>{OpType::kQuantize, OpType::kBinaryConv2d, OpType::kAdd,
                                 OpType::kQuantize, OpType::kBinaryConv2d, OpType::kAdd}));
  EXPECT_EQ(fused.ops[1].attr("output_bits", {0})[0], 0) << "y is read by the add: stays float";
  EXPECT_EQ(fused.ops[1].tensors.count("multiplier"), 1u) << "BN folded into the conv";
  EXPECT_EQ(fused.ops[3].inputs, std::vector<std::int32_t>{2}) << "sign reads the conv output";
  EXPECT_EQ(unfused.ops.size(), 8u);
  expect_runs_to(fused, x, expected.v, "fused");
  expect_runs_to(unfused, x, expected.v, "unfused");
}

// DenseNet: each layer appends its new features to its input. Float variant: concat(x, BN(conv
// (sign x))); bits variant: everything stays packed, thresholds fuse. Head: global average pool,
// flatten, float dense.
struct Dense {
  Branch l1, l2, last;
  std::vector<float> head;
};

Model build_densenet(const Dense& d, bool bits, bool fuse) {
  ModelBuilder b({fuse});
  const ValueRef x = b.input({d.l1.in, 5, 5});
  const ValueRef s = b.sign(x);
  ValueRef y = b.concat({bits ? s : x, add_branch(b, s, d.l1, bits)});
  y = b.concat({y, add_branch(b, bits ? y : b.sign(y), d.l2, bits)});
  if (bits) y = add_branch(b, y, d.last, false);  // 1x1 would also do; 3x3 reads padding too
  y = b.flatten(b.global_avg_pool2d(y));
  b.output(b.dense(y, DenseParams(10), d.head));
  return b.build();
}

std::vector<float> densenet_ref(const Dense& d, bool bits, const Nchw& x) {
  const Nchw s = testing::sign_ref(x);
  Nchw y = testing::concat_ref({bits ? s : x, branch_ref(s, d.l1, bits)});
  y = testing::concat_ref({y, branch_ref(bits ? y : testing::sign_ref(y), d.l2, bits)});
  if (bits) y = branch_ref(y, d.last, false);
  return testing::dense_ref(testing::global_avgpool_ref(y), d.head, 10).v;
}

TEST(Fusion, DenseNetBlockConcatenatesInputAndNewFeatures) {
  std::mt19937 rng(26);
  const std::int64_t c = 40, batch = 2;
  Dense d{random_branch(c, 24, rng), random_branch(c + 24, 30, rng), {}, {}};
  d.last = random_branch(c + 24 + 30, 16, rng);
  const Nchw x{batch, c, 5, 5, testing::random_normal(batch * c * 25, rng)};
  for (bool bits : {false, true}) {
    d.head = testing::random_normal(10 * (bits ? 16 : c + 24 + 30), rng);
    const std::vector<float> expected = densenet_ref(d, bits, x);
    const Model fused = build_densenet(d, bits, true);
    const Model unfused = build_densenet(d, bits, false);
    if (bits) {
      EXPECT_EQ(op_types(fused),
                (std::vector<OpType>{OpType::kQuantize, OpType::kBinaryConv2d, OpType::kConcat,
                                     OpType::kBinaryConv2d, OpType::kConcat, OpType::kBinaryConv2d,
                                     OpType::kGlobalAvgPool2d, OpType::kFlatten, OpType::kDense}));
      EXPECT_EQ(fused.ops[1].attr("output_bits", {0})[0], 1);
      EXPECT_EQ(fused.ops[3].attr("output_bits", {0})[0], 1);
    } else {
      EXPECT_EQ(op_types(fused),
                (std::vector<OpType>{OpType::kQuantize, OpType::kBinaryConv2d, OpType::kConcat,
                                     OpType::kQuantize, OpType::kBinaryConv2d, OpType::kConcat,
                                     OpType::kGlobalAvgPool2d, OpType::kFlatten, OpType::kDense}));
    }
    EXPECT_GT(unfused.ops.size(), fused.ops.size());
    expect_runs_to(fused, x, expected, bits ? "bits fused" : "float fused");
    expect_runs_to(unfused, x, expected, bits ? "bits unfused" : "float unfused");
  }
}

TEST(Fusion, ModelOutputIsNeverFusedAway) {
  std::mt19937 rng(27);
  const Branch br = random_branch(8, 8, rng);
  const Nchw x{2, 8, 4, 4, testing::random_normal(2 * 8 * 16, rng)};
  const Nchw conv = testing::conv_ref(testing::sign_ref(x), br.w, branch_spec(br));
  {  // the conv is the output: a batch norm after it must not fold into it
    ModelBuilder b;
    const ValueRef c = b.conv2d(b.sign(b.input({8, 4, 4})),
                                Conv2dParams(8, 3).padding(1, 1).binary_kernel(true), br.w);
    b.output(c);
    b.sign(b.batch_norm(c, br.m, br.b));
    const Model m = b.build();
    EXPECT_EQ(m.ops[1].tensors.count("multiplier"), 0u);
    expect_runs_to(m, x, conv.v, "conv output");
  }
  {  // BN output is the output: BN folds, a sign after it must not turn the conv into bits
    ModelBuilder b;
    const ValueRef y = add_branch(b, b.sign(b.input({8, 4, 4})), br, false);
    b.output(y);
    b.sign(y);
    const Model m = b.build();
    EXPECT_EQ(m.ops[1].attr("output_bits", {0})[0], 0);
    expect_runs_to(m, x, testing::bn_ref(conv, br.m, br.b).v, "bn output");
  }
}

// ---- memory plan ---------------------------------------------------------------------------

TEST(Interpreter, ValueWithSeveralConsumersLivesUntilItsLastConsumer) {
  // a = relu(x) is read by op 1 and op 3: it must live through op 3.
  ModelBuilder b;
  const ValueRef x = b.input({8, 4, 4});
  const ValueRef a = b.relu(x);
  const ValueRef c = b.relu(b.relu(a));
  b.output(b.add(a, c));
  InterpreterOptions op_by_op;
  op_by_op.chain_per_element_ops = false;
  const Interpreter net(b.build(), op_by_op);
  std::mt19937 rng(28);
  const Nchw in{3, 8, 4, 4, testing::random_normal(3 * 128, rng)};
  Nchw expected = in;
  for (float& v : expected.v) v = 2.0f * std::max(v, 0.0f);
  EXPECT_EQ(net.run(in.v, 3), expected.v);
  // Per image one value is 128 floats = 512 bytes. Peak: a, relu(a), c while c is computed
  // (x is freed after op 0, relu(a) after op 2), then a, c, output.
  EXPECT_EQ(net.activation_bytes(1), 3u * 512u);
  EXPECT_EQ(net.activation_bytes(4), 4u * 3u * 512u);
  // With chains (the default), relu -> relu -> add(a, .) is one op reading a: relu(a) and c are
  // never written, and a lives until that op.
  const Interpreter chained(b.build());
  EXPECT_EQ(chained.run(in.v, 3), expected.v);
  EXPECT_EQ(chained.activation_bytes(1), 2u * 512u);
}

TEST(Interpreter, UnusedValuesAreFreedAndOpsAfterTheOutputDoNotRun) {
  ModelBuilder b;
  const ValueRef x = b.input({8, 4, 4});
  b.relu(x);  // nothing reads it
  const ValueRef y = b.relu(x);
  b.output(y);
  b.softmax(b.flatten(y));  // after the output
  const Interpreter net(b.build());
  // x and the unused relu (freed at once), then x and y: 2 values, not 3.
  EXPECT_EQ(net.activation_bytes(1), 2u * 512u);
  EXPECT_EQ(net.run(std::vector<float>(128, -1.0f), 1), std::vector<float>(128, 0.0f));
}

// ---- the op table --------------------------------------------------------------------------

TEST(OpTable, EveryOpTypeHasAUniqueName) {
  std::set<std::string> names;
  for (std::uint16_t t = 1; t <= 22; ++t) {
    const std::string name = op_name(static_cast<OpType>(t));
    EXPECT_NE(name, "unknown") << t;
    names.insert(name);
  }
  EXPECT_EQ(names.size(), 22u);
  EXPECT_STREQ(op_name(OpType::kConcat), "concat");
  EXPECT_STREQ(op_name(OpType::kGlobalAvgPool2d), "global_avgpool2d");
  EXPECT_STREQ(op_name(OpType::kSigmoid), "sigmoid");
  EXPECT_STREQ(op_name(OpType::kMul), "mul");
  EXPECT_STREQ(op_name(OpType::kSliceChannels), "slice_channels");
  EXPECT_STREQ(op_name(OpType::kClip), "clip");
  EXPECT_STREQ(op_name(OpType::kQuantizeLevels), "quantize_levels");
  EXPECT_STREQ(op_name(OpType::kThermometer), "thermometer");
  EXPECT_STREQ(op_name(static_cast<OpType>(23)), "unknown");
}

TEST(OpTable, InterpreterChecksArityAndInputDtypesNamingTheOp) {
  Model m;
  m.input_shape = {4, 2, 2};
  Op quantize;
  quantize.type = OpType::kQuantize;
  quantize.inputs = {0};
  Op concat;
  concat.type = OpType::kConcat;
  concat.inputs = {1};
  m.ops = {quantize, concat};
  m.output = 2;
  std::string e = error_of([&] { Interpreter{m}; });
  EXPECT_NE(e.find("op 1 (concat): expects 2 to 256 inputs, found 1"), std::string::npos) << e;
  m.ops[1].type = OpType::kRelu;
  e = error_of([&] { Interpreter{m}; });
  EXPECT_NE(e.find("op 1 (relu): input 0 has dtype bits, expected float32"), std::string::npos)
      << e;
  m.ops[1].type = static_cast<OpType>(99);
  e = error_of([&] { Interpreter{m}; });
  EXPECT_NE(e.find("op 1 (unknown): unknown op type 99"), std::string::npos) << e;
  m.ops[1].type = OpType::kConcat;
  m.ops[1].inputs = {0, 1, 5};
  e = error_of([&] { Interpreter{m}; });
  EXPECT_NE(e.find("op 1 (concat): input 2 is value 5"), std::string::npos) << e;
}

}  // namespace
}  // namespace onebit::runtime
