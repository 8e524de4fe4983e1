#include "onebit/data/datasets.h"

#include <ATen/ATen.h>

#include <filesystem>
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
  return maybe_gunzip(read_file(path), path);
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
  std::vector<at::Tensor> images, labels;
  for (const auto& f : files) {
    const std::string path = (fs::path(dir) / f).string();
    Cifar10Batch batch = parse_cifar10(read_bytes(path), path);
    const int64_t n = batch.count;
    labels.push_back(at::from_blob(batch.labels.data(), {n}, at::kByte).to(at::kLong));
    images.push_back(scale_images(batch.pixels.data(), {n, 3, 32, 32}));
  }
  return {at::cat(images), at::cat(labels), 10};
}

}  // namespace

IdxArray read_idx(const std::string& path) { return parse_idx(read_bytes(path), path); }

Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path) {
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  if (images.shape.size() != 3 && images.shape.size() != 4) {
    fail(images_path,
         "expected 3 or 4 dimensions (N, H, W[, C]), got " + std::to_string(images.shape.size()));
  }
  if (labels.shape.size() != 1) {
    fail(labels_path, "expected 1 dimension (N), got " + std::to_string(labels.shape.size()));
  }
  if (labels.shape[0] != images.shape[0]) {
    std::ostringstream msg;
    msg << "has " << labels.shape[0] << " labels but " << images_path << " has " << images.shape[0]
        << " images";
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
