#pragma once
// Wall-clock timing shared by `onebit infer` and `onebit bench`: the runtime's helpers
// (onebit/runtime/bench.h), so that `onebit-run` times models exactly the same way.

#include "onebit/runtime/bench.h"

namespace onebit::cli {

using runtime::median;
using runtime::median_seconds_per_run;
using runtime::seconds_since;

}  // namespace onebit::cli
