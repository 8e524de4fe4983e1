#include "onebit/io.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace onebit::io {
namespace fs = std::filesystem;

namespace {
/// fsync of a file or directory; failures (e.g. a file system without fsync) are ignored.
void sync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

void atomic_write(const std::string& path, const std::function<void(const std::string&)>& write) {
  static std::atomic<unsigned> counter{0};
  fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  try {
    write(tmp);
    // On disk before it replaces the previous file (a crash of the machine, not only of the
    // process, leaves one of the two whole), then the rename itself.
    sync_path(tmp, O_RDONLY);
    fs::rename(tmp, target);
    sync_path(target.has_parent_path() ? target.parent_path().string() : ".", O_RDONLY | O_DIRECTORY);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void atomic_write_text(const std::string& path, const std::string& text) {
  atomic_write(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(path + ": cannot write (disk full or no permission?)");
  });
}

namespace {

std::uint64_t le(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// Walks a pickle (protocol 2-5, as LibTorch writes data.pkl and constants.pkl) opcode by opcode
// and returns a description of the first argument that runs past the end, or of an unknown
// opcode; "" when every opcode and argument fits. LibTorch's unpickler allocates a string of the
// length an opcode claims before it reads, so a corrupt length would allocate gigabytes.
std::string check_pickle(const unsigned char* p, std::uint64_t n) {
  std::uint64_t i = 0;
  const auto need = [&](std::uint64_t bytes, const char* what) -> std::string {
    if (n - i < bytes) {
      return std::string("pickle opcode ") + what + " at byte " + std::to_string(i - 1) +
             " needs " + std::to_string(bytes) + " bytes, " + std::to_string(n - i) + " remain";
    }
    return "";
  };
  while (i < n) {
    const unsigned char op = p[i++];
    std::uint64_t fixed = 0, len_bytes = 0;
    int lines = 0;
    switch (op) {
      case '.':
        return "";  // STOP
      // One-byte-argument ops, and the others with a fixed argument size.
      case 'K':
      case 'q':
      case 'h':
      case 0x80:
      case 0x82:
        fixed = 1;
        break;  // BININT1 BINPUT BINGET PROTO EXT1
      case 'M':
      case 0x83:
        fixed = 2;
        break;  // BININT2 EXT2
      case 'J':
      case 'r':
      case 'j':
      case 0x84:
        fixed = 4;
        break;  // BININT LONG_BINPUT/GET EXT4
      case 'G':
      case 0x95:
        fixed = 8;
        break;  // BINFLOAT FRAME
      // Length-prefixed payloads.
      case 'U':
      case 'C':
      case 0x8c:
      case 0x8a:
        len_bytes = 1;
        break;  // SHORT_BIN{STRING,BYTES,UNICODE} LONG1
      case 'T':
      case 'B':
      case 'X':
      case 0x8b:
        len_bytes = 4;
        break;  // BIN{STRING,BYTES,UNICODE} LONG4
      case 0x8d:
      case 0x8e:
      case 0x96:
        len_bytes = 8;
        break;  // BINUNICODE8 BINBYTES8 BYTEARRAY8
      // Newline-terminated arguments.
      case 'c':
      case 'i':
        lines = 2;
        break;  // GLOBAL INST
      case 'I':
      case 'L':
      case 'S':
      case 'V':
      case 'F':
      case 'p':
      case 'g':
      case 'P':
        lines = 1;
        break;
      // Opcodes without an argument.
      case '(':
      case ')':
      case ']':
      case '}':
      case '0':
      case '1':
      case '2':
      case 'N':
      case 'R':
      case 'a':
      case 'b':
      case 'd':
      case 'e':
      case 'l':
      case 'o':
      case 's':
      case 't':
      case 'u':
      case 'Q':
      case 0x81:
      case 0x85:
      case 0x86:
      case 0x87:
      case 0x88:
      case 0x89:
      case 0x8f:
      case 0x90:
      case 0x91:
      case 0x92:
      case 0x93:
      case 0x94:
      case 0x97:
      case 0x98:
        break;
      default:
        return "unknown pickle opcode " + std::to_string(op) + " at byte " + std::to_string(i - 1);
    }
    if (fixed) {
      if (std::string e = need(fixed, "argument"); !e.empty()) return e;
      i += fixed;
    } else if (len_bytes) {
      if (std::string e = need(len_bytes, "length"); !e.empty()) return e;
      const std::uint64_t len = le(p + i, static_cast<int>(len_bytes));
      i += len_bytes;
      if (std::string e = need(len, "payload"); !e.empty()) return e;
      i += len;
    } else {
      for (int l = 0; l < lines; ++l) {
        while (i < n && p[i] != '\n') ++i;
        if (i == n) return "pickle line argument runs past the end";
        ++i;
      }
    }
  }
  return "pickle has no STOP opcode";
}

// Reads `packed` bytes at `offset` in chunks, inflating them when `deflated`, and returns "" when
// they give exactly `unpacked` bytes whose CRC-32 is `crc`, or what differs.
std::string check_entry_crc(std::ifstream& in, std::uint64_t offset, std::uint64_t packed,
                            std::uint64_t unpacked, bool deflated, std::uint32_t crc) {
  constexpr std::size_t kChunk = 1 << 16;
  std::vector<unsigned char> chunk(kChunk), out(deflated ? kChunk : 0);
  uLong sum = crc32(0L, Z_NULL, 0);
  std::uint64_t produced = 0;
  z_stream z{};
  if (deflated && inflateInit2(&z, -MAX_WBITS) != Z_OK) return "zlib cannot start inflating";
  struct End {
    z_stream* z;
    bool on;
    ~End() {
      if (on) inflateEnd(z);
    }
  } end{&z, deflated};
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  int status = Z_OK;
  for (std::uint64_t left = packed; left > 0 || (deflated && status != Z_STREAM_END);) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
    if (n > 0) {
      in.read(reinterpret_cast<char*>(chunk.data()), static_cast<std::streamsize>(n));
      if (!in) return "cannot read its data";
      left -= n;
    }
    if (!deflated) {
      sum = crc32(sum, chunk.data(), static_cast<uInt>(n));
      produced += n;
      continue;
    }
    z.next_in = chunk.data();
    z.avail_in = static_cast<uInt>(n);
    do {
      z.next_out = out.data();
      z.avail_out = static_cast<uInt>(out.size());
      status = inflate(&z, Z_NO_FLUSH);
      if (status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR) {
        return std::string("its deflated data are damaged (") + (z.msg ? z.msg : "zlib error") +
               ")";
      }
      const std::size_t got = out.size() - z.avail_out;
      produced += got;
      if (produced > unpacked) {
        return "inflates to more than the " + std::to_string(unpacked) + " bytes it claims";
      }
      sum = crc32(sum, out.data(), static_cast<uInt>(got));
    } while (z.avail_out == 0 && status != Z_STREAM_END);
    if (n == 0 && status != Z_STREAM_END) return "its deflated data end too early";
  }
  if (produced != unpacked) {
    return "holds " + std::to_string(produced) + " bytes, not the " + std::to_string(unpacked) +
           " it claims";
  }
  if (static_cast<std::uint32_t>(sum) != crc) {
    char buf[80];
    std::snprintf(buf, sizeof buf, "CRC-32 is %08x, the directory says %08x (damaged data)",
                  static_cast<unsigned>(sum), static_cast<unsigned>(crc));
    return buf;
  }
  return "";
}

}  // namespace

void check_torch_archive(const std::string& path) {
  const auto fail = [&](const std::string& what) {
    throw std::runtime_error(path + ": not a readable archive (truncated or corrupt): " + what);
  };
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error(path + ": cannot open for reading");
  const std::streamoff end = in.tellg();
  if (end < 22) fail("the file has " + std::to_string(end) + " bytes, too few for a zip archive");
  const auto size = static_cast<std::uint64_t>(end);
  const auto read_at = [&](std::uint64_t offset, std::uint64_t n) {
    std::vector<unsigned char> buf(n);
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(n));
    if (!in)
      fail("cannot read " + std::to_string(n) + " bytes at offset " + std::to_string(offset));
    return buf;
  };
  // The end-of-central-directory record: in the last 22 + 65535 (comment) bytes.
  const std::uint64_t tail_size = std::min<std::uint64_t>(size, 22 + 65535);
  const std::vector<unsigned char> tail = read_at(size - tail_size, tail_size);
  std::int64_t eocd = -1;
  for (std::int64_t i = static_cast<std::int64_t>(tail_size) - 22; i >= 0; --i) {
    if (le(&tail[static_cast<std::size_t>(i)], 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) fail("no end-of-central-directory record (not a zip archive)");
  const unsigned char* e = &tail[static_cast<std::size_t>(eocd)];
  const std::uint64_t eocd_offset = size - tail_size + static_cast<std::uint64_t>(eocd);
  std::uint64_t entries = le(e + 10, 2), dir_size = le(e + 12, 4), dir_offset = le(e + 16, 4);
  if (entries == 0xFFFF || dir_size == 0xFFFFFFFF || dir_offset == 0xFFFFFFFF) {
    // zip64: a locator just before the record points to the zip64 end-of-directory record.
    if (eocd_offset < 20) fail("zip64 archive without its locator");
    const auto locator = read_at(eocd_offset - 20, 20);
    if (le(locator.data(), 4) != 0x07064b50) fail("zip64 archive without its locator");
    const std::uint64_t record = le(locator.data() + 8, 8);
    if (record > eocd_offset || eocd_offset - record < 56) fail("zip64 record outside the file");
    const auto z = read_at(record, 56);
    if (le(z.data(), 4) != 0x06064b50) fail("bad zip64 end-of-directory signature");
    entries = le(z.data() + 32, 8), dir_size = le(z.data() + 40, 8),
    dir_offset = le(z.data() + 48, 8);
  }
  if (dir_offset > eocd_offset || dir_size > eocd_offset - dir_offset) {
    fail("the central directory (offset " + std::to_string(dir_offset) + ", " +
         std::to_string(dir_size) + " bytes) lies outside the file of " + std::to_string(size) +
         " bytes");
  }
  if (entries > dir_size / 46) {
    fail(std::to_string(entries) + " entries cannot fit in a directory of " +
         std::to_string(dir_size) + " bytes");
  }
  const std::vector<unsigned char> dir = read_at(dir_offset, dir_size);
  std::uint64_t pos = 0;
  for (std::uint64_t k = 0; k < entries; ++k) {
    if (dir_size - pos < 46 || le(&dir[pos], 4) != 0x02014b50) {
      fail("directory entry " + std::to_string(k) + " is damaged");
    }
    const unsigned char* h = &dir[pos];
    const std::uint64_t method = le(h + 10, 2), name_len = le(h + 28, 2), extra_len = le(h + 30, 2),
                        comment_len = le(h + 32, 2);
    std::uint64_t packed = le(h + 20, 4), unpacked = le(h + 24, 4), local = le(h + 42, 4);
    if (dir_size - pos - 46 < name_len + extra_len + comment_len) {
      fail("directory entry " + std::to_string(k) + " runs past the directory");
    }
    const std::string name(reinterpret_cast<const char*>(h + 46), name_len);
    // zip64 sizes and offset, in this order, for the fields that hold 0xFFFFFFFF.
    const unsigned char* extra = h + 46 + name_len;
    for (std::uint64_t x = 0; x + 4 <= extra_len;) {
      const std::uint64_t id = le(extra + x, 2), len = le(extra + x + 2, 2);
      if (x + 4 + len > extra_len) break;
      if (id == 0x0001) {
        std::uint64_t at = x + 4;
        for (std::uint64_t* field : {&unpacked, &packed, &local}) {
          if (*field != 0xFFFFFFFF) continue;
          if (at + 8 > x + 4 + len) fail("entry '" + name + "': short zip64 field");
          *field = le(extra + at, 8);
          at += 8;
        }
      }
      x += 4 + len;
    }
    // LibTorch stores tensor data uncompressed and deflates small text entries (TorchScript
    // code); deflate expands at most about 1032 times.
    if (method != 0 && method != 8) {
      fail("entry '" + name + "' uses compression method " + std::to_string(method) +
           " (LibTorch archives are stored or deflated)");
    }
    if ((method == 0 && packed != unpacked) || (method == 8 && unpacked / 1032 > packed + 1)) {
      fail("entry '" + name + "' claims " + std::to_string(unpacked) + " bytes from " +
           std::to_string(packed) + " stored bytes");
    }
    if (local > dir_offset || packed > dir_offset - local) {
      fail("entry '" + name + "' claims " + std::to_string(packed) + " bytes at offset " +
           std::to_string(local) + ", beyond the data of the " + std::to_string(size) +
           "-byte file");
    }
    // The entry's data follow its local header, whose name must be the directory's (LibTorch
    // looks entries up by the directory's name but reads the data after the local header).
    if (local > dir_offset || dir_offset - local < 30) {
      fail("entry '" + name + "': local header outside the file");
    }
    const auto header = read_at(local, 30);
    if (le(header.data(), 4) != 0x04034b50) {
      fail("entry '" + name + "': no local header at offset " + std::to_string(local));
    }
    const std::uint64_t local_name_len = le(header.data() + 26, 2);
    const std::uint64_t data = local + 30 + local_name_len + le(header.data() + 28, 2);
    if (data > dir_offset || packed > dir_offset - data) {
      fail("entry '" + name + "': data outside the file");
    }
    const auto local_name = read_at(local + 30, local_name_len);
    if (std::string(local_name.begin(), local_name.end()) != name) {
      fail("entry '" + name + "': its local header names '" +
           std::string(local_name.begin(), local_name.end()) + "'");
    }
    if (method == 0 && name.size() > 4 && name.compare(name.size() - 4, 4, ".pkl") == 0) {
      const std::vector<unsigned char> pickle = read_at(data, packed);
      const std::string problem = check_pickle(pickle.data(), pickle.size());
      if (!problem.empty()) fail("entry '" + name + "': " + problem);
    }
    // LibTorch's zip reader skips the CRC-32 check and hands damaged TorchScript code to its
    // parser, which can crash on it (fuzz/libtorch-crashes/): every entry's checksum is verified
    // here, deflated entries are inflated with their output bounded by the size they claim.
    const std::string problem = check_entry_crc(in, data, packed, unpacked, method == 8,
                                                static_cast<std::uint32_t>(le(h + 16, 4)));
    if (!problem.empty()) fail("entry '" + name + "': " + problem);
    pos += 46 + name_len + extra_len + comment_len;
  }
}

}  // namespace onebit::io
