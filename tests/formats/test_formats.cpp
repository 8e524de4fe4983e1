// The data-file parsers without LibTorch (onebit/data/formats.h): valid, truncated, corrupt and
// oversized inputs. Built with the runtime tests, so the sanitizer builds run them too.
#include <gtest/gtest.h>
#include <zlib.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "onebit/data/formats.h"

using namespace onebit::data;

namespace {

std::vector<uint8_t> idx(std::vector<uint32_t> shape, uint8_t fill, int extra = 0) {
  std::vector<uint8_t> b = {0, 0, 0x08, static_cast<uint8_t>(shape.size())};
  uint64_t n = 1;
  for (uint32_t d : shape) {
    for (int k = 3; k >= 0; --k) b.push_back(static_cast<uint8_t>(d >> (8 * k)));
    n *= d;
  }
  b.insert(b.end(), static_cast<size_t>(static_cast<int64_t>(n) + extra), fill);
  return b;
}

std::vector<uint8_t> gzip(const std::vector<uint8_t>& raw) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, raw.size()) + 64);
  zs.next_in = const_cast<uint8_t*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Formats, IdxRoundTripRawAndGzip) {
  const auto raw = idx({2, 3, 4}, 7);
  for (const auto& bytes : {raw, maybe_gunzip(gzip(raw), "x.gz")}) {
    const IdxArray a = parse_idx(bytes, "x");
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3, 4}));
    ASSERT_EQ(a.values.size(), 24u);
    EXPECT_EQ(a.values[23], 7);
  }
}

TEST(Formats, IdxErrorsNameTheProblem) {
  EXPECT_NE(error_of([] { parse_idx({0, 0}, "f"); }).find("f: too short"), std::string::npos);
  EXPECT_NE(error_of([] { parse_idx({1, 0, 8, 1}, "f"); }).find("bad magic"), std::string::npos);
  EXPECT_NE(error_of([] { parse_idx({0, 0, 0x0d, 1}, "f"); }).find("0xd"), std::string::npos);
  EXPECT_NE(error_of([] { parse_idx({0, 0, 8, 9}, "f"); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([] {
              parse_idx({0, 0, 8, 2, 0, 0, 0, 1}, "f");
            }).find("truncated IDX header"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_idx(idx({3, 0}, 1), "f"); }).find("has size 0"), std::string::npos);
  EXPECT_NE(error_of([] {
              parse_idx(idx({4, 4}, 1, -1), "f");
            }).find("truncated file"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_idx(idx({4, 4}, 1, 2), "f");
            }).find("trailing bytes"),
            std::string::npos);
  // A header that claims 2^28 x 2^28 values is refused before anything is allocated.
  std::vector<uint8_t> huge = {0, 0, 8, 2, 0x10, 0, 0, 0, 0x10, 0, 0, 0, 1};
  EXPECT_NE(error_of([&] { parse_idx(huge, "f"); }).find("too large"), std::string::npos);
}

TEST(Formats, GzipTruncatedCorruptAndBomb) {
  const auto gz = gzip(idx({16, 16}, 3));
  std::vector<uint8_t> cut(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
  EXPECT_NE(error_of([&] { maybe_gunzip(cut, "c.gz"); }).find("c.gz: truncated gzip"),
            std::string::npos);
  std::vector<uint8_t> bad = gz;
  for (size_t i = 12; i < bad.size() - 8; ++i) bad[i] ^= 0x5a;
  EXPECT_NE(error_of([&] { maybe_gunzip(bad, "b.gz"); }).find("b.gz: "), std::string::npos);
  // 4 MiB of zeros compress to a few KiB; a 1 MiB limit refuses them with a clear message.
  const auto bomb = gzip(std::vector<uint8_t>(4u << 20, 0));
  EXPECT_LT(bomb.size(), 64u << 10);
  EXPECT_NE(error_of([&] { maybe_gunzip(bomb, "z.gz", 1u << 20); }).find("more than 1048576"),
            std::string::npos);
  EXPECT_EQ(maybe_gunzip(bomb, "z.gz").size(), 4u << 20);
  // Bytes without gzip's magic pass through unchanged.
  EXPECT_EQ(maybe_gunzip({1, 2, 3}, "r"), (std::vector<uint8_t>{1, 2, 3}));
}

TEST(Formats, Cifar10RecordsAndErrors) {
  std::vector<uint8_t> two(2 * 3073, 9);
  two[3073] = 4;
  const Cifar10Batch b = parse_cifar10(two, "t.bin");
  EXPECT_EQ(b.count, 2);
  EXPECT_EQ(b.labels, (std::vector<uint8_t>{9, 4}));
  EXPECT_EQ(b.pixels.size(), 2u * 3072);
  EXPECT_NE(error_of([] { parse_cifar10({}, "t.bin"); }).find("positive multiple"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { parse_cifar10(std::vector<uint8_t>(3072, 0), "t.bin"); }).find("truncated"),
      std::string::npos);
  std::vector<uint8_t> label(3073, 0);
  label[0] = 10;
  EXPECT_NE(error_of([&] { parse_cifar10(label, "t.bin"); }).find("above 9"), std::string::npos);
}

TEST(Formats, ReadFileErrors) {
  EXPECT_NE(error_of([] { read_file("/nonexistent/x.idx"); }).find("file not found"),
            std::string::npos);
  EXPECT_NE(error_of([] { read_file("/tmp"); }).find("is a directory"), std::string::npos);
}
