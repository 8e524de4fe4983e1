#pragma once
/// \file
/// The data-file formats onebit reads, parsed from bytes without LibTorch: IDX (MNIST,
/// Fashion-MNIST), CIFAR-10's binary batches, and gzip. `datasets.h` turns them into tensors;
/// the fuzzers (`fuzz/`) and the format tests run them under sanitizers on their own.
///
/// Every function checks sizes before it reads or allocates and throws std::runtime_error
/// with "<name>: <what was wrong>" for bad input; none trusts a size read from the data.

#include <cstdint>
#include <string>
#include <vector>

namespace onebit::data {

/// The contents of one IDX file: its shape and its unsigned-byte values.
struct IdxArray {
  std::vector<int64_t> shape;   ///< e.g. {60000, 28, 28}
  std::vector<uint8_t> values;  ///< row-major, product(shape) values
};

/// The records of one CIFAR-10 binary batch (1 label byte + 3x32x32 pixel bytes each).
struct Cifar10Batch {
  int64_t count = 0;            ///< number of records
  std::vector<uint8_t> labels;  ///< count labels in [0, 9]
  std::vector<uint8_t> pixels;  ///< count x 3 x 32 x 32 bytes (channel-major, as stored)
};

/// Largest decompressed size `maybe_gunzip` accepts by default (4 GiB): far above any IDX or
/// CIFAR file, far below what would exhaust memory on a "gzip bomb".
constexpr uint64_t kDefaultMaxDecompressedBytes = uint64_t(4) << 30;

/// `bytes` unchanged, or their gzip decompression when they start with gzip's magic bytes.
/// Throws for truncated or corrupt gzip data, and for output beyond `max_bytes` (the message
/// names the limit). `name` (a file path) prefixes every message.
std::vector<uint8_t> maybe_gunzip(std::vector<uint8_t> bytes, const std::string& name,
                                  uint64_t max_bytes = kDefaultMaxDecompressedBytes);

/// Parses an IDX array of unsigned bytes (element type 0x08, 1 to 4 dimensions, sizes in
/// [1, 2^28], at most 2^34 values): bad magic, another element type, a truncated header or
/// body, or trailing bytes throw.
IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& name);

/// Parses a CIFAR-10 binary batch: a positive whole number of 3,073-byte records with labels
/// in [0, 9], else throws.
Cifar10Batch parse_cifar10(const std::vector<uint8_t>& bytes, const std::string& name);

/// Reads a whole file (missing file, directory, unreadable: throws naming it).
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace onebit::data
