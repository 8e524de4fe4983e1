#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "onebit/data/datasets.h"

namespace fs = std::filesystem;
using namespace onebit::data;

namespace {

std::vector<uint8_t> idx(uint8_t type, std::vector<uint32_t> dims, std::vector<uint8_t> values) {
  std::vector<uint8_t> b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  }
  b.insert(b.end(), values.begin(), values.end());
  return b;
}

void write(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::vector<uint8_t> read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("onebit_data_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir);
    std::vector<uint8_t> pixels(3 * 2 * 2);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 23);
    images = idx(0x08, {3, 2, 2}, pixels);
    labels = idx(0x08, {3}, {1, 0, 9});
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string p(const std::string& name) const { return (dir / name).string(); }
  fs::path dir;
  std::vector<uint8_t> images, labels;
};

template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_F(DataTest, ReadsRawAndGzipIdentically) {
  write(p("raw"), images);
  write_gz(p("gz"), images);
  auto a = read_idx(p("raw"));
  auto b = read_idx(p("gz"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(a.values, b.values);
  EXPECT_EQ(a.values[5], 5 * 23);
}

TEST_F(DataTest, PairScalesToMinusOneOne) {
  write_gz(p("train-images-idx3-ubyte.gz"), images);
  write(p("train-labels-idx1-ubyte"), labels);
  auto ds = load_idx_pair(p("train-images-idx3-ubyte.gz"), p("train-labels-idx1-ubyte"));
  EXPECT_EQ(ds.images.sizes(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(ds.labels.dtype(), torch::kLong);
  EXPECT_EQ(ds.labels[2].item<int64_t>(), 9);
  EXPECT_FLOAT_EQ(ds.images[0][0][0][0].item<float>(), -1.0f);
  EXPECT_NEAR(ds.images[0][0][1][1].item<float>(), 3 * 23 / 127.5 - 1, 1e-6);
  EXPECT_LE(ds.images.max().item<float>(), 1.0f);
  // load() finds .gz and raw files in a directory by their standard names.
  auto viaDir = load("mnist", Split::kTrain, dir.string());
  EXPECT_TRUE(torch::equal(viaDir.images, ds.images));
  EXPECT_EQ(ds.head(2).size(), 2);
}

TEST_F(DataTest, MissingFileNamesIt) {
  auto e = error_of([&] { read_idx(p("nope")); });
  EXPECT_NE(e.find("nope"), std::string::npos);
  EXPECT_NE(e.find("not found"), std::string::npos);
  auto e2 = error_of([&] { load("fashion-mnist", Split::kTest, dir.string()); });
  EXPECT_NE(e2.find("t10k-images-idx3-ubyte"), std::string::npos) << e2;
}

TEST_F(DataTest, TruncatedRawFile) {
  auto cut = images;
  cut.resize(cut.size() - 3);
  write(p("cut"), cut);
  auto e = error_of([&] { read_idx(p("cut")); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(e.find("cut"), std::string::npos);
  write(p("hdr"), std::vector<uint8_t>(images.begin(), images.begin() + 6));
  EXPECT_NE(error_of([&] { read_idx(p("hdr")); }).find("truncated IDX header"), std::string::npos);
}

TEST_F(DataTest, TruncatedAndCorruptGzip) {
  write_gz(p("full.gz"), images);
  auto gz = read(p("full.gz"));
  write(p("cut.gz"), std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2));
  auto e = error_of([&] { read_idx(p("cut.gz")); });
  EXPECT_NE(e.find("cut.gz"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  auto bad = gz;
  for (size_t i = 12; i < bad.size() - 8; ++i) bad[i] ^= 0x5a;
  write(p("bad.gz"), bad);
  auto e2 = error_of([&] { read_idx(p("bad.gz")); });
  EXPECT_NE(e2.find("bad.gz"), std::string::npos) << e2;
  EXPECT_FALSE(e2.empty());
}

TEST_F(DataTest, WrongMagicTypeAndTrailingBytes) {
  auto bad = images;
  bad[0] = 7;
  write(p("magic"), bad);
  EXPECT_NE(error_of([&] { read_idx(p("magic")); }).find("bad magic"), std::string::npos);
  write(p("float"), idx(0x0D, {1}, {0, 0, 0, 0}));
  EXPECT_NE(error_of([&] { read_idx(p("float")); }).find("0xd"), std::string::npos);
  auto extra = images;
  extra.push_back(1);
  write(p("extra"), extra);
  EXPECT_NE(error_of([&] { read_idx(p("extra")); }).find("trailing"), std::string::npos);
}

TEST_F(DataTest, LabelsThatDoNotMatchImages) {
  write(p("img"), images);
  write(p("lab"), idx(0x08, {2}, {1, 2}));
  auto e = error_of([&] { load_idx_pair(p("img"), p("lab")); });
  EXPECT_NE(e.find("2 labels"), std::string::npos) << e;
  EXPECT_NE(e.find("3 images"), std::string::npos) << e;
  write(p("lab2d"), idx(0x08, {3, 1}, {1, 2, 3}));
  EXPECT_NE(error_of([&] { load_idx_pair(p("img"), p("lab2d")); }).find("1 dimension"),
            std::string::npos);
}

TEST_F(DataTest, UnknownDatasetAndCifarErrors) {
  EXPECT_NE(error_of([&] { load("imagenet", Split::kTrain); }).find("fashion-mnist"), std::string::npos);
  // A CIFAR-10 batch of 2 records reads; a truncated one names the file.
  std::vector<uint8_t> rec(2 * 3073, 10);
  rec[0] = 3;
  rec[3073] = 7;
  write(p("test_batch.bin"), rec);
  auto ds = load("cifar10", Split::kTest, dir.string());
  EXPECT_EQ(ds.images.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_EQ(ds.labels[1].item<int64_t>(), 7);
  rec.resize(3073 + 100);
  write(p("test_batch.bin"), rec);
  EXPECT_NE(error_of([&] { load("cifar10", Split::kTest, dir.string()); }).find("test_batch.bin"),
            std::string::npos);
}
