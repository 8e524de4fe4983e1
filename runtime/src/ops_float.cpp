// Float ops on NHWC activations: conv2d / dense (im2col + a register-friendly GEMM whose inner
// loop runs over output channels), batch norm, max/average/global average pooling, add, mul,
// ReLU, PReLU, sigmoid, clip, k-bit level quantization, softmax. Ops that accept bits inputs
// read them as +-1.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>

#include "ops.h"

namespace onebit::runtime::detail {

namespace {

/// Float conv2d and dense on NHWC activations, with weights laid out once at prepare time. Three
/// paths, all through the kernel table: depthwise convs (one input channel per group) run the
/// depthwise kernel over output rows; 1x1 stride-1 unpadded convs and dense layers run the float
/// GEMM directly on the input rows; every other conv gathers patches (im2col) per group and row
/// chunk and runs the GEMM on them.
class FloatConv final : public PreparedOp {
 public:
  bool writes_whole_output() const override { return true; }
  FloatConv(const Model& model, const Op& op, const ValueInfo& in, ValueInfo& out,
            const std::string& where, bool dense);
  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override;
  std::int64_t float_macs() const override {
    return win_.out_h * win_.out_w * c_out_ * static_cast<std::int64_t>(k_);
  }

 private:
  enum class Path { kDirect, kIm2col, kImplicit, kDepthwise };
  void im2col(const float* image, std::int64_t g, std::size_t p0, std::size_t p1, float* col) const;
  void run_gemm(const RunContext& ctx, const float* src, float* dst, std::size_t batch) const;
  void run_depthwise(const RunContext& ctx, const float* src, float* dst, std::size_t batch) const;
  void run_implicit(const RunContext& ctx, const float* src, float* dst, std::size_t batch) const;

  Window win_;
  std::int64_t c_in_ = 0, c_out_ = 0, groups_ = 1, cin_g_ = 0, cout_g_ = 0;
  std::size_t k_ = 0, chunk_rows_ = 0;
  Path path_ = Path::kIm2col;
  // kDepthwise: [kh][kw][c_out]. Else per group (group_floats_ apart) the [k][cout_g] matrix in
  // prepack_sgemm_weights' panels.
  std::vector<float> weights_;
  std::size_t group_floats_ = 0;
  // kImplicit: offset of each of the k_ taps x channels from a pixel's window start in the
  // zero-padded image (padded_w_ pixels per row).
  std::vector<std::uint32_t> tap_offsets_;
  std::int64_t padded_h_ = 0, padded_w_ = 0;
  std::vector<float> multiplier_, bias_;
};

// Copies (src) or zeroes (src == nullptr) n floats. im2col copies runs of a few pixels of a few
// channels (27 floats per patch in a 3-channel stem): fixed-size pieces keep them inline rather
// than library calls.
[[gnu::always_inline]] inline void put_floats(const float* src, std::size_t n, float* dst) {
  float zeros[8] = {};
  const std::size_t step = src != nullptr ? 8 : 0;
  const float* from = src != nullptr ? src : zeros;
  for (; n >= 8; n -= 8, from += step, dst += 8) std::memcpy(dst, from, 8 * sizeof(float));
  if (n >= 4) {
    std::memcpy(dst, from, 4 * sizeof(float));
    n -= 4, from += step / 2, dst += 4;
  }
  if (n >= 2) {
    std::memcpy(dst, from, 2 * sizeof(float));
    n -= 2, from += step / 4, dst += 2;
  }
  if (n == 1) *dst = *from;
}

// Convs with fewer input channels per group than this (stems) read their taps straight from a
// zero-padded copy of the input (SgemmArgs::a_offsets) instead of copying tiny runs per tap.
constexpr std::int64_t kImplicitMaxChannels = 16;

// Rows of a GEMM chunk are a multiple of every ISA's register tile rows (6 for AVX2, 8 for
// AVX-512), so that only the last chunk of an image has a partial tile.
constexpr std::size_t kChunkAlign = 24;

FloatConv::FloatConv(const Model& model, const Op& op, const ValueInfo& in, ValueInfo& out,
                     const std::string& where, bool dense) {
  const auto it = op.tensors.find("weight");
  require(it != op.tensors.end() && it->second >= 0 &&
              static_cast<std::size_t>(it->second) < model.tensors.size(),
          where, "missing tensor 'weight'");
  const DType wtype = model.tensors[it->second].dtype;
  require(wtype != DType::kInt32, where, "weight must be float32 or bits");
  const Tensor& w = op_tensor(model, op, "weight", wtype, where);
  c_in_ = in.c;
  if (dense) {
    require(in.h == 1 && in.w == 1, where,
            "dense input must be (features, 1, 1); flatten it first");
    require(w.shape.size() == 2 && w.shape[1] == in.c, where,
            "weight shape must be [out, " + std::to_string(in.c) + "]");
    win_ = read_window(Op{}, in, where, false);
  } else {
    win_ = read_window(op, in, where, false);
    groups_ = scalar_attr(op, "groups", 1, where);
    require(groups_ >= 1 && in.c % groups_ == 0, where, "groups must divide input channels");
    require(w.shape.size() == 4 && w.shape[1] == win_.kh && w.shape[2] == win_.kw &&
                w.shape[3] == in.c / groups_,
            where, "weight shape must be [out, kh, kw, in/groups]");
  }
  c_out_ = w.shape[0];
  require(c_out_ % groups_ == 0, where, "groups must divide output channels");
  cin_g_ = c_in_ / groups_, cout_g_ = c_out_ / groups_;
  k_ = static_cast<std::size_t>(win_.kh * win_.kw * cin_g_);
  require(k_ * static_cast<std::size_t>(c_out_) <= (std::size_t{1} << 28), where,
          "weights too large");
  if (groups_ > 1 && cin_g_ == 1) {
    path_ = Path::kDepthwise;
  } else if (groups_ == 1 && win_.kh == 1 && win_.kw == 1 && win_.sh == 1 && win_.sw == 1 &&
             win_.pad_top + win_.pad_left + win_.pad_bottom + win_.pad_right == 0) {
    path_ = Path::kDirect;
  } else if (cin_g_ < kImplicitMaxChannels) {
    path_ = Path::kImplicit;
  }
  chunk_rows_ = std::clamp<std::size_t>(16384 / k_ / kChunkAlign * kChunkAlign, kChunkAlign,
                                        20 * kChunkAlign);
  const auto weight = [&](std::size_t src) {
    return wtype == DType::kBits ? bit_value(get_bit(w.bits(), src)) : w.floats()[src];
  };
  if (path_ == Path::kImplicit) {
    padded_h_ = win_.in_h + win_.pad_top + win_.pad_bottom;
    padded_w_ = win_.in_w + win_.pad_left + win_.pad_right;
    require(padded_h_ * padded_w_ * c_in_ < (std::int64_t{1} << 32), where,
            "padded input too large");
    for (std::int64_t ky = 0; ky < win_.kh; ++ky) {
      for (std::int64_t kx = 0; kx < win_.kw; ++kx) {
        for (std::int64_t ci = 0; ci < cin_g_; ++ci) {
          tap_offsets_.push_back(
              static_cast<std::uint32_t>((ky * win_.dh * padded_w_ + kx * win_.dw) * c_in_ + ci));
        }
      }
    }
  }
  const auto n = static_cast<std::size_t>(cout_g_);
  if (path_ == Path::kDepthwise) {  // [o][ky][kx][1] -> [ky][kx][o]
    weights_.resize(k_ * static_cast<std::size_t>(c_out_));
    for (std::size_t o = 0; o < static_cast<std::size_t>(c_out_); ++o) {
      for (std::size_t tap = 0; tap < k_; ++tap) {
        weights_[tap * static_cast<std::size_t>(c_out_) + o] = weight(o * k_ + tap);
      }
    }
  } else {
    group_floats_ = sgemm_padded_n(n) * k_;
    weights_.resize(group_floats_ * static_cast<std::size_t>(groups_));
    std::vector<float> wt(k_ * n);  // one group's [k][cout_g]
    for (std::int64_t g = 0; g < groups_; ++g) {
      for (std::size_t og = 0; og < n; ++og) {
        for (std::size_t kk = 0; kk < k_; ++kk) {
          wt[kk * n + og] = weight((static_cast<std::size_t>(g) * n + og) * k_ + kk);
        }
      }
      const std::vector<float> packed = prepack_sgemm_weights(wt.data(), k_, n, n);
      std::copy(packed.begin(), packed.end(),
                weights_.begin() + static_cast<std::ptrdiff_t>(g * group_floats_));
    }
  }
  multiplier_.assign(static_cast<std::size_t>(c_out_), 1.0f);
  bias_.assign(static_cast<std::size_t>(c_out_), 0.0f);
  for (const char* role : {"multiplier", "bias"}) {
    if (!has_tensor(op, role)) continue;
    const Tensor& t = op_tensor(model, op, role, DType::kFloat32, where);
    require(t.shape.size() == 1 && t.shape[0] == c_out_, where,
            std::string("tensor '") + role + "' must have shape [" + std::to_string(c_out_) + "]");
    auto& dst = std::string(role) == "bias" ? bias_ : multiplier_;
    std::copy(t.floats(), t.floats() + c_out_, dst.begin());
  }
  out = ValueInfo{DType::kFloat32, c_out_, win_.out_h, win_.out_w};
}

void FloatConv::im2col(const float* image, std::int64_t g, std::size_t p0, std::size_t p1,
                       float* col) const {
  const auto cin = static_cast<std::size_t>(cin_g_);
  // With one group and no horizontal dilation a kernel row is one run of kw pixels in NHWC.
  const bool whole_rows = groups_ == 1 && win_.dw == 1;
  const auto row_floats = static_cast<std::size_t>(win_.kw) * cin;
  auto oy = static_cast<std::int64_t>(p0) / win_.out_w;
  auto ox = static_cast<std::int64_t>(p0) % win_.out_w;
  for (std::size_t p = p0; p < p1; ++p) {
    const std::int64_t ix0 = win_.in_x(ox, 0);
    const bool row_inside = whole_rows && ix0 >= 0 && ix0 + win_.kw <= win_.in_w;
    float* dst = col + (p - p0) * k_;
    for (std::int64_t ky = 0; ky < win_.kh; ++ky) {
      const std::int64_t iy = win_.in_y(oy, ky);
      if (iy < 0 || iy >= win_.in_h) {
        put_floats(nullptr, row_floats, dst);
        dst += row_floats;
      } else if (row_inside) {
        put_floats(image + static_cast<std::size_t>(iy * win_.in_w + ix0) * cin, row_floats, dst);
        dst += row_floats;
      } else {
        for (std::int64_t kx = 0; kx < win_.kw; ++kx, dst += cin) {
          const std::int64_t ix = win_.in_x(ox, kx);
          const bool inside = ix >= 0 && ix < win_.in_w;
          put_floats(
              inside ? image + static_cast<std::size_t>(iy * win_.in_w + ix) * c_in_ + g * cin_g_
                     : nullptr,
              cin, dst);
        }
      }
    }
    if (++ox == win_.out_w) ox = 0, ++oy;
  }
}

void FloatConv::run_gemm(const RunContext& ctx, const float* src, float* dst,
                         std::size_t batch) const {
  const auto in_pixels = static_cast<std::size_t>(win_.in_h * win_.in_w);
  const auto out_pixels = static_cast<std::size_t>(win_.out_h * win_.out_w);
  const bool direct = path_ == Path::kDirect;
  const std::size_t images = direct ? 1 : batch;
  const std::size_t rows_per_image = direct ? batch * out_pixels : out_pixels;
  const auto threads = static_cast<std::size_t>(std::max(ctx.threads, 1));
  const auto ceil_div = [](std::size_t a, std::size_t b) { return (a + b - 1) / b; };
  // One thread: chunks of chunk_rows_. More threads: the number of row chunks (multiples of 8
  // rows) whose equal share over the threads finishes first, so that no thread idles while
  // another works through a larger share; a direct GEMM with too few rows for every thread
  // (dense at batch 1) also splits its columns, in whole 32-column tiles. Each output is
  // computed the same way whatever the split, so results do not depend on the threads.
  std::size_t chunk = chunk_rows_;
  if (threads > 1) {
    const std::size_t base = ceil_div(rows_per_image, chunk_rows_);
    std::size_t best = SIZE_MAX;
    for (std::size_t c = base; c <= base + 2 * threads; ++c) {
      const std::size_t rows =
          std::max<std::size_t>(8, ceil_div(ceil_div(rows_per_image, c), 8) * 8);
      if (ceil_div(rows_per_image, rows) != c && c != base) continue;
      const std::size_t makespan =
          ceil_div(images * ceil_div(rows_per_image, rows), threads) * rows;
      if (makespan < best) best = makespan, chunk = rows;
    }
  }
  const std::size_t chunks = ceil_div(rows_per_image, chunk);
  const auto n = static_cast<std::size_t>(cout_g_);
  std::size_t col_blocks = 1, block_cols = n;
  if (direct && chunks < threads) {
    const std::size_t tiles = ceil_div(n, 2 * kSgemmPanel);
    block_cols = ceil_div(tiles, std::min(tiles, ceil_div(threads, chunks))) * 2 * kSgemmPanel;
    col_blocks = ceil_div(n, block_cols);
  }
  const auto c_in = static_cast<std::size_t>(c_in_), c_out = static_cast<std::size_t>(c_out_);
  parallel_for(images * chunks * col_blocks, ctx, [&](std::size_t task) {
    const std::size_t block = task % col_blocks, row_task = task / col_blocks;
    const std::size_t image = row_task / chunks, p0 = (row_task % chunks) * chunk;
    const std::size_t p1 = std::min(p0 + chunk, rows_per_image);
    const float* image_in = src + image * in_pixels * c_in;
    float* out = dst + (image * out_pixels + p0) * c_out;
    SgemmArgs args;
    args.m = p1 - p0, args.k = k_, args.ldo = c_out;
    if (direct) {
      const std::size_t o0 = block * block_cols;
      args.a = image_in + p0 * c_in, args.lda = c_in;
      args.b = weights_.data() + o0 * k_;  // whole panels: o0 is a multiple of 16
      args.n = std::min(block_cols, n - o0);
      args.multiplier = multiplier_.data() + o0, args.bias = bias_.data() + o0;
      args.out = out + o0;
      ctx.kernels->sgemm(args);
      return;
    }
    float* col = reinterpret_cast<float*>(thread_scratch(((p1 - p0) * k_ + 1) / 2, 0));
    args.a = col, args.lda = k_, args.n = n;
    for (std::int64_t g = 0; g < groups_; ++g) {
      im2col(image_in, g, p0, p1, col);
      const std::size_t o0 = static_cast<std::size_t>(g) * n;
      args.b = weights_.data() + static_cast<std::size_t>(g) * group_floats_;
      args.multiplier = multiplier_.data() + o0, args.bias = bias_.data() + o0;
      args.out = out + o0;
      ctx.kernels->sgemm(args);
    }
  });
}

void FloatConv::run_depthwise(const RunContext& ctx, const float* src, float* dst,
                              std::size_t batch) const {
  const auto in_pixels = static_cast<std::size_t>(win_.in_h * win_.in_w);
  const auto out_pixels = static_cast<std::size_t>(win_.out_h * win_.out_w);
  const auto c_in = static_cast<std::size_t>(c_in_), c_out = static_cast<std::size_t>(c_out_);
  // A channel multiplier m > 1 (output channel o reads input channel o / m): the kernel wants one
  // input channel per output channel, so each input channel is repeated m times first.
  if (cout_g_ > 1) {  // the caller's scratch slot 1: the tasks below use none
    const auto m = static_cast<std::size_t>(cout_g_);
    float* repeated =
        reinterpret_cast<float*>(thread_scratch((batch * in_pixels * c_out + 1) / 2, 1));
    for (std::size_t p = 0; p < batch * in_pixels; ++p) {
      for (std::size_t o = 0; o < c_out; ++o) repeated[p * c_out + o] = src[p * c_in + o / m];
    }
    src = repeated;
  }
  // Bands of output rows: a few per thread for balance, whole images with one thread or when
  // the op is too small to share (QuickNet's 7x7 blur pool: 3 us on one Zen 5 core, 8 us on two).
  const std::size_t work = out_pixels * c_out * static_cast<std::size_t>(win_.kh * win_.kw);
  const auto threads = work < 8 * kMinParallelElements
                           ? std::size_t{1}
                           : static_cast<std::size_t>(std::max(ctx.threads, 1));
  const auto out_h = static_cast<std::size_t>(win_.out_h);
  const std::size_t band = threads == 1 ? out_h : std::max<std::size_t>(1, out_h / (4 * threads));
  const std::size_t bands = (out_h + band - 1) / band;
  parallel_for(batch * bands, ctx, [&](std::size_t task) {
    const std::size_t image = task / bands, b = task % bands;
    DwconvArgs args;
    args.in = src + image * in_pixels * c_out;
    args.weight = weights_.data();
    args.multiplier = multiplier_.data(), args.bias = bias_.data();
    args.out = dst + image * out_pixels * c_out;
    args.channels = c_out;
    args.in_h = win_.in_h, args.in_w = win_.in_w, args.out_w = win_.out_w;
    args.kernel_h = win_.kh, args.kernel_w = win_.kw, args.stride_h = win_.sh;
    args.stride_w = win_.sw, args.dilation_h = win_.dh, args.dilation_w = win_.dw;
    args.pad_top = win_.pad_top, args.pad_left = win_.pad_left;
    args.row_begin = static_cast<std::int64_t>(b * band);
    args.row_end = static_cast<std::int64_t>(std::min(out_h, (b + 1) * band));
    ctx.kernels->dwconv(args);
  });
}

void FloatConv::run_implicit(const RunContext& ctx, const float* src, float* dst,
                             std::size_t batch) const {
  const auto in_pixels = static_cast<std::size_t>(win_.in_h * win_.in_w);
  const auto out_pixels = static_cast<std::size_t>(win_.out_h * win_.out_w);
  const auto c_in = static_cast<std::size_t>(c_in_), c_out = static_cast<std::size_t>(c_out_);
  const auto padded_pixels = static_cast<std::size_t>(padded_h_ * padded_w_);
  if (padded_pixels != in_pixels) {  // zero borders around each image (caller's scratch slot 1)
    // Rows of the padded images on the threads, in the order the bands below take them (a
    // 3x224x224 input is 600 KB: copied on one thread, it held back the second one).
    const std::size_t padded_floats = batch * padded_pixels * c_in;
    float* padded = reinterpret_cast<float*>(thread_scratch((padded_floats + 1) / 2, 1));
    const auto padded_row = static_cast<std::size_t>(padded_w_) * c_in;
    const auto row = static_cast<std::size_t>(win_.in_w) * c_in;
    const auto left = static_cast<std::size_t>(win_.pad_left) * c_in;
    const auto rows = static_cast<std::size_t>(padded_h_);
    parallel_rows(batch * rows, padded_row, ctx, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) {
        const auto y = static_cast<std::int64_t>(r % rows) - win_.pad_top;
        const float* from =
            y >= 0 && y < win_.in_h
                ? src + ((r / rows) * in_pixels + static_cast<std::size_t>(y * win_.in_w)) * c_in
                : nullptr;
        fill_bordered_row(padded + r * padded_row, from, left, row, padded_row);
      }
    });
    src = padded;
  }
  // One GEMM per output row and group: its pixels' windows start sw pixels apart.
  const auto threads = static_cast<std::size_t>(std::max(ctx.threads, 1));
  const auto out_h = static_cast<std::size_t>(win_.out_h);
  const std::size_t band = threads == 1 ? out_h : std::max<std::size_t>(1, out_h / (4 * threads));
  const std::size_t bands = (out_h + band - 1) / band;
  const auto n = static_cast<std::size_t>(cout_g_);
  parallel_for(batch * bands, ctx, [&](std::size_t task) {
    const std::size_t image = task / bands, b = task % bands;
    SgemmArgs args;
    args.lda = static_cast<std::size_t>(win_.sw) * c_in;
    args.a_offsets = tap_offsets_.data();
    args.m = static_cast<std::size_t>(win_.out_w), args.n = n, args.k = k_, args.ldo = c_out;
    for (std::size_t oy = b * band; oy < std::min(out_h, (b + 1) * band); ++oy) {
      const float* window_row =
          src + (image * padded_pixels + oy * static_cast<std::size_t>(win_.sh * padded_w_)) * c_in;
      float* out_row =
          dst + (image * out_pixels + oy * static_cast<std::size_t>(win_.out_w)) * c_out;
      for (std::int64_t g = 0; g < groups_; ++g) {
        const std::size_t o0 = static_cast<std::size_t>(g) * n;
        args.a = window_row + static_cast<std::size_t>(g * cin_g_);
        args.b = weights_.data() + static_cast<std::size_t>(g) * group_floats_;
        args.multiplier = multiplier_.data() + o0, args.bias = bias_.data() + o0;
        args.out = out_row + o0;
        ctx.kernels->sgemm(args);
      }
    }
  });
}

void FloatConv::run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
                    std::size_t batch) const {
  if (path_ == Path::kDepthwise) {
    run_depthwise(ctx, in[0]->f(), out.f(), batch);
  } else if (path_ == Path::kImplicit) {
    run_implicit(ctx, in[0]->f(), out.f(), batch);
  } else {
    run_gemm(ctx, in[0]->f(), out.f(), batch);
  }
}

/// Elementwise op on a float value, y = fn(x, channel) (batch norm, PReLU) or y = fn(x) (ReLU,
/// sigmoid, clip, quantize_levels). One class per function, so the loop has no per-element
/// dispatch.
template <typename Fn>
class PerChannel final : public PreparedOp {
 public:
  bool writes_whole_output() const override { return true; }
  PerChannel(const ValueInfo& in, Fn fn) : in_(in), fn_(std::move(fn)) {}

  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(in_.c);
    const std::size_t rows = batch * static_cast<std::size_t>(in_.h * in_.w);
    const float* x = in[0]->f();
    float* y = out.f();
    parallel_rows(rows, c, ctx,
                  [&](std::size_t r0, std::size_t r1) { run_rows(x, y, r0, r1, nullptr); });
  }

  bool per_element() const override { return true; }

  void run_rows(const float* x, float* y, std::size_t r0, std::size_t r1,
                const Buffer*) const override {
    const auto c = static_cast<std::size_t>(in_.c);
    if constexpr (std::is_invocable_v<const Fn&, float>) {  // one flat loop
      for (std::size_t i = r0 * c; i < r1 * c; ++i) y[i] = fn_(x[i]);
    } else {
      // Pixel by pixel with the channel as the inner index (no division per element), so
      // that the compiler vectorizes the inner loop.
      for (std::size_t r = r0; r < r1; ++r) {
        const float* xr = x + r * c;
        float* yr = y + r * c;
        for (std::size_t ch = 0; ch < c; ++ch) yr[ch] = fn_(xr[ch], ch);
      }
    }
  }

 private:
  ValueInfo in_;
  Fn fn_;
};

template <typename Fn>
std::unique_ptr<PreparedOp> per_channel(const ValueInfo& in, Fn fn) {
  return std::make_unique<PerChannel<Fn>>(in, std::move(fn));
}

/// See `chain_per_element_ops`.
class PerElementChain final : public PreparedOp {
 public:
  PerElementChain(std::vector<const PreparedOp*> chain, std::vector<std::size_t> other_input,
                  std::size_t channels, std::size_t pixels)
      : chain_(std::move(chain)), other_(std::move(other_input)), c_(channels), pixels_(pixels) {}
  bool writes_whole_output() const override { return true; }

  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const float* x = in[0]->f();
    float* y = out.f();
    // Blocks of about 16 KiB: a block stays in L1 from the first op to the last.
    const std::size_t block = std::max<std::size_t>(1, 4096 / std::max<std::size_t>(c_, 1));
    const auto run_block = [&](std::size_t first, std::size_t b0, std::size_t b1) {
      for (std::size_t k = first; k < chain_.size(); ++k) {
        chain_[k]->run_rows(k == 0 ? x : y, y, b0, b1, other_[k] != 0 ? in[other_[k]] : nullptr);
      }
    };
    if (chain_[0]->heads_chains()) {  // the head writes y; the others follow on its rows
      const std::vector<const Buffer*> head_in{in[0]};
      chain_[0]->run_with_tail(ctx, head_in, out, batch, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t b0 = r0; b0 < r1; b0 += block) run_block(1, b0, std::min(b0 + block, r1));
      });
      return;
    }
    parallel_rows(batch * pixels_, c_, ctx, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t b0 = r0; b0 < r1; b0 += block) run_block(0, b0, std::min(b0 + block, r1));
    });
  }

 private:
  std::vector<const PreparedOp*> chain_;
  std::vector<std::size_t> other_;
  std::size_t c_, pixels_;
};

/// a + b elementwise; either input may be bits (read as +-1), the output is float.
class Add final : public PreparedOp {
 public:
  bool writes_whole_output() const override { return true; }
  Add(const ValueInfo& a, const ValueInfo& b) : a_(a), b_(b) {}

  // In a chain, x is the float input that the chain computed and `other` the other input (the
  // bits one if there is one); float addition is commutative, so the order does not matter.
  bool per_element_binary() const override { return true; }
  void run_rows(const float* x, float* y, std::size_t r0, std::size_t r1,
                const Buffer* other) const override {
    const auto c = static_cast<std::size_t>(a_.c);
    const ValueInfo& o = a_.dtype == DType::kBits ? a_ : b_;
    if (o.dtype == DType::kFloat32) {
      const float* z = other->f();
      for (std::size_t i = r0 * c; i < r1 * c; ++i) y[i] = x[i] + z[i];
      return;
    }
    float* scratch = reinterpret_cast<float*>(thread_scratch(c, 0));
    for (std::size_t r = r0; r < r1; ++r) {
      const float* z = row_as_floats(o, *other, r, scratch);
      for (std::size_t ch = 0; ch < c; ++ch) y[r * c + ch] = x[r * c + ch] + z[ch];
    }
  }

  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(a_.c);
    const std::size_t rows = batch * static_cast<std::size_t>(a_.h * a_.w);
    parallel_rows(rows, c, ctx, [&](std::size_t r0, std::size_t r1) {
      if (a_.dtype == DType::kFloat32 || b_.dtype == DType::kFloat32) {  // a float one + the other
        const bool a_float = a_.dtype == DType::kFloat32;
        run_rows(in[a_float ? 0 : 1]->f(), out.f(), r0, r1, in[a_float ? 1 : 0]);
        return;
      }
      float* scratch_a = reinterpret_cast<float*>(thread_scratch(c, 0));  // both bits
      float* scratch_b = reinterpret_cast<float*>(thread_scratch(c, 1));
      for (std::size_t r = r0; r < r1; ++r) {
        const float* a = row_as_floats(a_, *in[0], r, scratch_a);
        const float* b = row_as_floats(b_, *in[1], r, scratch_b);
        float* y = out.f() + r * c;
        for (std::size_t ch = 0; ch < c; ++ch) y[ch] = a[ch] + b[ch];
      }
    });
  }

 private:
  ValueInfo a_, b_;
};

/// a * b elementwise, b of a's shape or (C,1,1) (one factor per channel, broadcast over the
/// pixels of its image); either input may be bits (read as +-1), the output is float.
class Mul final : public PreparedOp {
 public:
  bool writes_whole_output() const override { return true; }
  Mul(const ValueInfo& a, const ValueInfo& b)
      : a_(a), b_(b), per_channel_(b.h * b.w == 1 && a.h * a.w != 1) {}

  void run(const RunContext&, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(a_.c);
    const auto pixels = static_cast<std::size_t>(a_.h * a_.w);
    if (!per_channel_ && a_.dtype == DType::kFloat32 && b_.dtype == DType::kFloat32) {
      const float* a = in[0]->f();
      const float* b = in[1]->f();
      float* y = out.f();
      for (std::size_t i = 0; i < batch * pixels * c; ++i) y[i] = a[i] * b[i];
      return;
    }
    std::vector<float> scratch_a(c), scratch_b(c);
    for (std::size_t n = 0; n < batch; ++n) {
      const float* b = per_channel_ ? row_as_floats(b_, *in[1], n, scratch_b.data()) : nullptr;
      for (std::size_t p = 0; p < pixels; ++p) {
        const std::size_t r = n * pixels + p;
        const float* a = row_as_floats(a_, *in[0], r, scratch_a.data());
        if (!per_channel_) b = row_as_floats(b_, *in[1], r, scratch_b.data());
        float* y = out.f() + r * c;
        for (std::size_t ch = 0; ch < c; ++ch) y[ch] = a[ch] * b[ch];
      }
    }
  }

 private:
  ValueInfo a_, b_;
  bool per_channel_;  // b is (C,1,1) and a has more than one pixel
};

/// Max pooling (float) and average pooling (float or bits read as +-1), padding ignored by max
/// and counted by average pooling only with count_include_pad.
class Pool final : public PreparedOp {
 public:
  bool writes_whole_output() const override { return true; }
  Pool(const Op& op, const ValueInfo& in, ValueInfo& out, const std::string& where)
      : max_(op.type == OpType::kMaxPool2d), in_(in), c_(static_cast<std::size_t>(in.c)) {
    win_ = read_window(op, in, where, true);
    require(win_.dh == 1 && win_.dw == 1, where, "attribute 'dilation' must be [1, 1]");
    require(2 * win_.pad_top <= win_.kh && 2 * win_.pad_bottom <= win_.kh &&
                2 * win_.pad_left <= win_.kw && 2 * win_.pad_right <= win_.kw,
            where,
            "attribute 'pads' must be at most half the kernel " + std::to_string(win_.kh) + "x" +
                std::to_string(win_.kw));
    include_pad_ = scalar_attr(op, "count_include_pad", 1, where) != 0;
    out = ValueInfo{DType::kFloat32, in.c, win_.out_h, win_.out_w};
  }

  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto in_pixels = static_cast<std::size_t>(win_.in_h * win_.in_w);
    const auto out_pixels = static_cast<std::size_t>(win_.out_h * win_.out_w);
    if (in_.dtype != DType::kBits) {  // output pixels in ranges over the threads
      const std::size_t work = c_ * static_cast<std::size_t>(win_.kh * win_.kw);
      parallel_rows(batch * out_pixels, work, ctx, [&](std::size_t r0, std::size_t r1) {
        if (max_) {
          pool_range<true>(in[0]->f(), in_pixels, out_pixels, r0, r1, out.f());
        } else {
          pool_range<false>(in[0]->f(), in_pixels, out_pixels, r0, r1, out.f());
        }
      });
      return;
    }
    float* unpacked = reinterpret_cast<float*>(thread_scratch((in_pixels * c_ + 1) / 2, 0));
    for (std::size_t n = 0; n < batch; ++n) {
      if (in_.dtype == DType::kBits) {  // one image as +-1 floats, then the float path
        for (std::size_t p = 0; p < in_pixels; ++p) {
          unpack_signs(in[0]->b() + (n * in_pixels + p) * in_.pixel_stride(), c_,
                       unpacked + p * c_);
        }
      }
      float* dst = out.f() + n * out_pixels * c_;
      if (max_) {
        pool_range<true>(unpacked, in_pixels, out_pixels, 0, out_pixels, dst);
      } else {
        pool_range<false>(unpacked, in_pixels, out_pixels, 0, out_pixels, dst);
      }
    }
  }

 private:
  // Output pixels [r0, r1) of images of in_pixels / out_pixels pixels (pixel r of the range
  // is pixel r % out_pixels of image r / out_pixels), written to out + r * c_; the coordinates
  // advance pixel by pixel (one division per range, not per pixel).
  template <bool kMax>
  void pool_range(const float* in, std::size_t in_pixels, std::size_t out_pixels, std::size_t r0,
                  std::size_t r1, float* out) const {
    std::size_t n = r0 / out_pixels;
    auto oy = static_cast<std::int64_t>((r0 % out_pixels) / static_cast<std::size_t>(win_.out_w));
    auto ox = static_cast<std::int64_t>((r0 % out_pixels) % static_cast<std::size_t>(win_.out_w));
    for (std::size_t r = r0; r < r1; ++r) {
      pool_pixel<kMax>(in + n * in_pixels * c_, oy, ox, out + r * c_);
      if (++ox == win_.out_w) {
        ox = 0;
        if (++oy == win_.out_h) oy = 0, ++n;
      }
    }
  }

  // One output pixel: the taps inside the image in (ky, kx) order (as the references combine
  // them), each folded into the whole output row of channels by a loop the compiler vectorizes.
  template <bool kMax>
  void pool_pixel(const float* image, std::int64_t oy, std::int64_t ox, float* dst) const {
    const std::int64_t iy0 = win_.in_y(oy, 0), ix0 = win_.in_x(ox, 0);
    const std::int64_t ky0 = std::max<std::int64_t>(0, -iy0);
    const std::int64_t ky1 = std::max(ky0, std::min(win_.kh, win_.in_h - iy0));
    const std::int64_t kx0 = std::max<std::int64_t>(0, -ix0);
    const std::int64_t kx1 = std::max(kx0, std::min(win_.kw, win_.in_w - ix0));
    std::fill(dst, dst + c_, kMax ? -std::numeric_limits<float>::infinity() : 0.0f);
    for (std::int64_t ky = ky0; ky < ky1; ++ky) {
      for (std::int64_t kx = kx0; kx < kx1; ++kx) {
        const float* src = image + static_cast<std::size_t>((iy0 + ky) * win_.in_w + ix0 + kx) * c_;
        for (std::size_t c = 0; c < c_; ++c) {
          dst[c] = kMax ? std::max(dst[c], src[c]) : dst[c] + src[c];
        }
      }
    }
    if (kMax) return;
    const auto divisor =
        static_cast<float>(include_pad_ ? win_.kh * win_.kw : (ky1 - ky0) * (kx1 - kx0));
    for (std::size_t c = 0; c < c_; ++c) dst[c] /= divisor;
  }

  Window win_;
  bool max_, include_pad_ = true;
  ValueInfo in_;
  std::size_t c_;
};

/// (C,H,W) -> (C,1,1): per channel, the float sum over pixels in row-major order divided by H*W.
class GlobalAvgPool final : public PreparedOp {
 public:
  explicit GlobalAvgPool(const ValueInfo& in) : in_(in) {}

  void run(const RunContext&, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(in_.c);
    const auto hw = static_cast<std::size_t>(in_.h * in_.w);
    const auto divisor = static_cast<float>(hw);
    std::vector<float> scratch(c);
    for (std::size_t n = 0; n < batch; ++n) {
      float* y = out.f() + n * c;  // zero-filled by the interpreter
      for (std::size_t p = 0; p < hw; ++p) {
        const float* x = row_as_floats(in_, *in[0], n * hw + p, scratch.data());
        for (std::size_t ch = 0; ch < c; ++ch) y[ch] += x[ch];
      }
      for (std::size_t ch = 0; ch < c; ++ch) y[ch] /= divisor;
    }
  }

 private:
  ValueInfo in_;
};

class Softmax final : public PreparedOp {
 public:
  bool writes_whole_output() const override { return true; }
  explicit Softmax(const ValueInfo& in) : in_(in) {}
  void run(const RunContext&, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(in_.c);
    const std::size_t rows = batch * static_cast<std::size_t>(in_.h * in_.w);
    for (std::size_t r = 0; r < rows; ++r) {
      const float* x = in[0]->f() + r * c;
      float* y = out.f() + r * c;
      const float top = *std::max_element(x, x + c);
      float sum = 0.0f;
      for (std::size_t i = 0; i < c; ++i) sum += (y[i] = std::exp(x[i] - top));
      for (std::size_t i = 0; i < c; ++i) y[i] /= sum;
    }
  }

 private:
  ValueInfo in_;
};

std::vector<float> channel_param(const Model& model, const Op& op, const std::string& role,
                                 std::int64_t c, bool allow_scalar, const std::string& where) {
  const Tensor& t = op_tensor(model, op, role, DType::kFloat32, where);
  require(t.shape.size() == 1 && (t.shape[0] == c || (allow_scalar && t.shape[0] == 1)), where,
          "tensor '" + role + "' must have shape [" + std::to_string(c) + "]" +
              (allow_scalar ? " or [1]" : ""));
  return std::vector<float>(t.floats(), t.floats() + t.shape[0]);
}

}  // namespace

std::unique_ptr<PreparedOp> chain_per_element_ops(std::vector<const PreparedOp*> chain,
                                                  std::vector<std::size_t> other_input,
                                                  std::size_t channels, std::size_t pixels) {
  return std::make_unique<PerElementChain>(std::move(chain), std::move(other_input), channels,
                                           pixels);
}

std::unique_ptr<PreparedOp> prepare_conv2d(const Model& model, const Op& op,
                                           const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                           const std::string& where) {
  return std::make_unique<FloatConv>(model, op, inputs[0], output, where, false);
}

std::unique_ptr<PreparedOp> prepare_dense(const Model& model, const Op& op,
                                          const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                          const std::string& where) {
  return std::make_unique<FloatConv>(model, op, inputs[0], output, where, true);
}

std::unique_ptr<PreparedOp> prepare_batch_norm(const Model& model, const Op& op,
                                               const std::vector<ValueInfo>& inputs,
                                               ValueInfo& output, const std::string& where) {
  const ValueInfo& in = inputs[0];
  output = in;
  return per_channel(in, [m = channel_param(model, op, "multiplier", in.c, false, where),
                          b = channel_param(model, op, "bias", in.c, false, where)](
                             float v, std::size_t ch) { return v * m[ch] + b[ch]; });
}

std::unique_ptr<PreparedOp> prepare_pool2d(const Model&, const Op& op,
                                           const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                           const std::string& where) {
  return std::make_unique<Pool>(op, inputs[0], output, where);
}

std::unique_ptr<PreparedOp> prepare_global_avgpool2d(const Model&, const Op&,
                                                     const std::vector<ValueInfo>& inputs,
                                                     ValueInfo& output, const std::string&) {
  output = ValueInfo{DType::kFloat32, inputs[0].c, 1, 1};
  return std::make_unique<GlobalAvgPool>(inputs[0]);
}

std::unique_ptr<PreparedOp> prepare_add(const Model&, const Op&,
                                        const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                        const std::string& where) {
  const ValueInfo &a = inputs[0], &b = inputs[1];
  require(a.c == b.c && a.h == b.h && a.w == b.w, where,
          "input 1 has shape " + shape_string(b) + ", expected the shape of input 0 (" +
              shape_string(a) + ")");
  output = ValueInfo{DType::kFloat32, a.c, a.h, a.w};
  return std::make_unique<Add>(a, b);
}

std::unique_ptr<PreparedOp> prepare_relu(const Model&, const Op&,
                                         const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                         const std::string&) {
  output = inputs[0];
  return per_channel(inputs[0], [](float v) { return v > 0.0f ? v : 0.0f; });
}

std::unique_ptr<PreparedOp> prepare_prelu(const Model& model, const Op& op,
                                          const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                          const std::string& where) {
  output = inputs[0];
  std::vector<float> alpha = channel_param(model, op, "alpha", inputs[0].c, true, where);
  alpha.resize(static_cast<std::size_t>(inputs[0].c), alpha.front());  // one alpha: every channel
  // v * factor, factor 1 where v >= 0 (bit pattern <= that of -0: +0, -0, positives and NaNs
  // with the sign clear) and alpha elsewhere: equal to v >= 0 ? v : alpha * v for every v (NaN
  // stays NaN, -0 stays -0). Chosen on the integer bits so that the loop vectorizes: GCC keeps a
  // float comparison in a loop as a branch, and the branch on the sign of each element cost
  // ReActNet-A half its time (the signs are random, so it is mispredicted half the time).
  return per_channel(inputs[0], [alpha = std::move(alpha)](float v, std::size_t ch) {
    std::uint32_t bits = 0, one = 0, a = 0;
    std::memcpy(&bits, &v, sizeof bits);
    const float unit = 1.0f;
    std::memcpy(&one, &unit, sizeof one);
    std::memcpy(&a, &alpha[ch], sizeof a);
    const std::uint32_t keep = bits <= 0x80000000u ? ~0u : 0u;
    const std::uint32_t factor_bits = (keep & one) | (~keep & a);
    float factor = 0;
    std::memcpy(&factor, &factor_bits, sizeof factor);
    return v * factor;
  });
}

std::unique_ptr<PreparedOp> prepare_mul(const Model&, const Op&,
                                        const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                        const std::string& where) {
  const ValueInfo &a = inputs[0], &b = inputs[1];
  require(a.c == b.c && ((a.h == b.h && a.w == b.w) || (b.h == 1 && b.w == 1)), where,
          "input 1 has shape " + shape_string(b) + ", expected the shape of input 0 (" +
              shape_string(a) + ") or " + std::to_string(a.c) + "x1x1 (one factor per channel)");
  output = ValueInfo{DType::kFloat32, a.c, a.h, a.w};
  return std::make_unique<Mul>(a, b);
}

std::unique_ptr<PreparedOp> prepare_sigmoid(const Model&, const Op&,
                                            const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                            const std::string&) {
  output = inputs[0];
  return per_channel(inputs[0], [](float v) { return 1.0f / (1.0f + std::exp(-v)); });
}

std::unique_ptr<PreparedOp> prepare_clip(const Model&, const Op& op,
                                         const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                         const std::string& where) {
  const float lo = float_attr(op, "lo", where), hi = float_attr(op, "hi", where);
  require(lo <= hi, where,
          "attribute 'lo' (" + float_string(lo) + ") is above attribute 'hi' (" + float_string(hi) +
              "), expected lo <= hi");
  output = inputs[0];
  return per_channel(inputs[0], [lo, hi](float v) { return std::min(std::max(v, lo), hi); });
}

std::unique_ptr<PreparedOp> prepare_quantize_levels(const Model&, const Op& op,
                                                    const std::vector<ValueInfo>& inputs,
                                                    ValueInfo& output, const std::string& where) {
  const std::int64_t k = required_attr(op, "k_bit", 1, 16, where);
  const auto n = static_cast<float>((std::int64_t{1} << k) - 1);  // exact: below 2^24
  output = inputs[0];
  // std::nearbyint rounds half to even in the default rounding mode, which the runtime never
  // changes; dividing (not multiplying by 1/n) gives the correctly rounded level r / n, as
  // PyTorch's `torch.round(x * n) / n` does.
  return per_channel(inputs[0], [n](float v) {
    return std::nearbyint(std::min(std::max(v, 0.0f), 1.0f) * n) / n;
  });
}

std::unique_ptr<PreparedOp> prepare_softmax(const Model&, const Op&,
                                            const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                            const std::string&) {
  output = inputs[0];
  return std::make_unique<Softmax>(inputs[0]);
}

}  // namespace onebit::runtime::detail
