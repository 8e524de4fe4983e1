// The persistent thread pool and the split of binary convolutions over output rows and output
// channels: every thread count from 1 to 4 gives the float-math result bit for bit on odd
// shapes, every ISA; the split covers each output once and shares work evenly; a host's task
// runner in place of the pool.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "ops.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

using testing::add_conv;
using testing::ConvCase;
using testing::ConvSpec;
using testing::Nchw;

TEST(ThreadPool, EveryTaskRunsExactlyOnceForAnyThreadCount) {
  for (int threads = 1; threads <= 4; ++threads) {
    for (std::size_t n : {0u, 1u, 2u, 3u, 17u, 1000u}) {
      std::vector<std::atomic<int>> hits(n);
      detail::parallel_for(n, threads, [&](std::size_t i) { hits[i].fetch_add(1); });
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(hits[i].load(), 1)
            << "task " << i << " of " << n << ", " << threads << " threads";
      }
    }
  }
  // Workers persist: a call with 3 threads leaves at least 2 workers for later calls.
  detail::parallel_for(8, 3, [](std::size_t) {});
  EXPECT_GE(detail::pool_workers(), 2u);
}

TEST(ThreadPool, EachThreadRunsItsOwnContiguousRangeOfTasks) {
  // Two threads, tasks of equal length: the caller's home range is the first half, the worker's
  // the second, so consecutive calls (ops splitting output rows alike) keep each task on the same
  // core. A late thread's tasks may be taken by the other, hence a majority over calls.
  constexpr std::size_t kTasks = 16, kCalls = 30;
  std::vector<std::size_t> on_caller(kTasks, 0);
  for (std::size_t call = 0; call < kCalls; ++call) {
    const std::thread::id caller = std::this_thread::get_id();
    std::vector<int> mine(kTasks, 0);
    detail::parallel_for(kTasks, 2, [&](std::size_t i) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      mine[i] = std::this_thread::get_id() == caller ? 1 : 0;
    });
    for (std::size_t i = 0; i < kTasks; ++i) on_caller[i] += static_cast<std::size_t>(mine[i]);
  }
  std::size_t at_home = 0;
  for (std::size_t i = 0; i < kTasks; ++i) {
    const std::size_t home_calls = i < kTasks / 2 ? on_caller[i] : kCalls - on_caller[i];
    at_home += home_calls * 5 >= kCalls * 4 ? 1 : 0;  // in at least 80% of the calls
  }
  EXPECT_GE(at_home, kTasks * 3 / 4) << "tasks mostly run by their home thread";
}

TEST(ThreadPool, ConcurrentAndNestedCallsEachRunAllTheirTasks) {
  constexpr std::size_t kTasks = 257;
  std::vector<std::thread> callers;
  std::vector<std::vector<int>> hits(4, std::vector<int>(kTasks * kTasks, 0));
  for (std::size_t c = 0; c < hits.size(); ++c) {
    callers.emplace_back([&, c] {
      // Nested: the outer call holds the pool, inner calls run on their caller's thread.
      detail::parallel_for(kTasks, 2, [&](std::size_t i) {
        detail::parallel_for(kTasks, 2, [&](std::size_t j) { ++hits[c][i * kTasks + j]; });
      });
    });
  }
  for (auto& t : callers) t.join();
  for (const auto& h : hits) {
    EXPECT_EQ(std::count(h.begin(), h.end(), 1), static_cast<std::ptrdiff_t>(h.size()));
  }
}

// Each row chunk x column block once; tasks of equal size for two threads at the shapes of the
// issue (so both threads get the same work).
TEST(ConvSplit, CoversEveryOutputOnceAndBalancesTwoThreads) {
  struct Case {
    std::size_t rows, panels, k_words, max_rows;
  };
  // 64x56x56, 256x14x14, 512x7x7 3x3 convs, an odd one, a 1x1 at batch 64.
  const Case cases[] = {{3136, 8, 9, 1024}, {196, 32, 36, 908},   {49, 64, 72, 452},
                        {35, 5, 6, 1024},   {12544, 16, 2, 1024}, {1, 2, 9, 1024}};
  for (const Case& c : cases) {
    for (int threads = 1; threads <= 4; ++threads) {
      const detail::ConvSplit s =
          detail::plan_conv_split(1, c.rows, c.panels, c.k_words, c.max_rows, threads, true);
      ASSERT_GT(s.chunk_rows, 0u);
      ASSERT_GT(s.block_panels, 0u);
      EXPECT_LE(s.chunk_rows, c.max_rows);
      std::vector<int> covered(c.rows * c.panels, 0);
      std::vector<double> work;
      for (std::size_t r = 0; r < s.row_chunks; ++r) {
        for (std::size_t b = 0; b < s.col_blocks; ++b) {
          const std::size_t p0 = r * s.chunk_rows, p1 = std::min(p0 + s.chunk_rows, c.rows);
          const std::size_t q0 = b * s.block_panels, q1 = std::min(q0 + s.block_panels, c.panels);
          ASSERT_LT(p0, p1);
          ASSERT_LT(q0, q1);
          for (std::size_t p = p0; p < p1; ++p) {
            for (std::size_t q = q0; q < q1; ++q) ++covered[p * c.panels + q];
          }
          work.push_back(static_cast<double>((p1 - p0) * (q1 - q0)));
        }
      }
      EXPECT_EQ(std::count(covered.begin(), covered.end(), 1),
                static_cast<std::ptrdiff_t>(covered.size()))
          << c.rows << " rows, " << threads << " threads";
      if (threads == 2 && c.rows * c.panels >= 1000) {
        // Greedy hand-out of the tasks to two threads: the busier one does at most 55%.
        std::sort(work.rbegin(), work.rend());
        double t0 = 0, t1 = 0;
        for (double w : work) (t0 <= t1 ? t0 : t1) += w;
        EXPECT_LE(std::max(t0, t1), 0.55 * (t0 + t1)) << c.rows << " rows x " << c.panels;
      }
    }
  }
}

// Odd shapes: channel counts not multiples of 8 or 64, column splits with zero-padding
// corrections (96 and 160 channels at small maps), strides, groups with unaligned outputs.
std::vector<ConvCase> odd_cases() {
  return {
      {96, 5, 5, {96, 3, 1, 1, 1, 1, 1, 1, 1, 0.0f}},    // rows 25, 12 panels, zero-padding
      {160, 3, 3, {160, 3, 1, 1, 1, 1, 1, 1, 1, 0.0f}},  // 9 rows, 20 panels
      {45, 9, 7, {37, 3, 2, 1, 1, 1, 1, 1, 1, 0.0f}},    // stride 2, 37 outputs
      {33, 13, 11, {65, 3, 1, 1, 1, 0, 0, 0, 0, 0.0f}},  // valid, 65 outputs
      {70, 11, 9, {200, 3, 1, 1, 1, 1, 1, 1, 1, 1.0f}},  // one-padding, 200 outputs
      {15, 7, 9, {15, 3, 1, 1, 3, 1, 1, 1, 1, 0.0f}},    // groups 3, 5 outputs per group
      {130, 5, 7, {24, 1, 1, 1, 1, 0, 0, 0, 0, 0.0f}},   // 1x1 direct
      {64, 6, 6, {64, 3, 1, 2, 1, 2, 2, 2, 2, 0.0f}},    // dilation 2
  };
}

TEST(BinaryConvThreads, OneToFourThreadsMatchFloatMathOnOddShapes) {
  std::mt19937 rng(11);
  for (const ConvCase& cc : odd_cases()) {
    for (std::int64_t batch : {1, 3}) {
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
        for (const KernelTable* t : testing::all_tables()) {
          for (int threads = 1; threads <= 4; ++threads) {
            const Interpreter net(m, {threads, t});
            EXPECT_EQ(net.run(x.v, static_cast<std::size_t>(batch)), output_bits ? bits.v : conv.v)
                << isa_name(t->isa) << " " << threads << " threads, batch " << batch
                << ", C=" << cc.c << " out=" << cc.s.out << " groups=" << cc.s.groups
                << " bits=" << output_bits;
          }
        }
      }
    }
  }
}

// The arena is planned per batch size and reused: runs with changing batch sizes, on one
// Interpreter, give what fresh Interpreters give (no stale values leak between runs).
TEST(InterpreterArena, ChangingBatchSizesAndThreadsGiveFreshResults) {
  std::mt19937 rng(12);
  ModelBuilder b;
  ValueRef x = b.sign(b.input({20, 9, 9}));
  const ValueRef y = b.conv2d(x, Conv2dParams(36, 3).padding(1, 1).binary_kernel(true),
                              testing::random_signs(36 * 20 * 9, rng));
  const ValueRef z =
      b.sign(b.batch_norm(y, testing::random_normal(36, rng), testing::random_normal(36, rng, 3)));
  const ValueRef u = b.conv2d(z, Conv2dParams(36, 3).padding(1, 1).binary_kernel(true),
                              testing::random_signs(36 * 36 * 9, rng));
  b.output(b.relu(b.add(u, y)));
  const Model m = b.build();
  Interpreter net(m, {1});
  // Batches of 8 and 12 (and 3 on 3 threads) run their passes in parallel, the others split
  // each op.
  for (std::size_t batch : {3u, 1u, 5u, 8u, 3u, 12u, 1u}) {
    const auto in = testing::random_normal(batch * 20 * 81, rng);
    const std::vector<float> expected = Interpreter(m, {1}).run(in, batch);
    for (int threads = 1; threads <= 4; ++threads) {
      net.set_threads(threads);
      EXPECT_EQ(net.run(in, batch), expected) << "batch " << batch << ", " << threads << " threads";
    }
  }
}

std::atomic<int> g_runner_calls{0};

// A task runner of a host program: odd tasks on a thread of its own, even ones on the caller's
// thread in reverse order.
void host_runner(std::size_t n, int /*threads*/, TaskFn fn, void* context) {
  g_runner_calls.fetch_add(1);
  std::thread helper([&] {
    for (std::size_t i = 1; i < n; i += 2) fn(context, i);
  });
  for (std::size_t i = n; i-- > 0;) {
    if (i % 2 == 0) fn(context, i);
  }
  helper.join();
}

// InterpreterOptions::task_runner: the parallel parts of a run (ops split over threads at batch
// 1, passes of images at batch 8) go to the host's runner, with the pool's results.
TEST(TaskRunner, RunsTheParallelPartsOnTheHostsThreadsWithThePoolsResults) {
  std::mt19937 rng(13);
  ModelBuilder b;
  const ValueRef x = b.input({24, 12, 12});
  const ValueRef y = b.conv2d(b.sign(x), Conv2dParams(40, 3).padding(1, 1).binary_kernel(true),
                              testing::random_signs(40 * 24 * 9, rng));
  const ValueRef z =
      b.conv2d(x, Conv2dParams(40, 3).padding(1, 1), testing::random_normal(40 * 24 * 9, rng));
  b.output(b.relu(b.add(y, z)));
  const Model m = b.build();
  for (std::size_t batch : {1u, 8u}) {
    const auto in = testing::random_normal(batch * 24 * 144, rng);
    const std::vector<float> expected = Interpreter(m, {2}).run(in, batch);
    InterpreterOptions o;
    o.threads = 2;
    o.task_runner = host_runner;
    g_runner_calls = 0;
    EXPECT_EQ(Interpreter(m, o).run(in, batch), expected) << "batch " << batch;
    EXPECT_GT(g_runner_calls.load(), 0) << "batch " << batch;
    o.threads = 1;  // one thread: nothing to hand out
    g_runner_calls = 0;
    EXPECT_EQ(Interpreter(m, o).run(in, batch), expected) << "batch " << batch;
    EXPECT_EQ(g_runner_calls.load(), 0) << "batch " << batch;
  }
}

}  // namespace
}  // namespace onebit::runtime
