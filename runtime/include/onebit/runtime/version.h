#pragma once

namespace onebit::runtime {

/// The onebit runtime's version string, e.g. "0.1.0".
const char* version();

}  // namespace onebit::runtime
