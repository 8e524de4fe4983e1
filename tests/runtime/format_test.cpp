// The .obnn file: round trip, atomic save, size, and rejection of damaged files.

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

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

TEST(ModelFormat, NewerVersionAndWrongMagicHaveClearErrors) {
  auto bytes = serialize_model(small_model());
  auto newer = bytes;
  newer[8] = static_cast<std::uint8_t>(kModelFormatVersion + 1);
  const std::string e1 = error_of(newer);
  EXPECT_NE(e1.find("x.obnn"), std::string::npos) << e1;
  EXPECT_NE(e1.find("format_version"), std::string::npos) << e1;
  EXPECT_NE(e1.find("newer"), std::string::npos) << e1;
  auto magic = bytes;
  magic[0] = 'X';
  EXPECT_NE(error_of(magic).find("magic"), std::string::npos);
  auto corrupt = bytes;
  corrupt.back() ^= 1u;
  EXPECT_NE(error_of(corrupt).find("payload_crc32"), std::string::npos);
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
