#pragma once
/// \file
/// Warnings from the library. By default they go to stderr as "onebit: warning: ..."; programs
/// and tests can redirect them.

#include <functional>
#include <string>

namespace onebit {

/// Receives every warning message the library emits.
using WarningHandler = std::function<void(const std::string& message)>;

/// Replaces the warning handler and returns the previous one. A null handler restores stderr.
WarningHandler set_warning_handler(WarningHandler handler);

/// Emits a warning through the current handler.
void warn(const std::string& message);

}  // namespace onebit
