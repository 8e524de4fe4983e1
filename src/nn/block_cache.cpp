// LibTorch's CPU allocator with a cache for blocks above glibc's largest mmap threshold (see
// nn::keep_large_blocks).

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

#include "onebit/nn/training_kernels.h"

namespace onebit::nn {
namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;

// Blocks of at least kLargeBlockBytes are mapped here, rounded up to 2 MiB (huge pages where
// the kernel gives them on request), and kept mapped when freed. A freed block serves a later
// request of its rounded size or of up to a fifth less. The mapped total stays within a quarter
// (plus 64 MiB) above the largest total that was ever live at once: on a miss, cached blocks
// are unmapped, largest first, until the new one fits under that bound.
class BlockCache {
 public:
  void* take(std::size_t size) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first - size <= size / 4) {
        void* p = it->second;
        stats_.cached_bytes -= it->first;
        add_live(p, it->first);
        free_.erase(it);
        ++stats_.hits;
        return p;
      }
      ++stats_.misses;
      const std::size_t bound = std::max(stats_.peak_live_bytes, stats_.live_bytes + size) / 4 * 5 +
                                (std::size_t{64} << 20);
      while (!free_.empty() && stats_.live_bytes + stats_.cached_bytes + size > bound) {
        const auto largest = std::prev(free_.end());
        ::munmap(largest->second, largest->first);
        stats_.cached_bytes -= largest->first;
        free_.erase(largest);
      }
    }
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    ::madvise(p, size, MADV_HUGEPAGE);  // a hint: fewer page faults where THP is "madvise"
    const std::lock_guard<std::mutex> lock(mutex_);
    add_live(p, size);
    return p;
  }

  // False when `p` is not a live block of this cache.
  bool give_back(void* p) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = live_.find(p);
    if (it == live_.end()) return false;
    stats_.live_bytes -= it->second;
    stats_.cached_bytes += it->second;
    free_.emplace(it->second, p);
    live_.erase(it);
    return true;
  }

  std::size_t release() {
    const std::lock_guard<std::mutex> lock(mutex_);
    std::size_t released = 0;
    for (const auto& [size, p] : free_) {
      ::munmap(p, size);
      released += size;
    }
    free_.clear();
    stats_.cached_bytes = 0;
    return released;
  }

  LargeBlockStats stats() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  void add_live(void* p, std::size_t size) {
    live_[p] = size;
    stats_.live_bytes += size;
    stats_.peak_live_bytes = std::max(stats_.peak_live_bytes, stats_.live_bytes);
  }

  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::unordered_map<void*, std::size_t> live_;
  LargeBlockStats stats_;
};

// Never destroyed: tensors may be freed after static destructors ran.
BlockCache& cache() {
  static auto* c = new BlockCache();
  return *c;
}

// The raw deleter of the allocator that was current before (LibTorch's own).
c10::DeleterFnPtr g_fallback_raw_deleter = nullptr;

void give_back(void* p) { cache().give_back(p); }

// LibTorch's raw_allocate / raw_deallocate pair (some kernels' scratch buffers) needs one
// deleter for every pointer: blocks of the cache go back to it, the others to the allocator
// that made them (which may have made them before this one was installed).
void free_any(void* p) {
  if (p == nullptr || cache().give_back(p)) return;
  if (g_fallback_raw_deleter != nullptr) g_fallback_raw_deleter(p);
}

class LargeBlockAllocator final : public c10::Allocator {
 public:
  explicit LargeBlockAllocator(c10::Allocator* fallback) : fallback_(fallback) {}

  // LibTorch 1.13 declares `allocate` const, 2.x (from 2.3) not: one of the two overrides it.
  c10::DataPtr allocate(std::size_t n) const { return take(n); }
  c10::DataPtr allocate(std::size_t n) { return take(n); }
  // Pure virtual from LibTorch 2.3 on (storage copies); an unused member before.
  void copy_data(void* dest, const void* src, std::size_t count) const {
    if (count != 0) std::memcpy(dest, src, count);
  }
  c10::DeleterFnPtr raw_deleter() const override {
    return g_fallback_raw_deleter != nullptr ? &free_any : nullptr;
  }

 private:
  c10::DataPtr take(std::size_t n) const {
    if (n < kLargeBlockBytes) return fallback_->allocate(n);
    void* p = cache().take((n + kHugePage - 1) / kHugePage * kHugePage);
    return {p, p, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  c10::Allocator* fallback_;
};

}  // namespace

bool keep_large_blocks() {
  static std::mutex mutex;
  static LargeBlockAllocator* installed = nullptr;
  const std::lock_guard<std::mutex> lock(mutex);
  if (installed == nullptr) {
    c10::Allocator* current = c10::GetCPUAllocator();
    g_fallback_raw_deleter = current->raw_deleter();
    installed = new LargeBlockAllocator(current);  // never destroyed, as the cache
  }
  if (c10::GetCPUAllocator() != installed) {
    // Priority 1 beats LibTorch's default (0) and stays below a user's own allocator set with a
    // higher priority, which then wins.
    c10::SetCPUAllocator(installed, /*priority=*/1);
  }
  return c10::GetCPUAllocator() == installed;
}

LargeBlockStats large_block_stats() { return cache().stats(); }

std::size_t release_large_blocks() { return cache().release(); }

}  // namespace onebit::nn
