#pragma once
/// \file
/// Activation memory planning: every value of a run gets an offset in one arena, chosen ahead of
/// time from the values' lifetimes so that values alive at the same time never overlap (the
/// approach of TFLite's arena planner, greedy by size).
///
/// Example (three values of a chain a -> b -> c: a and c may share memory):
/// \code
///   using onebit::runtime::ValueLifetime;
///   const std::vector<ValueLifetime> v{{4096, 0, 1}, {1024, 1, 2}, {4096, 2, 3}};
///   const onebit::runtime::ArenaPlan p = onebit::runtime::plan_arena(v);
///   // p.offsets == {0, 4096, 0}, p.bytes == 5120 == largest_live_bytes(v)
/// \endcode

#include <cstddef>
#include <cstdint>
#include <vector>

namespace onebit::runtime {

/// One value to place: its size and the steps during which it must stay intact, from `first`
/// (the step that writes it) to `last` (the last step that reads it), both included. Two values
/// conflict when these ranges intersect; a value of 0 bytes conflicts with nothing.
struct ValueLifetime {
  std::size_t bytes = 0;
  std::int64_t first = 0;
  std::int64_t last = 0;
};

/// Offsets of the values in one arena.
struct ArenaPlan {
  std::vector<std::size_t> offsets;  ///< One per value, in input order, multiples of alignment.
  std::size_t bytes = 0;             ///< Arena size: the largest offset + bytes over all values.
};

/// Places `values` greedily in an order, each in the smallest gap between already placed values
/// that conflict with it and fits it, else after the last of them. The first order is by size
/// (largest first; ties: earlier `first`, then input order); while the arena is above
/// `largest_live_bytes`, up to 17 more orders are tried (ties to the longer lifetime, then sizes
/// scaled by pseudo-random factors from a fixed seed) and the smallest arena is kept, so the
/// plan is reproducible and never larger than greedy by size. Offsets are multiples of
/// `alignment` (a power of two). Throws
/// `std::invalid_argument` for an alignment that is not a power of two or a value with
/// last < first.
ArenaPlan plan_arena(const std::vector<ValueLifetime>& values, std::size_t alignment = 64);

/// The largest total size of values alive at one step: no plan can use less memory.
std::size_t largest_live_bytes(const std::vector<ValueLifetime>& values);

}  // namespace onebit::runtime
