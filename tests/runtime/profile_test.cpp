// Interpreter::run_profiled: one timing per op that runs, in order, with the op's type, name
// (ModelBuilder::set_name_scope, joined by fusion), family and MACs; the output equals run's.

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

// Float conv with +-1 weights, clip, binary conv + BN + sign (thresholds), binary max pool, a
// bits channel slice, binary dense + BN, sigmoid, float dense, k-bit levels.
Model profiled_model(std::mt19937& rng) {
  ModelBuilder b;
  ValueRef x = b.input({3, 9, 9});
  b.set_name_scope("conv1");
  x = b.conv2d(x, Conv2dParams(16, 3).padding(1, 1).binary_kernel(true),
               testing::random_signs(16 * 3 * 9, rng));
  b.set_name_scope("bn1");
  x = b.batch_norm(x, testing::random_normal(16, rng), testing::random_normal(16, rng));
  b.set_name_scope("act1");
  x = b.clip(x, -1.0f, 1.0f);
  b.set_name_scope("sign2");
  x = b.sign(x);
  b.set_name_scope("conv2");
  x = b.conv2d(x, Conv2dParams(32, 3).padding(1, 1).binary_kernel(true),
               testing::random_signs(32 * 16 * 9, rng));
  b.set_name_scope("bn2");
  x = b.batch_norm(x, testing::random_normal(32, rng), testing::random_normal(32, rng, 4.0f));
  b.set_name_scope("sign3");
  x = b.sign(x);
  b.set_name_scope("pool");
  x = b.max_pool2d(x, Pool2dParams(2));
  b.set_name_scope("split");
  x = b.slice_channels(x, 1, 30);
  b.set_name_scope("fc1");
  x = b.dense(b.flatten(x), DenseParams(64).binary_kernel(true),
              testing::random_signs(64 * 29 * 16, rng));
  b.set_name_scope("fc1_bn");
  x = b.batch_norm(x, testing::random_normal(64, rng, 0.05f), testing::random_normal(64, rng));
  b.set_name_scope("gate");
  x = b.sigmoid(x);
  b.set_name_scope("fc2");
  x = b.dense(x, DenseParams(10), testing::random_normal(640, rng));
  b.set_name_scope("q");
  b.output(b.quantize_levels(x, 4));
  return b.build();
}

TEST(Profile, OneTimingPerOpWithNamesMacsAndTheRunOutput) {
  std::mt19937 rng(201);
  const Model m = profiled_model(rng);
  ASSERT_EQ(m.ops.size(), 11u);
  const std::vector<std::string> names{"conv1+bn1", "act1",  "sign2", "conv2+bn2+sign3",
                                       "pool",      "split", "fc1",   "fc1+fc1_bn",
                                       "gate",      "fc2",   "q"};
  const std::set<std::string> binary_types{"quantize", "binary_conv2d", "binary_dense",
                                           "binary_maxpool2d"};
  const std::size_t batch = 5;
  const auto x = testing::random_normal(batch * 3 * 81, rng);
  for (int threads : {1, 3}) {
    const Interpreter net(m, {threads});
    const std::vector<float> expected = net.run(x, batch);
    std::vector<OpTiming> timings(2);  // replaced, not appended to
    EXPECT_EQ(net.run_profiled(x.data(), x.size(), batch, timings), expected) << threads;
    ASSERT_EQ(timings.size(), m.ops.size());
    std::int64_t binary_macs = 0;
    for (std::size_t i = 0; i < timings.size(); ++i) {
      const OpTiming& t = timings[i];
      EXPECT_EQ(t.index, i);
      EXPECT_EQ(t.type, op_name(m.ops[i].type));
      EXPECT_EQ(t.name, names[i]);
      EXPECT_EQ(t.name, m.ops[i].name);
      EXPECT_GE(t.seconds, 0.0) << t.type;
      EXPECT_EQ(t.binary, binary_types.count(t.type) == 1) << t.type;
      if (!t.binary) {
        EXPECT_EQ(t.binary_macs, 0) << t.type;
      }
      if (t.type != "conv2d" && t.type != "dense") {
        EXPECT_EQ(t.float_macs, 0) << t.type;
      }
      binary_macs += t.binary_macs;
    }
    const auto n = static_cast<std::int64_t>(batch);
    EXPECT_EQ(binary_macs, net.binary_macs_per_image() * n);
    // conv2: 9x9 pixels x 32 filters x (3x3x16); fc1: 64 x (29 x 4 x 4).
    EXPECT_EQ(timings[3].binary_macs, 81 * 32 * 144 * n);
    EXPECT_EQ(timings[7].binary_macs, 64 * 464 * n);
    EXPECT_EQ(net.binary_macs_per_image(), 81 * 32 * 144 + 64 * 464);
    // conv1: 16 x (3x3x3) weights x 81 pixels; fc2: 10 x 64 weights x 1 pixel.
    EXPECT_EQ(timings[0].float_macs, 16 * 27 * 81 * n);
    EXPECT_EQ(timings[9].float_macs, 640 * n);
  }
}

TEST(Profile, OpsAfterTheOutputAreNeitherRunNorCounted) {
  std::mt19937 rng(202);
  ModelBuilder b;
  const ValueRef s = b.sign(b.input({8, 4, 4}));
  b.set_name_scope("out");
  const ValueRef y = b.relu(b.global_avg_pool2d(s));
  b.output(y);
  b.set_name_scope("after");
  b.conv2d(s, Conv2dParams(8, 3).binary_kernel(true), testing::random_signs(8 * 8 * 9, rng));
  const Model m = b.build();
  const Interpreter net(m);
  EXPECT_EQ(net.binary_macs_per_image(), 0);
  const auto x = testing::random_normal(2 * 128, rng);
  std::vector<OpTiming> timings;
  EXPECT_EQ(net.run_profiled(x.data(), x.size(), 2, timings), net.run(x, 2));
  ASSERT_EQ(timings.size(), 3u);
  EXPECT_EQ(timings[2].type, "relu");
  EXPECT_EQ(timings[2].name, "out");
  EXPECT_EQ(m.ops[3].name, "after");
}

TEST(Profile, RejectsWrongInputSizeNamingRunProfiled) {
  ModelBuilder b;
  b.output(b.sigmoid(b.input({2, 3, 3})));
  const Interpreter net(b.build());
  std::vector<OpTiming> timings;
  const std::vector<float> x(17);
  try {
    net.run_profiled(x.data(), x.size(), 1, timings);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Interpreter::run_profiled: input has 17 floats, "
                                         "expected batch 1 x 18"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace onebit::runtime
