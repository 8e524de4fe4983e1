#pragma once
// Internal: the runtime's persistent worker threads. One pool per process, shared by every
// Interpreter and benchmark: workers are started on first use (as many as the largest thread
// count asked for, minus the caller) and then wait for work instead of being created per call.

#include <cstddef>

#include "onebit/runtime/interpreter.h"

namespace onebit::runtime::detail {

/// A task body: `fn(context, i)` for task i (the public `TaskFn`).
using TaskFn = runtime::TaskFn;

/// Runs `fn(context, i)` for every i in [0, n) on up to `threads` threads of the shared pool, the
/// calling thread included, and returns when all tasks are done. Tasks are handed out one at a
/// time from a shared counter, so which thread runs which task varies between calls; callers make
/// every task's result independent of that. When the pool is already running another call (an
/// Interpreter used from several threads at once, or a nested call), this call runs all its tasks
/// on the calling thread instead of waiting. A task that throws stops the call: tasks not yet
/// started are skipped, and the first exception is rethrown to the caller once every thread has
/// left the call (so nothing runs on `context` after it returns or throws).
void run_tasks(std::size_t n, int threads, TaskFn fn, void* context);

/// Worker threads the shared pool holds now (0 before the first call with `threads` > 1).
std::size_t pool_workers();

}  // namespace onebit::runtime::detail
