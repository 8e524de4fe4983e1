#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>

#include "ops.h"

namespace onebit::runtime::detail {

std::size_t ValueInfo::image_words() const {
  const auto pixels = static_cast<std::size_t>(h * w);
  if (dtype == DType::kBits) return pixels * words_for_bits(static_cast<std::size_t>(c));
  return (pixels * static_cast<std::size_t>(c) + 1) / 2;
}

std::string op_where(std::size_t index, const Op& op) {
  std::string where = "op " + std::to_string(index) + " (" + op_name(op.type);
  if (!op.name.empty()) where += " \"" + op.name + "\"";
  return where + ")";
}

void require(bool ok, const std::string& where, const std::string& what) {
  if (!ok) throw ModelError(where + ": " + what);
}

namespace {

std::vector<std::int64_t> pair_attr(const Op& op, const std::string& key,
                                    std::vector<std::int64_t> fallback, std::int64_t min,
                                    const std::string& where) {
  std::vector<std::int64_t> v = op.attr(key, std::move(fallback));
  require(v.size() == 2, where,
          "attribute '" + key + "' has " + std::to_string(v.size()) + " values, expected 2");
  for (std::int64_t x : v) {
    require(x >= min && x <= 4096, where,
            "attribute '" + key + "' value " + std::to_string(x) + " out of range [" +
                std::to_string(min) + ", 4096]");
  }
  return v;
}

}  // namespace

Window read_window(const Op& op, const ValueInfo& in, const std::string& where,
                   bool stride_defaults_to_kernel) {
  Window w;
  const auto k = pair_attr(op, "kernel", {1, 1}, 1, where);
  const auto s = pair_attr(
      op, "stride", stride_defaults_to_kernel ? k : std::vector<std::int64_t>{1, 1}, 1, where);
  const auto d = pair_attr(op, "dilation", {1, 1}, 1, where);
  const auto p = op.attr("pads", {0, 0, 0, 0});
  require(p.size() == 4, where,
          "attribute 'pads' has " + std::to_string(p.size()) +
              " values, expected 4 (top, left, bottom, right)");
  for (std::int64_t x : p) {
    require(x >= 0 && x <= 4096, where,
            "attribute 'pads' value " + std::to_string(x) + " out of range [0, 4096]");
  }
  w.kh = k[0], w.kw = k[1], w.sh = s[0], w.sw = s[1], w.dh = d[0], w.dw = d[1];
  w.pad_top = p[0], w.pad_left = p[1], w.pad_bottom = p[2], w.pad_right = p[3];
  w.in_h = in.h, w.in_w = in.w;
  const std::int64_t span_h = w.dh * (w.kh - 1) + 1, span_w = w.dw * (w.kw - 1) + 1;
  const std::int64_t ph = in.h + w.pad_top + w.pad_bottom, pw = in.w + w.pad_left + w.pad_right;
  require(ph >= span_h && pw >= span_w, where,
          "window " + std::to_string(span_h) + "x" + std::to_string(span_w) +
              " larger than the padded input " + std::to_string(ph) + "x" + std::to_string(pw));
  w.out_h = (ph - span_h) / w.sh + 1;
  w.out_w = (pw - span_w) / w.sw + 1;
  return w;
}

std::int64_t scalar_attr(const Op& op, const std::string& key, std::int64_t fallback,
                         const std::string& where) {
  const std::vector<std::int64_t> v = op.attr(key, {fallback});
  require(v.size() == 1, where,
          "attribute '" + key + "' has " + std::to_string(v.size()) + " values, expected 1");
  return v[0];
}

std::int64_t required_attr(const Op& op, const std::string& key, std::int64_t min, std::int64_t max,
                           const std::string& where) {
  require(op.ints.count(key) != 0, where, "missing attribute '" + key + "'");
  const std::int64_t v = scalar_attr(op, key, 0, where);
  require(v >= min && v <= max, where,
          "attribute '" + key + "' value " + std::to_string(v) + " out of range [" +
              std::to_string(min) + ", " + std::to_string(max) + "]");
  return v;
}

std::int64_t float_to_attr(float value) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  return static_cast<std::int64_t>(bits);
}

float float_attr(const Op& op, const std::string& key, const std::string& where) {
  const std::int64_t bits = required_attr(op, key, 0, 0xFFFFFFFFll, where);
  const auto u = static_cast<std::uint32_t>(bits);
  float value = 0.0f;
  std::memcpy(&value, &u, sizeof(value));
  require(!std::isnan(value), where,
          "attribute '" + key + "' value " + std::to_string(bits) +
              " is the bit pattern of a NaN, expected a float32 number");
  return value;
}

bool has_tensor(const Op& op, const std::string& role) {
  return op.tensors.find(role) != op.tensors.end();
}

const Tensor& op_tensor(const Model& model, const Op& op, std::string_view role_name, DType dtype,
                        const std::string& where) {
  const std::string role(role_name);
  const auto it = op.tensors.find(role);
  require(it != op.tensors.end(), where, "missing tensor '" + role + "'");
  require(it->second >= 0 && static_cast<std::size_t>(it->second) < model.tensors.size(), where,
          "tensor '" + role + "' index " + std::to_string(it->second) + " out of range");
  const Tensor& t = model.tensors[static_cast<std::size_t>(it->second)];
  require(t.dtype == dtype, where,
          "tensor '" + role + "' (" + t.name + ") has dtype " + dtype_name(t.dtype) +
              ", expected " + dtype_name(dtype));
  require(t.data.size() * 8 >= t.storage_bytes(), where, "tensor '" + role + "' has no data");
  return t;
}

std::uint64_t* thread_scratch(std::size_t words, int slot) {
  struct Block {
    std::unique_ptr<std::uint64_t[]> data;
    std::size_t words = 0;
  };
  thread_local Block blocks[3];
  Block& b = blocks[slot % 3];
  if (b.words < words) {
    const std::size_t grown = std::max(words, b.words + b.words / 2);
    b.data.reset(new std::uint64_t[grown + 8]);  // + room for the alignment below
    b.words = grown;
  }
  // 64-byte alignment inside the block (new[] gives 16).
  const auto addr = reinterpret_cast<std::uintptr_t>(b.data.get());
  return b.data.get() + ((64 - addr % 64) % 64) / sizeof(std::uint64_t);
}

std::string float_string(float value) {
  std::ostringstream s;
  s.precision(9);  // max_digits10 of float
  s << value;
  return s.str();
}

std::string shape_string(const ValueInfo& v) {
  return std::to_string(v.c) + "x" + std::to_string(v.h) + "x" + std::to_string(v.w);
}

const float* row_as_floats(const ValueInfo& v, const Buffer& b, std::size_t row, float* scratch) {
  const std::size_t c = static_cast<std::size_t>(v.c), stride = v.pixel_stride();
  if (v.dtype != DType::kBits) return b.f() + row * stride;
  unpack_signs(b.b() + row * stride, c, scratch);
  return scratch;
}

}  // namespace onebit::runtime::detail
