// The op table (op_table.h) and the generic part of preparing an op: arity and input dtypes.

#include "op_table.h"

namespace onebit::runtime::detail {

namespace {

constexpr std::uint16_t kMany = static_cast<std::uint16_t>(kMaxOpInputs);

// Indexed by op type number - 1; op_table_is_dense() checks the order at compile time.
constexpr OpDef kOpDefs[] = {
    // type, name, min/max inputs, input dtypes, family, since version, fusion, prepare
    {OpType::kQuantize, "quantize", 1, 1, kTakesFloat, OpFamily::kBinary, 1, kNoFusion,
     &prepare_quantize},
    {OpType::kBinaryConv2d, "binary_conv2d", 1, 1, kTakesBits, OpFamily::kBinary, 1,
     kFoldsBatchNorm | kThresholdsSign, &prepare_binary_conv2d},
    {OpType::kBinaryDense, "binary_dense", 1, 1, kTakesBits, OpFamily::kBinary, 1,
     kFoldsBatchNorm | kThresholdsSign, &prepare_binary_dense},
    {OpType::kBinaryMaxPool2d, "binary_maxpool2d", 1, 1, kTakesBits, OpFamily::kBinary, 1,
     kNoFusion, &prepare_binary_maxpool2d},
    {OpType::kConv2d, "conv2d", 1, 1, kTakesFloat, OpFamily::kFloat, 1, kFoldsBatchNorm,
     &prepare_conv2d},
    {OpType::kDense, "dense", 1, 1, kTakesFloat, OpFamily::kFloat, 1, kFoldsBatchNorm,
     &prepare_dense},
    {OpType::kBatchNorm, "batch_norm", 1, 1, kTakesFloat, OpFamily::kFloat, 1, kNoFusion,
     &prepare_batch_norm},
    {OpType::kMaxPool2d, "maxpool2d", 1, 1, kTakesFloat, OpFamily::kFloat, 1, kNoFusion,
     &prepare_pool2d},
    {OpType::kAvgPool2d, "avgpool2d", 1, 1, kTakesAny, OpFamily::kFloat, 1, kNoFusion,
     &prepare_pool2d},
    {OpType::kAdd, "add", 2, 2, kTakesAny, OpFamily::kFloat, 1, kNoFusion, &prepare_add},
    {OpType::kRelu, "relu", 1, 1, kTakesFloat, OpFamily::kFloat, 1, kNoFusion, &prepare_relu},
    {OpType::kPrelu, "prelu", 1, 1, kTakesFloat, OpFamily::kFloat, 1, kNoFusion, &prepare_prelu},
    {OpType::kFlatten, "flatten", 1, 1, kTakesAny, OpFamily::kLayout, 1, kNoFusion,
     &prepare_flatten},
    {OpType::kSoftmax, "softmax", 1, 1, kTakesFloat, OpFamily::kFloat, 1, kNoFusion,
     &prepare_softmax},
    {OpType::kConcat, "concat", 2, kMany, kTakesAny, OpFamily::kLayout, 2, kNoFusion,
     &prepare_concat},
    {OpType::kGlobalAvgPool2d, "global_avgpool2d", 1, 1, kTakesAny, OpFamily::kFloat, 2, kNoFusion,
     &prepare_global_avgpool2d},
    {OpType::kSigmoid, "sigmoid", 1, 1, kTakesFloat, OpFamily::kFloat, 3, kNoFusion,
     &prepare_sigmoid},
    {OpType::kMul, "mul", 2, 2, kTakesAny, OpFamily::kFloat, 3, kNoFusion, &prepare_mul},
    {OpType::kSliceChannels, "slice_channels", 1, 1, kTakesAny, OpFamily::kLayout, 3, kNoFusion,
     &prepare_slice_channels},
    {OpType::kClip, "clip", 1, 1, kTakesFloat, OpFamily::kFloat, 3, kNoFusion, &prepare_clip},
    {OpType::kQuantizeLevels, "quantize_levels", 1, 1, kTakesFloat, OpFamily::kFloat, 3, kNoFusion,
     &prepare_quantize_levels},
    {OpType::kThermometer, "thermometer", 1, 1, kTakesFloat, OpFamily::kBinary, 4, kNoFusion,
     &prepare_thermometer},
};

constexpr std::size_t kOpDefCount = sizeof(kOpDefs) / sizeof(kOpDefs[0]);

constexpr bool op_table_is_dense() {
  for (std::size_t i = 0; i < kOpDefCount; ++i) {
    if (static_cast<std::size_t>(kOpDefs[i].type) != i + 1) return false;
    if (kOpDefs[i].min_inputs < 1 || kOpDefs[i].min_inputs > kOpDefs[i].max_inputs) return false;
    if (kOpDefs[i].since_version < 1 || kOpDefs[i].since_version > kModelFormatVersion) {
      return false;
    }
  }
  return true;
}
static_assert(op_table_is_dense(),
              "kOpDefs must list op types 1, 2, 3, ... in order, with valid arity and versions");

std::string dtypes_string(std::uint8_t mask) {
  if (mask == kTakesAny) return "float32 or bits";
  return mask == kTakesBits ? "bits" : "float32";
}

std::string inputs_string(std::size_t n) {
  return std::to_string(n) + (n == 1 ? " input" : " inputs");
}

}  // namespace

const OpDef* find_op_def(std::uint32_t type) {
  if (type < 1 || type > kOpDefCount) return nullptr;
  return &kOpDefs[type - 1];
}

const OpDef& op_def(OpType type) {
  const OpDef* def = find_op_def(static_cast<std::uint32_t>(type));
  if (def == nullptr) {
    throw ModelError("unknown op type " + std::to_string(static_cast<unsigned>(type)) +
                     ", expected 1.." + std::to_string(kOpDefCount));
  }
  return *def;
}

std::size_t op_def_count() { return kOpDefCount; }

std::unique_ptr<PreparedOp> prepare_op(const Model& model, const Op& op,
                                       const std::vector<ValueInfo>& inputs, ValueInfo& output,
                                       const std::string& where) {
  const OpDef* def = find_op_def(static_cast<std::uint32_t>(op.type));
  require(def != nullptr, where,
          "unknown op type " + std::to_string(static_cast<unsigned>(op.type)) + ", expected 1.." +
              std::to_string(kOpDefCount));
  const std::size_t n = inputs.size();
  if (n < def->min_inputs || n > def->max_inputs) {
    const std::string want =
        def->min_inputs == def->max_inputs
            ? inputs_string(def->min_inputs)
            : std::to_string(def->min_inputs) + " to " + inputs_string(def->max_inputs);
    throw ModelError(where + ": expects " + want + ", found " + std::to_string(n));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t bit = inputs[i].dtype == DType::kBits ? kTakesBits : kTakesFloat;
    require((def->input_dtypes & bit) != 0, where,
            "input " + std::to_string(i) + " has dtype " + dtype_name(inputs[i].dtype) +
                ", expected " + dtypes_string(def->input_dtypes) +
                (bit == kTakesFloat ? " (add a quantize op before it)" : ""));
  }
  return def->prepare(model, op, inputs, output, where);
}

}  // namespace onebit::runtime::detail

namespace onebit::runtime {

const char* op_name(OpType type) {
  const detail::OpDef* def = detail::find_op_def(static_cast<std::uint32_t>(type));
  return def != nullptr ? def->name : "unknown";
}

}  // namespace onebit::runtime
