// The measured peak: each ISA's peak loop does exactly the work it reports (linear in the block
// count, half of the XORed bits set for random data), the measurement is positive and
// consistent, and bench_binary_conv's percent of peak is relative to the measured peak of the
// ISA it ran on. No test compares a time with a threshold.

#include <gtest/gtest.h>

#include <cmath>

#include "onebit/runtime/bench.h"
#include "onebit/runtime/kernels.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

TEST(PeakLoop, WorkIsLinearInBlocksAndCountsRandomBits) {
  for (const KernelTable* t : testing::all_tables()) {
    const PeakLoopResult none = t->binary_peak_loop(0, 7);
    EXPECT_EQ(none.binary_macs, 0u) << isa_name(t->isa);
    EXPECT_EQ(none.popcount, 0u) << isa_name(t->isa);
    const PeakLoopResult one = t->binary_peak_loop(1, 7);
    const PeakLoopResult many = t->binary_peak_loop(37, 7);
    ASSERT_GT(one.binary_macs, 0u) << isa_name(t->isa);
    EXPECT_EQ(many.binary_macs, 37 * one.binary_macs) << isa_name(t->isa);
    EXPECT_EQ(many.popcount, 37 * one.popcount) << isa_name(t->isa);
    // splitmix64 words: about half of the XORed bits are set.
    const double share = static_cast<double>(one.popcount) / static_cast<double>(one.binary_macs);
    EXPECT_GT(share, 0.4) << isa_name(t->isa);
    EXPECT_LT(share, 0.6) << isa_name(t->isa);
    // Another seed, other data.
    EXPECT_NE(t->binary_peak_loop(1, 8).popcount, one.popcount) << isa_name(t->isa);
  }
}

TEST(BinaryPeak, MeasurementIsPositiveAndConsistent) {
  for (const KernelTable* t : testing::all_tables()) {
    const BinaryPeak p = measure_binary_peak(t, 2, 0.002);
    EXPECT_EQ(p.isa, t->isa);
    EXPECT_EQ(p.trials, 2);
    EXPECT_FALSE(p.cpu.empty());
    EXPECT_GT(p.binary_macs, 0u);
    EXPECT_TRUE(std::isfinite(p.binary_macs_per_s));
    EXPECT_GT(p.binary_macs_per_s, 0.0);
    EXPECT_GT(p.clock_hz, 0.0);
    EXPECT_DOUBLE_EQ(p.binary_macs_per_cycle, p.binary_macs_per_s / p.clock_hz);
    // Plausibility, not speed: no core retires 100k binary MACs per cycle.
    EXPECT_LT(p.binary_macs_per_cycle, 1e5) << isa_name(t->isa);
  }
  EXPECT_THROW(measure_binary_peak(nullptr, 0, 0.01), std::invalid_argument);
  EXPECT_THROW(measure_binary_peak(nullptr, 1, 0.0), std::invalid_argument);
}

TEST(BinaryPeak, CachedPerIsaAndUsedForPercentOfPeak) {
  const Isa isa = active_kernels().isa;
  const BinaryPeak& first = binary_peak(isa);
  EXPECT_EQ(&first, &binary_peak(isa));
  BinaryConvShape shape;
  shape.channels = 64, shape.height = shape.width = 8;
  for (int threads : {1, 2}) {
    const BenchResult r = bench_binary_conv(shape, threads, 0.001);
    EXPECT_EQ(r.isa, std::string(isa_name(isa)));
    EXPECT_EQ(r.peak_binary_macs_per_cycle, first.binary_macs_per_cycle);
    EXPECT_EQ(r.peak_binary_macs_per_s, first.binary_macs_per_s);
    EXPECT_GT(r.percent_of_peak, 0.0);
    // A ratio of the two measured rates: the clock measured before the runs does not enter.
    EXPECT_NEAR(r.percent_of_peak,
                100.0 * r.binary_macs_per_s / (first.binary_macs_per_s * threads),
                1e-9 * r.percent_of_peak);
  }
}

// The clock is a chain of dependent register adds: plausible on every core. (A chain of
// add-immediate read 15 GHz on an Intel Xeon, whose renamer folds such adds.)
TEST(BinaryPeak, CoreClockIsPlausible) {
  const double hz = measure_core_clock_hz();
  EXPECT_GT(hz, 1e8);
  EXPECT_LT(hz, 8e9);
}

TEST(BinaryPeak, CpuModelNameIsNeverEmpty) { EXPECT_FALSE(cpu_model_name().empty()); }

}  // namespace
}  // namespace onebit::runtime
