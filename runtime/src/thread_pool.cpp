// The shared worker pool behind parallel_for. A call publishes one job (function, context, task
// count) with one atomic word holding a new generation number and the number of participating
// workers; workers 0 .. participants-1, which spin briefly and then sleep on a condition variable
// between jobs, take tasks until none are left, then report done. The caller takes tasks too and
// returns once every participant has reported, so no worker touches a job after its call
// returned, and the next job cannot be published before they are done.
// Tasks are split into one contiguous home range per thread (the caller's first, then worker 0's,
// ...), each with its own atomic counter: a thread runs its own range from the front, then takes
// what is left of the others'. Consecutive ops split the same way (output rows in order) thus
// mostly read what the same core wrote, which matters where cores share no cache (a handoff
// between the two vCPUs of the development VM read at a third of the local speed); a thread that
// wakes late still loses no time, since the others take its tasks.
// Because a worker decides whether it takes part from the same word that announces the job, a
// worker that wakes late for a job it was not part of never mistakes a later job's fields for it.

#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ONEBIT_CPU_RELAX() _mm_pause()
#else
#define ONEBIT_CPU_RELAX() std::this_thread::yield()
#endif

namespace onebit::runtime::detail {

namespace {

// How long an idle worker spins before it sleeps: long enough to bridge the gap between the
// parallel ops of one model run (a few microseconds of single-threaded ops), short enough not to
// hold a core for long after the last run.
constexpr std::chrono::microseconds kSpinBeforeSleep{200};

// Participants are the low 16 bits of the job word.
constexpr std::size_t kMaxThreads = 65535;

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true, std::memory_order_release);
      job_.store(((job_.load(std::memory_order_relaxed) >> 16) + 1) << 16,
                 std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  std::size_t workers() const { return worker_count_.load(std::memory_order_acquire); }

  void run(std::size_t n, int threads, TaskFn fn, void* context) {
    const std::size_t wanted = std::min<std::size_t>(
        {n, threads < 1 ? 1 : static_cast<std::size_t>(threads), kMaxThreads});
    bool expected = false;
    if (wanted <= 1 || !busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      for (std::size_t i = 0; i < n; ++i) fn(context, i);
      return;
    }
    // Only the holder of busy_ starts workers or publishes jobs.
    try {
      while (workers_.size() < wanted - 1) {
        const std::size_t index = workers_.size();
        // The worker starts from the current job word, so that the job published below (maybe
        // before the thread even runs) is new to it.
        workers_.emplace_back([this, index, seen = job_.load(std::memory_order_acquire)] {
          worker_loop(index, seen);
        });
        worker_count_.store(workers_.size(), std::memory_order_release);
      }
    } catch (...) {  // no thread could be started: the pool stays usable with fewer workers
      busy_.store(false, std::memory_order_release);
      throw;
    }
    const std::size_t participants = wanted - 1;
    fn_ = fn, context_ = context, ranges_ = wanted;
    if (homes_.size() < wanted) homes_ = std::vector<Home>(wanted);
    for (std::size_t r = 0; r < wanted; ++r) {
      homes_[r].next.store(n * r / wanted, std::memory_order_relaxed);
      homes_[r].end = n * (r + 1) / wanted;
    }
    done_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);  // pairs with the sleepers' predicate check
      const std::uint64_t generation = (job_.load(std::memory_order_relaxed) >> 16) + 1;
      job_.store(generation << 16 | participants, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    take_tasks(0);
    // Wait for the participants; yield now and then, in case one of them lost its core.
    for (unsigned spins = 1; done_.load(std::memory_order_acquire) != participants; ++spins) {
      if (spins % 1024 == 0) {
        std::this_thread::yield();
      } else {
        ONEBIT_CPU_RELAX();
      }
    }
    // Every participant is done with this job: its error (if any) can be taken and the pool
    // handed to the next caller before the error propagates.
    std::exception_ptr error = std::move(error_);
    error_ = nullptr;
    failed_.store(false, std::memory_order_relaxed);
    busy_.store(false, std::memory_order_release);
    if (error) std::rethrow_exception(error);
  }

 private:
  // Runs tasks until none are left: home range `home` first, then the others in turn. A task
  // that throws stops the job: the first exception is kept for the caller (rethrown by `run` once
  // every participant is done, so no task outlives the call) and the remaining tasks are skipped.
  void take_tasks(std::size_t home) {
    for (std::size_t step = 0; step < ranges_; ++step) {
      Home& h = homes_[(home + step) % ranges_];
      for (std::size_t i = h.next.fetch_add(1, std::memory_order_relaxed); i < h.end;
           i = h.next.fetch_add(1, std::memory_order_relaxed)) {
        if (failed_.load(std::memory_order_relaxed)) continue;
        try {
          fn_(context_, i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex_);
          if (!error_) error_ = std::current_exception();
          failed_.store(true, std::memory_order_relaxed);
        }
      }
    }
  }

  void worker_loop(std::size_t index, std::uint64_t seen) {
    for (;;) {
      // Wait for the next job word: spin, then sleep.
      std::uint64_t now = job_.load(std::memory_order_acquire);
      const auto spin_start = std::chrono::steady_clock::now();
      for (unsigned spins = 0; now == seen; ++spins) {
        ONEBIT_CPU_RELAX();
        if (spins % 64 == 63 && std::chrono::steady_clock::now() - spin_start > kSpinBeforeSleep) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleepers_.fetch_add(1, std::memory_order_acq_rel);
          wake_.wait(lock, [&] { return job_.load(std::memory_order_acquire) != seen; });
          sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        }
        now = job_.load(std::memory_order_acquire);
      }
      seen = now;
      if (stop_.load(std::memory_order_acquire)) return;
      if (index < (now & 0xFFFF)) {
        take_tasks(index + 1);
        done_.fetch_add(1, std::memory_order_acq_rel);
      }
    }
  }

  std::vector<std::thread> workers_;
  std::atomic<std::size_t> worker_count_{0};
  std::atomic<bool> busy_{false};
  std::atomic<std::uint64_t> job_{0};  // generation << 16 | participants
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
  // The current job; written by the caller before the generation bump that publishes it.
  // One home range of tasks per participating thread, [next, end) still to take; a cache line
  // each, so that threads taking tasks from their own ranges do not share lines.
  struct alignas(64) Home {
    std::atomic<std::size_t> next{0};
    std::size_t end = 0;
  };
  TaskFn fn_ = nullptr;
  void* context_ = nullptr;
  std::vector<Home> homes_;
  std::size_t ranges_ = 0;
  std::atomic<std::size_t> done_{0};
  // The first exception a task of the current job threw (read by the caller after every
  // participant reported done, which orders it after the write).
  std::mutex error_mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

Pool& shared_pool() {
  static Pool pool;
  return pool;
}

}  // namespace

void run_tasks(std::size_t n, int threads, TaskFn fn, void* context) {
  shared_pool().run(n, threads, fn, context);
}

std::size_t pool_workers() { return shared_pool().workers(); }

}  // namespace onebit::runtime::detail
