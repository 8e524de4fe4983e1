// Layout ops: flatten (to PyTorch's C,H,W feature order), concatenation along channels and
// channel slices. All keep bit-packed values packed.

#include <cstring>
#include <limits>
#include <memory>

#include "ops.h"

namespace onebit::runtime::detail {

namespace {

class Flatten final : public PreparedOp {
 public:
  explicit Flatten(const ValueInfo& in) : in_(in) {}
  void run(const RunContext&, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const auto c = static_cast<std::size_t>(in_.c);
    const auto hw = static_cast<std::size_t>(in_.h * in_.w);
    const std::size_t out_words = words_for_bits(c * hw), in_words = words_for_bits(c);
    for (std::size_t n = 0; n < batch; ++n) {
      for (std::size_t p = 0; p < hw; ++p) {
        for (std::size_t ch = 0; ch < c; ++ch) {  // PyTorch order: feature = ch * H * W + p
          if (in_.dtype == DType::kBits) {
            set_bit(out.b() + n * out_words, ch * hw + p,
                    get_bit(in[0]->b() + (n * hw + p) * in_words, ch));
          } else {
            out.f()[n * c * hw + ch * hw + p] = in[0]->f()[(n * hw + p) * c + ch];
          }
        }
      }
    }
  }

 private:
  ValueInfo in_;
};

/// Channel concatenation of values with equal H and W, channels in input order. All inputs bits:
/// packed output, each part copied with `copy_bits` (whole words where the part starts on a word
/// boundary, shifts otherwise; the output's padding bits stay 0 because the interpreter
/// zero-fills it and only the parts' true channels are copied). Otherwise float output with bits
/// expanded to +-1.
class Concat final : public PreparedOp {
 public:
  Concat(const std::vector<ValueInfo>& in, const ValueInfo& out) : in_(in), out_(out) {}

  // Pixels in ranges over the threads, like the per-element ops that read the result (copied on
  // one thread, DenseNet's concatenations left every following op on two threads reading half
  // of a multi-MB value from the other core).
  void run(const RunContext& ctx, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const std::size_t rows = batch * static_cast<std::size_t>(out_.h * out_.w);
    const std::size_t out_stride = out_.pixel_stride();
    parallel_rows(rows, static_cast<std::size_t>(out_.c), ctx, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) {
        std::size_t offset = 0;
        for (std::size_t j = 0; j < in_.size(); ++j) {
          const ValueInfo& part = in_[j];
          const auto c = static_cast<std::size_t>(part.c);
          const std::size_t stride = part.pixel_stride();
          if (out_.dtype == DType::kBits) {
            copy_bits(in[j]->b() + r * stride, 0, c, out.b() + r * out_stride, offset);
          } else if (part.dtype == DType::kBits) {
            unpack_signs(in[j]->b() + r * stride, c, out.f() + r * out_stride + offset);
          } else {
            std::memcpy(out.f() + r * out_stride + offset, in[j]->f() + r * stride,
                        c * sizeof(float));
          }
          offset += c;
        }
      }
    });
  }

 private:
  std::vector<ValueInfo> in_;
  ValueInfo out_;
};

/// Channels [begin, end) of every pixel. Bits: one `copy_bits` per pixel from bit `begin` of the
/// input row to bit 0 of the output row (a word copy when `begin` is a multiple of 64, shifts
/// otherwise); the output's padding bits stay 0 because the interpreter zero-fills it and only
/// the slice's channels are copied. Float: one memcpy per pixel.
class SliceChannels final : public PreparedOp {
 public:
  SliceChannels(const ValueInfo& in, const ValueInfo& out, std::size_t begin)
      : in_(in), out_(out), begin_(begin) {}

  void run(const RunContext&, const std::vector<const Buffer*>& in, Buffer& out,
           std::size_t batch) const override {
    const std::size_t rows = batch * static_cast<std::size_t>(in_.h * in_.w);
    const std::size_t in_stride = in_.pixel_stride(), out_stride = out_.pixel_stride();
    const auto c = static_cast<std::size_t>(out_.c);
    for (std::size_t r = 0; r < rows; ++r) {
      if (in_.dtype == DType::kBits) {
        copy_bits(in[0]->b() + r * in_stride, begin_, c, out.b() + r * out_stride, 0);
      } else {
        std::memcpy(out.f() + r * out_stride, in[0]->f() + r * in_stride + begin_,
                    c * sizeof(float));
      }
    }
  }

 private:
  ValueInfo in_, out_;
  std::size_t begin_;
};

}  // namespace

std::unique_ptr<PreparedOp> prepare_slice_channels(const Model&, const Op& op,
                                                   const std::vector<ValueInfo>& inputs,
                                                   ValueInfo& output, const std::string& where) {
  const ValueInfo& in = inputs[0];
  constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  const std::int64_t begin = required_attr(op, "begin", kMin, kMax, where);
  const std::int64_t end = required_attr(op, "end", kMin, kMax, where);
  require(0 <= begin && begin < end && end <= in.c, where,
          "attributes 'begin' = " + std::to_string(begin) + ", 'end' = " + std::to_string(end) +
              ", expected 0 <= begin < end <= " + std::to_string(in.c) +
              " (the channels of the input, " + shape_string(in) + ")");
  output = ValueInfo{in.dtype, end - begin, in.h, in.w};
  return std::make_unique<SliceChannels>(in, output, static_cast<std::size_t>(begin));
}

std::unique_ptr<PreparedOp> prepare_flatten(const Model&, const Op&,
                                            const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                            const std::string&) {
  const ValueInfo& in = inputs[0];
  output = ValueInfo{in.dtype, in.c * in.h * in.w, 1, 1};
  return std::make_unique<Flatten>(in);
}

std::unique_ptr<PreparedOp> prepare_concat(const Model&, const Op&,
                                           const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                           const std::string& where) {
  const ValueInfo& first = inputs[0];
  std::int64_t channels = 0;
  bool all_bits = true;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const ValueInfo& v = inputs[i];
    require(v.h == first.h && v.w == first.w, where,
            "input " + std::to_string(i) + " has shape " + shape_string(v) +
                ", expected H,W = " + std::to_string(first.h) + "x" + std::to_string(first.w) +
                " as input 0 (" + shape_string(first) + ")");
    channels += v.c;  // no overflow: at most 256 inputs of at most 2^31 channels each
    all_bits = all_bits && v.dtype == DType::kBits;
  }
  output = ValueInfo{all_bits ? DType::kBits : DType::kFloat32, channels, first.h, first.w};
  return std::make_unique<Concat>(inputs, output);
}

}  // namespace onebit::runtime::detail
