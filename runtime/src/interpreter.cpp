#include "onebit/runtime/interpreter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "onebit/runtime/memory_plan.h"
#include "op_table.h"
#include "ops.h"

namespace onebit::runtime {

using detail::Buffer;
using detail::ValueInfo;

namespace {

constexpr std::int64_t kMaxValueElements = std::int64_t{1} << 24;
constexpr std::size_t kArenaAlignment = 64;  // bytes: each value starts on a cache line
// Arena bytes of one pass over the ops: about the L2 cache of one core, so that an op reads
// what the op before it wrote from cache instead of memory.
constexpr std::size_t kPassBytes = std::size_t{512} << 10;

ValueInfo input_info(const Model& model) {
  const auto& s = model.input_shape;
  detail::require(s.size() == 1 || s.size() == 3, "model input",
                  "shape must be (C, H, W) or (features), found rank " + std::to_string(s.size()));
  return s.size() == 3 ? ValueInfo{DType::kFloat32, s[0], s[1], s[2]}
                       : ValueInfo{DType::kFloat32, s[0], 1, 1};
}

}  // namespace

struct Interpreter::Impl {
  Model model;
  const KernelTable* kernels = nullptr;
  std::atomic<int> threads{1};
  std::size_t max_activation_bytes = 0;
  NonFiniteInput non_finite = NonFiniteInput::kReject;
  bool channels_last = false;        // NHWC input and output
  TaskRunner task_runner = nullptr;  // InterpreterOptions::task_runner
  std::vector<ValueInfo> values;
  std::vector<std::unique_ptr<detail::PreparedOp>> ops;
  // Chains of per-element ops run as one op (chain_per_element_ops): for op i, `runner[i]` is
  // what runs at its step (ops[i] itself, or the chain it heads; nullptr for an op inside a
  // chain, which does not run) and `writes[i]` the value it writes (i + 1, or the value of the
  // chain's last op).
  bool chain = true;  // InterpreterOptions::chain_per_element_ops
  std::vector<std::unique_ptr<detail::PreparedOp>> chains;
  std::vector<const detail::PreparedOp*> runner;
  std::vector<std::size_t> writes;
  std::vector<std::vector<std::int32_t>> extra_inputs;  // a chain's inputs after its first op's
  std::size_t last_op = 0;          // ops after the one producing the output are not run
  std::size_t images_per_pass = 1;  // see plan_memory
  // Lifetime of every value in steps (step 0: the input transpose, step i + 1: op i, then one
  // step for the output transpose), with the bytes of one image; `lifetimes_for` scales them by the
  // batch.
  std::vector<ValueLifetime> lifetimes;

  // What one run needs besides the model: the arena planned for `batch` images and a Buffer
  // view per value into it. Runs take a state from `idle` (or make one) and give it back, so
  // steady-state runs allocate nothing and concurrent runs never share a state.
  struct RunState {
    std::size_t batch = 0;
    std::unique_ptr<std::uint64_t[]> storage;
    std::size_t storage_words = 0;
    std::vector<Buffer> buffers;
    std::vector<std::vector<const Buffer*>> inputs;  // per op, pointers into `buffers`
  };
  mutable std::mutex idle_mutex;
  mutable std::vector<std::unique_ptr<RunState>> idle;

  void prepare() {
    values.push_back(input_info(model));
    for (std::size_t i = 0; i < model.ops.size(); ++i) {
      const Op& op = model.ops[i];
      const std::string where = detail::op_where(i, op);
      std::vector<ValueInfo> inputs;
      for (std::size_t k = 0; k < op.inputs.size(); ++k) {
        const std::int32_t v = op.inputs[k];
        detail::require(v >= 0 && static_cast<std::size_t>(v) < values.size(), where,
                        "input " + std::to_string(k) + " is value " + std::to_string(v) +
                            ", which is not defined before the op (expected a value id below " +
                            std::to_string(values.size()) + ")");
        inputs.push_back(values[static_cast<std::size_t>(v)]);
      }
      ValueInfo out;
      ops.push_back(detail::prepare_op(model, op, inputs, out, where));
      detail::require(
          out.c >= 1 && out.h >= 1 && out.w >= 1 && out.c * out.h * out.w <= kMaxValueElements,
          where,
          "output of " + std::to_string(out.c) + "x" + std::to_string(out.h) + "x" +
              std::to_string(out.w) + " elements is empty or too large");
      values.push_back(out);
    }
    detail::require(model.output >= 0 && static_cast<std::size_t>(model.output) < values.size(),
                    "model output", "value " + std::to_string(model.output) + " does not exist");
    plan_memory();
  }

  // Consecutive per-element ops (batch norm, PReLU, ReLU, ...) where each consumes the previous
  // one's output and nothing else does become one chain op: one pass over memory instead of
  // one per op (ReActNet-A's bias -> PReLU -> bias after every shortcut, QuickNet's ReLU -> batch
  // norm). Same results: each element goes through the same functions in the same order. A
  // binary conv with float output can head a chain (`heads_chains`): the others then run on its
  // rows as they are finished.
  void chain_ops(std::size_t steps_run) {
    runner.assign(ops.size(), nullptr);
    writes.assign(ops.size(), 0);
    extra_inputs.assign(ops.size(), {});
    std::vector<std::size_t> uses(values.size(), 0);
    for (std::size_t i = 0; i < steps_run; ++i) {
      for (std::int32_t v : model.ops[i].inputs) ++uses[static_cast<std::size_t>(v)];
    }
    ++uses[static_cast<std::size_t>(model.output)];
    for (std::size_t i = 0; i < ops.size(); ++i) {
      runner[i] = ops[i].get();
      writes[i] = i + 1;
    }
    for (std::size_t i = 0; chain && i < steps_run; ++i) {
      if (!ops[i]->per_element() && !ops[i]->heads_chains()) continue;
      const ValueInfo& v = values[i + 1];
      std::size_t j = i;
      std::vector<std::int32_t> others;  // per member after the first: its other input, or -1
      while (j + 1 < steps_run && uses[j + 1] == 1) {
        const std::vector<std::int32_t>& in = model.ops[j + 1].inputs;
        const auto self = static_cast<std::int32_t>(j + 1);
        if (ops[j + 1]->per_element() && in.size() == 1 && in[0] == self) {
          others.push_back(-1);
        } else if (ops[j + 1]->per_element_binary() && in.size() == 2 &&
                   (in[0] == self) != (in[1] == self) && values[j + 2].c == v.c &&
                   values[j + 2].h == v.h && values[j + 2].w == v.w) {
          // The other input must exist before the chain starts (values inside it are never
          // written).
          const std::int32_t other = in[0] == self ? in[1] : in[0];
          if (other > static_cast<std::int32_t>(i)) break;
          others.push_back(other);
        } else {
          break;
        }
        ++j;
      }
      if (j == i) continue;
      std::vector<const detail::PreparedOp*> members{ops[i].get()};
      std::vector<std::size_t> other_input{0};
      extra_inputs[i].clear();
      for (std::size_t k = i + 1; k <= j; ++k) {
        members.push_back(ops[k].get());
        const std::int32_t other = others[k - i - 1];
        if (other < 0) {
          other_input.push_back(0);
        } else {
          extra_inputs[i].push_back(other);
          other_input.push_back(extra_inputs[i].size());  // after the first op's one input
        }
      }
      chains.push_back(detail::chain_per_element_ops(std::move(members), std::move(other_input),
                                                     static_cast<std::size_t>(v.c),
                                                     static_cast<std::size_t>(v.h * v.w)));
      runner[i] = chains.back().get();
      writes[i] = j + 1;
      for (std::size_t k = i + 1; k <= j; ++k) runner[k] = nullptr;
      i = j;
    }
  }

  void plan_memory() {
    const auto output = static_cast<std::size_t>(model.output);
    last_op = output == 0 ? 0 : output - 1;
    const std::size_t steps_run = output == 0 ? 0 : last_op + 1;
    chain_ops(steps_run);
    lifetimes.assign(values.size(), ValueLifetime{});
    for (std::size_t v = 0; v <= steps_run; ++v) {  // the input and every value of an op that runs
      lifetimes[v] = ValueLifetime{values[v].image_words() * sizeof(std::uint64_t),
                                   static_cast<std::int64_t>(v), static_cast<std::int64_t>(v)};
    }
    for (std::size_t i = 0; i < steps_run; ++i) {
      for (std::int32_t v : model.ops[i].inputs) {
        ValueLifetime& l = lifetimes[static_cast<std::size_t>(v)];
        l.last = std::max(l.last, static_cast<std::int64_t>(i + 1));
      }
    }
    for (std::size_t i = 0; i < steps_run; ++i) {
      if (runner[i] == nullptr || writes[i] == i + 1) continue;
      // A chain from op i: its last value is written at step i + 1, the values inside it never.
      lifetimes[writes[i]].first = static_cast<std::int64_t>(i + 1);
      for (std::size_t v = i + 1; v < writes[i]; ++v) lifetimes[v] = ValueLifetime{};
    }
    lifetimes[output].last = static_cast<std::int64_t>(steps_run + 1);  // read by the transpose
    // A batch goes through the ops in passes of as many images as fit in kPassBytes of arena.
    const std::size_t image_arena =
        std::max<std::size_t>(1, plan_arena(lifetimes, kArenaAlignment).bytes);
    if (image_arena > max_activation_bytes) refuse_arena(image_arena);
    images_per_pass = std::max<std::size_t>(1, kPassBytes / image_arena);
  }

  // Throws for a model whose activations of one image exceed the limit, naming the largest
  // values so that the user sees which layers are responsible.
  [[noreturn]] void refuse_arena(std::size_t image_arena) const {
    std::vector<std::size_t> order(values.size());
    for (std::size_t v = 0; v < order.size(); ++v) order[v] = v;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return lifetimes[a].bytes > lifetimes[b].bytes;
    });
    std::string largest;
    for (std::size_t k = 0; k < std::min<std::size_t>(3, order.size()); ++k) {
      const std::size_t v = order[k];
      const ValueInfo& info = values[v];
      largest += std::string(k ? ", " : "") +
                 (v == 0 ? std::string("the input") : detail::op_where(v - 1, model.ops[v - 1])) +
                 " (" + std::to_string(info.c) + "x" + std::to_string(info.h) + "x" +
                 std::to_string(info.w) + " " + dtype_name(info.dtype) + ", " +
                 std::to_string(lifetimes[v].bytes) + " bytes)";
    }
    throw ModelError(
        "model activations: one image needs an arena of " + std::to_string(image_arena) +
        " bytes, more than the limit of " + std::to_string(max_activation_bytes) +
        " bytes (InterpreterOptions::max_activation_bytes); largest values: " + largest);
  }

  // Throws for the first NaN or infinity of the input (kReject), naming where it is.
  void check_finite(const char* what, const float* input, std::size_t size) const {
    // A branch-free pass that vectorizes; the position is searched only when something is found.
    std::uint32_t any = 0;
    for (std::size_t i = 0; i < size; ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, input + i, sizeof bits);
      any |= static_cast<std::uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
    }
    if (!any) return;
    std::size_t i = 0;
    while (std::isfinite(input[i])) ++i;
    const ValueInfo& in = values[0];
    const auto image = static_cast<std::size_t>(in.c * in.h * in.w);
    const auto c = static_cast<std::size_t>(in.c), w = static_cast<std::size_t>(in.w);
    const auto hw = static_cast<std::size_t>(in.h) * w, at = i % image;
    const std::size_t channel = channels_last ? at % c : at / hw;
    const std::size_t pixel = channels_last ? at / c : at % hw;
    const std::string value = std::isnan(input[i]) ? "NaN" : input[i] > 0 ? "+inf" : "-inf";
    throw std::invalid_argument(std::string(what) + ": input value " + std::to_string(i) +
                                " (image " + std::to_string(i / image) + ", channel " +
                                std::to_string(channel) + ", row " + std::to_string(pixel / w) +
                                ", column " + std::to_string(pixel % w) + ") is " + value +
                                "; inputs must be finite (InterpreterOptions::non_finite = "
                                "NonFiniteInput::kPropagate runs them through)");
  }

  std::vector<ValueLifetime> lifetimes_for(std::size_t batch) const {
    std::vector<ValueLifetime> l = lifetimes;
    for (ValueLifetime& v : l) v.bytes *= batch;
    return l;
  }

  std::unique_ptr<RunState> acquire(std::size_t batch) const {
    std::unique_ptr<RunState> state;
    {
      std::lock_guard<std::mutex> lock(idle_mutex);
      if (!idle.empty()) {
        // Prefer a state already planned for this batch.
        auto it = std::find_if(idle.begin(), idle.end(),
                               [&](const auto& st) { return st->batch == batch; });
        if (it == idle.end()) it = idle.end() - 1;
        state = std::move(*it);
        idle.erase(it);
      }
    }
    if (!state) {
      state = std::make_unique<RunState>();
      state->buffers.resize(values.size());
      state->inputs.resize(model.ops.size());
      for (std::size_t i = 0; i < model.ops.size(); ++i) {
        for (std::int32_t v : model.ops[i].inputs) {
          state->inputs[i].push_back(&state->buffers[static_cast<std::size_t>(v)]);
        }
        for (std::int32_t v : extra_inputs[i]) {
          state->inputs[i].push_back(&state->buffers[static_cast<std::size_t>(v)]);
        }
      }
    }
    if (state->batch != batch) {
      const std::vector<ValueLifetime> l = lifetimes_for(batch);
      const ArenaPlan plan = plan_arena(l, kArenaAlignment);
      const std::size_t words = plan.bytes / sizeof(std::uint64_t) + kArenaAlignment / 8;
      if (state->storage_words < words) {
        state->storage.reset(new std::uint64_t[words]);
        state->storage_words = words;
        // Not zero: an op that claims to write its whole output but leaves something unwritten
        // shows up in tests as garbage instead of passing by chance on fresh zero pages.
        std::memset(state->storage.get(), 0xA5, words * sizeof(std::uint64_t));
      }
      const auto addr = reinterpret_cast<std::uintptr_t>(state->storage.get());
      std::uint64_t* base =
          state->storage.get() + ((kArenaAlignment - addr % kArenaAlignment) % kArenaAlignment) / 8;
      for (std::size_t v = 0; v < values.size(); ++v) {
        state->buffers[v].data = l[v].bytes != 0 ? base + plan.offsets[v] / 8 : nullptr;
        state->buffers[v].size = l[v].bytes / sizeof(std::uint64_t);
      }
      state->batch = batch;
    }
    return state;
  }

  void release(std::unique_ptr<RunState> state) const {
    std::lock_guard<std::mutex> lock(idle_mutex);
    idle.push_back(std::move(state));
  }

  // Throws unless `size` floats are `batch` > 0 input images.
  void check_size(const char* what, std::size_t size, std::size_t batch) const {
    const ValueInfo& in = values[0];
    const auto c = static_cast<std::size_t>(in.c), hw = static_cast<std::size_t>(in.h * in.w);
    if (batch == 0 || size / batch != c * hw || size % batch != 0) {
      throw std::invalid_argument(std::string(what) + ": input has " + std::to_string(size) +
                                  " floats, expected batch " + std::to_string(batch) + " x " +
                                  std::to_string(c * hw) + " (C,H,W = " + std::to_string(in.c) +
                                  "," + std::to_string(in.h) + "," + std::to_string(in.w) + ")");
    }
  }

  // One run into `result` (batch x the output image). With kProfile the op loop also reads the
  // clock and fills `timings`; the two instantiations share everything else, so their outputs are
  // identical and `run` (kProfile = false) contains no clock call at all.
  template <bool kProfile>
  void run(const char* what, const float* input, std::size_t size, std::size_t batch, float* result,
           std::vector<OpTiming>* timings) const {
    check_size(what, size, batch);
    const ValueInfo& in = values[0];
    const auto c = static_cast<std::size_t>(in.c), hw = static_cast<std::size_t>(in.h * in.w);
    if (non_finite == NonFiniteInput::kReject) check_finite(what, input, size);
    const ValueInfo& out = values[static_cast<std::size_t>(model.output)];
    const auto out_image = static_cast<std::size_t>(out.c * out.h * out.w);
    if constexpr (kProfile) timings->clear();
    // Passes of at most images_per_pass images through all ops: no op mixes images, so the
    // result is the same as one pass, and a pass's activations stay in cache.
    std::size_t pass = std::min(batch, images_per_pass);
    const int threads_now = threads.load();
    const auto t = static_cast<std::size_t>(std::max(threads_now, 1));
    if (!kProfile && t > 1 && (batch % t == 0 || batch >= 4 * t)) {
      // Enough images for every thread: passes of equal size run in parallel, each on one
      // thread with its own arena, so no op waits for the others (small ops would spend more
      // time synchronizing than computing if each were split over the threads).
      const std::size_t passes = t * (((batch + pass - 1) / pass + t - 1) / t);
      pass = (batch + passes - 1) / passes;
      struct Pass {
        const Impl* self;
        const float* input;
        float* result;
        std::size_t batch, pass, in_image, out_image;
      } job{this, input, result, batch, pass, c * hw, out_image};
      const std::size_t count = (batch + pass - 1) / pass;
      detail::run_tasks(
          count, threads_now,
          [](void* context, std::size_t i) {
            const Pass& j = *static_cast<const Pass*>(context);
            const std::size_t first = i * j.pass, n = std::min(j.pass, j.batch - first);
            std::unique_ptr<RunState> state = j.self->acquire(j.pass);
            j.self->template run_pass<false>(*state, j.input + first * j.in_image, n,
                                             j.result + first * j.out_image, nullptr, true, 1);
            j.self->release(std::move(state));
          },
          &job, task_runner);
      return;
    }
    std::unique_ptr<RunState> state = acquire(pass);
    for (std::size_t first = 0; first < batch; first += pass) {
      const std::size_t n = std::min(pass, batch - first);
      run_pass<kProfile>(*state, input + first * c * hw, n, result + first * out_image, timings,
                         first == 0, threads_now);
    }
    release(std::move(state));
  }

  // One pass of `batch` images (at most the batch `state` is planned for) on `op_threads`
  // threads: input transpose, every op, output transpose into `result`. With kProfile, op times
  // are appended (`first_pass`) or added to the entries of the earlier passes.
  template <bool kProfile>
  void run_pass(RunState& state, const float* input, std::size_t batch, float* result,
                std::vector<OpTiming>* timings, bool first_pass, int op_threads) const {
    const ValueInfo& in = values[0];
    const auto c = static_cast<std::size_t>(in.c), hw = static_cast<std::size_t>(in.h * in.w);
    std::vector<Buffer>& buffers = state.buffers;
    float* x = buffers[0].f();
    buffers[0].data[(batch * c * hw - 1) / 2] = 0;  // the padding half of an odd float count
    if (channels_last || c == 1 || hw == 1) {       // NHWC given, or the same layout
      std::memcpy(x, input, batch * c * hw * sizeof(float));
    } else {
      for (std::size_t n = 0; n < batch; ++n) {  // NCHW -> NHWC
        for (std::size_t ch = 0; ch < c; ++ch) {
          for (std::size_t p = 0; p < hw; ++p)
            x[(n * hw + p) * c + ch] = input[(n * c + ch) * hw + p];
        }
      }
    }
    const detail::RunContext ctx{kernels, op_threads, task_runner};
    const auto output = static_cast<std::size_t>(model.output);
    for (std::size_t i = 0; output > 0 && i <= last_op; ++i) {
      using Clock = std::chrono::steady_clock;
      [[maybe_unused]] Clock::time_point start;
      if constexpr (kProfile) start = Clock::now();
      const detail::PreparedOp* op = runner[i];
      if (op != nullptr) {  // else: op i is inside a chain that ran at an earlier step
        Buffer& out = buffers[writes[i]];
        if (!op->writes_whole_output()) {
          std::memset(out.data, 0, batch * values[writes[i]].image_words() * sizeof(std::uint64_t));
        }
        op->run(ctx, state.inputs[i], out, batch);
      }
      if constexpr (kProfile) {
        const std::chrono::duration<double> elapsed = Clock::now() - start;
        const OpTiming t = timing(i, batch, op != nullptr ? elapsed.count() : 0.0);
        if (first_pass) {
          timings->push_back(t);
        } else {
          OpTiming& total = (*timings)[i];
          total.seconds += t.seconds;
          total.binary_macs += t.binary_macs;
          total.float_macs += t.float_macs;
        }
      }
    }
    const ValueInfo& out = values[output];
    const auto oc = static_cast<std::size_t>(out.c), ohw = static_cast<std::size_t>(out.h * out.w);
    const Buffer& ob = buffers[output];
    if (out.dtype != DType::kBits && (channels_last || oc == 1 || ohw == 1)) {  // NHWC wanted
      std::memcpy(result, ob.f(), batch * oc * ohw * sizeof(float));
      return;
    }
    if (channels_last) {  // bits to +-1, NHWC
      for (std::size_t r = 0; r < batch * ohw; ++r) {
        for (std::size_t ch = 0; ch < oc; ++ch) {
          result[r * oc + ch] = bit_value(get_bit(ob.b() + r * words_for_bits(oc), ch));
        }
      }
      return;
    }
    for (std::size_t n = 0; n < batch; ++n) {  // NHWC -> NCHW
      for (std::size_t p = 0; p < ohw; ++p) {
        for (std::size_t ch = 0; ch < oc; ++ch) {
          result[(n * oc + ch) * ohw + p] =
              out.dtype == DType::kBits
                  ? bit_value(get_bit(ob.b() + (n * ohw + p) * words_for_bits(oc), ch))
                  : ob.f()[(n * ohw + p) * oc + ch];
        }
      }
    }
  }

  OpTiming timing(std::size_t i, std::size_t batch, double seconds) const {
    const Op& op = model.ops[i];
    OpTiming t;
    t.index = i;
    t.type = op_name(op.type);
    t.name = op.name;
    t.binary = detail::op_def(op.type).family == detail::OpFamily::kBinary;
    t.seconds = seconds;
    const auto n = static_cast<std::int64_t>(batch);
    t.binary_macs = ops[i]->binary_macs() * n;
    t.float_macs = ops[i]->float_macs() * n;
    return t;
  }
};

Interpreter::Interpreter(Model model, InterpreterOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->model = std::move(model);
  impl_->kernels = options.kernels != nullptr ? options.kernels : &active_kernels();
  impl_->threads = options.threads;
  impl_->max_activation_bytes = options.max_activation_bytes;
  impl_->non_finite = options.non_finite;
  impl_->channels_last = options.channels_last;
  impl_->task_runner = options.task_runner;
  impl_->chain = options.chain_per_element_ops;
  impl_->prepare();
}

Interpreter Interpreter::from_file(const std::string& path, InterpreterOptions options) {
  return Interpreter(load_model(path, options.max_model_bytes), options);
}

Interpreter Interpreter::from_bytes(const std::uint8_t* bytes, std::size_t size,
                                    InterpreterOptions options) {
  if (size > options.max_model_bytes) {
    throw ModelError(
        "<memory>: model of " + std::to_string(size) + " bytes is larger than the limit of " +
        std::to_string(options.max_model_bytes) + " bytes (InterpreterOptions::max_model_bytes)");
  }
  return Interpreter(parse_model(bytes, size), options);
}

Interpreter::~Interpreter() = default;
Interpreter::Interpreter(Interpreter&&) noexcept = default;
Interpreter& Interpreter::operator=(Interpreter&&) noexcept = default;

std::vector<float> Interpreter::run(const std::vector<float>& input, std::size_t batch) const {
  return run(input.data(), input.size(), batch);
}

std::vector<float> Interpreter::run(const float* input, std::size_t size, std::size_t batch) const {
  impl_->check_size("Interpreter::run", size, batch);
  std::vector<float> result(batch * output_size());
  impl_->run<false>("Interpreter::run", input, size, batch, result.data(), nullptr);
  return result;
}

void Interpreter::run(const float* input, std::size_t size, std::size_t batch,
                      float* output) const {
  impl_->run<false>("Interpreter::run", input, size, batch, output, nullptr);
}

std::vector<float> Interpreter::run_profiled(const float* input, std::size_t size,
                                             std::size_t batch,
                                             std::vector<OpTiming>& timings) const {
  impl_->check_size("Interpreter::run_profiled", size, batch);
  std::vector<float> result(batch * output_size());
  impl_->run<true>("Interpreter::run_profiled", input, size, batch, result.data(), &timings);
  return result;
}

std::vector<std::int64_t> Interpreter::input_shape() const {
  const ValueInfo& v = impl_->values[0];
  return {v.c, v.h, v.w};
}

std::vector<std::int64_t> Interpreter::output_shape() const {
  const ValueInfo& v = impl_->values[static_cast<std::size_t>(impl_->model.output)];
  return {v.c, v.h, v.w};
}

std::size_t Interpreter::output_size() const {
  const auto s = output_shape();
  return static_cast<std::size_t>(s[0] * s[1] * s[2]);
}

std::int64_t Interpreter::binary_macs_per_image() const {
  const Impl& m = *impl_;
  std::int64_t macs = 0;
  for (std::size_t i = 0; m.model.output > 0 && i <= m.last_op; ++i) {
    macs += m.ops[i]->binary_macs();
  }
  return macs;
}

std::size_t Interpreter::activation_bytes(std::size_t batch) const {
  return plan_arena(impl_->lifetimes_for(std::min(batch, impl_->images_per_pass)), kArenaAlignment)
      .bytes;
}

std::size_t Interpreter::live_activation_bytes(std::size_t batch) const {
  return largest_live_bytes(impl_->lifetimes_for(std::min(batch, impl_->images_per_pass)));
}

std::size_t Interpreter::images_per_pass() const { return impl_->images_per_pass; }

const Model& Interpreter::model() const { return impl_->model; }

void Interpreter::set_threads(int threads) { impl_->threads = threads < 1 ? 1 : threads; }

}  // namespace onebit::runtime
