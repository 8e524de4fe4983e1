#pragma once
// Internal: the one table of op definitions. Every pass that needs to know something about an op
// type reads it here: its name (files, messages), arity, accepted input dtypes, the format
// version that introduced it (file reader), its fusion properties (builder) and its prepare
// function (interpreter). Adding an op is one entry in op_table.cpp plus its prepare/run code.

#include <cstddef>
#include <cstdint>

#include "ops.h"

namespace onebit::runtime::detail {

/// Which family of kernels (and source file) implements an op.
enum class OpFamily : std::uint8_t {
  kBinary,  ///< XOR/popcount kernels on packed bits (ops_binary.cpp, kernels/).
  kFloat,   ///< Plain C++ float math (ops_float.cpp).
  kLayout,  ///< Data movement only, float or bits (ops_layout.cpp).
};

/// Bit mask of the input dtypes an op accepts.
enum InputDTypes : std::uint8_t {
  kTakesFloat = 1,  ///< float32 values.
  kTakesBits = 2,   ///< bit-packed values.
  kTakesAny = 3,    ///< either; bits are read as +-1 unless the op keeps them packed.
};

/// What the builder's fuser may do with an op (bit mask).
enum FusionFlags : std::uint8_t {
  kNoFusion = 0,
  /// Has a float output transform `float(acc) * multiplier + bias` that a following batch norm
  /// folds into while the op has no multiplier/bias yet.
  kFoldsBatchNorm = 1,
  /// Binary op whose float output can become bits via integer thresholds (a following sign).
  kThresholdsSign = 2,
};

/// Most inputs an op of any type may have (also the limit of the file reader).
inline constexpr std::size_t kMaxOpInputs = 256;

/// One op type.
struct OpDef {
  OpType type;                  ///< Its enum value (= its number in files).
  const char* name;             ///< Name in files, messages and docs, e.g. "binary_conv2d".
  std::uint16_t min_inputs;     ///< Fewest inputs.
  std::uint16_t max_inputs;     ///< Most inputs.
  std::uint8_t input_dtypes;    ///< InputDTypes mask, checked for every input.
  OpFamily family;              ///< Kernel family.
  std::uint32_t since_version;  ///< First `.obnn` format version that has this op.
  std::uint8_t fusion;          ///< FusionFlags mask.
  PrepareFn prepare;            ///< Validates attributes/tensors, computes the output shape.
};

/// The entry of a raw op type number, or nullptr when this build does not know it.
const OpDef* find_op_def(std::uint32_t type);

/// The entry of `type`; throws ModelError for an op type without entry.
const OpDef& op_def(OpType type);

/// Number of entries; they cover the op type numbers 1 .. op_def_count() without gaps.
std::size_t op_def_count();

}  // namespace onebit::runtime::detail
