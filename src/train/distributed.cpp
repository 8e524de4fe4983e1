// Data-parallel training on c10d: process group, bucketed gradient all-reduce, local launcher.

// Debian's LibTorch headers declare ProcessGroupGloo only when this is defined (its own build
// defines it on the command line).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif

#include "onebit/train/distributed.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

extern char** environ;

namespace onebit::train {
namespace {

using Millis = std::chrono::milliseconds;

Millis to_millis(double seconds) {
  return Millis(static_cast<int64_t>(std::llround(seconds * 1e3)));
}

std::string seconds_text(double s) {
  std::ostringstream out;
  out << s << " s";
  return out.str();
}

int parse_env_int(const char* name, int fallback, bool required) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    if (required) {
      throw std::invalid_argument(std::string("environment: WORLD_SIZE is set but ") + name +
                                  " is not (torchrun-style launch needs RANK, WORLD_SIZE, "
                                  "MASTER_ADDR and MASTER_PORT)");
    }
    return fallback;
  }
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < 0 || x > 1 << 30) {
    throw std::invalid_argument(std::string("environment: ") + name +
                                " must be a non-negative integer, got \"" + v + "\"");
  }
  return static_cast<int>(x);
}

/// Flattens `tensors` per dtype into one buffer, runs `op` on it, copies the result back.
void coalesced(const std::vector<at::Tensor>& tensors, const std::function<void(at::Tensor&)>& op) {
  std::map<at::ScalarType, std::vector<at::Tensor>> by_type;
  for (const auto& t : tensors) {
    if (t.defined() && t.numel() > 0) by_type[t.scalar_type()].push_back(t);
  }
  at::NoGradGuard no_grad;
  for (auto& [type, group] : by_type) {
    std::vector<at::Tensor> flat_parts;
    flat_parts.reserve(group.size());
    for (const auto& t : group) flat_parts.push_back(t.detach().reshape({-1}));
    at::Tensor flat = at::cat(flat_parts);
    op(flat);
    int64_t offset = 0;
    for (auto& t : group) {
      t.detach().copy_(flat.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

}  // namespace

// ---- options -------------------------------------------------------------------------------

DistributedOptions DistributedOptions::from_env() {
  DistributedOptions o;
  o.world_size = parse_env_int("WORLD_SIZE", 1, false);
  if (std::getenv("WORLD_SIZE") == nullptr) return o;
  o.rank = parse_env_int("RANK", 0, true);
  o.local_rank = parse_env_int("LOCAL_RANK", o.rank, false);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') {
    o.master_addr = addr;
  }
  o.master_port = parse_env_int("MASTER_PORT", o.master_port, false);
  o.validate();
  return o;
}

void DistributedOptions::validate() const {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (world_size < 1) fail("world size must be >= 1, got " + std::to_string(world_size));
  if (rank < 0 || rank >= world_size) {
    fail("rank must be in [0, " + std::to_string(world_size - 1) + "] (WORLD_SIZE " +
         std::to_string(world_size) + "), got " + std::to_string(rank));
  }
  if (master_port < 1 || master_port > 65535) {
    fail("master port must be in [1, 65535], got " + std::to_string(master_port));
  }
  if (master_addr.empty()) fail("master address must not be empty");
  if (!(timeout_seconds > 0) || !std::isfinite(timeout_seconds)) {
    fail("distributed timeout must be a positive number of seconds, got " +
         std::to_string(timeout_seconds));
  }
  if (bucket_bytes < 1) fail("bucket_bytes must be >= 1, got " + std::to_string(bucket_bytes));
  if (backend == "nccl") {
    fail(
        "backend \"nccl\": onebit trains on the CPU only (no CUDA build of the trainer yet); "
        "use \"gloo\"");
  }
  if (backend != "gloo") fail("unknown backend \"" + backend + "\" (known: gloo)");
}

// ---- process group -------------------------------------------------------------------------

struct ProcessGroup::Impl {
  DistributedOptions options;
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::atomic<bool> failed{false};

  // Each rank bumps "heartbeat/<rank>" in the store every 250 ms, so that after a failed
  // collective the survivors can say which rank stopped (dead or hung).
  struct Heartbeat {
    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;
  };
  std::shared_ptr<Heartbeat> heartbeat = std::make_shared<Heartbeat>();
  std::thread heartbeat_thread;

  std::string where() const {
    return "rank " + std::to_string(options.rank) + " of " + std::to_string(options.world_size);
  }

  void start_heartbeat() {
    auto hb = heartbeat;
    auto st = store;
    const std::string key = "heartbeat/" + std::to_string(options.rank);
    heartbeat_thread = std::thread([hb, st, key] {
      std::unique_lock<std::mutex> lock(hb->mu);
      while (!hb->stop) {
        lock.unlock();
        try {
          st->add(key, 1);
        } catch (const std::exception&) {
          return;  // the store (rank 0) is gone; the collectives report it
        }
        lock.lock();
        hb->cv.wait_for(lock, Millis(250), [&] { return hb->stop; });
      }
    });
  }

  /// Heartbeat counters of all ranks, or an empty vector if the store does not answer in time.
  std::vector<int64_t> read_heartbeats(Millis deadline) {
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      std::vector<int64_t> values;
    };
    auto shared = std::make_shared<Shared>();
    auto st = store;
    const int world = options.world_size;
    std::thread([shared, st, world] {
      std::vector<int64_t> v;
      try {
        for (int r = 0; r < world; ++r) v.push_back(st->add("heartbeat/" + std::to_string(r), 0));
      } catch (const std::exception&) {
        v.clear();
      }
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->values = std::move(v);
      shared->done = true;
      shared->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> lock(shared->mu);
    if (!shared->cv.wait_for(lock, deadline, [&] { return shared->done; })) return {};
    return shared->values;
  }

  /// Which peers stopped: ranks whose heartbeat did not advance within about a second.
  std::string diagnose() {
    auto before = read_heartbeats(Millis(1500));
    if (before.empty()) {
      return "rank 0, which hosts the rendezvous store at " + options.master_addr + ":" +
             std::to_string(options.master_port) + ", does not answer (dead or hung)";
    }
    std::this_thread::sleep_for(Millis(1000));
    auto after = read_heartbeats(Millis(1500));
    if (after.empty()) {
      return "rank 0, which hosts the rendezvous store, stopped answering (dead or hung)";
    }
    std::vector<int> stopped;
    for (int r = 0; r < options.world_size; ++r) {
      if (r != options.rank && after[static_cast<size_t>(r)] == before[static_cast<size_t>(r)]) {
        stopped.push_back(r);
      }
    }
    if (stopped.empty()) return "every peer still sends heartbeats (a network or protocol error?)";
    std::string s = stopped.size() == 1 ? "rank " : "ranks ";
    for (size_t i = 0; i < stopped.size(); ++i) s += (i ? ", " : "") + std::to_string(stopped[i]);
    return s + (stopped.size() == 1 ? " stopped" : " stopped") +
           " sending heartbeats (dead or hung)";
  }

  [[noreturn]] void fail(const std::string& operation, const std::exception& e) {
    failed = true;
    std::ostringstream msg;
    msg << "data-parallel training failed on " << where() << ": " << operation
        << " did not complete: " << e.what() << "; " << diagnose() << " (timeout "
        << seconds_text(options.timeout_seconds) << ", --dist-timeout)";
    throw DistributedError(msg.str());
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& operation) {
    if (failed) {
      throw DistributedError("data-parallel training: " + where() + " uses a failed group");
    }
    try {
      work->wait();
    } catch (const std::exception& e) {
      fail(operation, e);
    }
  }

  c10::intrusive_ptr<c10d::Work> all_reduce_async(at::Tensor& flat) {
    std::vector<at::Tensor> v{flat};
    return pg->allreduce(v);
  }
};

ProcessGroup::ProcessGroup(const DistributedOptions& options) : impl_(std::make_unique<Impl>()) {
  options.validate();
  impl_->options = options;
  const std::string master = options.master_addr + ":" + std::to_string(options.master_port);
  const Millis timeout = to_millis(options.timeout_seconds);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(options.master_port);
  store_options.isServer = options.rank == 0;
  store_options.numWorkers = static_cast<size_t>(options.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, store_options);
  } catch (const std::exception& e) {
    std::ostringstream msg;
    if (options.rank == 0) {
      msg << "rank 0 could not host the rendezvous store on " << master << " or not all "
          << options.world_size << " ranks joined within " << seconds_text(options.timeout_seconds)
          << " (is the port in use? set another MASTER_PORT): " << e.what();
    } else {
      msg << "rank " << options.rank << " could not reach the master at " << master << " within "
          << seconds_text(options.timeout_seconds)
          << " (is rank 0 running, and MASTER_ADDR/MASTER_PORT right?): " << e.what();
    }
    throw DistributedError(msg.str());
  }
  try {
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    const bool loopback = options.master_addr == "localhost" ||
                          options.master_addr.rfind("127.", 0) == 0 || options.master_addr == "::1";
    if (ifname != nullptr && *ifname != '\0') {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (loopback) {
      gloo_options->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(options.master_addr));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    gloo_options->threads = 2;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("gloo", impl_->store);
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, options.rank,
                                                            options.world_size, gloo_options);
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(options.rank) +
                           " could not connect the Gloo process group through " + master +
                           " within " + seconds_text(options.timeout_seconds) + ": " + e.what());
  }
  impl_->start_heartbeat();
}

ProcessGroup::~ProcessGroup() {
  {
    std::lock_guard<std::mutex> lock(impl_->heartbeat->mu);
    impl_->heartbeat->stop = true;
  }
  impl_->heartbeat->cv.notify_all();
  if (impl_->failed) {
    // Gloo's destructor waits for queued collectives, each of which would wait for the dead
    // peer until the timeout, and a store operation may wait as long: leave them to the
    // process's exit.
    if (impl_->heartbeat_thread.joinable()) impl_->heartbeat_thread.detach();
    (void)impl_->pg.release();
    (void)impl_->store.release();
  } else if (impl_->heartbeat_thread.joinable()) {
    impl_->heartbeat_thread.join();
  }
}

int ProcessGroup::rank() const { return impl_->options.rank; }
int ProcessGroup::world_size() const { return impl_->options.world_size; }
const DistributedOptions& ProcessGroup::options() const { return impl_->options; }

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors, int root) {
  coalesced(tensors, [&](at::Tensor& flat) {
    std::vector<at::Tensor> v{flat};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    impl_->wait(impl_->pg->broadcast(v, o), "a broadcast from rank " + std::to_string(root));
  });
}

void ProcessGroup::all_reduce_sum(const std::vector<at::Tensor>& tensors) {
  coalesced(tensors,
            [&](at::Tensor& flat) { impl_->wait(impl_->all_reduce_async(flat), "an all-reduce"); });
}

void ProcessGroup::barrier() { impl_->wait(impl_->pg->barrier(), "a barrier"); }

// ---- gradient reducer ----------------------------------------------------------------------

struct GradientReducer::State {
  std::shared_ptr<ProcessGroup> group;
  struct Bucket {
    at::Tensor flat;
    std::vector<size_t> params;
    c10::intrusive_ptr<c10d::Work> work;
  };
  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0;
    int expected = 0;  // gradients per backward, learned on the first step with gradients
    int arrived = 0;
  };
  std::vector<Bucket> buckets;
  std::vector<Slot> slots;
  std::vector<at::Tensor> params;
  bool learned = false;
  size_t next_launch = 0;
  std::string late;  // a parameter whose gradient came after its bucket was sent
  std::mutex mu;

  bool ready(const Bucket& b) const {
    for (size_t i : b.params) {
      if (slots[i].arrived < slots[i].expected) return false;
    }
    return true;
  }

  void launch(size_t b) {
    auto& bucket = buckets[b];
    for (size_t i : bucket.params) {  // no gradient on this rank (unused, or an empty shard)
      if (slots[i].arrived == 0) bucket.flat.narrow(0, slots[i].offset, params[i].numel()).zero_();
    }
    bucket.work = group->impl().all_reduce_async(bucket.flat);
  }

  void on_grad(size_t i, const at::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mu);
    Slot& s = slots[i];
    auto& bucket = buckets[s.bucket];
    if (bucket.work) {
      if (late.empty()) late = std::to_string(i);
      return;
    }
    auto view = bucket.flat.narrow(0, s.offset, params[i].numel());
    at::NoGradGuard no_grad;
    if (s.arrived == 0) {
      view.copy_(grad.reshape({-1}));
    } else {
      view.add_(grad.reshape({-1}));
    }
    ++s.arrived;
    if (!learned) return;
    while (next_launch < buckets.size() && ready(buckets[next_launch])) {
      launch(next_launch);
      ++next_launch;
    }
  }
};

GradientReducer::GradientReducer(std::shared_ptr<ProcessGroup> group,
                                 std::vector<at::Tensor> params, int64_t bucket_bytes)
    : state_(std::make_shared<State>()), params_(std::move(params)) {
  if (!group) throw std::invalid_argument("GradientReducer: the process group is null");
  state_->group = std::move(group);
  state_->slots.resize(params_.size());
  // Reverse registration order: backward reaches the last layers first.
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    auto& buckets = state_->buckets;
    const bool new_bucket = buckets.empty() || bytes >= bucket_bytes ||
                            buckets.back().flat.scalar_type() != p.scalar_type();
    if (new_bucket) {
      buckets.push_back({at::empty({0}, p.options()), {}, {}});
      bytes = 0;
    }
    auto& b = buckets.back();
    state_->slots[k].bucket = buckets.size() - 1;
    state_->slots[k].offset = b.flat.numel();
    b.flat = at::empty({b.flat.numel() + p.numel()}, p.options().requires_grad(false));
    b.params.push_back(k);
    bytes += static_cast<int64_t>(p.numel() * p.element_size());
  }
  state_->params = params_;
  // Each hook holds a weak reference: a strong one would make a cycle through the parameter.
  std::weak_ptr<State> weak = state_;
  for (size_t k = 0; k < params_.size(); ++k) {
    hooks_.push_back(params_[k].register_hook([weak, k](const at::Tensor& grad) {
      if (auto state = weak.lock()) state->on_grad(k, grad);
    }));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < params_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

size_t GradientReducer::bucket_count() const { return state_->buckets.size(); }

void GradientReducer::finish() {
  auto& st = *state_;
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.late.empty()) {
    const size_t i = std::stoul(st.late);
    throw std::runtime_error(
        "data-parallel training: parameter " + std::to_string(i) + " (shape " +
        [&] {
          std::ostringstream s;
          s << params_[i].sizes();
          return s.str();
        }() +
        ") received more gradients in one backward than in the first step; the model's autograd "
        "graph must be the same in every step");
  }
  if (!st.learned) {
    bool any = false;
    for (auto& s : st.slots) {
      s.expected = s.arrived;
      any = any || s.arrived > 0;
    }
    st.learned = any;
  }
  for (; st.next_launch < st.buckets.size(); ++st.next_launch) st.launch(st.next_launch);
  at::NoGradGuard no_grad;
  const double inverse_world = 1.0 / st.group->world_size();
  for (size_t b = 0; b < st.buckets.size(); ++b) {
    auto& bucket = st.buckets[b];
    st.group->impl().wait(bucket.work, "the all-reduce of gradient bucket " + std::to_string(b) +
                                           " of " + std::to_string(st.buckets.size()));
    bucket.work.reset();
    bucket.flat.mul_(inverse_world);
    for (size_t i : bucket.params) {
      auto& p = params_[i];
      auto view = bucket.flat.narrow(0, st.slots[i].offset, p.numel()).view_as(p);
      if (p.grad().defined()) {
        p.mutable_grad().copy_(view);
      } else {
        p.mutable_grad() = view.clone();
      }
    }
  }
  for (auto& s : st.slots) s.arrived = 0;
  st.next_launch = 0;
}

// ---- DataParallel --------------------------------------------------------------------------

DataParallel::DataParallel(std::shared_ptr<ProcessGroup> group, nn::Graph model)
    : group_(std::move(group)), model_(std::move(model)) {
  if (group_ && group_->world_size() > 1) {
    std::vector<at::Tensor> params;
    for (const auto& p : model_->parameters()) {
      if (p.requires_grad()) params.push_back(p);
    }
    reducer_ = std::make_unique<GradientReducer>(group_, params, group_->options().bucket_bytes);
  }
}

DataParallel::~DataParallel() = default;

int DataParallel::rank() const { return group_ ? group_->rank() : 0; }
int DataParallel::world_size() const { return group_ ? group_->world_size() : 1; }

void DataParallel::broadcast_state() {
  if (world_size() == 1) return;
  std::vector<at::Tensor> state = model_->parameters();
  for (const auto& b : model_->buffers()) state.push_back(b);
  group_->broadcast(state, 0);
}

at::Tensor DataParallel::shard(const at::Tensor& indices) const {
  const int64_t w = world_size();
  if (w == 1) return indices;
  const int64_t m = indices.size(0);
  const int64_t r = rank();
  return indices.slice(0, r * m / w, (r + 1) * m / w);
}

double DataParallel::loss_scale(int64_t local, int64_t global) const {
  if (world_size() == 1 || global == 0) return 1.0;
  return static_cast<double>(local) * world_size() / static_cast<double>(global);
}

void DataParallel::reduce_gradients() {
  if (reducer_) reducer_->finish();
}

void DataParallel::average_buffers() {
  if (world_size() == 1) return;
  std::vector<at::Tensor> floating, other;
  for (const auto& b : model_->buffers()) (b.is_floating_point() ? floating : other).push_back(b);
  group_->all_reduce_sum(floating);
  at::NoGradGuard no_grad;
  for (auto& b : floating) b.div_(world_size());
  group_->broadcast(other, 0);  // counters: rank 0's
}

std::vector<double> DataParallel::sum(const std::vector<double>& values) const {
  if (world_size() == 1 || values.empty()) return values;
  auto t = at::tensor(values, at::TensorOptions().dtype(at::kDouble));
  group_->all_reduce_sum({t});
  const double* p = t.data_ptr<double>();
  return {p, p + t.numel()};
}

EvalResult evaluate(nn::Graph model, const data::Dataset& set, int64_t batch_size,
                    const DataParallel& parallel) {
  if (parallel.world_size() == 1) return evaluate(model, set, batch_size);
  const int64_t n = set.size();
  const int64_t w = parallel.world_size(), r = parallel.rank();
  data::Dataset part{set.images.slice(0, r * n / w, (r + 1) * n / w),
                     set.labels.slice(0, r * n / w, (r + 1) * n / w), set.num_classes};
  auto local = evaluate(model, part, batch_size);
  const double count = static_cast<double>(local.count);
  auto sums = parallel.sum({local.loss * count, std::round(local.accuracy * count), count});
  EvalResult result;
  result.count = static_cast<int64_t>(sums[2]);
  result.loss = sums[2] > 0 ? sums[0] / sums[2] : 0;
  result.accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0;
  return result;
}

// ---- local launcher ------------------------------------------------------------------------

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("free_local_port: socket: ") + strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string err = strerror(errno);
    ::close(fd);
    throw std::runtime_error("free_local_port: cannot bind a port on 127.0.0.1: " + err);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace {
std::vector<pid_t>* g_workers = nullptr;  // for the signal handler of run_local_workers
volatile sig_atomic_t g_interrupted = 0;  // a SIGINT was forwarded to the workers

extern "C" void forward_signal(int sig) {
  if (sig == SIGINT) g_interrupted = 1;
  if (g_workers == nullptr) return;
  for (pid_t pid : *g_workers) {
    if (pid > 0) ::kill(pid, sig);
  }
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "stopped with status " + std::to_string(status);
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}
}  // namespace

int run_local_workers(const std::vector<std::string>& argv, int nproc, double grace_seconds,
                      const std::vector<std::string>& extra_env) {
  if (argv.empty()) throw std::invalid_argument("run_local_workers: empty command line");
  if (nproc < 1) throw std::invalid_argument("--nproc must be >= 1, got " + std::to_string(nproc));
  const char* addr_env = std::getenv("MASTER_ADDR");
  const std::string addr = addr_env && *addr_env ? addr_env : "127.0.0.1";
  const char* port_env = std::getenv("MASTER_PORT");
  const std::string port =
      port_env && *port_env ? std::string(port_env) : std::to_string(free_local_port());

  // Everything the children need is built before fork: only exec follows it.
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(nproc));
  const std::vector<std::string> ours = {
      "RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="};
  for (int r = 0; r < nproc; ++r) {
    auto& env = envs[static_cast<size_t>(r)];
    for (char** e = environ; *e != nullptr; ++e) {
      std::string kv(*e);
      bool overridden = false;
      for (const auto& prefix : ours) overridden = overridden || kv.rfind(prefix, 0) == 0;
      if (!overridden) env.push_back(kv);
    }
    for (const auto& kv : extra_env) {
      const std::string name = kv.substr(0, kv.find('='));
      if (std::getenv(name.c_str()) == nullptr) env.push_back(kv);
    }
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(nproc));
    env.push_back("MASTER_ADDR=" + addr);
    env.push_back("MASTER_PORT=" + port);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  g_workers = &pids;
  g_interrupted = 0;
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  std::cout.flush();
  std::cerr.flush();
  for (int r = 0; r < nproc; ++r) {
    std::vector<char*> envp;
    for (auto& kv : envs[static_cast<size_t>(r)]) envp.push_back(kv.data());
    envp.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      const std::string err = strerror(errno);
      forward_signal(SIGTERM);
      throw std::runtime_error("--nproc: cannot start worker " + std::to_string(r) + ": " + err);
    }
    if (pid == 0) {
      ::execve(args[0], args.data(), envp.data());
      std::fprintf(stderr, "onebit: cannot run %s: %s\n", args[0], strerror(errno));
      ::_exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }

  int result = 0;
  int running = nproc;
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::now();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, stopping ? WNOHANG : 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (pid == 0) {  // stopping, none exited yet
      if (std::chrono::steady_clock::now() > stop_deadline) {
        forward_signal(SIGKILL);
        stop_deadline += std::chrono::hours(1);
      }
      std::this_thread::sleep_for(Millis(20));
      continue;
    }
    int rank = -1;
    for (int r = 0; r < nproc; ++r) {
      if (pids[static_cast<size_t>(r)] == pid) rank = r;
    }
    if (rank < 0) continue;
    pids[static_cast<size_t>(rank)] = -1;
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    // After Ctrl-C every worker saves (rank 0) and exits with 130 on its own.
    if (g_interrupted && WIFEXITED(status) && WEXITSTATUS(status) == 130) {
      if (result == 0) result = 130;
      continue;
    }
    if (!ok && !stopping) {
      result = exit_code(status);
      std::cerr << "onebit: worker rank " << rank << " (pid " << pid << ") "
                << describe_status(status);
      if (running > 0) std::cerr << "; stopping the other " << running << " worker(s)";
      std::cerr << std::endl;
      stopping = true;
      stop_deadline = std::chrono::steady_clock::now() + to_millis(grace_seconds);
      forward_signal(SIGTERM);
    }
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  g_workers = nullptr;
  return result;
}

}  // namespace onebit::train
