#pragma once
/// \file
/// The runtime's model: a graph of ops over named tensors, and the `.obnn` file that stores it
/// (layout in docs/model-format.md). Build one with `ModelBuilder` (builder.h), run it with
/// `Interpreter` (interpreter.h).

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "onebit/runtime/bitpack.h"

namespace onebit::runtime {

/// Error raised for a malformed or unsupported model (file or in-memory graph). The message
/// names the file (or "<memory>"), the field, the value found and what was expected.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Element type of a tensor. `kBits` holds +-1 values, one bit each (see bitpack.h).
enum class DType : std::uint8_t { kFloat32 = 0, kInt32 = 1, kBits = 2 };

/// Lower-case name of a dtype: "float32", "int32", "bits".
const char* dtype_name(DType dtype);

/// A constant tensor of a model (weights, per-channel parameters).
/// Storage: kFloat32/kInt32 as 4-byte little-endian values; kBits as a dense bit stream over all
/// elements in row-major order (element i in bit i % 64 of word i / 64, no per-row padding).
struct Tensor {
  std::string name;                 ///< Unique within the model, e.g. "conv1.weight".
  DType dtype = DType::kFloat32;    ///< Element type.
  std::vector<std::int64_t> shape;  ///< Logical shape, e.g. {out, kh, kw, in} for conv weights.
  std::vector<std::uint64_t> data;  ///< Raw storage, `storage_bytes()` rounded up to 8 bytes.

  /// Number of elements (product of the shape; 1 for a scalar).
  std::int64_t numel() const;
  /// Bytes of payload: 4 * numel for float32/int32, ceil(numel / 64) * 8 for bits.
  std::size_t storage_bytes() const;
  /// Float view (kFloat32 only).
  const float* floats() const { return reinterpret_cast<const float*>(data.data()); }
  /// Int view (kInt32 only).
  const std::int32_t* ints() const { return reinterpret_cast<const std::int32_t*>(data.data()); }
  /// Packed view (kBits only).
  const BitWord* bits() const { return data.data(); }

  /// A float32 tensor holding `values`.
  static Tensor from_floats(std::string name, std::vector<std::int64_t> shape,
                            const std::vector<float>& values);
  /// An int32 tensor holding `values`.
  static Tensor from_ints(std::string name, std::vector<std::int64_t> shape,
                          const std::vector<std::int32_t>& values);
  /// A bits tensor holding the signs of `values` (x < 0 -> bit 1 = -1).
  static Tensor from_signs(std::string name, std::vector<std::int64_t> shape,
                           const std::vector<float>& values);
};

/// Operations of the runtime graph. The numbers are the op types stored in files: append new
/// ones, never renumber. Attributes and tensor roles per op are listed in docs/model-format.md;
/// `Interpreter` validates them when it prepares a model. Everything else the runtime knows about
/// an op type (name, arity, input dtypes, format version, fusion, prepare function) is one entry
/// of its op table (runtime/src/op_table.cpp).
enum class OpType : std::uint16_t {
  kQuantize = 1,         ///< float -> bits: sign per element.
  kBinaryConv2d = 2,     ///< bits -> float or bits: XOR/popcount conv, fused output transform.
  kBinaryDense = 3,      ///< bits -> float or bits.
  kBinaryMaxPool2d = 4,  ///< bits -> bits: AND (or OR for channels in "min_channels").
  kConv2d = 5,           ///< float conv; weights float32 or bits (+-1 expanded at load).
  kDense = 6,            ///< float dense; weights float32 or bits.
  kBatchNorm = 7,        ///< y = x * multiplier[c] + bias[c].
  kMaxPool2d = 8,        ///< float max pooling, padding ignored.
  kAvgPool2d = 9,        ///< average pooling, float or bits (+-1) input, float output.
  kAdd = 10,             ///< elementwise sum of two values of the same shape (bits read as +-1).
  kRelu = 11,            ///< max(x, 0).
  kPrelu = 12,           ///< x >= 0 ? x : alpha[c] * x.
  kFlatten = 13,         ///< (C,H,W) -> (C*H*W,1,1) in PyTorch's C,H,W order; float or bits.
  kSoftmax = 14,         ///< softmax over channels of a (C,1,1) float value.
  // Format version 2:
  kConcat = 15,           ///< >= 2 values along channels; all bits -> bits, else float (+-1).
  kGlobalAvgPool2d = 16,  ///< (C,H,W) float or bits -> (C,1,1) float mean over H*W.
  // Format version 3:
  kSigmoid = 17,         ///< float -> float: 1 / (1 + exp(-x)).
  kMul = 18,             ///< a * b, b of a's shape or (C,1,1) per channel; bits read as +-1.
  kSliceChannels = 19,   ///< channels [begin, end); float -> float, bits -> bits (kept packed).
  kClip = 20,            ///< float -> float: min(max(x, lo), hi).
  kQuantizeLevels = 21,  ///< float -> float: round(clip(x, 0, 1) * n) / n, n = 2^k_bit - 1.
  // Format version 4 (and the binary conv/dense attribute "input_planes"):
  kThermometer = 22,  ///< float -> bits: C channels -> C * n bit planes, n = 2^k_bit - 1.
};

/// Name of an op type as used in files and messages, e.g. "binary_conv2d"; "unknown" for a
/// number without op.
const char* op_name(OpType type);

/// One op of the graph. Value ids: 0 is the model input, op i produces value i + 1.
struct Op {
  OpType type = OpType::kRelu;                            ///< What the op computes.
  std::vector<std::int32_t> inputs;                       ///< Value ids, all < own id.
  std::map<std::string, std::vector<std::int64_t>> ints;  ///< Integer attributes.
  std::map<std::string, std::int32_t> tensors;            ///< Role -> tensor index.
  /// Free-form name for messages and profiles, e.g. the training-side layer "block3_conv"
  /// (`ModelBuilder::set_name_scope`); empty when none. An op that fusion folded others into
  /// carries all their names joined by '+', e.g. "block1_conv+block1_bn". Stored in files from
  /// format version 3 on (at most 4096 bytes); older files load with empty names. It never
  /// changes results.
  std::string name;

  /// Integer attribute `key` (or `fallback` when absent).
  std::vector<std::int64_t> attr(const std::string& key,
                                 std::vector<std::int64_t> fallback = {}) const;
};

/// A complete model: input shape, tensors, ops and the output value.
struct Model {
  std::vector<std::int64_t> input_shape;        ///< One image, C,H,W (as in training, without N).
  std::vector<Tensor> tensors;                  ///< Constants referenced by ops.
  std::vector<Op> ops;                          ///< In execution order.
  std::int32_t output = 0;                      ///< Value id of the model output.
  std::map<std::string, std::string> metadata;  ///< Free-form key/value strings.
};

/// Current `.obnn` format version written by `save_model`. Loading accepts every version from 1
/// up to this one (each version only with the op types it had) and rejects newer files.
/// History: 1 = ops 1-14; 2 = concat (15), global_avgpool2d (16), add and avgpool2d with bits
/// inputs, up to 256 inputs per op; 3 = sigmoid (17), mul (18), slice_channels (19), clip (20),
/// quantize_levels (21) and a name per op; 4 = thermometer (22) and binary conv2d / dense with
/// "input_planes" (k-bit activations on packed bits).
inline constexpr std::uint32_t kModelFormatVersion = 4;

/// Serializes a model into `.obnn` bytes of format `version` (1 .. kModelFormatVersion), e.g.
/// `serialize_model(m, 2)` for a runtime that reads version 2 at most. Versions below 3 have no
/// op names: they are left out. Throws `ModelError` for a version outside that range or when an
/// op type is newer than `version` (naming the op, its type and the version it needs).
std::vector<std::uint8_t> serialize_model(const Model& model,
                                          std::uint32_t version = kModelFormatVersion);

/// Parses `.obnn` bytes; every size, offset, count, shape and checksum is checked first.
/// Throws `ModelError` naming `source` (a file name or "<memory>").
Model parse_model(const std::uint8_t* bytes, std::size_t size,
                  const std::string& source = "<memory>");

/// Default limit of `load_model` on the file size: 4 GiB (the largest zoo model is about 10 MiB).
inline constexpr std::uint64_t kDefaultMaxModelBytes = std::uint64_t{4} << 30;

/// Reads and parses a `.obnn` file; throws `ModelError` on any problem. A file larger than
/// `max_bytes` is refused before it is read (the message gives both sizes and the limit's name).
Model load_model(const std::string& path, std::uint64_t max_bytes = kDefaultMaxModelBytes);

/// Writes a `.obnn` file of format `version` (see `serialize_model`) atomically (a temporary
/// file in the same directory, then rename). Throws `ModelError` on I/O errors and when the
/// model needs a newer version. Returns the number of bytes written.
std::size_t save_model(const Model& model, const std::string& path,
                       std::uint32_t version = kModelFormatVersion);

}  // namespace onebit::runtime
