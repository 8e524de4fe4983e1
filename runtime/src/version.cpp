#include "onebit/runtime/version.h"

namespace onebit::runtime {

const char* version() { return "0.1.0"; }

}  // namespace onebit::runtime
