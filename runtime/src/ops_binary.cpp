// Binary ops: quantize (sign + pack), binary conv2d / dense (im2col on packed words + binary
// GEMM with fused output transform) and binary max pooling.

#include <algorithm>
#include <climits>
#include <cmath>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstring>
#include <map>
#include <memory>

#include "ops.h"

namespace onebit::runtime::detail {

ConvSplit plan_conv_split(std::size_t images, std::size_t rows, std::size_t panels,
                          std::size_t k_words, std::size_t max_rows, int threads,
                          bool split_columns) {
  const auto ceil_div = [](std::size_t a, std::size_t b) { return (a + b - 1) / b; };
  const std::size_t base_chunks = ceil_div(rows, max_rows);
  // One thread: chunks of at most max_rows rows (a multiple of 4), as even as possible.
  const std::size_t base_rows = std::min(rows, ceil_div(ceil_div(rows, base_chunks), 4) * 4);
  ConvSplit best{base_rows, ceil_div(rows, base_rows), panels, 1};
  const auto t = static_cast<std::size_t>(std::max(threads, 1));
  if (t == 1) return best;
  // Cost of a task in units of one XOR-popcount of 8 channels: the GEMM, its im2col and a fixed
  // overhead; the makespan of equal tasks handed out to t threads is ceil(tasks / t) tasks.
  double best_cost = -1;
  const std::size_t max_blocks = split_columns ? std::min(panels, 2 * t) : 1;
  for (std::size_t blocks = 1; blocks <= max_blocks; ++blocks) {
    const std::size_t block_panels = ceil_div(panels, blocks);
    if (ceil_div(panels, block_panels) != blocks) continue;  // same split as a smaller count
    for (std::size_t chunks = base_chunks; chunks <= base_chunks + 2 * t; ++chunks) {
      // Chunks of whole 4-row tiles, or of any row count (49 rows: 25 + 24 instead of 28 + 21).
      for (std::size_t unit : {4, 1}) {
        const std::size_t chunk_rows =
            std::min(rows, ceil_div(ceil_div(rows, chunks), unit) * unit);
        const std::size_t real_chunks = ceil_div(rows, chunk_rows);
        if (real_chunks != chunks) continue;
        const std::size_t tasks = images * chunks * blocks;
        const double task = static_cast<double>(chunk_rows * k_words * (block_panels + 1) + 256);
        const double cost = static_cast<double>(ceil_div(tasks, t)) * task;
        if (best_cost < 0 || cost < best_cost * 0.999) {
          best_cost = cost;
          best = ConvSplit{chunk_rows, chunks, block_panels, blocks};
        }
      }
    }
  }
  return best;
}

namespace {

constexpr std::int64_t kMaxKBits = std::int64_t{1} << 24;  // float(dot) stays exact
constexpr std::size_t kMaxPackedWords = std::size_t{1} << 26;
constexpr std::int64_t kMaxPlanes = 63;  // thermometer planes: k_bit <= 6

// Bits [bit, bit + n) of a packed row (0 < n <= 64) in the low bits of a word, the rest 0; reads
// a second word only when the range crosses into it.
inline BitWord bits_at(const BitWord* src, std::size_t bit, std::size_t n) {
  const BitWord* s = src + bit / kBitsPerWord;
  const std::size_t shift = bit % kBitsPerWord;
  BitWord v = s[0] >> shift;
  if (shift + n > kBitsPerWord) v |= s[1] << (kBitsPerWord - shift);
  return n == kBitsPerWord ? v : v & ((BitWord{1} << n) - 1);
}

// Appends runs of bits to a row of words, densely (no padding between runs), through a register;
// the last word's bits past the end are 0 after flush().
class BitAppender {
 public:
  explicit BitAppender(BitWord* dst) : dst_(dst) {}
  void put(BitWord v, std::size_t n) {  // v < 2^n, 0 < n <= 64
    cur_ |= v << fill_;                 // fill_ < 64
    fill_ += n;
    if (fill_ >= kBitsPerWord) {
      *dst_++ = cur_;
      fill_ -= kBitsPerWord;
      // The bits of v that did not fit (none when the word was empty before v).
      cur_ = fill_ == 0 ? 0 : v >> (n - fill_);
    }
  }
  // Bits [bit, bit + n) of a packed row, any n.
  void put_range(const BitWord* src, std::size_t bit, std::size_t n) {
    for (; n > kBitsPerWord; n -= kBitsPerWord, bit += kBitsPerWord) {
      put(bits_at(src, bit, kBitsPerWord), kBitsPerWord);
    }
    put(bits_at(src, bit, n), n);
  }
  void put_zeros(std::size_t n) {
    for (; n > kBitsPerWord; n -= kBitsPerWord) put(0, kBitsPerWord);
    put(0, n);
  }
  void flush() {
    if (fill_ > 0) *dst_++ = cur_;
    cur_ = 0, fill_ = 0;
  }

 private:
  BitWord* dst_;
  BitWord cur_ = 0;
  std::size_t fill_ = 0;
};

// Set bits among bits [bit, bit + n) of a packed row.
inline std::int64_t popcount_bits(const BitWord* src, std::size_t bit, std::size_t n) {
  std::int64_t count = 0;
  for (; n > 0;) {
    const std::size_t take = n < kBitsPerWord ? n : kBitsPerWord;
    count += __builtin_popcountll(bits_at(src, bit, take));
    bit += take, n -= take;
  }
  return count;
}

class Quantize final : public PreparedOp {
 public:
  explicit Quantize(const ValueInfo& in) : in_(in) {}
  bool writes_whole_output() const override { return true; }  // whole words per pixel
  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(in_.c);
    const std::size_t words = words_for_bits(c);
    parallel_rows(batch * static_cast<std::size_t>(in_.h * in_.w), c, ctx,
                  [&](std::size_t r0, std::size_t r1) {
                    ctx.kernels->pack_sign_rows(in[0]->f() + r0 * c, r1 - r0, c, c,
                                                out.b() + r0 * words, words);
                  });
  }

 private:
  ValueInfo in_;
};

/// k-bit activations as bit planes: channel c of a pixel becomes channels c * n .. c * n + n - 1
/// (n = 2^k - 1), bit j set (-1) when the level q = nearbyint(clip(x, 0, 1) * n) exceeds j. A
/// level is the number of set planes, so for any +-1 weight w, q * w = (n w - sum_j v_j w) / 2
/// with v_j the planes' +-1 values: a binary layer over the planes gives the k-bit dot exactly.
class Thermometer final : public PreparedOp {
  static constexpr float kRound = 8388608.0f;  // 2^23

 public:
  Thermometer(const ValueInfo& in, int planes)
      : in_(in), planes_(planes), levels_(static_cast<float>(planes)) {}
  bool writes_whole_output() const override { return true; }  // whole words per pixel
  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(in_.c);
    const auto n = static_cast<std::size_t>(planes_);
    const std::size_t words = words_for_bits(c * n);
    parallel_rows(batch * static_cast<std::size_t>(in_.h * in_.w), c * n, ctx,
                  [&](std::size_t r0, std::size_t r1) {
                    for (std::size_t r = r0; r < r1; ++r) {
                      const float* x = in[0]->f() + r * c;
                      BitWord* dst = out.b() + r * words;
                      BitAppender bits(dst);
                      std::size_t i = 0;
#if defined(__SSE2__)
                      for (; i + 4 <= c; i += 4) {
                        alignas(16) std::int32_t q[4];
                        _mm_store_si128(reinterpret_cast<__m128i*>(q), levels4(x + i));
                        for (std::int32_t l : q) put_level(bits, l, n);
                      }
#endif
                      for (; i < c; ++i) put_level(bits, level(x[i]), n);
                      bits.flush();  // whole words: the last one's spare bits are 0
                    }
                  });
  }

 private:
  // The level q = nearbyint(clip(x, 0, 1) * n) in the arithmetic of quantize_levels: NaN (and
  // -0) clip to 0; nearbyint of t in [0, 63] as (t + 2^23) - 2^23, which rounds to an integer
  // half to even in the (never changed) rounding mode, inline instead of a libm call.
  std::int32_t level(float x) const {
    const float v = x > 0.0f ? x : 0.0f;
    const float t = (v < 1.0f ? v : 1.0f) * levels_;
    return static_cast<std::int32_t>((t + kRound) - kRound);
  }
#if defined(__SSE2__)
  // Four levels without branches (levels are random, so the compiler's branches for `level`
  // mispredict): maxps / minps have `level`'s operand order, NaN gives 0.
  __m128i levels4(const float* x) const {
    const __m128 v = _mm_min_ps(_mm_max_ps(_mm_loadu_ps(x), _mm_setzero_ps()), _mm_set1_ps(1.0f));
    const __m128 t = _mm_mul_ps(v, _mm_set1_ps(levels_));
    return _mm_cvttps_epi32(_mm_sub_ps(_mm_add_ps(t, _mm_set1_ps(kRound)), _mm_set1_ps(kRound)));
  }
#endif
  // The low q of n planes set (n <= 63).
  static void put_level(BitAppender& bits, std::int32_t q, std::size_t n) {
    bits.put((BitWord{1} << static_cast<std::uint32_t>(q)) - 1, n);
  }

  ValueInfo in_;
  int planes_;
  float levels_;
};

/// Per-group data of a binary conv: prepacked weights, epilogue arrays, zero-pad correction.
struct BinaryGroup {
  std::vector<BitWord> weights;
  std::vector<float> multiplier, bias;
  std::vector<std::int32_t> threshold;
  std::vector<std::int32_t> correction;  // rows of padded n, empty without zero-padding
};

class BinaryConv final : public PreparedOp {
 public:
  BinaryConv(const Model& model, const Op& op, const ValueInfo& in, ValueInfo& out,
             const std::string& where, bool dense);
  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    run_impl(ctx, in, out, batch, nullptr);
  }
  bool heads_chains() const override { return !output_bits_; }
  void run_with_tail(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
                     std::size_t batch, const RowTail& tail) const override {
    run_impl(ctx, in, out, batch, &tail);
  }
  std::int64_t binary_macs() const override { return win_.out_h * win_.out_w * c_out_ * k_bits_; }
  // Float: every channel of every pixel. Bits: whole bytes of 8 channels, so whole words only
  // when one group covers multiples of 64 channels.
  bool writes_whole_output() const override {
    return !output_bits_ || (groups_ == 1 && c_out_ % 64 == 0);
  }

 private:
  void read_weights(const Tensor& w, std::vector<BitWord>& rows) const;
  void read_epilogue(const Model& model, const Op& op, const std::string& where);
  void build_correction(const std::vector<BitWord>& rows, const std::string& where);
  void im2col(const BitWord* image, std::int64_t g, std::size_t p0, std::size_t p1,
              BitWord* col) const;
  void run_rows(const RunContext& ctx, const BitWord* image, std::size_t out_row0, std::size_t p0,
                std::size_t p1, std::size_t panel0, std::size_t panel1, Buffer& out) const;
  void run_impl(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
                std::size_t batch, const RowTail* tail) const;

  Window win_;
  std::int64_t c_in_ = 0, c_out_ = 0, groups_ = 1, cin_g_ = 0, cout_g_ = 0;
  std::size_t cw_in_ = 0, cw_out_ = 0, cwg_ = 0, k_words_ = 0, chunk_rows_ = 0;
  // Bits from one tap to the next in a row of K: cwg_ whole words, or cin_g_ when taps are
  // packed densely (dense_: channels per group not a multiple of 64, where whole words per tap
  // would leave bits unused in every tap, e.g. 96 channels: 14 words per 3x3 patch instead of 18).
  std::size_t tap_bits_ = 0;
  std::int32_t k_bits_ = 0;
  // Input bit planes per weight channel ("input_planes", thermometer inputs): the stored kernel
  // has cin_g_ / planes_ channels, each repeated over its planes when packed.
  std::int64_t planes_ = 1;
  bool output_bits_ = false, direct_ = false, zero_padding_ = false, dense_ = false;
  // Implicit im2col (one group, whole words per tap): the GEMM reads each patch's words straight
  // from the input, copied once into a zero-bordered image when the conv pads (border words 0:
  // +1, as im2col's padding), at a_offsets_[k] from the patch's first pixel.
  bool implicit_ = false, bordered_ = false;
  std::int64_t border_h_ = 0, border_w_ = 0;  // bordered image size in pixels
  std::vector<std::uint32_t> a_offsets_;
  std::vector<BinaryGroup> groups_data_;
  std::vector<std::uint32_t> correction_row_;
};

BinaryConv::BinaryConv(const Model& model, const Op& op, const ValueInfo& in, ValueInfo& out,
                       const std::string& where, bool dense) {
  const Tensor& w = op_tensor(model, op, "weight", DType::kBits, where);
  c_in_ = in.c;
  planes_ = scalar_attr(op, "input_planes", 1, where);
  require(planes_ >= 1 && planes_ <= kMaxPlanes && in.c % planes_ == 0, where,
          "attribute 'input_planes' = " + std::to_string(planes_) + ", expected 1 to " +
              std::to_string(kMaxPlanes) + " dividing the input's " + std::to_string(in.c) +
              " channels");
  const std::int64_t weight_in = in.c / planes_;  // channels of the stored kernel
  if (dense) {
    require(in.h == 1 && in.w == 1, where,
            "dense input must be (features, 1, 1); flatten it first (found " +
                std::to_string(in.c) + "x" + std::to_string(in.h) + "x" + std::to_string(in.w) +
                ")");
    require(w.shape.size() == 2 && w.shape[1] == weight_in, where,
            "weight shape must be [out, " + std::to_string(weight_in) + "]");
    win_ = read_window(Op{}, in, where, false);
  } else {
    win_ = read_window(op, in, where, false);
    groups_ = scalar_attr(op, "groups", 1, where);
    require(groups_ >= 1 && weight_in % groups_ == 0, where,
            "groups " + std::to_string(groups_) + " must divide input channels " +
                std::to_string(weight_in));
    require(w.shape.size() == 4 && w.shape[1] == win_.kh && w.shape[2] == win_.kw &&
                w.shape[3] == weight_in / groups_,
            where,
            planes_ == 1 ? std::string("weight shape must be [out, kh, kw, in/groups]")
                         : "weight shape must be [out, kh, kw, in/groups/input_planes]");
  }
  c_out_ = w.shape[0];
  require(c_out_ % groups_ == 0, where, "groups must divide output channels");
  cin_g_ = c_in_ / groups_, cout_g_ = c_out_ / groups_;
  cw_in_ = words_for_bits(static_cast<std::size_t>(c_in_));
  cw_out_ = words_for_bits(static_cast<std::size_t>(c_out_));
  cwg_ = words_for_bits(static_cast<std::size_t>(cin_g_));
  const auto taps = static_cast<std::size_t>(win_.kh * win_.kw);
  k_words_ = taps * cwg_;
  tap_bits_ = cwg_ * kBitsPerWord;
  // Dense taps cost bit shifts in im2col; with one group and one word per pixel (fewer than 64
  // channels) reading whole words in place (implicit im2col, below) measured faster.
  const bool one_word_pixels = groups_ == 1 && cin_g_ < 64;
  if (!one_word_pixels && words_for_bits(taps * static_cast<std::size_t>(cin_g_)) < k_words_) {
    dense_ = true;
    k_words_ = words_for_bits(taps * static_cast<std::size_t>(cin_g_));
    tap_bits_ = static_cast<std::size_t>(cin_g_);
  }
  const std::int64_t k_bits = win_.kh * win_.kw * cin_g_;
  require(k_bits <= kMaxKBits, where,
          "kernel of " + std::to_string(k_bits) + " elements exceeds 2^24");
  require(k_words_ * bgemm_padded_n(static_cast<std::size_t>(c_out_)) <= kMaxPackedWords, where,
          "packed weights too large");
  k_bits_ = static_cast<std::int32_t>(k_bits);
  output_bits_ = scalar_attr(op, "output_bits", 0, where) != 0;
  zero_padding_ = scalar_attr(op, "zero_padding", 0, where) != 0 &&
                  (win_.pad_top | win_.pad_left | win_.pad_bottom | win_.pad_right) != 0;
  direct_ = groups_ == 1 && win_.kh == 1 && win_.kw == 1 && win_.sh == 1 && win_.sw == 1 &&
            win_.pad_top + win_.pad_left + win_.pad_bottom + win_.pad_right == 0;
  chunk_rows_ = std::clamp<std::size_t>(32768 / k_words_, 16, 1024) / 4 * 4;
  std::vector<BitWord> rows;
  read_weights(w, rows);
  groups_data_.resize(static_cast<std::size_t>(groups_));
  for (std::int64_t g = 0; g < groups_; ++g) {
    groups_data_[g].weights =
        prepack_bgemm_weights(rows.data() + g * cout_g_ * k_words_,
                              static_cast<std::size_t>(cout_g_), k_words_, k_words_);
  }
  read_epilogue(model, op, where);
  if (zero_padding_) build_correction(rows, where);
  bordered_ = (win_.pad_top | win_.pad_left | win_.pad_bottom | win_.pad_right) != 0;
  border_h_ = win_.in_h + win_.pad_top + win_.pad_bottom;
  border_w_ = win_.in_w + win_.pad_left + win_.pad_right;
  implicit_ = groups_ == 1 && !dense_ && !direct_ &&
              static_cast<double>(border_h_) * static_cast<double>(border_w_) *
                      static_cast<double>(cw_in_) <
                  4e9;
  if (implicit_) {
    for (std::int64_t ky = 0; ky < win_.kh; ++ky) {
      for (std::int64_t kx = 0; kx < win_.kw; ++kx) {
        for (std::size_t c = 0; c < cw_in_; ++c) {
          a_offsets_.push_back(static_cast<std::uint32_t>(
              static_cast<std::size_t>(ky * win_.dh * border_w_ + kx * win_.dw) * cw_in_ + c));
        }
      }
    }
  }
  out = ValueInfo{output_bits_ ? DType::kBits : DType::kFloat32, c_out_, win_.out_h, win_.out_w};
}

// Dense bit stream [out][kh][kw][cin_g] -> rows of k_words words, tap t at bit t * tap_bits_.
void BinaryConv::read_weights(const Tensor& w, std::vector<BitWord>& rows) const {
  rows.assign(static_cast<std::size_t>(c_out_) * k_words_, 0);
  const auto taps = static_cast<std::size_t>(win_.kh * win_.kw);
  const auto cin = static_cast<std::size_t>(cin_g_);
  const auto planes = static_cast<std::size_t>(planes_);
  for (std::size_t o = 0; o < static_cast<std::size_t>(c_out_); ++o) {
    BitWord* row = rows.data() + o * k_words_;
    for (std::size_t t = 0; t < taps; ++t) {
      if (planes == 1) {
        copy_bits(w.bits(), (o * taps + t) * cin, cin, row, t * tap_bits_);
        continue;
      }
      // Thermometer input: each stored weight bit serves its channel's planes.
      const std::size_t src = (o * taps + t) * (cin / planes);
      for (std::size_t i = 0; i < cin / planes; ++i) {
        if (!get_bit(w.bits(), src + i)) continue;
        for (std::size_t j = 0; j < planes; ++j) set_bit(row, t * tap_bits_ + i * planes + j, true);
      }
    }
  }
}

void BinaryConv::read_epilogue(const Model& model, const Op& op, const std::string& where) {
  const auto n = static_cast<std::size_t>(cout_g_);
  const std::size_t n_pad = bgemm_padded_n(n);
  const Tensor* mult = nullptr;
  const Tensor* bias = nullptr;
  const Tensor* threshold = nullptr;
  const auto check_len = [&](const Tensor& t, const std::string& role) {
    require(t.shape.size() == 1 && t.shape[0] == c_out_, where,
            "tensor '" + role + "' must have shape [" + std::to_string(c_out_) + "]");
  };
  if (output_bits_) {
    threshold = &op_tensor(model, op, "threshold", DType::kInt32, where);
    check_len(*threshold, "threshold");
  } else {
    if (has_tensor(op, "multiplier")) {
      mult = &op_tensor(model, op, "multiplier", DType::kFloat32, where);
      check_len(*mult, "multiplier");
    }
    if (has_tensor(op, "bias")) {
      bias = &op_tensor(model, op, "bias", DType::kFloat32, where);
      check_len(*bias, "bias");
    }
  }
  for (std::int64_t g = 0; g < groups_; ++g) {
    BinaryGroup& gd = groups_data_[g];
    gd.multiplier.assign(n_pad, 1.0f);
    gd.bias.assign(n_pad, 0.0f);
    gd.threshold.assign(n_pad, INT32_MIN);
    for (std::size_t o = 0; o < n; ++o) {
      const std::size_t src = static_cast<std::size_t>(g) * n + o;
      if (mult != nullptr) gd.multiplier[o] = mult->floats()[src];
      if (bias != nullptr) gd.bias[o] = bias->floats()[src];
      if (threshold != nullptr) gd.threshold[o] = threshold->ints()[src];
    }
  }
}

// Zero-padding: padded taps contribute 0 instead of (+1) * w, so subtract the sum of w over the
// padded taps. Output positions share a table row when the same taps fall outside the input.
void BinaryConv::build_correction(const std::vector<BitWord>& rows, const std::string& where) {
  // The taps of one output position that fall inside the input form one range [lo, hi) (the
  // input coordinate o * stride - pad + t * dilation grows with the tap t), so positions are
  // classed by that range, computed in O(1).
  using Range = std::pair<std::int64_t, std::int64_t>;
  const auto ceil_div = [](std::int64_t a, std::int64_t b) {  // b > 0
    return a >= 0 ? (a + b - 1) / b : -((-a) / b);
  };
  const auto class_of = [&](std::int64_t out, std::int64_t k, std::int64_t in, std::int64_t stride,
                            std::int64_t pad, std::int64_t dilation, std::vector<Range>& ranges) {
    std::vector<std::uint32_t> cls(static_cast<std::size_t>(out));
    std::map<Range, std::uint32_t> index;
    const std::int64_t d = std::max<std::int64_t>(dilation, 1);
    for (std::int64_t o = 0; o < out; ++o) {
      const std::int64_t start = o * stride - pad;  // coordinate of tap 0
      std::int64_t lo = std::clamp<std::int64_t>(ceil_div(-start, d), 0, k);
      std::int64_t hi = std::clamp<std::int64_t>(ceil_div(in - start, d), 0, k);
      if (lo >= hi) lo = hi = 0;  // every tap outside
      const auto [it, added] =
          index.emplace(Range{lo, hi}, static_cast<std::uint32_t>(ranges.size()));
      if (added) ranges.push_back({lo, hi});
      cls[static_cast<std::size_t>(o)] = it->second;
    }
    return cls;
  };
  std::vector<Range> yranges, xranges;
  const auto ycls =
      class_of(win_.out_h, win_.kh, win_.in_h, win_.sh, win_.pad_top, win_.dh, yranges);
  const auto xcls =
      class_of(win_.out_w, win_.kw, win_.in_w, win_.sw, win_.pad_left, win_.dw, xranges);
  const auto padded = [](const Range& r, std::int64_t t) { return t < r.first || t >= r.second; };
  // Bounded work and memory whatever the file says (a 3x3 layer has at most 9 classes).
  const std::size_t n_pad = bgemm_padded_n(static_cast<std::size_t>(cout_g_));
  const double work = static_cast<double>(yranges.size()) * static_cast<double>(xranges.size()) *
                      static_cast<double>(c_out_) * static_cast<double>(k_words_);
  require(work <= static_cast<double>(kMaxPackedWords) * 4, where,
          "zero-padding correction of " + std::to_string(yranges.size() * xranges.size()) +
              " border classes x " + std::to_string(c_out_) +
              " output channels is too large (padding much larger than the kernel?)");
  require(static_cast<double>(win_.out_h) * static_cast<double>(win_.out_w) <=
              static_cast<double>(kMaxPackedWords),
          where,
          "output of " + std::to_string(win_.out_h) + "x" + std::to_string(win_.out_w) +
              " positions exceeds 2^26");
  correction_row_.resize(static_cast<std::size_t>(win_.out_h * win_.out_w));
  for (std::int64_t y = 0; y < win_.out_h; ++y) {
    for (std::int64_t x = 0; x < win_.out_w; ++x) {
      correction_row_[y * win_.out_w + x] =
          ycls[y] * static_cast<std::uint32_t>(xranges.size()) + xcls[x];
    }
  }
  for (std::int64_t g = 0; g < groups_; ++g) {
    auto& table = groups_data_[g].correction;
    table.assign(yranges.size() * xranges.size() * n_pad, 0);
    for (std::size_t cy = 0; cy < yranges.size(); ++cy) {
      for (std::size_t cx = 0; cx < xranges.size(); ++cx) {
        for (std::int64_t o = 0; o < cout_g_; ++o) {
          const BitWord* row = rows.data() + (g * cout_g_ + o) * k_words_;
          std::int32_t sum = 0;
          for (std::int64_t ky = 0; ky < win_.kh; ++ky) {
            for (std::int64_t kx = 0; kx < win_.kw; ++kx) {
              if (!padded(yranges[cy], ky) && !padded(xranges[cx], kx)) continue;
              // +1 per clear bit, -1 per set bit.
              const std::int64_t set =
                  popcount_bits(row, static_cast<std::size_t>(ky * win_.kw + kx) * tap_bits_,
                                static_cast<std::size_t>(cin_g_));
              sum += static_cast<std::int32_t>(cin_g_ - 2 * set);
            }
          }
          table[(cy * xranges.size() + cx) * n_pad + o] = sum;
        }
      }
    }
  }
}

// Patch rows of output pixels [p0, p1) for group g: each tap's cin_g channels of the group, then
// zeros up to tap_bits_ (whole words per tap unless dense_); a tap outside the image is all
// zeros (one-padding: bit 0 is +1; zero padding is corrected in the GEMM's epilogue). The window
// is read into locals (the stores through the appender could otherwise alias the members).
void BinaryConv::im2col(const BitWord* image, std::int64_t g, std::size_t p0, std::size_t p1,
                        BitWord* col) const {
  const auto cin = static_cast<std::size_t>(cin_g_);
  const std::size_t bit0 = static_cast<std::size_t>(g) * cin, gap = tap_bits_ - cin;
  const std::size_t cw = cw_in_;
  const Window w = win_;
  for (std::size_t p = p0; p < p1; ++p) {
    const auto oy = static_cast<std::int64_t>(p) / w.out_w;
    const auto ox = static_cast<std::int64_t>(p) % w.out_w;
    const std::int64_t iy0 = w.in_y(oy, 0), ix0 = w.in_x(ox, 0);
    BitAppender dst(col + (p - p0) * k_words_);
    for (std::int64_t ky = 0, iy = iy0; ky < w.kh; ++ky, iy += w.dh) {
      const bool row_in = iy >= 0 && iy < w.in_h;
      const BitWord* row = row_in ? image + static_cast<std::size_t>(iy * w.in_w) * cw : image;
      for (std::int64_t kx = 0, ix = ix0; kx < w.kw; ++kx, ix += w.dw) {
        if (!row_in || ix < 0 || ix >= w.in_w) {
          dst.put_zeros(tap_bits_);
          continue;
        }
        dst.put_range(row + static_cast<std::size_t>(ix) * cw, bit0, cin);
        if (gap != 0) dst.put_zeros(gap);
      }
    }
    dst.flush();
  }
}

// Output rows [p0, p1) of one image and output channel panels [panel0, panel1) of each group
// (all panels unless there is one group); out_row0 is the index of the image's first output
// pixel. Each output element's arithmetic does not depend on the ranges.
void BinaryConv::run_rows(const RunContext& ctx, const BitWord* image, std::size_t out_row0,
                          std::size_t p0, std::size_t p1, std::size_t panel0, std::size_t panel1,
                          Buffer& out) const {
  const std::size_t rows = p1 - p0;
  BitWord* col = direct_ || implicit_ ? nullptr : thread_scratch(rows * k_words_, 0);
  std::uint64_t* a_rows = implicit_ ? thread_scratch(rows, 0) : nullptr;
  const auto out_w = static_cast<std::size_t>(win_.out_w);
  std::size_t first_row = 0;  // output row whose window starts at `image`'s first row
  if (implicit_ && bordered_ && p1 > p0) {
    // The zero-bordered input rows that these output rows read, copied by this thread into its
    // own scratch: each thread writes (and keeps in its cache) the part it reads, and no thread
    // waits for a copy of the whole image (made on the caller, it held the second thread back;
    // rows shared by two ranges are copied by both).
    first_row = p0 / out_w;
    const std::size_t last_row = (p1 - 1) / out_w;
    const auto by0 = static_cast<std::int64_t>(first_row) * win_.sh;
    const std::int64_t by1 =
        static_cast<std::int64_t>(last_row) * win_.sh + (win_.kh - 1) * win_.dh + 1;
    const auto row_words = static_cast<std::size_t>(border_w_) * cw_in_;
    const auto left = static_cast<std::size_t>(win_.pad_left) * cw_in_;
    const auto in_row = static_cast<std::size_t>(win_.in_w) * cw_in_;
    BitWord* copy = thread_scratch(static_cast<std::size_t>(by1 - by0) * row_words, 2);
    for (std::int64_t by = by0; by < by1; ++by) {
      const std::int64_t y = by - win_.pad_top;
      fill_bordered_row(
          copy + static_cast<std::size_t>(by - by0) * row_words,
          y >= 0 && y < win_.in_h ? image + static_cast<std::size_t>(y) * in_row : nullptr, left,
          in_row, row_words);
    }
    image = copy;
  }
  if (implicit_ && p1 > p0) {  // first word of each patch in the (bordered) image
    // Walks the output positions (one division for the first; a division per pixel cost about
    // a tenth of a 64-channel layer).
    const auto row_step = static_cast<std::uint64_t>(win_.sh * border_w_) * cw_in_;
    const auto col_step = static_cast<std::uint64_t>(win_.sw) * cw_in_;
    std::size_t ox = p0 % out_w;
    std::uint64_t row_start = (p0 / out_w - first_row) * row_step;
    for (std::size_t i = 0; i < rows; ++i) {
      a_rows[i] = row_start + ox * col_step;
      if (++ox == out_w) ox = 0, row_start += row_step;
    }
  }
  const bool aligned_bits = groups_ == 1 || cout_g_ % 8 == 0;
  const std::size_t temp_words = words_for_bits(static_cast<std::size_t>(cout_g_));
  BitWord* temp = nullptr;
  if (output_bits_ && !aligned_bits) {
    temp = thread_scratch(rows * temp_words, 1);
    std::fill(temp, temp + rows * temp_words, BitWord{0});
  }
  const std::size_t o0 = panel0 * kBgemmPanel;
  const std::size_t o1 = std::min(panel1 * kBgemmPanel, static_cast<std::size_t>(cout_g_));
  for (std::int64_t g = 0; g < groups_; ++g) {
    const BinaryGroup& gd = groups_data_[g];
    BgemmArgs args;
    if (direct_) {
      args.a = image + p0 * cw_in_, args.lda = cw_in_;
    } else if (implicit_) {
      args.a = image, args.a_rows = a_rows, args.a_offsets = a_offsets_.data();
    } else {
      im2col(image, g, p0, p1, col);
      args.a = col, args.lda = k_words_;
    }
    args.b = gd.weights.data() + panel0 * k_words_ * kBgemmPanel;
    args.m = rows, args.n = o1 - o0, args.k_words = k_words_;
    args.k_bits = k_bits_;
    if (!gd.correction.empty()) {
      args.epilogue.correction_table = gd.correction.data() + o0;
      args.epilogue.correction_row = correction_row_.data() + p0;
      args.epilogue.correction_ld = bgemm_padded_n(static_cast<std::size_t>(cout_g_));
    }
    const std::size_t row0 = out_row0 + p0;
    if (!output_bits_) {
      args.epilogue.kind = BgemmEpilogue::Kind::kFloat;
      args.epilogue.multiplier = gd.multiplier.data() + o0;
      args.epilogue.bias = gd.bias.data() + o0;
      args.out_float = out.f() + row0 * c_out_ + g * cout_g_ + o0, args.ldo = c_out_;
    } else {
      args.epilogue.kind = BgemmEpilogue::Kind::kBits;
      args.epilogue.threshold = gd.threshold.data() + o0;
      if (aligned_bits) {
        args.out_bits = reinterpret_cast<std::uint8_t*>(out.b() + row0 * cw_out_) +
                        (g * cout_g_ + static_cast<std::int64_t>(o0)) / 8;
        args.ldo = cw_out_ * sizeof(BitWord);
      } else {
        args.out_bits = reinterpret_cast<std::uint8_t*>(temp);
        args.ldo = temp_words * sizeof(BitWord);
      }
    }
    ctx.kernels->bgemm(args);
    if (output_bits_ && !aligned_bits) {
      for (std::size_t r = 0; r < rows; ++r) {
        copy_bits(temp + r * temp_words, 0, static_cast<std::size_t>(cout_g_),
                  out.b() + (row0 + r) * cw_out_, static_cast<std::size_t>(g * cout_g_));
      }
    }
  }
}

// With a tail: the tasks cover whole output rows (the split cuts no channels then), and each
// hands its rows to the tail when it has written them.
void BinaryConv::run_impl(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
                          std::size_t batch, const RowTail* tail) const {
  const auto in_pixels = static_cast<std::size_t>(win_.in_h * win_.in_w);
  const auto out_pixels = static_cast<std::size_t>(win_.out_h * win_.out_w);
  // Direct (1x1, no padding): all images are one matrix of rows.
  const std::size_t images = direct_ ? 1 : batch;
  const std::size_t rows_per_image = direct_ ? batch * out_pixels : out_pixels;
  const std::size_t panels = bgemm_padded_n(static_cast<std::size_t>(cout_g_)) / kBgemmPanel;
  // Output channels are not cut when per-element ops follow: they run inside each task on the
  // rows it wrote, instead of in a second pass that reads the other core's channels.
  const ConvSplit split = plan_conv_split(images, rows_per_image, panels, k_words_, chunk_rows_,
                                          ctx.threads, groups_ == 1 && tail == nullptr);
  const std::size_t per_image = split.row_chunks * split.col_blocks;
  const BitWord* source = in[0]->b();
  parallel_for(images * per_image, ctx, [&](std::size_t task) {
    const std::size_t image = task / per_image, rest = task % per_image;
    const std::size_t p0 = (rest / split.col_blocks) * split.chunk_rows;
    const std::size_t p1 = std::min(p0 + split.chunk_rows, rows_per_image);
    const std::size_t panel0 = (rest % split.col_blocks) * split.block_panels;
    const std::size_t panel1 = std::min(panel0 + split.block_panels, panels);
    run_rows(ctx, source + image * in_pixels * cw_in_, image * out_pixels, p0, p1, panel0, panel1,
             out);
    if (tail != nullptr) (*tail)(image * out_pixels + p0, image * out_pixels + p1);
  });
}

class BinaryMaxPool final : public PreparedOp {
 public:
  bool writes_whole_output() const override { return true; }  // every word of every pixel
  BinaryMaxPool(const Model& model, const Op& op, const ValueInfo& in, ValueInfo& out,
                const std::string& where) {
    win_ = read_window(op, in, where, true);
    require(win_.dh == 1 && win_.dw == 1, where, "dilation must be 1");
    require(2 * win_.pad_top <= win_.kh && 2 * win_.pad_bottom <= win_.kh &&
                2 * win_.pad_left <= win_.kw && 2 * win_.pad_right <= win_.kw,
            where, "padding must be at most half the kernel");
    words_ = words_for_bits(static_cast<std::size_t>(in.c));
    min_mask_.assign(words_, 0);
    if (has_tensor(op, "min_channels")) {
      const Tensor& t = op_tensor(model, op, "min_channels", DType::kBits, where);
      require(t.shape.size() == 1 && t.shape[0] == in.c, where,
              "tensor 'min_channels' must have shape [" + std::to_string(in.c) + "]");
      copy_bits(t.bits(), 0, static_cast<std::size_t>(in.c), min_mask_.data(), 0);
    }
    out = ValueInfo{DType::kBits, in.c, win_.out_h, win_.out_w};
  }

  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto in_pixels = static_cast<std::size_t>(win_.in_h * win_.in_w);
    const auto out_pixels = static_cast<std::size_t>(win_.out_h * win_.out_w);
    const std::size_t work = 64 * words_ * static_cast<std::size_t>(win_.kh * win_.kw);
    parallel_rows(batch * out_pixels, work, ctx, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) {
        const BitWord* image = in[0]->b() + (r / out_pixels) * in_pixels * words_;
        pool_pixel(image, static_cast<std::int64_t>(r % out_pixels), out.b() + r * words_);
      }
    });
  }

 private:
  // Max of +-1 values is +1 unless all are -1: AND of bits; channels whose pre-pool transform
  // was decreasing (negative batch-norm multiplier, see builder) take the min: OR of bits.
  void pool_pixel(const BitWord* image, std::int64_t p, BitWord* dst) const {
    const std::int64_t oy = p / win_.out_w, ox = p % win_.out_w;
    for (std::size_t w = 0; w < words_; ++w) {
      BitWord all = ~BitWord{0}, any = 0;
      for (std::int64_t ky = 0; ky < win_.kh; ++ky) {
        const std::int64_t iy = win_.in_y(oy, ky);
        for (std::int64_t kx = 0; kx < win_.kw; ++kx) {
          const std::int64_t ix = win_.in_x(ox, kx);
          if (iy < 0 || iy >= win_.in_h || ix < 0 || ix >= win_.in_w) continue;
          const BitWord v = image[static_cast<std::size_t>(iy * win_.in_w + ix) * words_ + w];
          all &= v, any |= v;
        }
      }
      dst[w] = (all & ~min_mask_[w]) | (any & min_mask_[w]);
    }
  }

  Window win_;
  std::size_t words_ = 0;
  std::vector<BitWord> min_mask_;
};

}  // namespace

std::unique_ptr<PreparedOp> prepare_quantize(const Model&, const Op&,
                                             const std::vector<ValueInfo>& inputs,
                                             ValueInfo& output, const std::string&) {
  const ValueInfo& in = inputs[0];
  output = ValueInfo{DType::kBits, in.c, in.h, in.w};
  return std::make_unique<Quantize>(in);
}

std::unique_ptr<PreparedOp> prepare_thermometer(const Model&, const Op& op,
                                                const std::vector<ValueInfo>& inputs,
                                                ValueInfo& output, const std::string& where) {
  const std::int64_t k = required_attr(op, "k_bit", 1, 6, where);
  const ValueInfo& in = inputs[0];
  const std::int64_t planes = (std::int64_t{1} << k) - 1;
  output = ValueInfo{DType::kBits, in.c * planes, in.h, in.w};
  return std::make_unique<Thermometer>(in, static_cast<int>(planes));
}

std::unique_ptr<PreparedOp> prepare_binary_conv2d(const Model& model, const Op& op,
                                                  const std::vector<ValueInfo>& inputs,
                                                  ValueInfo& output, const std::string& where) {
  return std::make_unique<BinaryConv>(model, op, inputs[0], output, where, false);
}

std::unique_ptr<PreparedOp> prepare_binary_dense(const Model& model, const Op& op,
                                                 const std::vector<ValueInfo>& inputs,
                                                 ValueInfo& output, const std::string& where) {
  return std::make_unique<BinaryConv>(model, op, inputs[0], output, where, true);
}

std::unique_ptr<PreparedOp> prepare_binary_maxpool2d(const Model& model, const Op& op,
                                                     const std::vector<ValueInfo>& inputs,
                                                     ValueInfo& output, const std::string& where) {
  return std::make_unique<BinaryMaxPool>(model, op, inputs[0], output, where);
}

}  // namespace onebit::runtime::detail
