// Format version 4: k-bit activations on packed bits. The thermometer op (float -> n = 2^k - 1
// bit planes per channel) against DoReFa's levels, binary conv2d / dense over the planes
// ("input_planes") against integer convolutions of the levels, bit for bit, on every ISA and
// thread count, fused (thresholds over the planes' dot range) and unfused, through the file
// bytes; then the builder's, interpreter's and format's errors.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

using testing::all_tables;
using testing::ConvCase;
using testing::ConvSpec;
using testing::error_of;
using testing::Nchw;

// The integer level round(clip(x, 0, 1) * n) of DoReFa's k-bit quantizer.
float level_of(float v, int k) {
  return static_cast<float>(std::lround(testing::levels_ref(v, k) * ((1 << k) - 1)));
}

// Inputs spread over every level and beyond [0, 1], with each image around its own center so
// that dot products cover their whole range.
Nchw spread_input(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                  std::mt19937& rng) {
  Nchw x{n, c, h, w, {}};
  std::uniform_real_distribution<float> center(-0.4f, 1.4f), spread(-0.5f, 0.5f);
  for (std::int64_t i = 0; i < n; ++i) {
    const float m = center(rng);
    for (std::int64_t j = 0; j < c * h * w; ++j) x.v.push_back(m + spread(rng));
  }
  return x;
}

TEST(Thermometer, PlanesCountTheLevelIncludingTiesAndClipping) {
  // Values near 1/6, 1/2 and 5/6 put fl(3 x) on or next to the ties 0.5, 1.5, 2.5 (half to even).
  const std::vector<float> xs = {
      -2.0f, -0.0f, 0.0f, 1e-30f, 0.16666667f, 0.5f / 3.0f, 0.25f, 0.5f, std::nextafter(0.5f, 0.0f),
      0.75f, 2.5f / 3.0f, 1.0f, 1.5f, std::numeric_limits<float>::infinity(),
      -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
      // Past the groups of 4 (the SSE path): the scalar one.
      2.5f / 3.0f, std::numeric_limits<float>::quiet_NaN()};
  for (int k : {1, 2, 3, 6}) {
    const int n = (1 << k) - 1;
    ModelBuilder b;
    b.output(b.thermometer(b.input({static_cast<std::int64_t>(xs.size())}), k));
    const Model m = b.build();
    std::vector<float> want;
    for (float x : xs) {
      const float q = std::isnan(x) ? 0.0f : level_of(x, k);  // NaN reads as level 0
      for (int j = 0; j < n; ++j) want.push_back(q > static_cast<float>(j) ? -1.0f : 1.0f);
    }
    for (const KernelTable* t : all_tables()) {
      InterpreterOptions o{1, t};
      o.non_finite = NonFiniteInput::kPropagate;  // the infinities and NaN reach the op
      EXPECT_EQ(Interpreter(m, o).run(xs, 1), want) << "k = " << k;
    }
  }
}

// D = n sum(w) - 2 conv(levels, w): the planes' +-1 dot from the integer convolution of the
// levels with zero padding (level 0) and the kernel's row sums.
Nchw planes_dot_ref(const Nchw& x, const std::vector<float>& w, const ConvSpec& s, int k) {
  Nchw levels = x;
  for (float& v : levels.v) v = level_of(v, k);
  Nchw y = testing::conv_ref(levels, w, s);  // exact: small integers
  const auto per = w.size() / static_cast<std::size_t>(s.out);
  const auto n = static_cast<float>((1 << k) - 1);
  for (std::int64_t i = 0; i < y.n; ++i)
    for (std::int64_t o = 0; o < y.c; ++o) {
      float sum = 0;
      for (std::size_t j = o * per; j < (o + 1) * per; ++j) sum += w[j];
      for (std::int64_t p = 0; p < y.h * y.w; ++p) {
        float& v = y.v[static_cast<std::size_t>((i * y.c + o) * y.h * y.w + p)];
        v = n * sum - 2.0f * v;
      }
    }
  return y;
}

TEST(Thermometer, BinaryConvOverPlanesIsTheKBitConvExactly) {
  std::mt19937 rng(41);
  const std::vector<ConvCase> cases = {
      {1, 6, 5, {3, 3, 1, 1, 1, 1, 1, 1, 1}},    // one channel, padded
      {3, 7, 7, {8, 3, 2, 1, 1, 1, 1, 1, 1}},    // stride 2
      {22, 9, 8, {16, 3, 1, 2, 1, 2, 2, 2, 2}},  // dilation 2, 66 planes for k = 2
      {43, 6, 6, {24, 5, 1, 1, 1, 2, 2, 2, 2}},  // 5x5, 129 / 301 planes
      {64, 5, 5, {64, 3, 1, 1, 1, 1, 1, 1, 1}},  // 192 planes: whole words
      {12, 6, 7, {8, 3, 1, 1, 4, 1, 1, 0, 0}},   // 4 groups
      {9, 5, 5, {6, 1, 1, 1, 1, 0, 0, 0, 0}},    // 1x1
  };
  for (int k : {1, 2, 3}) {
    for (const ConvCase& cc : cases) {
      const std::string what = "k=" + std::to_string(k) + " " + std::to_string(cc.c) + "x" +
                               std::to_string(cc.h) + "x" + std::to_string(cc.w) + " -> " +
                               std::to_string(cc.s.out) + " k" + std::to_string(cc.s.k) + " g" +
                               std::to_string(cc.s.groups);
      const Nchw x = spread_input(3, cc.c, cc.h, cc.w, rng);
      const auto w = testing::random_signs(
          static_cast<std::size_t>(cc.s.out * cc.c / cc.s.groups * cc.s.k * cc.s.k), rng);
      ConvSpec one_padded = cc.s;
      one_padded.pad_value = 1.0f;  // +1 planes: level 0
      ModelBuilder b;
      const ValueRef t = b.thermometer(b.input({cc.c, cc.h, cc.w}), k);
      EXPECT_EQ(b.shape(t)[0], cc.c * ((1 << k) - 1)) << what;
      b.output(testing::add_conv(b, t, ConvCase{cc.c, cc.h, cc.w, one_padded}, w));
      testing::expect_runs_and_round_trips(b.build(), x, planes_dot_ref(x, w, cc.s, k).v, what);
    }
  }
}

TEST(Thermometer, BinaryDenseOverPlanesIsTheKBitDenseExactly) {
  std::mt19937 rng(43);
  for (int k : {1, 2, 3}) {
    for (std::int64_t features : {1, 21, 64, 130}) {
      const std::int64_t out = 7;
      const Nchw x = spread_input(4, features, 1, 1, rng);
      const auto w = testing::random_signs(static_cast<std::size_t>(out * features), rng);
      ModelBuilder b;
      b.output(
          b.dense(b.thermometer(b.input({features}), k), DenseParams(out).binary_kernel(true), w));
      ConvSpec as_conv;  // a dense layer is a 1x1 conv of a (features, 1, 1) input
      as_conv.out = out, as_conv.k = 1;
      testing::expect_runs_and_round_trips(
          b.build(), x, planes_dot_ref(x, w, as_conv, k).v,
          "dense k=" + std::to_string(k) + " features " + std::to_string(features));
    }
  }
}

// conv over planes -> batch norm -> sign fuses into thresholds over the planes' dot range
// [-n K, n K], not the stored kernel's [-K, K]: thresholds beyond K must survive.
TEST(Thermometer, SignThresholdsCoverThePlanesDotRange) {
  std::mt19937 rng(47);
  const ConvCase cc{5, 6, 6, {6, 3, 1, 1, 1, 1, 1, 1, 1, 1.0f}};
  const std::int64_t per = 5 * 9;  // stored kernel elements per output channel
  const Nchw x = spread_input(8, cc.c, cc.h, cc.w, rng);
  // Mostly +1 weights: the dots follow each image's center across [-n K, n K].
  std::vector<float> w(static_cast<std::size_t>(6 * per));
  for (float& v : w) v = rng() % 10 == 0 ? -1.0f : 1.0f;
  const std::vector<float> m = {1.0f, -1.0f, 0.5f, 1.0f, -2.0f, 1.0f};
  const auto p = static_cast<float>(per);
  const std::vector<float> bias = {-1.5f * p, -2.2f * p, 0.3f * p, 2.5f * p, 0.0f, -2.7f * p};
  std::vector<float> results[2];
  for (bool fuse : {false, true}) {
    ModelBuilder b(BuilderOptions{fuse});
    const ValueRef y = testing::add_conv(b, b.thermometer(b.input({cc.c, cc.h, cc.w}), 2), cc, w);
    b.output(b.sign(b.batch_norm(y, m, bias)));
    const Model model = b.build();
    std::size_t convs_with_thresholds = 0;
    for (const Op& op : model.ops) convs_with_thresholds += op.tensors.count("threshold");
    EXPECT_EQ(convs_with_thresholds, fuse ? 1u : 0u);
    results[fuse] = Interpreter(model).run(x.v, 8);
  }
  EXPECT_EQ(results[1], results[0]);
  // The test can fail: some dots lie beyond K, where a threshold clamped to [-K, K] would differ.
  ConvSpec s = cc.s;
  s.pad_value = 0.0f;
  const Nchw d = planes_dot_ref(x, w, s, 2);
  std::size_t beyond = 0;
  for (float v : d.v) beyond += std::abs(v) > p ? 1 : 0;
  EXPECT_GT(beyond, d.v.size() / 10);
}

TEST(Thermometer, ErrorsNameWhatIsWrong) {
  ModelBuilder b;
  const ValueRef x = b.input({4, 5, 5});
  EXPECT_NE(error_of([&] { b.thermometer(x, 0); }).find("'k_bit' = 0, expected 1 to 6"),
            std::string::npos);
  EXPECT_NE(error_of([&] { b.thermometer(x, 7); }).find("'k_bit' = 7, expected 1 to 6"),
            std::string::npos);
  EXPECT_NE(error_of([&] { b.thermometer(b.sign(x), 2); }).find("thermometer"), std::string::npos);
  const ValueRef t = b.thermometer(x, 2);
  const std::string e = error_of([&] { b.relu(t); });
  EXPECT_NE(e.find("thermometer planes, which only a binary conv2d or dense reads"),
            std::string::npos)
      << e;
  EXPECT_NE(error_of([&] {
              b.conv2d(t, Conv2dParams(2, 3), std::vector<float>(2 * 4 * 9, 1));
            }).find("a thermometer input needs a binary kernel"),
            std::string::npos);
  // The kernel has the channels before the planes: 4, not 12.
  const std::string e2 = error_of([&] {
    b.conv2d(t, Conv2dParams(2, 3).binary_kernel(true), std::vector<float>(2 * 12 * 9, 1));
  });
  EXPECT_NE(e2.find("weight"), std::string::npos) << e2;
  EXPECT_NE(e2.find("72"), std::string::npos) << e2;

  // A file whose conv claims planes that do not divide its input.
  ModelBuilder good;
  good.output(good.conv2d(good.thermometer(good.input({4, 5, 5}), 2),
                          Conv2dParams(2, 3).binary_kernel(true), std::vector<float>(72, 1)));
  Model bad = good.build();
  bad.ops[1].ints["input_planes"] = {5};
  const std::string e3 = error_of([&] { Interpreter{bad}; });
  EXPECT_NE(e3.find("attribute 'input_planes' = 5, expected 1 to 63 dividing the input's 12"),
            std::string::npos)
      << e3;
}

// Version 4 adds the op and the attribute; neither can be written as version 3 (whose readers
// would run the conv over the planes as if they were channels), and a version 3 file cannot
// carry them.
TEST(Thermometer, NeedsFormatVersion4) {
  ModelBuilder b;
  b.output(b.conv2d(b.thermometer(b.input({4, 5, 5}), 2), Conv2dParams(2, 3).binary_kernel(true),
                    std::vector<float>(72, 1)));
  const Model m = b.build();
  const std::string e = error_of([&] { serialize_model(m, 3); });
  EXPECT_NE(e.find("(thermometer) needs format version 4, cannot write version 3"),
            std::string::npos)
      << e;
  Model conv_only = m;  // the planes attribute on its own (the input op relabeled as a sign)
  conv_only.ops[0].type = OpType::kQuantize;
  conv_only.ops[0].ints.clear();
  const std::string e2 = error_of([&] { serialize_model(conv_only, 3); });
  EXPECT_NE(e2.find("attribute 'input_planes' (thermometer input), which needs format version 4"),
            std::string::npos)
      << e2;
  auto bytes = serialize_model(conv_only, 4);
  const std::uint32_t v3 = 3;
  std::memcpy(bytes.data() + 8, &v3, sizeof(v3));  // the version field, outside the CRCs
  const std::string e3 = error_of([&] { parse_model(bytes.data(), bytes.size(), "v3.obnn"); });
  EXPECT_NE(e3.find("input_planes needs version 4"), std::string::npos) << e3;
  // Models without them still write as version 3 and load.
  ModelBuilder old;
  old.output(old.quantize_levels(old.input({3}), 2));
  const auto v3_bytes = serialize_model(old.build(), 3);
  EXPECT_EQ(Interpreter::from_bytes(v3_bytes.data(), v3_bytes.size()).run({0.2f, 0.5f, 0.9f}, 1),
            std::vector<float>({1.0f / 3.0f, 2.0f / 3.0f, 1.0f}));
}

}  // namespace
}  // namespace onebit::runtime
