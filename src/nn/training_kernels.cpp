#include "onebit/nn/training_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>
#include <torch/csrc/autograd/custom_function.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "../ste_mask.h"
#include "onebit/nn/conv.h"
#include "onebit/nn/dense.h"
#include "onebit/runtime/bitpack.h"
#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/kernels.h"

namespace onebit::nn {
namespace {

namespace rt = onebit::runtime;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per thread, like LibTorch's grad mode: data-parallel ranks that run as threads of one process
// set and restore it independently.
thread_local TrainingKernels g_kernels = TrainingKernels::kFloat;

// Fewest output channels for which a convolution's gradients are matrix products of NHWC
// patches (conv2d_backward_gemm) rather than LibTorch's convolution_backward (oneDNN). The
// output channels are the inner dimension of the input-gradient product and the rows of the
// kernel-gradient product: with 32 the products are too thin. Measured on one Zen 3 core, 3x3
// kernels, batch 64, 32-128 input channels, 3x3 to 28x28 outputs (`bench_training
// --benchmark_filter=ConvBackward`): from 64 outputs the products run at 0.96-1.60x oneDNN's
// speed (median 1.11x), with 32 at 0.75-1.17x; with 256-512 channels on 2x2 and 1x1 maps,
// 3-3.5x (oneDNN: 8-20 GFLOP/s).
constexpr int64_t kGemmBackwardMinOutputs = 64;

// Custom autograd functions take no undefined tensor (LibTorch 1.13 asks it for its device), so
// a layer without bias passes this empty one.
at::Tensor no_bias(const at::Tensor& x) { return at::empty({0}, x.options()); }
at::Tensor bias_or_undefined(const at::Tensor& bias) {
  return bias.numel() != 0 ? bias : at::Tensor();
}

std::vector<float> floats_of(const at::Tensor& t) {
  const at::Tensor c = t.detach().contiguous();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

// True when a layer keeps its tensors channels-last: its input is, or has one channel (the same
// memory either way; a first layer then starts the network's channels-last layout). A
// network whose tensors are NCHW stays NCHW: mixing layouts makes LibTorch copy in every op.
bool channels_last(const at::Tensor& x) {
  return x.dim() == 4 &&
         (x.size(1) == 1 || x.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
}

// The runtime's parallel work on LibTorch's threads (see InterpreterOptions::task_runner): the
// runtime's own pool next to LibTorch's OpenMP threads made three busy threads on two cores.
void aten_task_runner(std::size_t n, int /*threads: LibTorch's own*/, rt::TaskFn fn,
                      void* context) {
  at::parallel_for(0, static_cast<int64_t>(n), 1, [&](int64_t begin, int64_t end) {
    for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i) {
      fn(context, i);
    }
  });
}

rt::InterpreterOptions interpreter_options(bool channels_last_io) {
  rt::InterpreterOptions o;
  o.threads = at::get_num_threads();
  o.task_runner = aten_task_runner;
  o.channels_last = channels_last_io;
  // The float path lets NaN run through; so does this one (the trainer checks the loss).
  o.non_finite = rt::NonFiniteInput::kPropagate;
  return o;
}

// Runs `net` (built with `interpreter_options(channels_last(x))`) on `x` into a new tensor of
// `shape` (N, C, H, W, or N, F), NHWC when `channels_last(x)`.
at::Tensor run_net(const rt::Interpreter& net, const at::Tensor& x, std::vector<int64_t> shape) {
  const at::MemoryFormat format =
      channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = x.contiguous(format);
  const auto batch = static_cast<std::size_t>(x.size(0));
  at::Tensor y = shape.size() == 4 ? at::empty(shape, x.options().memory_format(format))
                                   : at::empty(shape, x.options());
  net.run(input.data_ptr<float>(), static_cast<std::size_t>(input.numel()), batch,
          y.data_ptr<float>());
  return y;
}

// The float path's convolution of the same values (used when the runtime refuses them).
at::Tensor float_conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                        const detail::Conv2dGeometry& g) {
  const at::Tensor padded = at::constant_pad_nd(
      x, {g.pad_before[1], g.pad_after[1], g.pad_before[0], g.pad_after[0]}, g.pad_value);
  return at::convolution(padded, w, bias, g.stride, {0, 0}, g.dilation, /*transposed=*/false,
                         {0, 0}, g.groups);
}

// A kernel whose output channel o (row o of `w`) holds only +-scale[o]: its signs, packed in
// the runtime's order (OHWI for a conv kernel, [out][in] for a dense one; bit set for -1), and
// the scales; std::invalid_argument when some row mixes magnitudes or holds a 0 or a non-finite
// value (not a scaled sign: the caller falls back to the float path). Plain signs give scales of
// 1. The training path does this for every layer in every step, so it reads the kernel once:
// blocks of whole rows that fill whole words are transposed to OHWI in a small buffer (in
// cache), checked and packed there, on LibTorch's threads.
struct ScaledSigns {
  std::vector<rt::BitWord> bits;
  std::vector<float> scale;
  bool unscaled = true;  // every scale is 1
};
ScaledSigns scaled_signs(const at::Tensor& w) {
  ScaledSigns s;
  const at::Tensor c = w.detach().contiguous();  // OIHW (or [out][in])
  const float* src = c.data_ptr<float>();
  const int64_t rows = w.size(0), n = c.numel();
  const int64_t per_row = rows == 0 ? 0 : n / rows;
  // A conv kernel's row is (C, kh, kw) in OIHW, (kh, kw, C) in OHWI.
  const int64_t taps = w.dim() == 4 ? w.size(2) * w.size(3) : 1, channels = per_row / taps;
  // Rows per block: a multiple of 64 bits, so that blocks pack into their own words.
  const int64_t block_rows = per_row == 0 ? 1 : 64 / std::gcd<int64_t>(per_row, 64);
  const int64_t blocks = rows == 0 ? 0 : (rows + block_rows - 1) / block_rows;
  s.scale.assign(static_cast<std::size_t>(rows), 1.0f);
  s.bits.assign(rt::words_for_bits(static_cast<std::size_t>(n)), 0);
  std::atomic<bool> bad{false};
  const int64_t grain =
      std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, block_rows * per_row));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<float> ohwi(static_cast<std::size_t>(block_rows * per_row));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * block_rows, r1 = std::min(rows, r0 + block_rows);
      std::uint32_t mismatch = 0;
      for (int64_t o = r0; o < r1; ++o) {
        const float* row = src + o * per_row;
        float* out = ohwi.data() + (o - r0) * per_row;
        // Reads in memory order (the row streams in from memory), writes scattered in the
        // buffer (in L1): 3x faster than the other way round.
        for (int64_t i = 0; i < channels; ++i) {
          for (int64_t t = 0; t < taps; ++t) out[t * channels + i] = row[i * taps + t];
        }
        const float a = per_row == 0 ? 1.0f : std::fabs(row[0]);
        std::uint32_t magnitude = 0;
        std::memcpy(&magnitude, &a, sizeof magnitude);
        mismatch |= !(a > 0.0f) || !std::isfinite(a) ? 1u : 0u;
        // On the bit patterns, without a branch per value, so that the loop vectorizes (a
        // branch on random signs mispredicted half the time: a tenth of a QuickNet step).
        for (int64_t i = 0; i < per_row; ++i) {
          std::uint32_t u = 0;
          std::memcpy(&u, out + i, sizeof u);
          mismatch |= (u & 0x7fffffffu) ^ magnitude;
        }
        s.scale[static_cast<std::size_t>(o)] = a;
      }
      if (mismatch != 0) bad = true;
      // r0 * per_row is a multiple of 64: the block starts a word.
      rt::pack_signs(ohwi.data(), static_cast<std::size_t>((r1 - r0) * per_row),
                     s.bits.data() + r0 * per_row / 64);
    }
  });
  if (bad) throw std::invalid_argument("not a scaled sign");
  s.unscaled = std::all_of(s.scale.begin(), s.scale.end(), [](float a) { return a == 1.0f; });
  return s;
}

// The conv's float output, then (scaled kernels) the scale per channel and the bias as a batch
// norm op: scale * integer sum + bias, with one rounding per step (the float path sums the
// scaled products, so the two agree within rounding; bit for bit for plain signs).
rt::ValueRef scale_and_bias(rt::ModelBuilder& b, rt::ValueRef v, const ScaledSigns& k,
                            const at::Tensor& bias) {
  if (k.unscaled) return v;
  return b.batch_norm(v, k.scale,
                      bias.defined() ? floats_of(bias) : std::vector<float>(k.scale.size(), 0.0f));
}

at::Tensor runtime_conv2d_values(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                 const detail::Conv2dGeometry& g, bool binary_input) {
  ScaledSigns k = scaled_signs(w);
  rt::ModelBuilder b(rt::BuilderOptions{/*fuse=*/false});
  rt::ValueRef v = b.input({x.size(1), x.size(2), x.size(3)});
  if (binary_input) v = b.sign(v);
  rt::Conv2dParams p(w.size(0), w.size(2));
  p.kernel_w = w.size(3);
  p.stride_h = g.stride[0], p.stride_w = g.stride[1];
  p.dilation_h = g.dilation[0], p.dilation_w = g.dilation[1];
  p.groups = g.groups;
  if (g.same) {
    p.padding(rt::PaddingMode::kSame);
  } else {
    p.padding(g.pads[0], g.pads[1]);
  }
  p.pad_value = static_cast<float>(g.pad_value);
  p.binary_kernel(true);
  v = b.conv2d_packed(v, p, std::move(k.bits),
                      bias.defined() && k.unscaled ? floats_of(bias) : std::vector<float>{});
  v = scale_and_bias(b, v, k, bias);
  b.output(v);
  const std::vector<int64_t> out = b.shape(v);
  const rt::Interpreter net(b.build(), interpreter_options(channels_last(x)));
  return run_net(net, x, {x.size(0), out[0], out[1], out[2]});
}

// Geometry of one-group convolution for the NHWC patch copies below.
struct PatchGeometry {
  int64_t c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
  int64_t k() const { return kh * kw * c; }  // floats per patch
};

// The output positions [first, end) of one axis at which kernel tap `t` reads inside the input.
std::pair<int64_t, int64_t> tap_outputs(int64_t t, int64_t in, int64_t out, int64_t stride,
                                        int64_t pad, int64_t dilation) {
  // Position o reads o * stride - pad + t * dilation, inside when in [0, in).
  const int64_t offset = t * dilation - pad;
  const int64_t first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t end = in - offset <= 0 ? 0 : (in - offset - 1) / stride + 1;
  return {std::min(first, out), std::clamp<int64_t>(end, std::min(first, out), out)};
}

// The first and one-past-the-last of the `k` taps of one kernel axis that read inside the input
// (`in` positions, padded by `pad` in front) for at least one of the `out` output positions;
// {0, 0} when every tap reads padding. A range: taps between two live ones count as live.
std::pair<int64_t, int64_t> live_taps(int64_t k, int64_t in, int64_t out, int64_t stride,
                                      int64_t pad, int64_t dilation) {
  int64_t first = k, last = -1;
  for (int64_t t = 0; t < k; ++t) {
    const auto [o0, o1] = tap_outputs(t, in, out, stride, pad, dilation);
    if (o0 < o1) first = std::min(first, t), last = t;
  }
  return last < 0 ? std::pair<int64_t, int64_t>{0, 0}
                  : std::pair<int64_t, int64_t>{first, last + 1};
}

// Rows of the kernel gradient per product in conv2d_backward_gemm.
constexpr int64_t kKernelGradientBlock = 32;

// Calls f(begin, end) for the blocks [k * block, min(n, (k + 1) * block)) of [0, n), spread
// over LibTorch's threads; the blocks are the same for any thread count.
template <typename F>
void for_blocks(int64_t n, int64_t block, const F& f) {
  const int64_t blocks = (n + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    // LibTorch's worker threads keep their own grad mode (on): an out= product there checks
    // whether its operands require a gradient, which a view of a saved kernel does.
    const at::NoGradGuard no_grad;
    for (int64_t b = b0; b < b1; ++b) f(b * block, std::min(n, (b + 1) * block));
  });
}

// Copies n floats; short runs (a few channels) inline instead of calling memcpy.
inline void copy_floats(const float* src, int64_t n, float* dst) {
  if (n > 16) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// Patches of images [n0, n1) of `x` (N, H, W, C floats): row (n - n0, oy, ox) of `cols` holds
// the kh x kw x C input values under output pixel (oy, ox), zero outside the image.
void im2col_nhwc(const float* x, const PatchGeometry& g, int64_t n0, int64_t n1, float* cols) {
  at::parallel_for(n0, n1, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n = b0; n < b1; ++n) {
      const float* image = x + n * g.h * g.w * g.c;
      float* dst = cols + (n - n0) * g.oh * g.ow * g.k();
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          const int64_t ix0 = ox * g.sw - g.pw;
          // A kernel row inside the image without horizontal dilation is kw * C consecutive
          // floats in NHWC: one copy (a first layer's single channel made per-tap copies slow).
          const bool row_inside = g.dw == 1 && ix0 >= 0 && ix0 + g.kw <= g.w;
          for (int64_t ky = 0; ky < g.kh; ++ky) {
            const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
            if (row_inside && iy >= 0 && iy < g.h) {
              copy_floats(image + (iy * g.w + ix0) * g.c, g.kw * g.c, dst);
              dst += g.kw * g.c;
              continue;
            }
            for (int64_t kx = 0; kx < g.kw; ++kx, dst += g.c) {
              const int64_t ix = ix0 + kx * g.dw;
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
                std::fill(dst, dst + g.c, 0.0f);
              } else {
                copy_floats(image + (iy * g.w + ix) * g.c, g.c, dst);
              }
            }
          }
        }
      }
    }
  });
}

// The adjoint of im2col_nhwc: adds every patch row of images [n0, n1) back onto the input
// positions it was copied from (`gx`: N, H, W, C floats). Images run in parallel; each image's
// sums run in one fixed order, whatever the thread count.
void col2im_nhwc(const float* cols, const PatchGeometry& g, int64_t n0, int64_t n1, float* gx) {
  at::parallel_for(n0, n1, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n = b0; n < b1; ++n) {
      float* image = gx + n * g.h * g.w * g.c;
      const float* src = cols + (n - n0) * g.oh * g.ow * g.k();
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          for (int64_t ky = 0; ky < g.kh; ++ky) {
            const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
            for (int64_t kx = 0; kx < g.kw; ++kx, src += g.c) {
              const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
              float* d = image + (iy * g.w + ix) * g.c;
              for (int64_t c = 0; c < g.c; ++c) d[c] += src[c];
            }
          }
        }
      }
    }
  });
}

// Bit c of the result is set when row[c] is not zero (NaN included), c < n <= 64; counts[c] grows
// by one for each set bit. Four entries per step with SSE2 (every x86-64 CPU has it).
inline std::uint64_t nonzero_mask(const float* row, std::size_t n, std::uint32_t* counts) {
  std::uint64_t mask = 0;
  std::size_t c = 0;
#if defined(__SSE2__)
  const __m128 zero = _mm_setzero_ps();
  for (; c + 4 <= n; c += 4) {
    const __m128 set = _mm_cmpneq_ps(_mm_loadu_ps(row + c), zero);  // unordered: NaN is set
    mask |= static_cast<std::uint64_t>(_mm_movemask_ps(set)) << c;
    auto* count = reinterpret_cast<__m128i*>(counts + c);
    // A set lane is all ones: -1 as an integer.
    _mm_storeu_si128(count, _mm_sub_epi32(_mm_loadu_si128(count), _mm_castps_si128(set)));
  }
#endif
  for (; c < n; ++c) {
    const bool set = row[c] != 0.0f;
    mask |= std::uint64_t{set} << c;
    counts[c] += set;
  }
  return mask;
}

// The nonzero entries of an m x o row-major matrix twice in compressed form: by rows (for the
// patch gradient, gradient rows times the kernel) and by columns (for the kernel gradient,
// gradient columns times the patches), each in ascending order of the other index. Built in
// two passes over fixed blocks of rows, spread over LibTorch's threads: the first marks each
// row's nonzero entries in a bit mask and counts them per row and per column of the block, the
// second writes the entries of the set bits to the offsets the counts give. No branch per entry
// (a max pool's gradient is a quarter nonzero at random places: a branch per entry
// mispredicted a quarter of the time and took 15% of a larq-mnist training step, on one thread).
// The result does not depend on the blocks or the thread count.
struct SparseGradient {
  std::vector<std::size_t> row_begin, col_begin;
  std::vector<std::int32_t> row_index, col_index;
  std::vector<float> row_value, col_value;

  // Fills both forms (those asked for) from `g` when it has at most `max_nonzeros` nonzero
  // entries; returns false (leaving the forms unspecified) otherwise, after one pass at most.
  bool assign(const float* g, int64_t m, int64_t o, int64_t max_nonzeros, bool rows, bool cols) {
    const auto um = static_cast<std::size_t>(m), uo = static_cast<std::size_t>(o);
    const std::size_t words = (uo + 63) / 64;
    const std::size_t block = std::max<std::size_t>(256, (um + kMaxBlocks - 1) / kMaxBlocks);
    const std::size_t blocks = (um + block - 1) / block;
    masks_.resize(um * words);
    row_begin.assign(um + 1, 0);
    block_cols_.assign(blocks * uo, 0);
    std::atomic<int64_t> total{0};
    // Pass 1: masks and counts. Once the running total is past the limit, blocks not yet begun
    // are skipped: the answer (false) is then already certain.
    at::parallel_for(0, static_cast<int64_t>(blocks), 1, [&](int64_t b0, int64_t b1) {
      for (auto b = static_cast<std::size_t>(b0); b < static_cast<std::size_t>(b1); ++b) {
        if (total.load(std::memory_order_relaxed) > max_nonzeros) return;
        std::vector<std::uint32_t> col_count(uo, 0);  // rows per block fit 32 bits
        std::size_t in_block = 0;
        for (std::size_t r = b * block; r < std::min(um, (b + 1) * block); ++r) {
          const float* row = g + r * uo;
          std::size_t in_row = 0;
          for (std::size_t w = 0; w < words; ++w) {
            const std::size_t c0 = w * 64;
            const std::uint64_t mask =
                nonzero_mask(row + c0, std::min<std::size_t>(64, uo - c0), col_count.data() + c0);
            masks_[r * words + w] = mask;
            in_row += static_cast<std::size_t>(__builtin_popcountll(mask));
          }
          row_begin[r + 1] = in_row;
          in_block += in_row;
        }
        std::copy(col_count.begin(), col_count.end(), block_cols_.begin() + b * uo);
        total.fetch_add(static_cast<int64_t>(in_block), std::memory_order_relaxed);
      }
    });
    if (total.load() > max_nonzeros) return false;
    for (std::size_t r = 0; r < um; ++r) row_begin[r + 1] += row_begin[r];
    // Column c's entries of block b start after those of every earlier column and of column c
    // in earlier blocks: block_cols_ becomes the blocks' write positions.
    col_begin.assign(uo + 1, 0);
    std::size_t offset = 0;
    for (std::size_t c = 0; c < uo; ++c) {
      col_begin[c] = offset;
      for (std::size_t b = 0; b < blocks; ++b) {
        const std::size_t count = block_cols_[b * uo + c];
        block_cols_[b * uo + c] = offset;
        offset += count;
      }
    }
    col_begin[uo] = offset;
    const std::size_t nonzeros = row_begin[um];
    if (rows) row_index.resize(nonzeros), row_value.resize(nonzeros);
    if (cols) col_index.resize(nonzeros), col_value.resize(nonzeros);
    // Pass 2: the entries, read off the set bits.
    at::parallel_for(0, static_cast<int64_t>(blocks), 1, [&](int64_t b0, int64_t b1) {
      for (auto b = static_cast<std::size_t>(b0); b < static_cast<std::size_t>(b1); ++b) {
        std::size_t* next_in_col = block_cols_.data() + b * uo;
        for (std::size_t r = b * block; r < std::min(um, (b + 1) * block); ++r) {
          const float* row = g + r * uo;
          std::size_t e = row_begin[r];
          for (std::size_t w = 0; w < words; ++w) {
            for (std::uint64_t mask = masks_[r * words + w]; mask != 0; mask &= mask - 1) {
              const std::size_t c = w * 64 + static_cast<std::size_t>(__builtin_ctzll(mask));
              if (rows) {
                row_index[e] = static_cast<std::int32_t>(c), row_value[e] = row[c];
                ++e;
              }
              if (cols) {
                const std::size_t q = next_in_col[c]++;
                col_index[q] = static_cast<std::int32_t>(r), col_value[q] = row[c];
              }
            }
          }
        }
      }
    });
    return true;
  }

 private:
  static constexpr std::size_t kMaxBlocks = 64;
  std::vector<std::uint64_t> masks_;     // words per row; bit c: entry c is nonzero
  std::vector<std::size_t> block_cols_;  // blocks x o: counts, then write positions
};

// out rows [r0, r1) (n floats each, rows n apart) = (or +=) compressed rows [r0, r1) times `b`
// (rows of n floats).
void sparse_times_dense(const std::vector<std::size_t>& begin,
                        const std::vector<std::int32_t>& index, const std::vector<float>& value,
                        const float* b, int64_t n, float* out, int64_t r0, int64_t r1,
                        bool accumulate) {
  rt::CsrSgemmArgs a;
  a.row_begin = begin.data() + r0;
  a.index = index.data(), a.value = value.data();
  a.b = b, a.ldb = static_cast<std::size_t>(n);
  a.out = out + r0 * n, a.ldo = static_cast<std::size_t>(n);
  a.m = static_cast<std::size_t>(r1 - r0), a.n = static_cast<std::size_t>(n);
  a.accumulate = accumulate;
  rt::active_kernels().csr_sgemm(a);
}

// Fraction of nonzero entries of `t`.
double nonzero_fraction(const at::Tensor& t) {
  if (t.numel() == 0) return 0.0;
  return static_cast<double>(at::count_nonzero(t).item<int64_t>()) / static_cast<double>(t.numel());
}

// The saved FoldedGradient of a runtime function's kernel quantizer (see save_folded).
std::optional<double> saved_clip(AutogradContext* ctx) {
  return ctx->saved_data["has_clip"].toBool()
             ? std::optional<double>(ctx->saved_data["clip"].toDouble())
             : std::nullopt;
}
void save_folded(AutogradContext* ctx, std::optional<double> clip, bool scaled) {
  ctx->saved_data["has_clip"] = clip.has_value();
  ctx->saved_data["clip"] = clip.value_or(0.0);
  ctx->saved_data["scaled"] = scaled;
}

// The latent kernel's gradient from the quantized kernel `w`'s `gw` (see fold_kernel_gradient):
// each output channel's scale is |w| of its first entry (w holds +-scale).
at::Tensor folded_gradient(AutogradContext* ctx, const at::Tensor& gw, const at::Tensor& padding,
                           const at::Tensor& w, const at::Tensor& latent) {
  if (!latent.defined()) {
    return detail::fold_kernel_gradient(gw, padding, at::Tensor(), std::nullopt, at::Tensor());
  }
  const at::Tensor scale =
      ctx->saved_data["scaled"].toBool() ? w.flatten(1).select(1, 0).abs() : at::Tensor();
  return detail::fold_kernel_gradient(gw, padding, latent, saved_clip(ctx), scale);
}

// The value of a kernel quantizer with a FoldedGradient for `latent`, without autograd: its own
// forward for plain signs, else scale[o] * sign(latent) in one pass from its sign_scale (the
// same values as scale * sign_pm1(latent): a product with +-1 is exact) instead of a sign tensor
// and a product.
at::Tensor folded_kernel_value(const at::Tensor& latent, const quantizers::Quantizer& quantizer,
                               bool scaled) {
  at::NoGradGuard no_grad;
  if (!scaled || latent.dim() < 1 || latent.scalar_type() != at::kFloat ||
      !latent.is_contiguous()) {
    return quantizer.quantize_as(latent, quantizers::TensorRole::kernel());
  }
  const at::Tensor scale = quantizer.sign_scale_as(latent, quantizers::TensorRole::kernel());
  const int64_t rows = latent.size(0), row = rows == 0 ? 0 : latent.numel() / rows;
  if (!scale.defined() || scale.numel() != rows) {
    return quantizer.quantize_as(latent, quantizers::TensorRole::kernel());
  }
  const at::Tensor sc = scale.contiguous();
  at::Tensor out = at::empty_like(latent);
  const float* lp = latent.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, row));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float s = sp[r];
      const float* l = lp + r * row;
      float* o = op + r * row;
      for (int64_t j = 0; j < row; ++j) o[j] = s * (l[j] >= 0.0f ? 1.0f : -1.0f);
    }
  });
  return out;
}

class RuntimeConv2dFunction : public torch::autograd::Function<RuntimeConv2dFunction> {
 public:
  // `geometry` travels as a pointer: the caller's object outlives the forward call, and the
  // backward pass reads only the copies in saved_data.
  // With a `latent` kernel (else empty), `w` is its quantized value, computed without autograd,
  // and the latent kernel's gradient is `fold_kernel_gradient` of w's with the kernel
  // quantizer's FoldedGradient (`clip`, `scaled`): no separate quantizer node.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& bias_or_empty, const at::Tensor& latent_or_empty,
                            const detail::Conv2dGeometry* geometry, bool binary_input,
                            std::optional<double> clip, bool scaled) {
    const detail::Conv2dGeometry& g = *geometry;
    const at::Tensor bias = bias_or_undefined(bias_or_empty);
    ctx->save_for_backward({x, w, latent_or_empty});
    save_folded(ctx, clip, scaled);
    ctx->saved_data["stride"] = g.stride;
    ctx->saved_data["dilation"] = g.dilation;
    ctx->saved_data["pad_before"] = g.pad_before;
    ctx->saved_data["pad_after"] = g.pad_after;
    ctx->saved_data["pad_value"] = g.pad_value;
    ctx->saved_data["groups"] = g.groups;
    ctx->saved_data["bias"] = bias.defined();
    ctx->saved_data["channels_last"] = channels_last(x);
    try {
      return runtime_conv2d_values(x, w, bias, g, binary_input);
    } catch (const std::invalid_argument&) {
      // Kernel entries that are not +-1 (a quantizer that declares a sign but is not one): the
      // float path gives the result.
      return float_conv2d(x, w, bias, g);
    }
  }

  // The gradients of the zero-padded convolution of `x` (the padding symmetric as far as it
  // goes, the rest explicit zeros), plus the kernel gradient of the padding itself when the pad
  // value is not 0. The float path differentiates a padded copy instead: its input gradient
  // includes the padding's, which the pad's backward then drops, and on the small maps of deep
  // layers most products feed the padding (8 of 9 taps on a 1x1 map).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor latent = bias_or_undefined(saved[2]);
    const bool has_bias = ctx->saved_data["bias"].toBool();
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    const std::vector<int64_t> before = ctx->saved_data["pad_before"].toIntVector();
    const std::vector<int64_t> after = ctx->saved_data["pad_after"].toIntVector();
    const double pad_value = ctx->saved_data["pad_value"].toDouble();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    // The layout of the forward pass (see channels_last) for both: mixing layouts makes
    // LibTorch copy.
    const at::MemoryFormat format = ctx->saved_data["channels_last"].toBool()
                                        ? at::MemoryFormat::ChannelsLast
                                        : at::MemoryFormat::Contiguous;
    const bool need_gx = ctx->needs_input_grad(0);
    const bool need_gw = latent.defined() ? ctx->needs_input_grad(3) : ctx->needs_input_grad(1);
    const at::Tensor gb =
        has_bias && ctx->needs_input_grad(2) ? grads[0].sum({0, 2, 3}) : at::Tensor();
    // LibTorch's convolutions pad symmetrically: an asymmetric ("same" with stride 2) extra row
    // or column is padded here, with zeros.
    const std::vector<int64_t> symmetric = {std::min(before[0], after[0]),
                                            std::min(before[1], after[1])};
    const std::vector<int64_t> extra_before = {before[0] - symmetric[0], before[1] - symmetric[1]};
    const bool extra = before != symmetric || after != symmetric;
    const at::Tensor xz = extra ? at::constant_pad_nd(x,
                                                      {extra_before[1], after[1] - symmetric[1],
                                                       extra_before[0], after[0] - symmetric[0]},
                                                      0.0)
                                : x;
    at::Tensor gx, gw;
    // The products or oneDNN, whichever was faster for this shape on this kind of CPU (see
    // conv_gradient_uses_products; a mostly zero gradient runs as a sparse product there).
    if (groups == 1 && detail::conv_gradient_uses_products(detail::conv_gradient(), w.size(0),
                                                           grads[0], need_gx)) {
      // Reads any layout (NHWC internally). On maps of up to 4 output pixels most patch entries
      // are padding: one product per tap over the pixels it reads instead.
      const int64_t pixels = grads[0].size(2) * grads[0].size(3);
      std::tie(gx, gw) = pixels <= detail::kTapProductsMaxPixels
                             ? detail::conv2d_backward_taps(grads[0], xz, w, stride, symmetric,
                                                            dilation, need_gx, need_gw)
                             : detail::conv2d_backward_gemm(grads[0], xz, w, stride, symmetric,
                                                            dilation, need_gx, need_gw);
    } else {
      const std::array<bool, 3> mask{need_gx, need_gw, false};
      at::Tensor unused;
      std::tie(gx, gw, unused) = at::convolution_backward(
          grads[0].contiguous(format), xz.contiguous(format), w, at::OptionalIntArrayRef(), stride,
          symmetric, dilation, /*transposed=*/false, {0, 0}, groups, mask);
    }
    if (gx.defined()) {
      if (extra) {
        gx = gx.slice(2, extra_before[0], extra_before[0] + x.size(2))
                 .slice(3, extra_before[1], extra_before[1] + x.size(3));
      }
      gx = gx.contiguous(format);
    }
    if (gw.defined()) {
      // One pass: the padding's part, the kernel quantizer's gradient and the kernel's own
      // layout (oneDNN returns it channels-last for a channels-last input, and every optimizer
      // op on a parameter with a gradient of another layout iterates over 3x3 inner dimensions:
      // Adam's step took twice as long).
      const at::Tensor padding =
          pad_value != 0.0 ? detail::padding_kernel_gradient(grads[0], {x.size(2), x.size(3)},
                                                             {w.size(2), w.size(3)}, stride,
                                                             dilation, before, pad_value)
                           : at::Tensor();
      gw = folded_gradient(ctx, gw, padding, w, latent);
    }
    if (latent.defined()) {
      return {gx, at::Tensor(), gb, gw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor runtime_dense_values(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                bool binary_input) {
  ScaledSigns k = scaled_signs(w);
  rt::ModelBuilder b(rt::BuilderOptions{/*fuse=*/false});
  rt::ValueRef v = b.input({x.size(1)});
  if (binary_input) v = b.sign(v);
  v = b.dense_packed(v, rt::DenseParams(w.size(0)).binary_kernel(true), std::move(k.bits),
                     bias.defined() && k.unscaled ? floats_of(bias) : std::vector<float>{});
  v = scale_and_bias(b, v, k, bias);
  b.output(v);
  const rt::Interpreter net(b.build(), interpreter_options(false));
  return run_net(net, x, {x.size(0), w.size(0)});
}

class RuntimeDenseFunction : public torch::autograd::Function<RuntimeDenseFunction> {
 public:
  // `latent` as in RuntimeConv2dFunction::forward.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& bias_or_empty, const at::Tensor& latent_or_empty,
                            bool binary_input, std::optional<double> clip, bool scaled) {
    const at::Tensor bias = bias_or_undefined(bias_or_empty);
    ctx->save_for_backward({x, w, latent_or_empty});
    ctx->saved_data["bias"] = bias.defined();
    save_folded(ctx, clip, scaled);
    try {
      return runtime_dense_values(x, w, bias, binary_input);
    } catch (const std::invalid_argument&) {
      return at::linear(x, w, bias);  // see RuntimeConv2dFunction::forward
    }
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor latent = bias_or_undefined(saved[2]);
    const at::Tensor& g = grads[0];
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = g.mm(saved[1]);
    if (latent.defined() ? ctx->needs_input_grad(3) : ctx->needs_input_grad(1)) {
      gw = folded_gradient(ctx, g.t().mm(saved[0]), at::Tensor(), saved[1], latent);
    }
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = g.sum(0);
    if (latent.defined())
      return {gx, at::Tensor(), gb, gw, at::Tensor(), at::Tensor(), at::Tensor()};
    return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

const char* training_kernels_name(TrainingKernels kernels) {
  return kernels == TrainingKernels::kBinary ? "binary" : "float";
}

TrainingKernels parse_training_kernels(const std::string& name) {
  if (name == "binary") return TrainingKernels::kBinary;
  if (name == "float") return TrainingKernels::kFloat;
  throw std::invalid_argument("unknown training kernels \"" + name +
                              "\": expected \"binary\" (onebit's runtime kernels) or \"float\" "
                              "(LibTorch's float operations)");
}

TrainingKernels training_kernels() { return g_kernels; }

void set_training_kernels(TrainingKernels kernels) { g_kernels = kernels; }

TrainingKernelsGuard::TrainingKernelsGuard(TrainingKernels kernels) : previous_(g_kernels) {
  g_kernels = kernels;
}

TrainingKernelsGuard::~TrainingKernelsGuard() { g_kernels = previous_; }

bool uses_runtime_kernels(const torch::nn::Module& model) {
  if (training_kernels() != TrainingKernels::kBinary) return false;
  // use_runtime_kernels reads only the input's dtype, device and batch size.
  const at::Tensor probe = at::empty({1}, at::kFloat);
  const auto qualifies = [&](const torch::nn::Module& m) {
    if (const auto* c = dynamic_cast<const QuantConv2dImpl*>(&m)) {
      return detail::use_runtime_kernels(c->options.input_quantizer().get(),
                                         c->options.kernel_quantizer().get(), probe, c->weight,
                                         c->options.pad_values());
    }
    if (const auto* d = dynamic_cast<const QuantDenseImpl*>(&m)) {
      return detail::use_runtime_kernels(d->options.input_quantizer().get(),
                                         d->options.kernel_quantizer().get(), probe, d->weight);
    }
    return false;
  };
  if (qualifies(model)) return true;
  const auto modules = model.modules(/*include_self=*/false);
  return std::any_of(modules.begin(), modules.end(), [&](const auto& m) { return qualifies(*m); });
}

at::Tensor training_layout(const at::Tensor& batch, bool runtime_layers) {
  if (batch.dim() != 4 || !runtime_layers) return batch;
  // `contiguous(ChannelsLast)` keeps NCHW strides when C == 1 (both layouts are contiguous):
  // allocate with NHWC strides instead.
  return at::empty(batch.sizes(), batch.options().memory_format(at::MemoryFormat::ChannelsLast))
      .copy_(batch);
}

void set_intra_op_threads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
  using SetThreads = void (*)(int);
  // Looked up at run time: present only when the process loaded OpenBLAS (Debian's LibTorch).
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
}

bool retain_freed_memory() {
#if defined(__GLIBC__)
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) ||
      std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
      std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr) {
    return false;
  }
  // 32 MiB is the largest threshold glibc accepts on 64-bit hosts (half its largest heap).
  const bool retained = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 &&
                        mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
  if (retained) keep_large_blocks();
  return retained;
#else
  return false;
#endif
}

namespace detail {

namespace {
std::atomic<ConvGradient> g_conv_gradient{ConvGradient::kAuto};
}  // namespace

const char* conv_gradient_name(ConvGradient gradient) {
  switch (gradient) {
    case ConvGradient::kLibTorch:
      return "libtorch";
    case ConvGradient::kProducts:
      return "products";
    case ConvGradient::kAuto:
      break;
  }
  return "auto";
}

ConvGradient parse_conv_gradient(const std::string& name) {
  for (const ConvGradient g :
       {ConvGradient::kAuto, ConvGradient::kLibTorch, ConvGradient::kProducts}) {
    if (name == conv_gradient_name(g)) return g;
  }
  throw std::invalid_argument("unknown convolution gradient \"" + name +
                              "\": expected \"auto\" (the faster on this CPU), \"libtorch\" "
                              "(oneDNN) or \"products\" (onebit's matrix products)");
}

void set_conv_gradient(ConvGradient gradient) { g_conv_gradient = gradient; }

ConvGradient conv_gradient() { return g_conv_gradient.load(); }

bool conv_gradient_uses_products(ConvGradient setting, int64_t outputs,
                                 const at::Tensor& grad_output, bool input_grad) {
  if (setting == ConvGradient::kLibTorch) return false;
  // oneDNN JITs AVX-512 gradient kernels; OpenBLAS's products (0.3.21) ran at half their
  // speed on a Zen 5 core except on 1x1 and 2x2 maps (see the declaration).
  static const bool avx512 = rt::isa_supported(rt::Isa::kAvx512);
  if (setting == ConvGradient::kAuto && avx512) {
    return outputs >= kGemmBackwardMinOutputs && grad_output.dim() == 4 &&
           grad_output.size(2) * grad_output.size(3) <= kTapProductsMaxPixels;
  }
  return !input_grad || outputs >= kGemmBackwardMinOutputs ||
         nonzero_fraction(grad_output) <= kSparseGradientDensity;
}

namespace {

// OIHW (o, c, t) -> [t][o][c] for the taps with live[t], and back (zeros for the others),
// parallel over the output channels. Blocks of 16 channels (c) go through a small tile, so that
// the strided side of the transposition stays inside one cache line per tap; 3x3 kernels get
// a loop with the tap count fixed at compile time (the compiler unrolls it into shuffles).
template <int64_t kTaps>
void transpose_taps(const float* src, int64_t o, int64_t c, int64_t runtime_taps,
                    const std::vector<char>& live, float* dst, bool to_taps) {
  const int64_t taps = kTaps > 0 ? kTaps : runtime_taps;
  constexpr int64_t kBlock = 16;
  at::parallel_for(0, o, 8, [&](int64_t o0, int64_t o1) {
    std::vector<float> tile(static_cast<std::size_t>(kBlock * taps));
    for (int64_t i = o0; i < o1; ++i) {
      for (int64_t j0 = 0; j0 < c; j0 += kBlock) {
        const int64_t m = std::min(kBlock, c - j0);
        if (to_taps) {  // src OIHW, dst [t][o][c]
          const float* s = src + (i * c + j0) * taps;
          for (int64_t t = 0; t < taps; ++t) {
            if (live[static_cast<std::size_t>(t)] == 0) continue;
            float* d = dst + (t * o + i) * c + j0;
            for (int64_t j = 0; j < m; ++j) d[j] = s[j * taps + t];
          }
        } else {  // src [t][o][c], dst OIHW
          for (int64_t t = 0; t < taps; ++t) {
            const float* s = src + (t * o + i) * c + j0;
            float* row = tile.data() + t * kBlock;
            if (live[static_cast<std::size_t>(t)] == 0) {
              std::fill(row, row + kBlock, 0.0F);
            } else {
              std::copy(s, s + m, row);
            }
          }
          float* d = dst + (i * c + j0) * taps;
          for (int64_t j = 0; j < m; ++j) {
            for (int64_t t = 0; t < taps; ++t) d[j * taps + t] = tile[t * kBlock + j];
          }
        }
      }
    }
  });
}

void transpose_taps(const float* src, int64_t o, int64_t c, int64_t taps,
                    const std::vector<char>& live, float* dst, bool to_taps) {
  if (taps == 9) {
    transpose_taps<9>(src, o, c, taps, live, dst, to_taps);
  } else {
    transpose_taps<0>(src, o, c, taps, live, dst, to_taps);
  }
}

}  // namespace

std::pair<at::Tensor, at::Tensor> conv2d_backward_taps(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
    const std::vector<int64_t>& dilation, bool input_grad, bool weight_grad) {
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && grad_output.dim() == 4 &&
                  weight.size(1) == input.size(1) && grad_output.size(1) == weight.size(0) &&
                  input.scalar_type() == at::kFloat,
              "conv2d_backward_taps: needs a one-group 2-D float convolution, got input ",
              input.sizes(), ", weight ", weight.sizes(), " and output gradient ",
              grad_output.sizes());
  const int64_t n = input.size(0), c = input.size(1), h = input.size(2), wd = input.size(3);
  const int64_t o = weight.size(0), kh = weight.size(2), kw = weight.size(3), taps = kh * kw;
  const int64_t oh = grad_output.size(2), ow = grad_output.size(3);
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor x = input.contiguous(cl);
  const at::Tensor g = grad_output.contiguous(cl);
  const float* xp = x.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const at::TensorOptions f32 = input.options();
  // Per tap: the output rectangle whose tap reads inside the input.
  struct Tap {
    int64_t oy0, oy1, ox0, ox1, rows, first_row;
  };
  std::vector<Tap> tap(static_cast<std::size_t>(taps));
  std::vector<char> live(static_cast<std::size_t>(taps));
  int64_t total_rows = 0;
  for (int64_t ky = 0; ky < kh; ++ky) {
    for (int64_t kx = 0; kx < kw; ++kx) {
      Tap& t = tap[static_cast<std::size_t>(ky * kw + kx)];
      std::tie(t.oy0, t.oy1) = tap_outputs(ky, h, oh, stride[0], padding[0], dilation[0]);
      std::tie(t.ox0, t.ox1) = tap_outputs(kx, wd, ow, stride[1], padding[1], dilation[1]);
      t.rows = n * (t.oy1 - t.oy0) * (t.ox1 - t.ox0);
      t.first_row = total_rows;
      total_rows += t.rows;
      live[static_cast<std::size_t>(ky * kw + kx)] = t.rows > 0 ? 1 : 0;
    }
  }
  // Output-gradient rows (O floats) and input rows (C floats) of every tap's pairs, gathered.
  at::Tensor grows = at::empty({total_rows, o}, f32);
  at::Tensor xrows = weight_grad ? at::empty({total_rows, c}, f32) : at::Tensor();
  at::Tensor yrows = input_grad ? at::empty({total_rows, c}, f32) : at::Tensor();
  at::Tensor wt, gwt;
  if (input_grad) {
    wt = at::empty({taps, o, c}, f32);
    const at::Tensor wc = weight.contiguous();
    transpose_taps(wc.data_ptr<float>(), o, c, taps, live, wt.data_ptr<float>(), true);
  }
  if (weight_grad) gwt = at::empty({taps, o, c}, f32);
  float* gr = grows.data_ptr<float>();
  float* xr = weight_grad ? xrows.data_ptr<float>() : nullptr;
  // Each tap is one thread's: its gathers and products (OpenBLAS single-threaded, see
  // set_intra_op_threads); the results do not depend on the thread count.
  at::parallel_for(0, taps, 1, [&](int64_t t0, int64_t t1) {
    const at::NoGradGuard no_grad;  // as in for_blocks
    for (int64_t ti = t0; ti < t1; ++ti) {
      const Tap& t = tap[static_cast<std::size_t>(ti)];
      const int64_t ky = ti / kw, kx = ti % kw;
      if (t.rows == 0) continue;
      int64_t r = t.first_row;
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t oy = t.oy0; oy < t.oy1; ++oy) {
          const int64_t iy = oy * stride[0] - padding[0] + ky * dilation[0];
          for (int64_t ox = t.ox0; ox < t.ox1; ++ox, ++r) {
            const int64_t ix = ox * stride[1] - padding[1] + kx * dilation[1];
            copy_floats(gp + ((b * oh + oy) * ow + ox) * o, o, gr + r * o);
            if (xr != nullptr) copy_floats(xp + ((b * h + iy) * wd + ix) * c, c, xr + r * c);
          }
        }
      }
      const at::Tensor gt = grows.slice(0, t.first_row, t.first_row + t.rows);
      if (weight_grad) {
        at::Tensor out = gwt[ti];
        at::mm_out(out, gt.t(), xrows.slice(0, t.first_row, t.first_row + t.rows));
      }
      if (input_grad) {
        at::Tensor out = yrows.slice(0, t.first_row, t.first_row + t.rows);
        at::mm_out(out, gt, wt[ti]);
      }
    }
  });
  at::Tensor gx, gw;
  if (input_grad) {
    // Every tap's input-gradient rows added onto their input positions, image by image, taps in
    // one fixed order.
    gx = at::empty(input.sizes(), f32.memory_format(cl)).zero_();  // at::zeros ignores the format
    float* gxp = gx.data_ptr<float>();
    const float* yr = yrows.data_ptr<float>();
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t ti = 0; ti < taps; ++ti) {
          const Tap& t = tap[static_cast<std::size_t>(ti)];
          const int64_t ky = ti / kw, kx = ti % kw;
          const int64_t per_image = (t.oy1 - t.oy0) * (t.ox1 - t.ox0);
          const float* src = yr + (t.first_row + b * per_image) * c;
          for (int64_t oy = t.oy0; oy < t.oy1; ++oy) {
            const int64_t iy = oy * stride[0] - padding[0] + ky * dilation[0];
            for (int64_t ox = t.ox0; ox < t.ox1; ++ox, src += c) {
              const int64_t ix = ox * stride[1] - padding[1] + kx * dilation[1];
              float* d = gxp + ((b * h + iy) * wd + ix) * c;
              for (int64_t j = 0; j < c; ++j) d[j] += src[j];
            }
          }
        }
      }
    });
  }
  if (weight_grad) {
    gw = at::empty(weight.sizes(), f32);
    transpose_taps(gwt.data_ptr<float>(), o, c, taps, live, gw.data_ptr<float>(), false);
  }
  return {gx, gw};
}

std::pair<at::Tensor, at::Tensor> conv2d_backward_gemm(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
    const std::vector<int64_t>& dilation, bool input_grad, bool weight_grad,
    int64_t max_patch_floats, double max_sparse_density) {
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && grad_output.dim() == 4 &&
                  weight.size(1) == input.size(1),
              "conv2d_backward_gemm: needs a one-group 2-D convolution, got input ", input.sizes(),
              " and weight ", weight.sizes());
  // Only the kernel taps that read inside the input for some output pixel: on a 1x1 map with
  // "same" padding a 3x3 kernel's 8 outer taps read only padding, and products over them would
  // be 8/9 of the work for zeros. The kept taps form a smaller kernel with the padding shifted.
  const auto [ky0, ky1] = live_taps(weight.size(2), input.size(2), grad_output.size(2), stride[0],
                                    padding[0], dilation[0]);
  const auto [kx0, kx1] = live_taps(weight.size(3), input.size(3), grad_output.size(3), stride[1],
                                    padding[1], dilation[1]);
  if (ky0 == ky1 || kx0 == kx1) {  // every tap reads padding: the output ignores the input
    return {input_grad ? at::zeros_like(input, at::MemoryFormat::ChannelsLast) : at::Tensor(),
            weight_grad ? at::zeros_like(weight) : at::Tensor()};
  }
  const at::Tensor live_weight = weight.slice(2, ky0, ky1).slice(3, kx0, kx1);
  const PatchGeometry geo{input.size(1),
                          input.size(2),
                          input.size(3),
                          ky1 - ky0,
                          kx1 - kx0,
                          stride[0],
                          stride[1],
                          padding[0] - ky0 * dilation[0],
                          padding[1] - kx0 * dilation[1],
                          dilation[0],
                          dilation[1],
                          grad_output.size(2),
                          grad_output.size(3)};
  const int64_t n = input.size(0), o = weight.size(0), pixels = geo.oh * geo.ow, k = geo.k();
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  // The output gradient as a (N * OH * OW) x O matrix: a view of its NHWC memory.
  const at::Tensor g = grad_output.contiguous(at::MemoryFormat::ChannelsLast)
                           .permute({0, 2, 3, 1})
                           .reshape({n * pixels, o});
  at::Tensor gw, gx, w;
  if (weight_grad) gw = at::zeros({o, k}, input.options());
  if (input_grad) {
    gx = at::empty(input.sizes(), input.options().memory_format(at::MemoryFormat::ChannelsLast))
             .zero_();
    w = live_weight.permute({0, 2, 3, 1}).reshape({o, k}).contiguous();  // O x (kh, kw, C)
  }
  // Images in chunks whose patches fit in max_patch_floats, so that the patches stay in cache
  // between the copy and the products (1 MiB chunks were 1.1-1.8x faster than 32 MiB ones; a
  // batch of large maps would need GiBs at once); the kernel gradient accumulates over chunks.
  const int64_t chunk = std::clamp<int64_t>(max_patch_floats / std::max<int64_t>(1, pixels * k), 1,
                                            std::max<int64_t>(n, 1));
  at::Tensor cols = at::empty({chunk * pixels, k}, input.options());
  SparseGradient sparse;
  for (int64_t n0 = 0; n0 < n; n0 += chunk) {
    const int64_t n1 = std::min(n, n0 + chunk);
    const at::Tensor rows = g.slice(0, n0 * pixels, n1 * pixels);
    at::Tensor c = cols.slice(0, 0, (n1 - n0) * pixels);
    const int64_t m = c.size(0);
    // A mostly zero gradient (behind a max pool) as a sparse matrix: each product then costs
    // its nonzero entries times k multiply-adds, in the same fixed blocks as below.
    const auto max_nonzeros = static_cast<int64_t>(max_sparse_density * static_cast<double>(m * o));
    if (sparse.assign(rows.data_ptr<float>(), m, o, max_nonzeros, input_grad, weight_grad)) {
      if (weight_grad) {
        im2col_nhwc(x.data_ptr<float>(), geo, n0, n1, c.data_ptr<float>());
        for_blocks(o, kKernelGradientBlock, [&](int64_t o0, int64_t o1) {
          sparse_times_dense(sparse.col_begin, sparse.col_index, sparse.col_value,
                             c.data_ptr<float>(), k, gw.data_ptr<float>(), o0, o1, true);
        });
      }
      if (input_grad) {
        for_blocks(m, std::max<int64_t>(64, (m + 7) / 8), [&](int64_t r0, int64_t r1) {
          sparse_times_dense(sparse.row_begin, sparse.row_index, sparse.row_value,
                             w.data_ptr<float>(), k, c.data_ptr<float>(), r0, r1, false);
        });
        col2im_nhwc(c.data_ptr<float>(), geo, n0, n1, gx.data_ptr<float>());
      }
      continue;
    }
    // Each product runs as blocks of rows, one OpenBLAS call per block (OpenBLAS itself runs
    // single-threaded here, see set_intra_op_threads), spread over LibTorch's threads: the
    // kernel gradient by 32 output channels, the patch gradient in 8 blocks of patches. The
    // blocks do not depend on the thread count (OpenBLAS rounds a split product differently),
    // so neither do the results.
    if (weight_grad) {
      im2col_nhwc(x.data_ptr<float>(), geo, n0, n1, c.data_ptr<float>());
      for_blocks(o, kKernelGradientBlock, [&](int64_t o0, int64_t o1) {
        gw.slice(0, o0, o1).addmm_(rows.slice(1, o0, o1).t(), c);
      });
    }
    if (input_grad) {
      for_blocks(m, std::max<int64_t>(64, (m + 7) / 8), [&](int64_t r0, int64_t r1) {
        at::Tensor block = c.slice(0, r0, r1);
        at::mm_out(block, rows.slice(0, r0, r1), w);
      });
      col2im_nhwc(c.data_ptr<float>(), geo, n0, n1, gx.data_ptr<float>());
    }
  }
  if (weight_grad) {
    gw = gw.view({o, geo.kh, geo.kw, geo.c}).permute({0, 3, 1, 2});
    if (geo.kh != weight.size(2) || geo.kw != weight.size(3)) {
      at::Tensor full = at::zeros(weight.sizes(), weight.options());
      full.slice(2, ky0, ky1).slice(3, kx0, kx1).copy_(gw);
      gw = full;
    } else {
      gw = gw.contiguous();
    }
  }
  return {gx, gw};
}

bool use_runtime_kernels(const quantizers::QuantizerPtr& input_quantizer,
                         const quantizers::QuantizerPtr& kernel_quantizer, const at::Tensor& input,
                         const at::Tensor& weight, double pad_value) {
  using quantizers::ForwardKind;
  if (training_kernels() != TrainingKernels::kBinary || kernel_quantizer == nullptr) return false;
  if (input_quantizer != nullptr ? input_quantizer->forward_kind() != ForwardKind::kSign
                                 : pad_value != 0) {
    return false;
  }
  if (pad_value != 0 && pad_value != 1) return false;
  if (input.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat ||
      !input.device().is_cpu() || !weight.device().is_cpu() || input.size(0) == 0) {
    return false;
  }
  if (kernel_quantizer->forward_kind() == ForwardKind::kSign) return true;
  // A scaled sign (magnitude_aware_sign, xnor_weight_scale): the runtime's integer sums times
  // the scale of each output channel (see scaled_signs).
  // Whether the quantizer has a scale at all, asked of the kernel's first output channel: the
  // whole kernel's scale (a full-size temporary, 38 MB for ReActNet-A's 1024-channel layers)
  // was computed here every step only to be thrown away.
  at::NoGradGuard no_grad;
  return kernel_quantizer
      ->sign_scale_as(weight.dim() > 0 && weight.size(0) > 1 ? weight.narrow(0, 0, 1) : weight,
                      quantizers::TensorRole::kernel())
      .defined();
}

at::Tensor runtime_conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                          const Conv2dGeometry& geometry, bool binary_input) {
  return RuntimeConv2dFunction::apply(x, w, bias.defined() ? bias : no_bias(x), no_bias(x),
                                      &geometry, binary_input, std::nullopt, false);
}

at::Tensor runtime_conv2d(const at::Tensor& x, const at::Tensor& latent,
                          const quantizers::Quantizer& kernel_quantizer, const at::Tensor& bias,
                          const Conv2dGeometry& geometry, bool binary_input) {
  const std::optional<quantizers::FoldedGradient> folded = kernel_quantizer.folded_gradient();
  if (!folded || !at::GradMode::is_enabled() || !latent.requires_grad()) {
    return runtime_conv2d(x, kernel_quantizer(latent), bias, geometry, binary_input);
  }
  const at::Tensor w = folded_kernel_value(latent, kernel_quantizer, folded->scaled);
  return RuntimeConv2dFunction::apply(x, w, bias.defined() ? bias : no_bias(x), latent, &geometry,
                                      binary_input, folded->clip, folded->scaled);
}

at::Tensor fold_kernel_gradient(at::Tensor gw, const at::Tensor& padding, const at::Tensor& latent,
                                std::optional<double> clip, const at::Tensor& scale) {
  TORCH_CHECK(
      (gw.dim() == 4 || gw.dim() == 2) && gw.scalar_type() == at::kFloat && gw.device().is_cpu(),
      "fold_kernel_gradient: needs a float32 CPU kernel gradient (O, I, kh, kw) or (O, "
      "I), got ",
      gw.sizes(), " ", gw.scalar_type());
  const int64_t rows = gw.size(0), channels = gw.size(1);
  const int64_t taps = gw.dim() == 4 ? gw.size(2) * gw.size(3) : 1, row = channels * taps;
  TORCH_CHECK(!padding.defined() || padding.numel() == rows * taps,
              "fold_kernel_gradient: the padding's part needs ", rows * taps,
              " values (O, kh, kw), got ", padding.sizes());
  TORCH_CHECK(!latent.defined() || latent.sizes() == gw.sizes(),
              "fold_kernel_gradient: the latent kernel ", latent.sizes(),
              " differs from the gradient ", gw.sizes());
  TORCH_CHECK(!scale.defined() || scale.numel() == rows, "fold_kernel_gradient: needs ", rows,
              " scales (one per output channel), got ", scale.sizes());
  const bool mask = latent.defined() && clip.has_value();
  // A channels-last gradient (oneDNN's for channels-last inputs) is transposed row by row.
  const bool transposed = gw.dim() == 4 && !gw.is_contiguous() &&
                          gw.is_contiguous(at::MemoryFormat::ChannelsLast) && taps > 1;
  if (!transposed) gw = gw.contiguous();
  if (!mask && !padding.defined() && !scale.defined() && !transposed) return gw;
  const at::Tensor lat = mask ? latent.detach().contiguous() : at::Tensor();
  const at::Tensor pad = padding.defined() ? padding.detach().contiguous() : at::Tensor();
  const at::Tensor sc = scale.defined() ? scale.detach().contiguous() : at::Tensor();
  // In place unless transposed (gw is then this function's own contiguous copy or the
  // caller's temporary).
  at::Tensor out = transposed ? at::empty(gw.sizes(), gw.options()) : gw;
  const float* gp = gw.data_ptr<float>();
  const float* lp = mask ? lat.data_ptr<float>() : nullptr;
  const float* pp = pad.defined() ? pad.data_ptr<float>() : nullptr;
  const float* sp = sc.defined() ? sc.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const ::onebit::detail::SteMask ste(mask ? *clip : 0.0);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, row));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(static_cast<std::size_t>(transposed ? row : 0));
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = gp + r * row;
      float* dst = op + r * row;
      if (transposed) {  // (kh, kw, I) -> (I, kh, kw)
        for (int64_t t = 0; t < taps; ++t) {
          for (int64_t c = 0; c < channels; ++c) buf[c * taps + t] = g[t * channels + c];
        }
        g = buf.data();
      }
      if (pp != nullptr) {  // the same addition as the unfolded gw + padding, then the rest
        const float* p = pp + r * taps;
        for (int64_t c = 0; c < channels; ++c) {
          for (int64_t t = 0; t < taps; ++t) dst[c * taps + t] = g[c * taps + t] + p[t];
        }
        g = dst;
      }
      if (lp != nullptr) {
        const float* l = lp + r * row;
        if (sp != nullptr) {
          const float s = sp[r];
          for (int64_t j = 0; j < row; ++j) dst[j] = s * (g[j] * ste.factor(l[j]));
        } else {
          for (int64_t j = 0; j < row; ++j) dst[j] = g[j] * ste.factor(l[j]);
        }
      } else if (sp != nullptr) {
        const float s = sp[r];
        for (int64_t j = 0; j < row; ++j) dst[j] = s * g[j];
      } else if (g != dst) {
        std::memcpy(dst, g, static_cast<std::size_t>(row) * sizeof(float));
      }
    }
  });
  return out;
}

at::Tensor padding_kernel_gradient(const at::Tensor& grad_output,
                                   const std::vector<int64_t>& input_size,
                                   const std::vector<int64_t>& kernel_size,
                                   const std::vector<int64_t>& stride,
                                   const std::vector<int64_t>& dilation,
                                   const std::vector<int64_t>& pad_before, double pad_value) {
  TORCH_CHECK(grad_output.dim() == 4 && input_size.size() == 2 && kernel_size.size() == 2 &&
                  stride.size() == 2 && dilation.size() == 2 && pad_before.size() == 2,
              "padding_kernel_gradient: needs a 2-D convolution's output gradient (N, O, OH, "
              "OW) and two sizes each, got ",
              grad_output.sizes());
  const int64_t o = grad_output.size(1), oh = grad_output.size(2), ow = grad_output.size(3);
  const int64_t kh = kernel_size[0], kw = kernel_size[1];
  // reads_padding[(ky, kx)][(oy, ox)] = 1 where tap (ky, kx) of output pixel (oy, ox) lands
  // outside the input.
  std::vector<float> mask(static_cast<std::size_t>(kh * kw * oh * ow));
  std::size_t i = 0;
  for (int64_t ky = 0; ky < kh; ++ky) {
    const auto [oy0, oy1] =
        tap_outputs(ky, input_size[0], oh, stride[0], pad_before[0], dilation[0]);
    for (int64_t kx = 0; kx < kw; ++kx) {
      const auto [ox0, ox1] =
          tap_outputs(kx, input_size[1], ow, stride[1], pad_before[1], dilation[1]);
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          const bool inside = oy >= oy0 && oy < oy1 && ox >= ox0 && ox < ox1;
          mask[i++] = inside ? 0.0F : 1.0F;
        }
      }
    }
  }
  const at::Tensor reads_padding =
      at::from_blob(mask.data(), {kh * kw, oh * ow}, at::TensorOptions().dtype(at::kFloat))
          .to(grad_output.options(), /*non_blocking=*/false, /*copy=*/true);
  // Per output channel and pixel the sum over the images, then per tap over its padded pixels.
  const at::Tensor per_pixel = grad_output.sum(0).reshape({o, oh * ow});
  return at::mm(per_pixel, reads_padding.t()).mul_(pad_value).view({o, kh, kw});
}

at::Tensor runtime_dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                         bool binary_input) {
  return RuntimeDenseFunction::apply(x, w, bias.defined() ? bias : no_bias(x), no_bias(x),
                                     binary_input, std::nullopt, false);
}

at::Tensor runtime_dense(const at::Tensor& x, const at::Tensor& latent,
                         const quantizers::Quantizer& kernel_quantizer, const at::Tensor& bias,
                         bool binary_input) {
  const std::optional<quantizers::FoldedGradient> folded = kernel_quantizer.folded_gradient();
  if (!folded || !at::GradMode::is_enabled() || !latent.requires_grad()) {
    return runtime_dense(x, kernel_quantizer(latent), bias, binary_input);
  }
  const at::Tensor w = folded_kernel_value(latent, kernel_quantizer, folded->scaled);
  return RuntimeDenseFunction::apply(x, w, bias.defined() ? bias : no_bias(x), latent, binary_input,
                                     folded->clip, folded->scaled);
}

}  // namespace detail
}  // namespace onebit::nn
