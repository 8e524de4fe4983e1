#include "onebit/runtime/bench.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>

#include "onebit/runtime/builder.h"
#include "ops.h"

namespace onebit::runtime {

std::string BinaryConvShape::name() const {
  return std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width);
}

std::int64_t BinaryConvShape::binary_macs() const {
  return batch * height * width * channels * channels * kernel * kernel;
}

struct BinaryConvBench::Impl {
  BinaryConvShape shape;
  Model model;
  std::unique_ptr<detail::PreparedOp> op;
  std::vector<std::uint64_t> in_words, out_words;
  detail::Buffer in, out;
  detail::RunContext ctx;
};

BinaryConvBench::BinaryConvBench(const BinaryConvShape& shape, int threads,
                                 const KernelTable* kernels)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.shape = shape;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> coin(0, 1);
  std::normal_distribution<float> normal;
  const std::int64_t c = shape.channels, k = shape.kernel;
  std::vector<float> w(static_cast<std::size_t>(c * c * k * k));
  for (float& v : w) v = coin(rng) ? 1.0f : -1.0f;
  std::vector<float> mult(static_cast<std::size_t>(c)), bias(mult.size());
  for (std::size_t i = 0; i < mult.size(); ++i) mult[i] = 0.5f + coin(rng), bias[i] = normal(rng);
  ModelBuilder b;
  ValueRef x = b.sign(b.input({c, shape.height, shape.width}));
  x = b.conv2d(
      x, Conv2dParams(c, k).padding(PaddingMode::kSame).padding_value(1.0f).binary_kernel(true), w);
  x = b.batch_norm(x, mult, bias);
  if (shape.output_bits) x = b.sign(x);
  b.output(x);
  m.model = b.build();  // quantize -> binary_conv2d (fused output)
  const detail::ValueInfo in_info{DType::kBits, c, shape.height, shape.width};
  detail::ValueInfo out_info;
  m.op = detail::prepare_op(m.model, m.model.ops.at(1), {in_info}, out_info, "bench conv");
  const auto batch = static_cast<std::size_t>(shape.batch);
  m.in_words.resize(batch * in_info.image_words());
  std::mt19937_64 bits(7);
  const std::size_t cw = words_for_bits(static_cast<std::size_t>(c));
  const BitWord tail = c % 64 == 0 ? ~BitWord{0} : (BitWord{1} << (c % 64)) - 1;
  for (std::size_t i = 0; i < m.in_words.size(); ++i) {
    m.in_words[i] = bits() & (i % cw + 1 == cw ? tail : ~BitWord{0});
  }
  m.out_words.assign(batch * out_info.image_words(), 0);
  m.in = detail::Buffer{m.in_words.data(), m.in_words.size()};
  m.out = detail::Buffer{m.out_words.data(), m.out_words.size()};
  m.ctx.kernels = kernels != nullptr ? kernels : &active_kernels();
  m.ctx.threads = threads;
}

BinaryConvBench::~BinaryConvBench() = default;

void BinaryConvBench::run() {
  impl_->op->run(impl_->ctx, {&impl_->in}, impl_->out,
                 static_cast<std::size_t>(impl_->shape.batch));
}

const BinaryConvShape& BinaryConvBench::shape() const { return impl_->shape; }

struct OpBench::Impl {
  Model model;
  std::unique_ptr<detail::PreparedOp> op;
  std::vector<std::vector<std::uint64_t>> in_words;
  std::vector<detail::Buffer> in;
  std::vector<const detail::Buffer*> in_ptrs;
  std::vector<std::uint64_t> out_words;
  detail::Buffer out;
  detail::ValueInfo out_info;
  detail::RunContext ctx;
  std::size_t batch = 1;
};

OpBench::OpBench(const Model& model, std::size_t op_index, std::int64_t batch, int threads,
                 const KernelTable* kernels)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.model = model;
  if (op_index >= m.model.ops.size()) {
    throw std::out_of_range("OpBench: op index " + std::to_string(op_index) +
                            " out of range, the model has " + std::to_string(m.model.ops.size()) +
                            " ops");
  }
  m.batch = static_cast<std::size_t>(std::max<std::int64_t>(batch, 1));
  // Value infos of the input and of every op up to op_index (value i + 1 is op i's output).
  const auto& s = m.model.input_shape;
  std::vector<detail::ValueInfo> values{
      s.size() == 3 ? detail::ValueInfo{DType::kFloat32, s[0], s[1], s[2]}
                    : detail::ValueInfo{DType::kFloat32, s.empty() ? 0 : s[0], 1, 1}};
  for (std::size_t i = 0; i <= op_index; ++i) {
    const Op& op = m.model.ops[i];
    std::vector<detail::ValueInfo> inputs;
    for (std::int32_t v : op.inputs) inputs.push_back(values.at(static_cast<std::size_t>(v)));
    detail::ValueInfo out;
    auto prepared = detail::prepare_op(m.model, op, inputs, out, detail::op_where(i, op));
    values.push_back(out);
    if (i == op_index) m.op = std::move(prepared), m.out_info = out;
  }
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal;
  const Op& op = m.model.ops[op_index];
  m.in.resize(op.inputs.size());
  m.in_words.resize(op.inputs.size());
  for (std::size_t k = 0; k < op.inputs.size(); ++k) {
    const detail::ValueInfo& v = values[static_cast<std::size_t>(op.inputs[k])];
    m.in_words[k].resize(m.batch * v.image_words());
    detail::Buffer& b = m.in[k];
    b = detail::Buffer{m.in_words[k].data(), m.in_words[k].size()};
    if (v.dtype == DType::kBits) {
      const std::size_t cw = words_for_bits(static_cast<std::size_t>(v.c));
      const BitWord tail = v.c % 64 == 0 ? ~BitWord{0} : (BitWord{1} << (v.c % 64)) - 1;
      for (std::size_t i = 0; i < b.size; ++i) {
        b.data[i] = rng() & (i % cw + 1 == cw ? tail : ~BitWord{0});
      }
    } else {
      const std::size_t n = m.batch * static_cast<std::size_t>(v.c * v.h * v.w);
      for (std::size_t i = 0; i < n; ++i) b.f()[i] = normal(rng);
    }
  }
  for (const detail::Buffer& b : m.in) m.in_ptrs.push_back(&b);
  m.out_words.assign(m.batch * m.out_info.image_words(), 0);
  m.out = detail::Buffer{m.out_words.data(), m.out_words.size()};
  m.ctx.kernels = kernels != nullptr ? kernels : &active_kernels();
  m.ctx.threads = threads;
}

OpBench::~OpBench() = default;

void OpBench::run() { impl_->op->run(impl_->ctx, impl_->in_ptrs, impl_->out, impl_->batch); }

std::int64_t OpBench::float_macs() const {
  return impl_->op->float_macs() * static_cast<std::int64_t>(impl_->batch);
}

std::int64_t OpBench::output_elements() const {
  const detail::ValueInfo& o = impl_->out_info;
  return o.c * o.h * o.w * static_cast<std::int64_t>(impl_->batch);
}

double measure_core_clock_hz() {
  constexpr std::uint64_t kLoops = 200'000;  // x 16 dependent adds = 3.2 M cycles per trial
  double best = 0.0;
  for (int trial = 0; trial < 20; ++trial) {
    std::uint64_t x = trial;
    std::uint64_t step = 1;
    asm volatile("" : "+r"(step));  // a register value the compiler cannot fold
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < kLoops; ++i) {
#if defined(__x86_64__)
      // Register + register: Intel cores since Golden Cove fold chains of add-immediate at
      // rename (several per cycle: 15 "GHz" measured on a Xeon), never register adds.
      asm volatile(
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
          "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
          : "+r"(x)
          : "r"(step));
#else
      x = x * 3 + step;
#endif
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(kLoops) * 16.0 / s);
  }
  return best;
}

BinaryPeak measure_binary_peak(const KernelTable* kernels, int trials, double seconds_per_trial) {
  if (trials < 1 || !(seconds_per_trial > 0)) {
    throw std::invalid_argument("measure_binary_peak: trials = " + std::to_string(trials) +
                                ", seconds_per_trial = " + std::to_string(seconds_per_trial) +
                                ", expected at least 1 trial of more than 0 seconds");
  }
  const KernelTable& k = kernels != nullptr ? *kernels : active_kernels();
  using Clock = std::chrono::steady_clock;
  const auto time_blocks = [&](std::uint64_t blocks, PeakLoopResult& out) {
    const auto t0 = Clock::now();
    out = k.binary_peak_loop(blocks, 0x0123456789ABCDEFull);
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  // Calibration: grow the block count until one call takes at least 1 ms.
  PeakLoopResult r;
  std::uint64_t blocks = 64;
  double s = time_blocks(blocks, r);
  while (s < 1e-3 && blocks < (std::uint64_t{1} << 40)) s = time_blocks(blocks *= 4, r);
  blocks = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(static_cast<double>(blocks) * seconds_per_trial / s));
  // Warm-up of about 20 ms before the timed trials, so that the core has left its idle clock
  // (a trial at a ramping clock would make the peak too low and every percent of it too high).
  const auto warm_until = Clock::now() + std::chrono::milliseconds(20);
  while (Clock::now() < warm_until) time_blocks(blocks, r);
  BinaryPeak p;
  p.isa = k.isa;
  p.cpu = cpu_model_name();
  p.trials = trials;
  for (int t = 0; t < trials; ++t) {
    s = time_blocks(blocks, r);
    p.binary_macs = r.binary_macs;
    p.binary_macs_per_s = std::max(p.binary_macs_per_s, static_cast<double>(r.binary_macs) / s);
  }
  p.clock_hz = measure_core_clock_hz();
  p.binary_macs_per_cycle = p.binary_macs_per_s / p.clock_hz;
  return p;
}

const BinaryPeak& binary_peak(Isa isa) {
  static std::mutex mutex;
  static std::map<Isa, BinaryPeak> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(isa);
  if (it == cache.end()) it = cache.emplace(isa, measure_binary_peak(&kernels_for(isa))).first;
  return it->second;
}

std::string cpu_model_name() {
  std::ifstream info("/proc/cpuinfo");
  std::string line, name, family, model;
  const auto value = [](const std::string& l) {
    const auto colon = l.find(':');
    if (colon == std::string::npos) return std::string();
    const auto start = l.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? std::string() : l.substr(start);
  };
  while (std::getline(info, line) && (name.empty() || family.empty() || model.empty())) {
    if (line.rfind("model name", 0) == 0 && name.empty()) {
      name = value(line);
    } else if (line.rfind("cpu family", 0) == 0 && family.empty()) {
      family = value(line);
    } else if (line.rfind("model", 0) == 0 && line.rfind("model name", 0) != 0 && model.empty()) {
      model = value(line);
    }
  }
  if (name.empty()) return "unknown CPU";
  if (!family.empty() && !model.empty()) name += " (family " + family + " model " + model + ")";
  return name;
}

BenchResult bench_binary_conv(const BinaryConvShape& shape, int threads, double min_seconds,
                              const KernelTable* kernels) {
  const KernelTable& table = kernels != nullptr ? *kernels : active_kernels();
  const BinaryPeak& peak = binary_peak(table.isa);
  BinaryConvBench bench(shape, threads, &table);
  bench.run();  // warm-up: caches, page faults, the thread pool
  BenchResult r;
  r.shape = shape.name();
  r.isa = isa_name(table.isa);
  r.threads = threads;
  r.peak_binary_macs_per_cycle = peak.binary_macs_per_cycle;
  r.peak_binary_macs_per_s = peak.binary_macs_per_s;
  r.clock_hz = measure_core_clock_hz();
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0.0;
  do {
    bench.run();
    ++r.iterations;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (elapsed < min_seconds);
  r.seconds_per_run = elapsed / static_cast<double>(r.iterations);
  r.binary_macs_per_s = static_cast<double>(shape.binary_macs()) / r.seconds_per_run;
  r.percent_of_peak = 100.0 * r.binary_macs_per_s / (peak.binary_macs_per_s * std::max(threads, 1));
  return r;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  const std::size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  double m = values[mid];
  if (values.size() % 2 == 0) {
    m = 0.5 *
        (m + *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid)));
  }
  return m;
}

std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      try {
        return static_cast<std::size_t>(std::stoll(line.substr(6))) * 1024;
      } catch (const std::exception&) {
        return 0;
      }
    }
  }
  return 0;
}

ModelProfile profile_model(const Interpreter& net, const float* input, std::size_t size,
                           std::size_t batch, int runs) {
  if (runs < 1) {
    throw std::invalid_argument("profile_model: runs must be >= 1, got " + std::to_string(runs));
  }
  std::vector<std::vector<OpTiming>> all;
  std::vector<OpTiming> timings;
  for (int r = 0; r < runs + 1; ++r) {
    net.run_profiled(input, size, batch, timings);
    if (r > 0) all.push_back(timings);  // the first run warms up
  }
  ModelProfile p;
  p.runs = runs;
  for (std::size_t i = 0; i < all.front().size(); ++i) {
    std::vector<double> v;
    for (const auto& t : all) v.push_back(t[i].seconds);
    OpProfile row;
    row.op = all.front()[i];
    row.median_seconds = median(std::move(v));
    p.total_seconds += row.median_seconds;
    if (row.op.binary) p.binary_seconds += row.median_seconds;
    p.ops.push_back(std::move(row));
  }
  for (OpProfile& row : p.ops) {
    row.share = p.total_seconds > 0 ? row.median_seconds / p.total_seconds : 0.0;
  }
  return p;
}

}  // namespace onebit::runtime
