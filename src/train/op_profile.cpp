// OpProfile: per-op self times from ATen's RecordFunction callbacks.

#include "onebit/train/op_profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <stdexcept>

namespace onebit::train {
namespace {

using Clock = std::chrono::steady_clock;

struct Totals {
  std::mutex mutex;
  std::map<std::string, OpProfile::Op> ops;
};

std::atomic<Totals*> active{nullptr};

// One running op on this thread: when it started and the wall time of the ops it called.
struct Frame {
  Clock::time_point start;
  double children = 0;
};
thread_local std::vector<Frame> frames;

struct Context : at::ObserverContext {
  size_t depth = 0;  // the frame's index, so an unbalanced end cannot pop the wrong one
};

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) {
  auto ctx = std::make_unique<Context>();
  ctx->depth = frames.size();
  frames.push_back({Clock::now(), 0});
  return ctx;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* base) {
  const auto* ctx = static_cast<const Context*>(base);
  if (ctx == nullptr || ctx->depth >= frames.size()) return;
  frames.resize(ctx->depth + 1);
  const Frame f = frames.back();
  frames.pop_back();
  const double wall = std::chrono::duration<double>(Clock::now() - f.start).count();
  if (!frames.empty()) frames.back().children += wall;
  Totals* t = active.load();
  if (t == nullptr) return;
  const char* name = fn.name();
  std::lock_guard<std::mutex> lock(t->mutex);
  OpProfile::Op& op = t->ops[name != nullptr ? name : "(unnamed)"];
  op.calls += 1;
  op.self_seconds += std::max(0.0, wall - f.children);
}

}  // namespace

OpProfile::OpProfile() {
  auto* totals = new Totals;
  Totals* expected = nullptr;
  if (!active.compare_exchange_strong(expected, totals)) {
    delete totals;
    throw std::logic_error("OpProfile: another profile is already recording in this process");
  }
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end));
}

OpProfile::~OpProfile() {
  at::removeCallback(handle_);
  delete active.exchange(nullptr);
}

std::vector<OpProfile::Op> OpProfile::ops() const {
  Totals* t = active.load();
  std::vector<Op> out;
  {
    std::lock_guard<std::mutex> lock(t->mutex);
    for (const auto& [name, op] : t->ops) {
      out.push_back(op);
      out.back().name = name;
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Op& a, const Op& b) { return a.self_seconds > b.self_seconds; });
  return out;
}

void OpProfile::clear() {
  Totals* t = active.load();
  std::lock_guard<std::mutex> lock(t->mutex);
  t->ops.clear();
}

}  // namespace onebit::train
