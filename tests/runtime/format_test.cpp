// The .obnn file: round trip, atomic save, size, and rejection of damaged files.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "reference_net.h"

namespace onebit::runtime {
namespace {

// Op names (format version 3) included, so that truncations and bit flips also hit them.
Model small_model() {
  std::mt19937 rng(9);
  ModelBuilder b;
  ValueRef x = b.sign(b.input({3, 6, 6}));
  b.set_name_scope("conv1");
  x = b.conv2d(x, Conv2dParams(8, 3).padding(PaddingMode::kSame).binary_kernel(true),
               testing::random_signs(8 * 3 * 9, rng));
  b.set_name_scope("bn1");
  x = b.sign(b.batch_norm(x, testing::random_normal(8, rng), testing::random_normal(8, rng)));
  b.set_name_scope("fc");
  x = b.dense(b.flatten(x), DenseParams(4).binary_kernel(true), testing::random_signs(4 * 288, rng),
              testing::random_normal(4, rng));
  b.output(x);
  b.set_metadata("source", "format_test");
  return b.build();
}

std::vector<float> sample_input() {
  std::mt19937 rng(10);
  return testing::random_normal(2 * 3 * 36, rng);
}

std::vector<std::string> op_names(const Model& m) {
  std::vector<std::string> names;
  for (const Op& op : m.ops) names.push_back(op.name);
  return names;
}

TEST(ModelFormat, RoundTripKeepsResultsAndMetadata) {
  const Model m = small_model();
  const auto bytes = serialize_model(m);
  const Model back = parse_model(bytes.data(), bytes.size());
  EXPECT_EQ(back.metadata.at("source"), "format_test");
  EXPECT_EQ(op_names(back), (std::vector<std::string>{"", "conv1+bn1", "fc", "fc"}));
  EXPECT_EQ(serialize_model(back), bytes);
  EXPECT_EQ(Interpreter(back).run(sample_input(), 2), Interpreter(m).run(sample_input(), 2));
}

TEST(ModelFormat, SaveIsAtomicAndLoadable) {
  const auto dir = std::filesystem::temp_directory_path() / "onebit_format_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "m.obnn").string();
  { std::ofstream(path) << "old contents"; }
  const std::size_t size = save_model(small_model(), path);
  EXPECT_EQ(std::filesystem::file_size(path), size);
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "temporary file left behind";
  EXPECT_EQ(Interpreter::from_file(path).run(sample_input(), 2),
            Interpreter(small_model()).run(sample_input(), 2));
  EXPECT_THROW(load_model((dir / "missing.obnn").string()), ModelError);
  std::filesystem::remove_all(dir);
}

TEST(ModelFormat, SizeIsCloseToOneBitPerBinaryWeight) {
  std::mt19937 rng(1);
  ModelBuilder b;
  ValueRef x = b.sign(b.flatten(b.input({1, 28, 28})));
  x = b.dense(x, DenseParams(512).binary_kernel(true), testing::random_signs(512 * 784, rng));
  b.output(x);
  const auto bytes = serialize_model(b.build());
  const double weight_bytes = 512.0 * 784.0 / 8.0;
  EXPECT_GE(bytes.size(), weight_bytes);
  EXPECT_LT(bytes.size(), weight_bytes + 1024.0);
}

TEST(ModelFormat, EveryTruncationIsRejected) {
  const auto bytes = serialize_model(small_model());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(parse_model(bytes.data(), n, "trunc.obnn"), ModelError) << "prefix " << n;
  }
  auto longer = bytes;
  longer.push_back(0);
  EXPECT_THROW(parse_model(longer.data(), longer.size()), ModelError);
}

TEST(ModelFormat, EveryBitFlipIsRejected) {
  const auto bytes = serialize_model(small_model());
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (int bit : {0, 3, 7}) {
      auto damaged = bytes;
      damaged[i] = static_cast<std::uint8_t>(damaged[i] ^ (1u << bit));
      EXPECT_THROW(parse_model(damaged.data(), damaged.size()), ModelError)
          << "byte " << i << " bit " << bit;
    }
  }
}

std::string error_of(const std::vector<std::uint8_t>& bytes) {
  try {
    parse_model(bytes.data(), bytes.size(), "x.obnn");
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

// The version is a header field outside both CRC-32s, so patching it makes a valid file of
// another version with the same layout.
std::vector<std::uint8_t> with_version(std::vector<std::uint8_t> bytes, std::uint32_t version) {
  std::memcpy(bytes.data() + 8, &version, sizeof(version));
  return bytes;
}

TEST(ModelFormat, NewerVersionAndWrongMagicHaveClearErrors) {
  auto bytes = serialize_model(small_model());
  EXPECT_EQ(kModelFormatVersion, 4u);
  const std::string e1 = error_of(with_version(bytes, kModelFormatVersion + 1));
  EXPECT_NE(e1.find("x.obnn"), std::string::npos) << e1;
  EXPECT_NE(e1.find("format_version"), std::string::npos) << e1;
  EXPECT_NE(e1.find("found 5, expected at most 4 (the newest format version this build"),
            std::string::npos)
      << e1;
  EXPECT_NE(e1.find("newer"), std::string::npos) << e1;
  EXPECT_NE(error_of(with_version(bytes, 0)).find("found 0, expected a version in [1, 4]"),
            std::string::npos);
  auto magic = bytes;
  magic[0] = 'X';
  EXPECT_NE(error_of(magic).find("magic"), std::string::npos);
  auto corrupt = bytes;
  corrupt.back() ^= 1u;
  EXPECT_NE(error_of(corrupt).find("payload_crc32"), std::string::npos);
}

std::uint32_t version_of(const std::vector<std::uint8_t>& bytes) {
  std::uint32_t version = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  return version;
}

// Version 1 and 2 files (as older onebit builds wrote them) load with empty op names, give the
// same results, and are re-saved as the current version.
TEST(ModelFormat, Version1And2FilesStillLoad) {
  const Model m = small_model();
  EXPECT_EQ(version_of(serialize_model(m)), kModelFormatVersion);
  Model unnamed = m;
  for (Op& op : unnamed.ops) op.name.clear();
  const auto v1 = serialize_model(m, 1), v2 = serialize_model(m, 2);
  EXPECT_EQ(version_of(v1), 1u);
  EXPECT_EQ(version_of(v2), 2u);
  EXPECT_EQ(with_version(v1, 2), v2) << "versions 1 and 2 share one byte layout";
  for (const auto* bytes : {&v1, &v2}) {
    const Model back = parse_model(bytes->data(), bytes->size(), "old.obnn");
    EXPECT_EQ(op_names(back), std::vector<std::string>(m.ops.size(), ""));
    EXPECT_EQ(Interpreter(back).run(sample_input(), 2), Interpreter(m).run(sample_input(), 2));
    EXPECT_EQ(serialize_model(back), serialize_model(unnamed));  // re-saved as the newest
  }
}

TEST(ModelFormat, WriterRejectsVersionsItCannotWrite) {
  const Model m = small_model();
  for (std::uint32_t version : {0u, kModelFormatVersion + 1}) {
    try {
      serialize_model(m, version);
      ADD_FAILURE() << "no exception for version " << version;
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("format version " + std::to_string(version) +
                                           ", expected 1 to 4"),
                std::string::npos)
          << e.what();
    }
  }
  Model too_long = m;
  too_long.ops[1].name.assign(5000, 'x');
  EXPECT_THROW(serialize_model(too_long), ModelError);
  EXPECT_NO_THROW(serialize_model(too_long, 2));  // version 2 stores no names
}

// A graph with every op of format version 2: concat of bits and floats, add with a bits input,
// global average pooling, strided average pooling on bits, grouped and dilated convs.
Model graph_model() {
  std::mt19937 rng(12);
  ModelBuilder b;
  const ValueRef x = b.input({8, 6, 6});
  const ValueRef s = b.sign(x);
  ValueRef t =
      b.conv2d(s, Conv2dParams(8, 3).padding(2, 2).dilation(2).groups_count(2).binary_kernel(true),
               testing::random_signs(8 * 4 * 9, rng));
  t = b.sign(b.batch_norm(t, testing::random_normal(8, rng), testing::random_normal(8, rng)));
  const ValueRef bits = b.concat({s, t});                // 16 channels, bits
  const ValueRef mixed = b.concat({bits, b.add(x, t)});  // 24 channels, float
  const ValueRef f = b.conv2d(mixed, Conv2dParams(8, 3).padding(2, 2).dilation(2).groups_count(4),
                              testing::random_normal(8 * 6 * 9, rng));
  Pool2dParams pool(3);
  pool.stride(2).padding(1, 1);
  pool.count_include_pad = false;
  const ValueRef pooled = b.concat({b.avg_pool2d(bits, pool), b.avg_pool2d(f, pool)});
  b.output(b.flatten(b.global_avg_pool2d(pooled)));
  return b.build();
}

TEST(ModelFormat, Version2GraphRoundTrip) {
  const Model m = graph_model();
  const auto bytes = serialize_model(m);
  const Model back = parse_model(bytes.data(), bytes.size());
  EXPECT_EQ(serialize_model(back), bytes);
  std::mt19937 rng(13);
  const auto x = testing::random_normal(2 * 8 * 36, rng);
  EXPECT_EQ(Interpreter(back).run(x, 2), Interpreter(m).run(x, 2));
  EXPECT_EQ(Interpreter(back).output_shape(), (std::vector<std::int64_t>{24, 1, 1}));
}

std::size_t first_concat(const Model& m) {
  for (std::size_t i = 0; i < m.ops.size(); ++i) {
    if (m.ops[i].type == OpType::kConcat) return i;
  }
  return 0;
}

TEST(ModelFormat, Version1FileWithAVersion2OpIsRejected) {
  const Model m = graph_model();
  const std::string op = "op[" + std::to_string(first_concat(m)) + "]";
  // Versions 1 and 2 share a layout: a version 2 file relabeled as version 1.
  const std::string e = error_of(with_version(serialize_model(m, 2), 1));
  EXPECT_NE(e.find("x.obnn: field '" + op + ".type'"), std::string::npos) << e;
  EXPECT_NE(e.find("found 15 (concat), expected an op type of format version 1 (concat needs "
                   "version 2)"),
            std::string::npos)
      << e;
  // The writer refuses to produce such a file.
  try {
    serialize_model(m, 1);
    ADD_FAILURE() << "no exception";
  } catch (const ModelError& e1) {
    EXPECT_NE(
        std::string(e1.what()).find("(concat) needs format version 2, cannot write version 1"),
        std::string::npos)
        << e1.what();
  }
}

std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

// A version 2 file whose last op (1 input, no attributes, no tensors) has type `type`: written
// with a relu there, then the type patched and the metadata CRC-32 recomputed. In the version 2
// layout the metadata section ends with that op's u16 type, u16 input count, i32 input, u16
// attribute count, u16 tensor count, then the i32 output.
std::vector<std::uint8_t> version2_file_with_last_op(Model m, std::uint16_t type) {
  EXPECT_EQ(m.ops.back().type, OpType::kRelu);
  auto bytes = serialize_model(m, 2);
  std::uint64_t meta_size = 0;
  std::memcpy(&meta_size, bytes.data() + 32, 8);
  std::memcpy(bytes.data() + 64 + meta_size - 16, &type, 2);
  const std::uint32_t crc = crc32(bytes.data() + 64, meta_size);
  std::memcpy(bytes.data() + 56, &crc, 4);
  return bytes;
}

TEST(ModelFormat, Version2FileWithAVersion3OpIsRejected) {
  ModelBuilder b;
  b.output(b.relu(b.relu(b.input({4, 3, 3}))));
  const Model m = b.build();
  // Unpatched (type 11, relu) the construction is a valid version 2 file.
  EXPECT_NO_THROW(parse_model(version2_file_with_last_op(m, 11).data(),
                              version2_file_with_last_op(m, 11).size()));
  std::string e = error_of(version2_file_with_last_op(m, 17));
  EXPECT_NE(e.find("x.obnn: field 'op[1].type'"), std::string::npos) << e;
  EXPECT_NE(e.find("found 17 (sigmoid), expected an op type of format version 2 (sigmoid needs "
                   "version 3)"),
            std::string::npos)
      << e;
  // What a version 2 reader says about every version 3 op: an op type it does not know.
  e = error_of(version2_file_with_last_op(m, 23));
  EXPECT_NE(e.find("field 'op[1].type'"), std::string::npos) << e;
  EXPECT_NE(e.find("found 23, expected an op type in [1, 22]"), std::string::npos) << e;
  // The writer refuses a version 3 op in a version 2 file.
  ModelBuilder b3;
  b3.output(b3.sigmoid(b3.input({4, 3, 3})));
  EXPECT_THROW(serialize_model(b3.build(), 2), ModelError);
}

TEST(ModelFormat, Version3StoresOpNames) {
  ModelBuilder b({false});
  ValueRef x = b.input({4, 3, 3});
  b.set_name_scope("block3_conv");
  x = b.relu(x);
  b.set_name_scope("");
  x = b.relu(x);
  b.set_name_scope(std::string(1024, 'n'));
  b.output(b.sigmoid(x));
  const Model m = b.build();
  const auto bytes = serialize_model(m);
  const Model back = parse_model(bytes.data(), bytes.size());
  EXPECT_EQ(op_names(back), (std::vector<std::string>{"block3_conv", "", std::string(1024, 'n')}));
  EXPECT_EQ(serialize_model(back), bytes);
}

TEST(ModelFormat, OpArityIsCheckedFromTheOpTableWhenParsing) {
  Model m = graph_model();
  const std::size_t i = first_concat(m);
  ASSERT_EQ(m.ops[i].type, OpType::kConcat);
  m.ops[i].inputs.resize(1);
  const std::string e = error_of(serialize_model(m));
  EXPECT_NE(e.find("field 'op[" + std::to_string(i) + "].input_count'"), std::string::npos) << e;
  EXPECT_NE(e.find("found 1, expected 2 to 256 for concat"), std::string::npos) << e;
  m.ops[i].type = static_cast<OpType>(77);
  EXPECT_NE(error_of(serialize_model(m)).find("found 77, expected an op type in [1, 22]"),
            std::string::npos);
}

TEST(ModelFormat, SemanticallyBrokenGraphIsRejectedAtPrepare) {
  Model m = small_model();
  m.ops[1].ints["kernel"] = {5, 5};  // weight shape says 3x3
  EXPECT_THROW(Interpreter{m}, ModelError);
  Model bad_input = small_model();
  bad_input.ops[1].inputs = {0};  // binary conv on float input
  EXPECT_THROW(Interpreter{bad_input}, ModelError);
}

}  // namespace
}  // namespace onebit::runtime
