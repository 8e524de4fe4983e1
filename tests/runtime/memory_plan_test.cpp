// The activation arena planner: no two values alive at the same time overlap, offsets are
// aligned, the arena is never below the largest live set and stays within 1.2x of it on
// model-shaped graphs; the Interpreter reports both and runs in the planned arena.

#include <gtest/gtest.h>

#include <random>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/memory_plan.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

void expect_valid(const std::vector<ValueLifetime>& v, const ArenaPlan& p, std::size_t align) {
  ASSERT_EQ(p.offsets.size(), v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(p.offsets[i] % align, 0u) << i;
    EXPECT_LE(p.offsets[i] + v[i].bytes, p.bytes) << i;
    for (std::size_t j = i + 1; j < v.size(); ++j) {
      const bool alive_together =
          v[i].bytes != 0 && v[j].bytes != 0 && v[i].first <= v[j].last && v[j].first <= v[i].last;
      const bool overlap =
          p.offsets[i] < p.offsets[j] + v[j].bytes && p.offsets[j] < p.offsets[i] + v[i].bytes;
      EXPECT_FALSE(alive_together && overlap) << "values " << i << " and " << j;
    }
  }
  EXPECT_GE(p.bytes, largest_live_bytes(v));
}

TEST(ArenaPlan, ChainReusesMemoryAsDocumented) {
  const std::vector<ValueLifetime> v{{4096, 0, 1}, {1024, 1, 2}, {4096, 2, 3}};
  const ArenaPlan p = plan_arena(v);
  EXPECT_EQ(p.offsets, (std::vector<std::size_t>{0, 4096, 0}));
  EXPECT_EQ(p.bytes, 5120u);
  EXPECT_EQ(largest_live_bytes(v), 5120u);
}

TEST(ArenaPlan, RandomLifetimesNeverOverlapWhileAlive) {
  std::mt19937 rng(5);
  for (std::size_t align : {1u, 8u, 64u}) {
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<ValueLifetime> v(1 + rng() % 40);
      for (auto& x : v) {
        x.bytes = rng() % 5 == 0 ? 0 : 1 + rng() % 5000;
        x.first = static_cast<std::int64_t>(rng() % 30);
        x.last = x.first + static_cast<std::int64_t>(rng() % 6);
      }
      expect_valid(v, plan_arena(v, align), align);
    }
  }
}

// Greedy by size alone (largest first, each in the tightest gap) needs 512 bytes for these values;
// another order fits them in their largest live set, 448 bytes, and the planner tries orders
// until it reaches it. (The first order tried is greedy by size, and a later one is kept only if
// it is smaller, so no arena grows.)
TEST(ArenaPlan, TriesOtherOrdersUntilTheLargestLiveSet) {
  const std::vector<ValueLifetime> v{
      {192, 4, 6}, {256, 5, 5}, {128, 1, 1}, {256, 0, 2}, {64, 1, 4}};
  EXPECT_EQ(largest_live_bytes(v), 448u);
  const ArenaPlan p = plan_arena(v, 64);
  expect_valid(v, p, 64);
  EXPECT_EQ(p.bytes, 448u);
}

TEST(ArenaPlan, ZeroSizedValuesTakeNoSpaceAndBadInputThrows) {
  const std::vector<ValueLifetime> v{{0, 0, 9}, {100, 0, 1}, {0, 3, 3}};
  const ArenaPlan p = plan_arena(v, 8);
  EXPECT_EQ(p.bytes, 100u);
  EXPECT_EQ(largest_live_bytes(v), 100u);
  EXPECT_THROW(plan_arena(v, 48), std::invalid_argument);
  EXPECT_THROW(plan_arena({{8, 3, 2}}), std::invalid_argument);
  EXPECT_EQ(plan_arena({}).bytes, 0u);
}

// A ResNet-like stack (stem, blocks with shortcuts, pooling, head): the arena within 1.2x of the
// largest live set at batch 1 and 8, and the run in the arena equals a run of the same model
// with threads (another arena).
TEST(ArenaPlan, ResidualModelArenaIsWithinTwentyPercentOfTheLargestLiveSet) {
  std::mt19937 rng(6);
  ModelBuilder b;
  ValueRef x = b.input({3, 32, 32});
  x = b.conv2d(x, Conv2dParams(32, 3).padding(1, 1), testing::random_normal(32 * 27, rng));
  std::int64_t c = 32, hw = 32;
  for (int block = 0; block < 6; ++block) {
    const bool down = block % 2 == 1;
    const std::int64_t out = down ? c * 2 : c;
    ValueRef shortcut = x;
    if (down) {
      shortcut = b.conv2d(b.avg_pool2d(x, Pool2dParams(2)), Conv2dParams(out, 1),
                          testing::random_normal(static_cast<std::size_t>(out * c), rng));
    }
    ValueRef y = b.conv2d(
        b.sign(x), Conv2dParams(out, 3).stride(down ? 2 : 1).padding(1, 1).binary_kernel(true),
        testing::random_signs(static_cast<std::size_t>(out * c * 9), rng));
    y = b.batch_norm(y, testing::random_normal(static_cast<std::size_t>(out), rng),
                     testing::random_normal(static_cast<std::size_t>(out), rng));
    x = b.add(y, shortcut);
    c = out, hw = down ? hw / 2 : hw;
  }
  x = b.dense(b.flatten(b.global_avg_pool2d(x)), DenseParams(10),
              testing::random_normal(static_cast<std::size_t>(10 * c), rng));
  b.output(x);
  const Model m = b.build();
  const Interpreter net(m, {1});
  for (std::size_t batch : {1u, 8u}) {
    const std::size_t arena = net.activation_bytes(batch), live = net.live_activation_bytes(batch);
    EXPECT_GE(arena, live);
    EXPECT_LE(static_cast<double>(arena), 1.2 * static_cast<double>(live)) << "batch " << batch;
    const auto in = testing::random_normal(batch * 3 * 32 * 32, rng);
    EXPECT_EQ(net.run(in, batch), Interpreter(m, {2}).run(in, batch));
  }
}

}  // namespace
}  // namespace onebit::runtime
