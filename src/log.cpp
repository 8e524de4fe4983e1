#include "onebit/log.h"

#include <iostream>
#include <mutex>

namespace onebit {
namespace {
std::mutex& handler_mutex() {
  static std::mutex m;
  return m;
}
WarningHandler& handler() {
  static WarningHandler h;
  return h;
}
}  // namespace

WarningHandler set_warning_handler(WarningHandler h) {
  std::lock_guard<std::mutex> lock(handler_mutex());
  WarningHandler old = std::move(handler());
  handler() = std::move(h);
  return old;
}

void warn(const std::string& message) {
  WarningHandler h;
  {
    std::lock_guard<std::mutex> lock(handler_mutex());
    h = handler();
  }
  if (h) {
    h(message);
  } else {
    std::cerr << "onebit: warning: " << message << std::endl;
  }
}

}  // namespace onebit
