// Chains of per-element ops (InterpreterOptions::chain_per_element_ops): consecutive batch norm,
// PReLU, ReLU, clip, sigmoid and quantize_levels ops, and adds of a value made before the chain,
// each consuming only the previous one's output, run as one pass. The outputs equal those of the
// ops run one by one, bit for bit, for any batch and thread count; a value with a second use ends a
// chain; the values inside a chain take no arena space; the profile keeps one entry per op (0 s for
// the ops run inside a chain). A binary conv with a float output heads a chain the same way.

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

// conv -> sign (bits) and conv -> relu -> bn -> prelu (two uses: ends the chain), then
// clip -> sigmoid -> add(., prelu) -> quantize_levels -> bn -> relu -> add(sign, .) (the output):
// a chain with two adds, one of a float and one of a bits value made before the chain.
Model chained_model(std::int64_t c) {
  std::mt19937 rng(31);
  ModelBuilder b;
  ValueRef x = b.conv2d(b.input({3, 7, 9}), Conv2dParams(c, 3).padding(1, 1),
                        testing::random_normal(static_cast<std::size_t>(c * 27), rng));
  const ValueRef bits = b.sign(x);
  x = b.relu(x);
  x = b.batch_norm(x, testing::random_normal(static_cast<std::size_t>(c), rng),
                   testing::random_normal(static_cast<std::size_t>(c), rng));
  const ValueRef shared = b.prelu(x, testing::random_normal(static_cast<std::size_t>(c), rng));
  ValueRef y = b.sigmoid(b.clip(shared, -0.5f, 0.75f));
  y = b.quantize_levels(b.add(y, shared), 4);
  y = b.batch_norm(y, testing::random_normal(static_cast<std::size_t>(c), rng),
                   testing::random_normal(static_cast<std::size_t>(c), rng));
  b.output(b.add(bits, b.relu(y)));
  return b.build();
}

std::vector<float> run(const Model& m, bool chains, int threads, const std::vector<float>& x,
                       std::size_t batch) {
  InterpreterOptions o;
  o.threads = threads;
  o.chain_per_element_ops = chains;
  return Interpreter(m, o).run(x, batch);
}

TEST(PerElementChains, SameOutputsAsOpByOpForAnyBatchAndThreads) {
  std::mt19937 rng(32);
  for (std::int64_t c : {1, 5, 16, 70}) {
    const Model m = chained_model(c);
    for (std::size_t batch : {1u, 5u}) {
      const std::vector<float> x = testing::random_normal(batch * 3 * 63, rng);
      const std::vector<float> expected = run(m, false, 1, x, batch);
      for (int threads : {1, 3}) {
        const std::vector<float> y = run(m, true, threads, x, batch);
        ASSERT_EQ(y.size(), expected.size());
        EXPECT_EQ(std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)), 0)
            << "channels " << c << ", batch " << batch << ", threads " << threads;
      }
    }
  }
}

TEST(PerElementChains, ValuesInsideAChainTakeNoArenaAndTheProfileKeepsEveryOp) {
  const Model m = chained_model(16);
  InterpreterOptions off;
  off.chain_per_element_ops = false;
  const Interpreter chained(m), separate(m, off);
  // Ops 2-4 (relu, bn, prelu) and 5-11 (clip ... add) are chains: the values inside them are
  // never written.
  EXPECT_LE(chained.activation_bytes(1), separate.activation_bytes(1));
  EXPECT_LE(chained.live_activation_bytes(1), separate.live_activation_bytes(1));
  std::mt19937 rng(33);
  const std::vector<float> x = testing::random_normal(3 * 63, rng);
  std::vector<OpTiming> with, without;
  EXPECT_EQ(chained.run_profiled(x.data(), x.size(), 1, with),
            separate.run_profiled(x.data(), x.size(), 1, without));
  ASSERT_EQ(with.size(), m.ops.size());
  ASSERT_EQ(without.size(), m.ops.size());
  std::string types;
  for (const Op& op : m.ops) types += std::string(op_name(op.type)) + " ";
  ASSERT_EQ(m.ops.size(), 12u) << types;
  // Ops after the first of a chain ran inside it: 0 s of their own.
  for (std::size_t i : {3u, 4u, 6u, 7u, 8u, 9u, 10u, 11u}) {
    EXPECT_EQ(with[i].seconds, 0.0) << with[i].type;
    EXPECT_EQ(with[i].type, without[i].type);
  }
}

// A binary conv heading a chain (QuickNet's block): sign -> binary conv -> relu -> batch norm ->
// add(block input), with zero- or one-padding, a 1x1 conv (the direct path), dense taps and
// groups; the conv's rows go through the chain as each thread finishes them.
Model conv_headed_model(const testing::ConvCase& cc) {
  std::mt19937 rng(34);
  ModelBuilder b;
  const ValueRef in = b.input({cc.c, cc.h, cc.w});
  const auto w = testing::random_signs(
      static_cast<std::size_t>(cc.s.out * cc.c / cc.s.groups * cc.s.k * cc.s.k), rng);
  ValueRef x = b.relu(testing::add_conv(b, b.sign(in), cc, w));
  x = b.batch_norm(x, testing::random_normal(static_cast<std::size_t>(cc.s.out), rng),
                   testing::random_normal(static_cast<std::size_t>(cc.s.out), rng));
  b.output(b.add(x, in));
  return b.build();
}

TEST(PerElementChains, ABinaryConvHeadsAChainWithTheSameOutputs) {
  std::mt19937 rng(35);
  const std::vector<testing::ConvCase> cases = {
      {64, 9, 8, {64, 3, 1, 1, 1, 1, 1, 1, 1, 0.0f}},    // zero-padding, implicit im2col
      {32, 6, 7, {32, 3, 1, 1, 1, 1, 1, 1, 1, 1.0f}},    // one-padding, fewer than 64 channels
      {96, 5, 5, {96, 3, 1, 1, 1, 1, 1, 1, 1, 0.0f}},    // dense taps
      {16, 6, 6, {16, 3, 1, 1, 4, 1, 1, 1, 1, 1.0f}},    // groups
      {128, 4, 5, {128, 1, 1, 1, 1, 0, 0, 0, 0, 0.0f}},  // 1x1: the direct path
  };
  for (const testing::ConvCase& cc : cases) {
    const Model m = conv_headed_model(cc);
    InterpreterOptions off;
    off.chain_per_element_ops = false;
    EXPECT_LT(Interpreter(m).activation_bytes(1), Interpreter(m, off).activation_bytes(1))
        << "the conv's output is inside the chain: no arena space, C=" << cc.c;
    for (std::size_t batch : {1u, 3u}) {
      const std::vector<float> x =
          testing::random_normal(batch * static_cast<std::size_t>(cc.c * cc.h * cc.w), rng);
      const std::vector<float> expected = run(m, false, 1, x, batch);
      for (int threads : {1, 2, 3}) {
        const std::vector<float> y = run(m, true, threads, x, batch);
        ASSERT_EQ(y.size(), expected.size());
        EXPECT_EQ(std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)), 0)
            << "C=" << cc.c << " groups=" << cc.s.groups << " k=" << cc.s.k << ", batch " << batch
            << ", threads " << threads;
      }
    }
  }
}

}  // namespace
}  // namespace onebit::runtime
