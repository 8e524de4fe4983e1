#include "onebit/data/formats.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace onebit::data {
namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw std::runtime_error(name + ": " + what);
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "file not found");
  if (fs::is_directory(path, ec)) fail(path, "is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

std::vector<uint8_t> maybe_gunzip(std::vector<uint8_t> raw, const std::string& name,
                                  uint64_t max_bytes) {
  if (raw.size() < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail(name, "cannot initialize gzip decoder");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 16);
  std::size_t consumed = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    // avail_in is 32-bit: feed the input in chunks.
    if (zs.avail_in == 0 && consumed < raw.size()) {
      const std::size_t chunk = std::min<std::size_t>(raw.size() - consumed, 1u << 30);
      zs.next_in = raw.data() + consumed;
      zs.avail_in = static_cast<uInt>(chunk);
      consumed += chunk;
    }
    zs.next_out = buf.data();
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
        fail(name, "truncated gzip data (the compressed stream ends early)");
      }
      fail(name, std::string("corrupt gzip data: ") + (zs.msg ? zs.msg : "inflate error"));
    }
    const std::size_t produced = buf.size() - zs.avail_out;
    if (out.size() + produced > max_bytes) {
      std::ostringstream msg;
      msg << "gzip data decompresses to more than " << max_bytes
          << " bytes, the limit (a corrupt file or a decompression bomb)";
      fail(name, msg.str());
    }
    out.insert(out.end(), buf.data(), buf.data() + produced);
  }
  return out;
}

IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& name) {
  if (bytes.size() < 4) {
    fail(name, "too short for an IDX header (" + std::to_string(bytes.size()) + " bytes)");
  }
  if (bytes[0] != 0 || bytes[1] != 0) fail(name, "not an IDX file (bad magic number)");
  if (bytes[2] != 0x08) {
    std::ostringstream msg;
    msg << "IDX element type 0x" << std::hex << int(bytes[2])
        << " is not supported (expected 0x08, unsigned byte)";
    fail(name, msg.str());
  }
  const int dims = bytes[3];
  if (dims < 1 || dims > 4) {
    fail(name, "IDX dimension count " + std::to_string(dims) + " out of range [1, 4]");
  }
  const size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (bytes.size() < header) fail(name, "truncated IDX header");
  IdxArray out;
  uint64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    const uint32_t n = be32(bytes.data() + 4 + 4 * d);
    if (n == 0 || n > (1u << 28)) {
      fail(name, "IDX dimension " + std::to_string(d) + " has size " + std::to_string(n));
    }
    out.shape.push_back(n);
    count *= n;
    if (count > (uint64_t(1) << 34)) fail(name, "IDX array too large");
  }
  if (bytes.size() - header != count) {
    std::ostringstream msg;
    msg << "expected " << count << " values after the header, found " << (bytes.size() - header)
        << (bytes.size() - header < count ? " (truncated file)" : " (trailing bytes)");
    fail(name, msg.str());
  }
  out.values.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return out;
}

Cifar10Batch parse_cifar10(const std::vector<uint8_t>& bytes, const std::string& name) {
  constexpr size_t kPixels = 3 * 32 * 32;
  constexpr size_t kRecord = 1 + kPixels;
  if (bytes.empty() || bytes.size() % kRecord) {
    std::ostringstream msg;
    msg << "size " << bytes.size() << " is not a positive multiple of the CIFAR-10 record size "
        << kRecord << " (truncated or not a CIFAR-10 binary batch)";
    fail(name, msg.str());
  }
  Cifar10Batch out;
  out.count = static_cast<int64_t>(bytes.size() / kRecord);
  out.labels.reserve(static_cast<size_t>(out.count));
  out.pixels.reserve(static_cast<size_t>(out.count) * kPixels);
  for (size_t r = 0; r < static_cast<size_t>(out.count); ++r) {
    const uint8_t* record = bytes.data() + r * kRecord;
    if (record[0] > 9) {
      fail(name, "record " + std::to_string(r) + " has label byte " + std::to_string(record[0]) +
                     ", above 9: not a CIFAR-10 file");
    }
    out.labels.push_back(record[0]);
    out.pixels.insert(out.pixels.end(), record + 1, record + kRecord);
  }
  return out;
}

}  // namespace onebit::data
