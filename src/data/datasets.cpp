#include "onebit/data/datasets.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace onebit::data {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

/// Reads a whole file, decompressing gzip when the file starts with its magic bytes.
std::vector<uint8_t> read_bytes(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "file not found");
  if (fs::is_directory(path, ec)) fail(path, "is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<uint8_t> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (raw.size() < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;

  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail(path, "cannot initialize gzip decoder");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  zs.next_in = raw.data();
  zs.avail_in = static_cast<uInt>(raw.size());
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = buf;
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
        fail(path, "truncated gzip data (the compressed stream ends early)");
      }
      fail(path, std::string("corrupt gzip data: ") + (zs.msg ? zs.msg : "inflate error"));
    }
    out.insert(out.end(), buf, buf + (sizeof(buf) - zs.avail_out));
  }
  return out;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

/// `dir/name` or `dir/name.gz`, whichever exists (the .gz is preferred).
std::string find_file(const std::string& dir, const std::string& name) {
  fs::path base = fs::path(dir) / name;
  std::error_code ec;
  if (fs::exists(base.string() + ".gz", ec)) return base.string() + ".gz";
  if (fs::exists(base, ec)) return base.string();
  throw std::runtime_error(base.string() + "[.gz]: file not found (data directory " + dir + ")");
}

at::Tensor scale_images(const uint8_t* data, std::vector<int64_t> shape) {
  auto bytes = at::from_blob(const_cast<uint8_t*>(data), shape, at::kByte);
  return bytes.to(at::kFloat).div_(127.5).sub_(1.0);
}

Dataset load_cifar10(const std::string& dir, Split split) {
  std::vector<std::string> files;
  if (split == Split::kTrain) {
    for (int i = 1; i <= 5; ++i) files.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    files.push_back("test_batch.bin");
  }
  constexpr size_t kRecord = 1 + 3 * 32 * 32;
  std::vector<at::Tensor> images, labels;
  for (const auto& f : files) {
    std::string path = (fs::path(dir) / f).string();
    auto bytes = read_bytes(path);
    if (bytes.empty() || bytes.size() % kRecord) {
      std::ostringstream msg;
      msg << "size " << bytes.size() << " is not a positive multiple of the CIFAR-10 record size "
          << kRecord << " (truncated or not a CIFAR-10 binary batch)";
      fail(path, msg.str());
    }
    const int64_t n = static_cast<int64_t>(bytes.size() / kRecord);
    auto all = at::from_blob(bytes.data(), {n, static_cast<int64_t>(kRecord)}, at::kByte).clone();
    auto lab = all.select(1, 0).to(at::kLong);
    if (lab.max().item<int64_t>() > 9) fail(path, "label byte above 9: not a CIFAR-10 file");
    labels.push_back(lab);
    images.push_back(
        all.slice(1, 1).reshape({n, 3, 32, 32}).to(at::kFloat).div_(127.5).sub_(1.0));
  }
  return {at::cat(images), at::cat(labels), 10};
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  auto bytes = read_bytes(path);
  if (bytes.size() < 4) fail(path, "too short for an IDX header (" + std::to_string(bytes.size()) + " bytes)");
  if (bytes[0] != 0 || bytes[1] != 0) fail(path, "not an IDX file (bad magic number)");
  if (bytes[2] != 0x08) {
    std::ostringstream msg;
    msg << "IDX element type 0x" << std::hex << int(bytes[2]) << " is not supported (expected 0x08, unsigned byte)";
    fail(path, msg.str());
  }
  const int dims = bytes[3];
  if (dims < 1 || dims > 4) fail(path, "IDX dimension count " + std::to_string(dims) + " out of range [1, 4]");
  const size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (bytes.size() < header) fail(path, "truncated IDX header");
  IdxArray out;
  uint64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    uint32_t n = be32(bytes.data() + 4 + 4 * d);
    if (n == 0 || n > (1u << 28)) fail(path, "IDX dimension " + std::to_string(d) + " has size " + std::to_string(n));
    out.shape.push_back(n);
    count *= n;
    if (count > (uint64_t(1) << 34)) fail(path, "IDX array too large");
  }
  if (bytes.size() - header != count) {
    std::ostringstream msg;
    msg << "expected " << count << " values after the header, found " << (bytes.size() - header)
        << (bytes.size() - header < count ? " (truncated file)" : " (trailing bytes)");
    fail(path, msg.str());
  }
  out.values.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return out;
}

Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path) {
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  if (images.shape.size() != 3 && images.shape.size() != 4) {
    fail(images_path, "expected 3 or 4 dimensions (N, H, W[, C]), got " + std::to_string(images.shape.size()));
  }
  if (labels.shape.size() != 1) {
    fail(labels_path, "expected 1 dimension (N), got " + std::to_string(labels.shape.size()));
  }
  if (labels.shape[0] != images.shape[0]) {
    std::ostringstream msg;
    msg << "has " << labels.shape[0] << " labels but " << images_path << " has "
        << images.shape[0] << " images";
    fail(labels_path, msg.str());
  }
  int64_t num_classes = 0;
  for (uint8_t v : labels.values) num_classes = std::max<int64_t>(num_classes, v + 1);
  const int64_t n = images.shape[0];
  at::Tensor x;
  if (images.shape.size() == 3) {
    x = scale_images(images.values.data(), {n, 1, images.shape[1], images.shape[2]});
  } else {  // N, H, W, C -> N, C, H, W
    x = scale_images(images.values.data(), images.shape).permute({0, 3, 1, 2}).contiguous();
  }
  auto y = at::from_blob(labels.values.data(), {n}, at::kByte).to(at::kLong);
  return {x, y, std::max<int64_t>(num_classes, 10)};
}

Dataset Dataset::head(int64_t n) const {
  if (n <= 0 || n >= size()) return *this;
  return {images.slice(0, 0, n), labels.slice(0, 0, n), num_classes};
}

std::vector<std::string> dataset_names() { return {"fashion-mnist", "mnist", "cifar10"}; }

std::string default_data_dir(const std::string& name) {
  if (name == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  return "data/" + name;
}

Dataset load(const std::string& name, Split split, const std::string& dir_arg) {
  const std::string dir = dir_arg.empty() ? default_data_dir(name) : dir_arg;
  if (name == "fashion-mnist" || name == "mnist") {
    const std::string prefix = split == Split::kTrain ? "train" : "t10k";
    const std::string images = find_file(dir, prefix + "-images-idx3-ubyte");
    const std::string labels = find_file(dir, prefix + "-labels-idx1-ubyte");
    return load_idx_pair(images, labels);
  }
  if (name == "cifar10") return load_cifar10(dir, split);
  std::string known;
  for (const auto& n : dataset_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown dataset \"" + name + "\" (known: " + known + ")");
}

}  // namespace onebit::data
