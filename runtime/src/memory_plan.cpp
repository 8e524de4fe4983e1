#include "onebit/runtime/memory_plan.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>

namespace onebit::runtime {

namespace {

bool conflict(const ValueLifetime& a, const ValueLifetime& b) {
  return a.bytes != 0 && b.bytes != 0 && a.first <= b.last && b.first <= a.last;
}

}  // namespace

ArenaPlan plan_arena(const std::vector<ValueLifetime>& values, std::size_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    throw std::invalid_argument("plan_arena: alignment " + std::to_string(alignment) +
                                " is not a power of two");
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i].last < values[i].first) {
      throw std::invalid_argument("plan_arena: value " + std::to_string(i) + " ends at step " +
                                  std::to_string(values[i].last) + " before it starts at step " +
                                  std::to_string(values[i].first));
    }
  }
  const auto align_up = [&](std::size_t x) { return (x + alignment - 1) & ~(alignment - 1); };
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (values[a].bytes != values[b].bytes) return values[a].bytes > values[b].bytes;
    return values[a].first < values[b].first;
  });
  ArenaPlan plan;
  plan.offsets.assign(values.size(), 0);
  std::vector<std::size_t> placed;
  std::vector<std::pair<std::size_t, std::size_t>> busy;  // [begin, end) of conflicting values
  for (std::size_t v : order) {
    const ValueLifetime& value = values[v];
    if (value.bytes == 0) continue;
    busy.clear();
    for (std::size_t p : placed) {
      if (conflict(value, values[p])) {
        busy.emplace_back(plan.offsets[p], plan.offsets[p] + values[p].bytes);
      }
    }
    std::sort(busy.begin(), busy.end());
    std::size_t best = SIZE_MAX, best_gap = SIZE_MAX, cursor = 0;
    for (const auto& [begin, end] : busy) {
      const std::size_t start = align_up(cursor);
      if (begin >= start + value.bytes && begin - start < best_gap) {
        best = start, best_gap = begin - start;
      }
      cursor = std::max(cursor, end);
    }
    plan.offsets[v] = best != SIZE_MAX ? best : align_up(cursor);
    plan.bytes = std::max(plan.bytes, plan.offsets[v] + value.bytes);
    placed.push_back(v);
  }
  return plan;
}

std::size_t largest_live_bytes(const std::vector<ValueLifetime>& values) {
  // Sweep over steps: + bytes at first, - bytes after last.
  std::map<std::int64_t, std::int64_t> delta;
  for (const ValueLifetime& v : values) {
    if (v.bytes == 0) continue;
    delta[v.first] += static_cast<std::int64_t>(v.bytes);
    delta[v.last + 1] -= static_cast<std::int64_t>(v.bytes);
  }
  std::int64_t live = 0, peak = 0;
  for (const auto& [step, d] : delta) peak = std::max(peak, live += d);
  return static_cast<std::size_t>(peak);
}

}  // namespace onebit::runtime
