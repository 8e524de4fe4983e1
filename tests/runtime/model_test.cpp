// Ops and whole models through ModelBuilder + Interpreter against plain float math, on every ISA,
// fused and unfused.

#include <gtest/gtest.h>

#include <thread>

#include "onebit/runtime/bitpack.h"
#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

using testing::add_conv;
using testing::all_tables;
using testing::ConvCase;
using testing::ConvSpec;
using testing::Nchw;

std::vector<ConvCase> conv_cases() {
  return {
      {3, 7, 6, {5, 3, 1, 1, 1, 1, 1, 1, 1, 1.0f}},     // one-padding, tiny C
      {70, 5, 5, {9, 3, 1, 1, 1, 1, 1, 1, 1, 0.0f}},    // zero-padding, C > 64
      {64, 6, 6, {64, 3, 2, 1, 1, 1, 1, 1, 1, 0.0f}},   // stride 2
      {130, 8, 7, {33, 3, 1, 2, 1, 2, 2, 2, 2, 0.0f}},  // dilation 2, pad 2
      {12, 5, 5, {10, 3, 1, 1, 2, 1, 1, 1, 1, 0.0f}},   // groups, 5 outputs per group
      {16, 5, 5, {16, 3, 1, 1, 4, 1, 1, 1, 1, 1.0f}},   // groups, one-padding
      {128, 4, 4, {64, 1, 1, 1, 1, 0, 0, 0, 0, 0.0f}},  // 1x1 direct
      {32, 9, 9, {40, 5, 2, 1, 1, 0, 1, 2, 0, 0.0f}},   // asymmetric pads, 5x5
      {200, 3, 3, {8, 3, 1, 1, 1, 0, 0, 0, 0, 0.0f}},   // valid, K = 1800
      {64, 7, 7, {32, 1, 2, 1, 1, 0, 0, 0, 0, 0.0f}},   // 1x1 stride 2 (im2col, not direct)
      {70, 6, 5, {16, 1, 2, 1, 1, 0, 0, 0, 0, 0.0f}},   // 1x1 stride 2, C > 64
      {64, 6, 6, {64, 3, 1, 1, 64, 1, 1, 1, 1, 0.0f}},  // depthwise (groups = C), zero-padding
      {24, 7, 7, {12, 3, 1, 3, 3, 3, 3, 3, 3, 1.0f}},   // dilation 3, groups 3, one-padding
      {32, 6, 6, {32, 3, 1, 1, 1, 1, 1, 1, 1, 0.0f}},   // 32 channels, zero-padding (implicit)
      {64, 6, 5, {16, 3, 1, 2, 1, 2, 2, 2, 2, 1.0f}},   // implicit im2col, dilation 2, one-padding
      // Channels per group not a multiple of 64 (and more than 64, or several groups): taps
      // packed densely into the patch words.
      {96, 5, 5, {20, 3, 1, 1, 2, 1, 1, 1, 1, 1.0f}},   // 48 per group: group 1 crosses a word
      {160, 5, 4, {24, 3, 2, 1, 1, 1, 1, 1, 1, 0.0f}},  // 2.5 words per tap, stride 2
      // Groups with whole words per tap: 64 channels each, and 32 in a 1x1 conv (one word per
      // tap, half of it padding; group 1 starts mid-word).
      {128, 4, 4, {16, 3, 1, 1, 2, 1, 1, 1, 1, 1.0f}},
      {64, 5, 5, {8, 1, 1, 1, 2, 0, 0, 0, 0, 0.0f}},
  };
}

TEST(BinaryConv, MatchesFloatMathForEveryPaddingStrideDilationGroup) {
  std::mt19937 rng(1);
  for (const ConvCase& cc : conv_cases()) {
    const std::int64_t batch = 2;
    Nchw x{batch, cc.c, cc.h, cc.w, testing::random_normal(batch * cc.c * cc.h * cc.w, rng)};
    const auto w = testing::random_signs(cc.s.out * cc.c / cc.s.groups * cc.s.k * cc.s.k, rng);
    const auto mult = testing::random_normal(cc.s.out, rng),
               bias = testing::random_normal(cc.s.out, rng, 3);
    const Nchw conv = testing::conv_ref(testing::sign_ref(x), w, cc.s);
    const Nchw bits = testing::sign_ref(testing::bn_ref(conv, mult, bias));
    for (bool output_bits : {false, true}) {
      ModelBuilder b;
      ValueRef v = add_conv(b, b.sign(b.input({cc.c, cc.h, cc.w})), cc, w);
      if (output_bits) v = b.sign(b.batch_norm(v, mult, bias));
      b.output(v);
      const Model m = b.build();
      ASSERT_EQ(m.ops.size(), 2u) << "conv, batch norm and sign must fuse";
      for (const KernelTable* t : all_tables()) {
        const Interpreter net(m, {1, t});
        const std::vector<float> y = net.run(x.v, batch);
        EXPECT_EQ(y, output_bits ? bits.v : conv.v)
            << isa_name(t->isa) << " C=" << cc.c << " out=" << cc.s.out << " groups=" << cc.s.groups
            << " pad_value=" << cc.s.pad_value << " bits=" << output_bits;
      }
    }
  }
}

// Float convs (first layers, float shortcuts): float input with float or +-1 weights, through
// ModelBuilder::conv2d and the Interpreter, with a batch norm that folds into the conv.
TEST(FloatConv, MatchesFloatMathFor1x1GroupedDilatedStrided) {
  std::mt19937 rng(5);
  const std::vector<ConvCase> cases{
      {5, 6, 6, {8, 1, 1, 1, 1, 0, 0, 0, 0, 0.0f}},  // 1x1 stride 1 (direct GEMM)
      {5, 7, 7, {8, 1, 2, 1, 1, 0, 0, 0, 0, 0.0f}},  // 1x1 stride 2
      {6, 6, 6, {9, 3, 1, 1, 3, 1, 1, 1, 1, 0.0f}},  // groups 3
      {8, 5, 5, {8, 3, 1, 1, 8, 1, 1, 1, 1, 0.0f}},  // depthwise
      {4, 9, 8, {6, 3, 1, 2, 1, 2, 2, 2, 2, 0.0f}},  // dilation 2
      {6, 9, 9, {4, 3, 2, 2, 2, 1, 2, 0, 1, 0.0f}},  // dilation 2, stride 2, groups 2, asymmetric
  };
  for (const ConvCase& cc : cases) {
    for (bool binary_kernel : {false, true}) {
      const std::int64_t batch = 2;
      Nchw x{batch, cc.c, cc.h, cc.w, testing::random_normal(batch * cc.c * cc.h * cc.w, rng)};
      const std::size_t n_w = cc.s.out * cc.c / cc.s.groups * cc.s.k * cc.s.k;
      const auto w =
          binary_kernel ? testing::random_signs(n_w, rng) : testing::random_normal(n_w, rng);
      const auto mult = testing::random_normal(cc.s.out, rng),
                 bias = testing::random_normal(cc.s.out, rng);
      const Nchw expected = testing::bn_ref(testing::conv_ref(x, w, cc.s), mult, bias);
      for (bool fuse : {true, false}) {
        ModelBuilder b({fuse});
        b.output(b.batch_norm(add_conv(b, b.input({cc.c, cc.h, cc.w}), cc, w, binary_kernel), mult,
                              bias));
        const Model m = b.build();
        EXPECT_EQ(m.ops.size(), fuse ? 1u : 2u);
        EXPECT_EQ(m.ops[0].type, OpType::kConv2d);
        EXPECT_EQ(Interpreter(m).run(x.v, batch), expected.v)
            << "C=" << cc.c << " k=" << cc.s.k << " stride=" << cc.s.stride
            << " groups=" << cc.s.groups << " dilation=" << cc.s.dilation
            << " binary_kernel=" << binary_kernel << " fuse=" << fuse;
      }
    }
  }
}

struct Mnist {
  std::vector<float> w1, w2, w3, w4, w5;
  std::vector<std::vector<float>> m, b;
};

Mnist random_mnist(std::mt19937& rng) {
  Mnist p;
  p.w1 = testing::random_signs(32 * 1 * 9, rng);
  p.w2 = testing::random_signs(64 * 32 * 9, rng);
  p.w3 = testing::random_signs(64 * 64 * 9, rng);
  p.w4 = testing::random_signs(64 * 576, rng);
  p.w5 = testing::random_signs(10 * 64, rng);
  for (std::size_t c : {32u, 64u, 64u, 64u, 10u}) {
    auto m = testing::random_normal(c, rng);
    m[0] = 0.0f;  // a dead channel
    p.m.push_back(m);
    p.b.push_back(testing::random_normal(c, rng, 4));
  }
  return p;
}

Model build_mnist(const Mnist& p, bool fuse) {
  ModelBuilder b({fuse});
  ValueRef x = b.input({1, 28, 28});
  x = b.conv2d(x, Conv2dParams(32, 3).binary_kernel(true), p.w1);
  x = b.batch_norm(b.max_pool2d(x, Pool2dParams(2)), p.m[0], p.b[0]);
  x = b.conv2d(b.sign(x), Conv2dParams(64, 3).binary_kernel(true), p.w2);
  x = b.batch_norm(b.max_pool2d(x, Pool2dParams(2)), p.m[1], p.b[1]);
  x = b.conv2d(b.sign(x), Conv2dParams(64, 3).binary_kernel(true), p.w3);
  x = b.sign(b.flatten(b.batch_norm(x, p.m[2], p.b[2])));
  x = b.sign(b.batch_norm(b.dense(x, DenseParams(64).binary_kernel(true), p.w4), p.m[3], p.b[3]));
  x = b.batch_norm(b.dense(x, DenseParams(10).binary_kernel(true), p.w5), p.m[4], p.b[4]);
  b.output(x);
  return b.build();
}

std::vector<float> mnist_reference(const Mnist& p, const Nchw& x) {
  using namespace testing;
  Nchw y = conv_ref(x, p.w1, ConvSpec{32, 3});
  y = sign_ref(bn_ref(maxpool_ref(y, 2), p.m[0], p.b[0]));
  y = sign_ref(bn_ref(maxpool_ref(conv_ref(y, p.w2, ConvSpec{64, 3}), 2), p.m[1], p.b[1]));
  y = sign_ref(bn_ref(conv_ref(y, p.w3, ConvSpec{64, 3}), p.m[2], p.b[2]));
  y = sign_ref(bn_ref(dense_ref(y, p.w4, 64), p.m[3], p.b[3]));
  return bn_ref(dense_ref(y, p.w5, 10), p.m[4], p.b[4]).v;
}

TEST(Models, LarqMnistCnnEqualsFloatMathFusedAndUnfused) {
  std::mt19937 rng(2);
  const Mnist p = random_mnist(rng);
  const std::int64_t batch = 5;
  const Nchw x{batch, 1, 28, 28, testing::random_normal(batch * 784, rng)};
  const std::vector<float> expected = mnist_reference(p, x);
  const Model fused = build_mnist(p, true), unfused = build_mnist(p, false);
  EXPECT_LT(fused.ops.size(), unfused.ops.size());
  // conv1 (float), maxpool, bn, quantize, conv2 (thresholds), binary maxpool, conv3, flatten,
  // dense (thresholds), dense (+bn)
  EXPECT_EQ(fused.ops.size(), 10u);
  for (const KernelTable* t : all_tables()) {
    for (const Model* m : {&fused, &unfused}) {
      const Interpreter net(*m, {2, t});
      EXPECT_EQ(net.run(x.v, batch), expected) << isa_name(t->isa) << (m == &fused ? " fused" : "");
      EXPECT_EQ(net.output_shape(), (std::vector<std::int64_t>{10, 1, 1}));
    }
  }
}

TEST(Models, BinaryMlpEqualsFloatMath) {
  std::mt19937 rng(3);
  const auto w1 = testing::random_signs(512 * 784, rng), w2 = testing::random_signs(512 * 512, rng),
             w3 = testing::random_signs(10 * 512, rng);
  std::vector<std::vector<float>> m, bb;
  for (std::size_t c : {512u, 512u, 10u}) {
    m.push_back(testing::random_normal(c, rng));
    bb.push_back(testing::random_normal(c, rng, 20));
  }
  ModelBuilder b;
  ValueRef x = b.flatten(b.input({1, 28, 28}));
  x = b.sign(b.batch_norm(b.dense(x, DenseParams(512).binary_kernel(true), w1), m[0], bb[0]));
  x = b.sign(b.batch_norm(b.dense(x, DenseParams(512).binary_kernel(true), w2), m[1], bb[1]));
  b.output(b.batch_norm(b.dense(x, DenseParams(10).binary_kernel(true), w3), m[2], bb[2]));
  const Model model = b.build();
  const std::int64_t batch = 3;
  const Nchw in{batch, 1, 28, 28, testing::random_normal(batch * 784, rng)};
  using namespace testing;
  Nchw y = sign_ref(bn_ref(dense_ref(in, w1, 512), m[0], bb[0]));
  y = sign_ref(bn_ref(dense_ref(y, w2, 512), m[1], bb[1]));
  const auto expected = bn_ref(dense_ref(y, w3, 10), m[2], bb[2]).v;
  for (const KernelTable* t : all_tables()) {
    EXPECT_EQ(Interpreter(model, {1, t}).run(in.v, batch), expected) << isa_name(t->isa);
  }
}

TEST(Models, FlattenUsesPyTorchChannelMajorOrder) {
  ModelBuilder b;
  b.output(b.flatten(b.input({3, 2, 2})));
  const Interpreter net(b.build());
  std::vector<float> x(12);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  EXPECT_EQ(net.run(x, 1), x);  // NCHW flatten is the identity on memory
}

TEST(Models, FloatOpsPoolingAddReluPreluSoftmax) {
  ModelBuilder b;
  ValueRef x = b.input({2, 4, 4});
  ValueRef a = b.avg_pool2d(x, Pool2dParams(2));
  ValueRef m = b.max_pool2d(x, Pool2dParams(2));
  ValueRef s = b.prelu(b.add(a, b.relu(m)), {0.5f, 0.25f});
  b.output(b.softmax(b.flatten(s)));
  const Interpreter net(b.build());
  std::vector<float> in(32);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 7) - 3.0f;
  const auto y = net.run(in, 1);
  // Plain recomputation in NCHW.
  std::vector<float> feat(8);
  for (int c = 0; c < 2; ++c)
    for (int oy = 0; oy < 2; ++oy)
      for (int ox = 0; ox < 2; ++ox) {
        float sum = 0.0f, mx = -1e30f;
        for (int dy = 0; dy < 2; ++dy)
          for (int dx = 0; dx < 2; ++dx) {
            const float v = in[c * 16 + (oy * 2 + dy) * 4 + ox * 2 + dx];
            sum += v, mx = std::max(mx, v);
          }
        const float v = sum / 4.0f + std::max(mx, 0.0f);
        feat[c * 4 + oy * 2 + ox] = v >= 0.0f ? v : (c == 0 ? 0.5f : 0.25f) * v;
      }
  const float top = *std::max_element(feat.begin(), feat.end());
  float total = 0.0f;
  for (float& v : feat) total += (v = std::exp(v - top));
  for (std::size_t i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(y[i], feat[i] / total);
}

TEST(Interpreter, ThreadsAndConcurrentCallsGiveTheSameResult) {
  std::mt19937 rng(4);
  const Mnist p = random_mnist(rng);
  const Interpreter net(build_mnist(p, true), {1});
  const auto x = testing::random_normal(8 * 784, rng);
  const auto expected = net.run(x, 8);
  Interpreter threaded(build_mnist(p, true), {3});
  EXPECT_EQ(threaded.run(x, 8), expected);
  std::vector<std::thread> pool;
  std::vector<std::vector<float>> results(4);
  for (std::size_t i = 0; i < results.size(); ++i) {
    pool.emplace_back([&, i] { results[i] = threaded.run(x, 8); });
  }
  for (auto& t : pool) t.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

// NHWC copy of NCHW `x` (`n` images of c x h x w).
std::vector<float> to_nhwc(const std::vector<float>& x, std::size_t n, std::size_t c,
                           std::size_t hw) {
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t ch = 0; ch < c; ++ch)
      for (std::size_t p = 0; p < hw; ++p) y[(i * hw + p) * c + ch] = x[(i * c + ch) * hw + p];
  return y;
}

TEST(Interpreter, ChannelsLastInputAndOutputSkipTheTransposes) {
  // A conv model with a spatial float output and one with a bit output: the NHWC run gives the
  // NHWC copy of the NCHW run, into a caller's buffer, with 1 and 3 threads.
  std::mt19937 rng(8);
  for (const bool bits_out : {false, true}) {
    SCOPED_TRACE(bits_out ? "bit output" : "float output");
    ModelBuilder b;
    ValueRef x = b.sign(b.input({5, 6, 7}));
    const auto w = testing::random_signs(9 * 5 * 9, rng);
    x = b.conv2d(x, Conv2dParams(9, 3).padding(1, 1).binary_kernel(true), w);
    if (bits_out) x = b.sign(x);
    b.output(x);
    const Model model = b.build();
    const auto input = testing::random_normal(3 * 5 * 6 * 7, rng);
    const std::vector<float> nchw = Interpreter(model).run(input, 3);
    for (const int threads : {1, 3}) {
      InterpreterOptions o;
      o.threads = threads;
      o.channels_last = true;
      const Interpreter net(model, o);
      const std::vector<float> in = to_nhwc(input, 3, 5, 42);
      std::vector<float> out(3 * net.output_size(), -7.0f);
      net.run(in.data(), in.size(), 3, out.data());
      EXPECT_EQ(out, to_nhwc(nchw, 3, 9, 42));
      EXPECT_EQ(net.run(in, 3), out);
    }
  }
  // A non-finite input is located in NHWC terms: value 5 is channel 0 of pixel (0, 1).
  InterpreterOptions o;
  o.channels_last = true;
  ModelBuilder b;
  b.output(b.relu(b.input({5, 2, 2})));
  const Interpreter net(b.build(), o);
  std::vector<float> in(20, 1.0f);
  in[5] = std::nanf("");
  try {
    net.run(in, 1);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("channel 0, row 0, column 1"), std::string::npos)
        << e.what();
  }
}

TEST(Interpreter, RejectsWrongInputSize) {
  ModelBuilder b;
  b.output(b.relu(b.input({1, 4, 4})));
  const Interpreter net(b.build());
  try {
    net.run(std::vector<float>(15), 1);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("expected batch 1 x 16"), std::string::npos) << e.what();
  }
  EXPECT_THROW(net.run(std::vector<float>(16), 0), std::invalid_argument);
}

TEST(Builder, RejectsBadWeightsWithClearMessages) {
  ModelBuilder b;
  ValueRef x = b.sign(b.input({4, 5, 5}));
  try {
    b.conv2d(x, Conv2dParams(2, 3).binary_kernel(true), std::vector<float>(72, 0.5f));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("expected exactly +1 or -1"), std::string::npos);
  }
  EXPECT_THROW(b.conv2d(x, Conv2dParams(2, 3).binary_kernel(true), std::vector<float>(71, 1.0f)),
               std::invalid_argument);
  EXPECT_THROW(b.conv2d(x, Conv2dParams(2, 3), std::vector<float>(72, 1.0f)),
               std::invalid_argument);
  EXPECT_THROW(b.dense(x, DenseParams(3).binary_kernel(true), std::vector<float>(300, 1.0f)),
               std::invalid_argument);             // spatial input without flatten
  EXPECT_THROW(b.build(), std::invalid_argument);  // no output
}

TEST(Builder, PackedKernelsGiveTheSameModelAsFloatOnes) {
  // conv2d_packed / dense_packed take the signs packed in OHWI ([out][in]) order: the same op and
  // the same outputs as conv2d / dense from +-1 floats in PyTorch's OIHW order.
  const std::int64_t c = 70, o = 5, k = 3, groups = 1;
  std::vector<float> oihw(static_cast<std::size_t>(o * c / groups * k * k));
  for (std::size_t i = 0; i < oihw.size(); ++i) oihw[i] = (i * 7 + i / 5) % 3 == 0 ? -1.0f : 1.0f;
  std::vector<float> ohwi(oihw.size());
  for (std::int64_t oc = 0; oc < o; ++oc)
    for (std::int64_t i = 0; i < c; ++i)
      for (std::int64_t y = 0; y < k; ++y)
        for (std::int64_t z = 0; z < k; ++z)
          ohwi[static_cast<std::size_t>(((oc * k + y) * k + z) * c + i)] =
              oihw[static_cast<std::size_t>(((oc * c + i) * k + y) * k + z)];
  auto packed = [](const std::vector<float>& v) {
    std::vector<BitWord> bits(words_for_bits(v.size()), 0);
    pack_signs(v.data(), v.size(), bits.data());
    return bits;
  };
  std::vector<float> dense_w(static_cast<std::size_t>(4 * o * 3 * 3));
  for (std::size_t i = 0; i < dense_w.size(); ++i) dense_w[i] = i % 5 < 2 ? -1.0f : 1.0f;
  const std::vector<float> bias{0.5f, -1.0f, 2.0f, 0.0f};
  std::vector<float> input(static_cast<std::size_t>(2 * c * 6 * 6));
  for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>(i % 11) - 5.0f;
  std::vector<std::vector<float>> outputs;
  for (const bool use_packed : {false, true}) {
    ModelBuilder b;
    ValueRef x = b.sign(b.input({c, 6, 6}));
    const Conv2dParams p = Conv2dParams(o, k).padding(PaddingMode::kSame).binary_kernel(true);
    x = use_packed ? b.conv2d_packed(x, p, packed(ohwi)) : b.conv2d(x, p, oihw);
    x = b.flatten(b.sign(b.max_pool2d(x, Pool2dParams(2))));
    const DenseParams d = DenseParams(4).binary_kernel(true);
    x = use_packed ? b.dense_packed(x, d, packed(dense_w), bias) : b.dense(x, d, dense_w, bias);
    b.output(x);
    outputs.push_back(Interpreter(b.build()).run(input, 2));
  }
  EXPECT_EQ(outputs[0], outputs[1]);
  // Wrong word counts and float kernels are refused with the layer named.
  ModelBuilder b;
  ValueRef x = b.sign(b.input({4, 5, 5}));
  try {
    b.conv2d_packed(x, Conv2dParams(2, 3).binary_kernel(true), std::vector<BitWord>(3));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'packed weight words' has 3 values, expected 2"),
              std::string::npos)
        << e.what();
  }
  try {
    b.conv2d_packed(x, Conv2dParams(2, 3), std::vector<BitWord>(2));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("packed weights need binary_kernel(true)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(
      b.dense_packed(b.flatten(x), DenseParams(3).binary_kernel(true), std::vector<BitWord>(1)),
      std::invalid_argument);  // 300 bits need 5 words
}

}  // namespace
}  // namespace onebit::runtime
