#pragma once
// Integers from JSON written by users or read from files: a JSON number is an integer only if it
// was written as one. nlohmann's get<int>() on a number written as 6.4e67 converts a double that
// int cannot hold (undefined behaviour, found by the config fuzzer) and silently truncates 64.5;
// these helpers throw instead, naming what was read.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace onebit::detail {

/// `j` as a T: throws std::invalid_argument("<what> has the wrong type: expected an integer ...,
/// got <j>") unless `j` is a JSON integer (not a float, not a bool), and "<what> is out of range:
/// ..." unless it is within T's range.
template <typename T>
T json_integer(const nlohmann::json& j, const std::string& what) {
  const auto fail = [&]() -> T {
    throw std::invalid_argument(
        what + (j.is_number_integer() ? " is out of range" : " has the wrong type") +
        ": expected an integer from " + std::to_string(std::numeric_limits<T>::min()) + " to " +
        std::to_string(std::numeric_limits<T>::max()) + ", got " + j.dump().substr(0, 100));
  };
  if (j.is_number_unsigned()) {
    const std::uint64_t u = j.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return fail();
    return static_cast<T>(u);
  }
  if (j.is_number_integer()) {
    const std::int64_t s = j.get<std::int64_t>();
    if constexpr (std::numeric_limits<T>::is_signed) {
      if (s < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
          s > static_cast<std::int64_t>(std::numeric_limits<T>::max())) {
        return fail();
      }
    } else {
      if (s < 0 || static_cast<std::uint64_t>(s) > std::numeric_limits<T>::max()) return fail();
    }
    return static_cast<T>(s);
  }
  return fail();
}

/// A JSON array of integers (each as `json_integer`); throws naming `what` otherwise.
template <typename T>
std::vector<T> json_integers(const nlohmann::json& j, const std::string& what) {
  if (!j.is_array()) {
    throw std::invalid_argument(what + ": expected a list of integers, got " +
                                j.dump().substr(0, 100));
  }
  std::vector<T> out;
  for (const auto& e : j) out.push_back(json_integer<T>(e, what));
  return out;
}

}  // namespace onebit::detail
