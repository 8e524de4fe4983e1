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

Model small_model() {
  std::mt19937 rng(9);
  ModelBuilder b;
  ValueRef x = b.sign(b.input({3, 6, 6}));
  x = b.conv2d(x, Conv2dParams(8, 3).padding(PaddingMode::kSame).binary_kernel(true),
               testing::random_signs(8 * 3 * 9, rng));
  x = b.sign(b.batch_norm(x, testing::random_normal(8, rng), testing::random_normal(8, rng)));
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

TEST(ModelFormat, RoundTripKeepsResultsAndMetadata) {
  const Model m = small_model();
  const auto bytes = serialize_model(m);
  const Model back = parse_model(bytes.data(), bytes.size());
  EXPECT_EQ(back.metadata.at("source"), "format_test");
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
  EXPECT_EQ(kModelFormatVersion, 2u);
  const std::string e1 = error_of(with_version(bytes, kModelFormatVersion + 1));
  EXPECT_NE(e1.find("x.obnn"), std::string::npos) << e1;
  EXPECT_NE(e1.find("format_version"), std::string::npos) << e1;
  EXPECT_NE(e1.find("found 3, expected at most 2 (the newest format version this build"),
            std::string::npos)
      << e1;
  EXPECT_NE(e1.find("newer"), std::string::npos) << e1;
  EXPECT_NE(error_of(with_version(bytes, 0)).find("found 0, expected a version in [1, 2]"),
            std::string::npos);
  auto magic = bytes;
  magic[0] = 'X';
  EXPECT_NE(error_of(magic).find("magic"), std::string::npos);
  auto corrupt = bytes;
  corrupt.back() ^= 1u;
  EXPECT_NE(error_of(corrupt).find("payload_crc32"), std::string::npos);
}

TEST(ModelFormat, Version1FilesStillLoad) {
  const auto bytes = serialize_model(small_model());
  std::uint32_t written = 0;
  std::memcpy(&written, bytes.data() + 8, 4);
  EXPECT_EQ(written, kModelFormatVersion);
  const auto v1 = with_version(bytes, 1);
  const Model back = parse_model(v1.data(), v1.size(), "v1.obnn");
  EXPECT_EQ(Interpreter(back).run(sample_input(), 2),
            Interpreter(small_model()).run(sample_input(), 2));
  EXPECT_EQ(serialize_model(back), bytes);  // re-saved as the current version
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
  const std::string e = error_of(with_version(serialize_model(m), 1));
  EXPECT_NE(e.find("x.obnn: field '" + op + ".type'"), std::string::npos) << e;
  EXPECT_NE(e.find("found 15 (concat), expected an op type of format version 1 (concat needs "
                   "version 2)"),
            std::string::npos)
      << e;
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
  EXPECT_NE(error_of(serialize_model(m)).find("found 77, expected an op type in [1, 16]"),
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
