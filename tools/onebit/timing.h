#pragma once
// Wall-clock timing shared by `onebit infer` and `onebit bench`: medians, because the machines
// these run on are shared and a mean is pulled up by every preemption.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

namespace onebit::cli {

/// Seconds elapsed since `t0` on the steady clock.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Median of `values` (0 for none).
inline double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  const std::size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  double m = values[mid];
  if (values.size() % 2 == 0) {
    m = 0.5 *
        (m + *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid)));
  }
  return m;
}

/// Runs `fn` once to warm up, then repeatedly until at least `min_seconds` have passed and at
/// least `min_runs` runs were timed; returns the median seconds of one run.
template <typename Fn>
double median_seconds_per_run(Fn&& fn, double min_seconds, int min_runs = 3) {
  fn();
  std::vector<double> times;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(seconds_since(t0));
  } while (seconds_since(start) < min_seconds || static_cast<int>(times.size()) < min_runs);
  return median(std::move(times));
}

}  // namespace onebit::cli
