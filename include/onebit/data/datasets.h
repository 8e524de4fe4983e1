#pragma once
/// \file
/// Data sets: IDX files (MNIST, Fashion-MNIST; gzip or raw) and CIFAR-10's binary batches.
///
/// ```
/// auto train = onebit::data::load("fashion-mnist", onebit::data::Split::kTrain);
/// // train.images: float [60000, 1, 28, 28] in [-1, 1]; train.labels: int64 [60000]
/// ```

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "onebit/data/formats.h"

namespace onebit::data {

/// Reads an IDX file of unsigned bytes (type 0x08), gzip-compressed or raw (detected from the
/// first bytes). A missing, truncated or corrupt file, or another element type, throws
/// std::runtime_error naming the file and what was wrong.
IdxArray read_idx(const std::string& path);

/// Which part of a data set.
enum class Split { kTrain, kTest };

/// Images and labels of a data set split.
struct Dataset {
  at::Tensor images;         ///< float32 [N, C, H, W], scaled to [-1, 1]
  at::Tensor labels;         ///< int64 [N], class indices
  int64_t num_classes = 10;  ///< number of classes

  /// Number of examples.
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  /// The first `n` examples (all if n <= 0 or n >= size()).
  Dataset head(int64_t n) const;
};

/// Names `load` knows: "fashion-mnist", "mnist", "cifar10".
std::vector<std::string> dataset_names();

/// Default directory of a data set: Debian's `dataset-fashion-mnist` location
/// /usr/share/datasets/fashion-mnist for "fashion-mnist"; "data/<name>" otherwise.
std::string default_data_dir(const std::string& name);

/// Loads a split of a named data set from `dir` (empty: `default_data_dir(name)`).
/// MNIST and Fashion-MNIST read `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
/// `t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`; CIFAR-10 reads
/// `data_batch_1.bin` ... `data_batch_5.bin` and `test_batch.bin`. Errors name the file.
Dataset load(const std::string& name, Split split, const std::string& dir = "");

/// Builds a data set from IDX image and label files; checks that they match.
Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path);

}  // namespace onebit::data
