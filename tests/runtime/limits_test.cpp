// Hardening of the runtime: size limits on model files and activations (refused before anything
// is allocated, with the limit named), NaN and infinity in the input (a clear error by default, a
// defined result on request), errors inside pool tasks reaching the caller, and one Interpreter
// shared by four threads on a model with shortcuts, branches and every op family.

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "reference_net.h"
#include "thread_pool.h"

namespace onebit::runtime {
namespace {

using testing::error_of;
using testing::random_normal;
using testing::random_signs;

// A model with a binary path (sign, binary conv with a shortcut, binary max pool, concat,
// slice), a float path (conv, batch norm, PReLU, clip, quantize_levels, sigmoid gate), and a
// dense head: every op family a zoo model uses.
Model every_op_model(std::mt19937& rng, std::int64_t c = 8, std::int64_t hw = 8) {
  ModelBuilder b;
  const ValueRef x = b.input({c, hw, hw});
  const ValueRef f = b.batch_norm(b.conv2d(x, Conv2dParams(c, 3).padding(1, 1),
                                           random_normal(static_cast<std::size_t>(c * c * 9), rng)),
                                  random_normal(static_cast<std::size_t>(c), rng),
                                  random_normal(static_cast<std::size_t>(c), rng));
  const ValueRef s = b.sign(f);
  const ValueRef bc = b.conv2d(s, Conv2dParams(c, 3).padding(1, 1).binary_kernel(true),
                               random_signs(static_cast<std::size_t>(c * c * 9), rng));
  const ValueRef shortcut = b.add(bc, f);
  const ValueRef gated = b.mul(shortcut, b.sigmoid(b.global_avg_pool2d(shortcut)));
  const ValueRef levels = b.quantize_levels(b.clip(gated, -1.0f, 1.0f), 2);
  const ValueRef act = b.prelu(levels, std::vector<float>(static_cast<std::size_t>(c), 0.25f));
  const ValueRef bits = b.max_pool2d(b.sign(act), Pool2dParams(2));
  const ValueRef cat = b.concat({bits, b.sign(b.max_pool2d(b.relu(f), Pool2dParams(2)))});
  const ValueRef half = b.slice_channels(cat, 3, 3 + c);
  const ValueRef pooled = b.avg_pool2d(half, Pool2dParams(2));
  const ValueRef flat = b.flatten(pooled);
  const auto features = static_cast<std::size_t>(c * (hw / 4) * (hw / 4));
  b.output(b.softmax(b.dense(flat, DenseParams(10), random_normal(10 * features, rng))));
  return b.build();
}

TEST(Limits, ModelFileLargerThanTheLimitIsRefusedBeforeReading) {
  std::mt19937 rng(1);
  const Model m = every_op_model(rng);
  const std::string path = ::testing::TempDir() + "/limits_model.obnn";
  const std::size_t bytes = save_model(m, path);
  EXPECT_NO_THROW(load_model(path, bytes));
  const std::string e = error_of([&] { load_model(path, bytes - 1); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("file of " + std::to_string(bytes) + " bytes"), std::string::npos) << e;
  EXPECT_NE(e.find("max_model_bytes"), std::string::npos) << e;
  InterpreterOptions o;
  o.max_model_bytes = 100;
  EXPECT_THROW(Interpreter::from_file(path, o), ModelError);
  const std::vector<std::uint8_t> raw = serialize_model(m);
  EXPECT_NE(error_of([&] {
              Interpreter::from_bytes(raw.data(), raw.size(), o);
            }).find("larger than the limit of 100 bytes"),
            std::string::npos);
  std::remove(path.c_str());
  EXPECT_NE(error_of([&] { load_model(path); }).find("cannot open"), std::string::npos);
}

TEST(Limits, ActivationsAboveTheLimitAreRefusedNamingTheLargestValues) {
  // 16 x 128 x 128 floats = 1 MiB input, and a 32-channel conv output of 2 MiB.
  ModelBuilder b;
  std::mt19937 rng(2);
  const ValueRef x = b.input({16, 128, 128});
  b.set_name_scope("wide_conv");
  const ValueRef y = b.conv2d(x, Conv2dParams(32, 1), random_normal(32 * 16, rng));
  b.set_name_scope("");
  b.output(b.global_avg_pool2d(y));
  const Model m = b.build();
  const Interpreter ok(m);  // 1 GiB default
  EXPECT_GE(ok.activation_bytes(1), std::size_t{3} << 20);
  InterpreterOptions o;
  o.max_activation_bytes = std::size_t{2} << 20;
  const std::string e = error_of([&] { Interpreter tight(m, o); });
  EXPECT_NE(e.find("max_activation_bytes"), std::string::npos) << e;
  EXPECT_NE(e.find("limit of 2097152 bytes"), std::string::npos) << e;
  EXPECT_NE(e.find("wide_conv"), std::string::npos) << e;
  EXPECT_NE(e.find("32x128x128 float32"), std::string::npos) << e;
  o.max_activation_bytes = ok.activation_bytes(1);
  EXPECT_NO_THROW(Interpreter exact(m, o));
}

TEST(NonFinite, RejectedByDefaultWithThePosition) {
  std::mt19937 rng(3);
  const Interpreter net(every_op_model(rng));
  std::vector<float> x = random_normal(2 * 8 * 8 * 8, rng);
  const auto at = [](int n, int c, int h, int w) { return ((n * 8 + c) * 8 + h) * 8 + w; };
  x[at(1, 2, 3, 4)] = std::numeric_limits<float>::quiet_NaN();
  std::string e = error_of([&] { net.run(x, 2); });
  EXPECT_NE(e.find("image 1, channel 2, row 3, column 4) is NaN"), std::string::npos) << e;
  EXPECT_NE(e.find("NonFiniteInput::kPropagate"), std::string::npos) << e;
  x[at(0, 7, 0, 1)] = -std::numeric_limits<float>::infinity();
  e = error_of([&] { net.run(x, 2); });
  EXPECT_NE(e.find("image 0, channel 7, row 0, column 1) is -inf"), std::string::npos) << e;
  std::vector<OpTiming> t;
  EXPECT_THROW(net.run_profiled(x.data(), x.size(), 2, t), std::invalid_argument);
}

TEST(NonFinite, PropagatedOnRequestWithTheDocumentedMeaning) {
  std::mt19937 rng(4);
  const Model m = every_op_model(rng);
  InterpreterOptions o;
  o.non_finite = NonFiniteInput::kPropagate;
  for (const KernelTable* k : testing::all_tables()) {
    o.kernels = k;
    const Interpreter net(m, o);
    std::vector<float> x = random_normal(3 * 512, rng);
    x[5] = std::numeric_limits<float>::quiet_NaN();
    x[600] = std::numeric_limits<float>::infinity();
    x[1100] = -std::numeric_limits<float>::infinity();
    const std::vector<float> y = net.run(x, 3);
    ASSERT_EQ(y.size(), 30u);
    // Each softmax output is NaN or a probability, and a second run gives the same bits.
    for (float v : y) EXPECT_TRUE(std::isnan(v) || (v >= 0.0f && v <= 1.0f)) << v;
    const std::vector<float> again = net.run(x, 3);
    EXPECT_EQ(std::memcmp(y.data(), again.data(), y.size() * sizeof(float)), 0);
  }
  // A binary-first model reads NaN as +1 and infinities by their sign: exactly the result of the
  // same input with those values replaced by +1, +1, -1.
  ModelBuilder b;
  const ValueRef in = b.input({4, 5, 5});
  b.output(b.conv2d(b.sign(in), Conv2dParams(6, 3).binary_kernel(true), random_signs(216, rng)));
  const Interpreter bin(b.build(), o);
  std::vector<float> x = random_normal(2 * 100, rng);
  std::vector<float> replaced = x;
  x[7] = std::numeric_limits<float>::quiet_NaN(), replaced[7] = 1.0f;
  x[150] = std::numeric_limits<float>::infinity(), replaced[150] = 1.0f;
  x[151] = -std::numeric_limits<float>::infinity(), replaced[151] = -1.0f;
  EXPECT_EQ(bin.run(x, 2), bin.run(replaced, 2));
}

TEST(ThreadPool, AnExceptionInATaskReachesTheCallerAndThePoolStaysUsable) {
  for (int threads = 1; threads <= 4; ++threads) {
    std::atomic<int> ran{0};
    struct Ctx {
      std::atomic<int>* ran;
    } ctx{&ran};
    try {
      detail::run_tasks(
          64, threads,
          [](void* c, std::size_t i) {
            static_cast<Ctx*>(c)->ran->fetch_add(1);
            if (i == 5) throw std::runtime_error("task 5 failed");
          },
          &ctx);
      FAIL() << "no exception with " << threads << " threads";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "task 5 failed");
    }
    EXPECT_GE(ran.load(), 6);  // tasks 0..5 at least (tasks are handed out in order)
    std::atomic<int> count{0};
    struct Ctx2 {
      std::atomic<int>* count;
    } ctx2{&count};
    detail::run_tasks(
        100, threads, [](void* c, std::size_t) { static_cast<Ctx2*>(c)->count->fetch_add(1); },
        &ctx2);
    EXPECT_EQ(count.load(), 100) << threads << " threads";
  }
}

TEST(Concurrency, OneInterpreterFromFourThreadsGivesTheSingleThreadedResults) {
  std::mt19937 rng(5);
  const Model m = every_op_model(rng, 16, 16);
  const Interpreter reference(m, {1});
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<float>> expected;
  const std::size_t batches[] = {1, 2, 3, 8};
  for (std::size_t k = 0; k < 4; ++k) {
    inputs.push_back(random_normal(batches[k] * 16 * 16 * 16, rng));
    expected.push_back(reference.run(inputs[k], batches[k]));
  }
  for (int op_threads : {1, 2}) {
    const Interpreter shared(m, {op_threads});
    std::vector<std::thread> callers;
    std::atomic<int> mismatches{0};
    for (std::size_t t = 0; t < 4; ++t) {
      callers.emplace_back([&, t] {
        for (int round = 0; round < 6; ++round) {
          const std::size_t k = (t + static_cast<std::size_t>(round)) % 4;
          std::vector<float> y;
          if (round % 3 == 2) {
            std::vector<OpTiming> timings;
            y = shared.run_profiled(inputs[k].data(), inputs[k].size(), batches[k], timings);
          } else {
            y = shared.run(inputs[k], batches[k]);
          }
          if (y != expected[k]) mismatches.fetch_add(1);
        }
      });
    }
    for (auto& c : callers) c.join();
    EXPECT_EQ(mismatches.load(), 0) << op_threads << " threads per run";
  }
}

}  // namespace
}  // namespace onebit::runtime

TEST(Limits, AZeroPaddedConvWithAHugeOutputIsRefusedAtOnce) {
  // Found by fuzz/fuzz_model_loader.cpp: a binary convolution with zero padding and an output of
  // more than 2^26 positions made building its border-correction table take minutes (quadratic in
  // the output width). It is now refused before any table is built.
  const std::string path =
      std::string(ONEBIT_TEST_DATA_DIR) + "/runtime-zero-padding-correction-timeout.obnn";
  const std::string error =
      onebit::runtime::testing::error_of([&] { onebit::runtime::Interpreter::from_file(path); });
  EXPECT_NE(error.find("exceeds 2^26"), std::string::npos) << error;
}
