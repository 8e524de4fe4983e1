// Writes a seed corpus for fuzz_data_formats into the given directory: small valid IDX files
// (1 to 4 dimensions, raw and gzip) and a two-record CIFAR-10 batch (raw and gzip).
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

std::vector<std::uint8_t> idx(const std::vector<std::uint32_t>& shape) {
  std::vector<std::uint8_t> b = {0, 0, 0x08, static_cast<std::uint8_t>(shape.size())};
  std::size_t n = 1;
  for (std::uint32_t d : shape) {
    for (int k = 3; k >= 0; --k) b.push_back(static_cast<std::uint8_t>(d >> (8 * k)));
    n *= d;
  }
  for (std::size_t i = 0; i < n; ++i) b.push_back(static_cast<std::uint8_t>(i * 37));
  return b;
}

std::vector<std::uint8_t> gzip(const std::vector<std::uint8_t>& raw) {
  z_stream zs{};
  deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::vector<std::uint8_t> out(deflateBound(&zs, raw.size()) + 64);
  zs.next_in = const_cast<std::uint8_t*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void write(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::vector<std::vector<std::uint32_t>> shapes = {{5}, {3, 4}, {2, 3, 3}, {2, 2, 2, 3}};
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto b = idx(shapes[i]);
    write(dir + "/idx" + std::to_string(i), b);
    write(dir + "/idx" + std::to_string(i) + ".gz", gzip(b));
  }
  std::vector<std::uint8_t> cifar(2 * 3073, 17);
  cifar[0] = 3;
  cifar[3073] = 9;
  write(dir + "/cifar", cifar);
  write(dir + "/cifar.gz", gzip(cifar));
  return 0;
}
