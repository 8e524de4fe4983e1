// The .obnn file format (docs/model-format.md): header, metadata section, payload of tensors.

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "onebit/runtime/bitpack.h"
#include "onebit/runtime/model.h"
#include "op_table.h"

namespace onebit::runtime {

namespace {

constexpr char kMagic[8] = {'O', 'N', 'E', 'B', 'I', 'T', 'N', 'N'};
constexpr std::size_t kHeaderBytes = 64;
constexpr std::size_t kPayloadAlign = 64;
constexpr std::uint32_t kMaxCount = 1u << 20;
constexpr std::uint32_t kMaxString = 4096;
constexpr std::uint32_t kMaxRank = 8;
constexpr std::int64_t kMaxDim = std::int64_t{1} << 31;
constexpr std::int64_t kMaxNumel = std::int64_t{1} << 36;

std::uint32_t crc32(const std::uint8_t* data, std::size_t size) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

class Writer {
 public:
  template <typename T>
  void put(T value) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s) {
    put(static_cast<std::uint32_t>(s.size()));
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  std::vector<std::uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
};

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size, std::string source, std::size_t base)
      : data_(data), size_(size), source_(std::move(source)), base_(base) {}

  [[noreturn]] void fail(const std::string& field, const std::string& found,
                         const std::string& expected) const {
    throw ModelError(source_ + ": field '" + field + "' at byte " + std::to_string(base_ + pos_) +
                     ": found " + found + ", expected " + expected);
  }

  template <typename T>
  T get(const std::string& field) {
    if (size_ - pos_ < sizeof(T)) {
      fail(field, "end of section (" + std::to_string(size_ - pos_) + " bytes left)",
           std::to_string(sizeof(T)) + " more bytes");
    }
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::uint32_t count(const std::string& field, std::uint32_t max) {
    const auto n = get<std::uint32_t>(field);
    if (n > max) fail(field, std::to_string(n), "at most " + std::to_string(max));
    return n;
  }

  std::string string(const std::string& field) {
    const std::uint32_t n = count(field + ".length", kMaxString);
    if (size_ - pos_ < n) fail(field, "length " + std::to_string(n), "bytes within the section");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

  std::vector<std::int64_t> shape(const std::string& field, std::uint32_t rank) {
    std::vector<std::int64_t> dims(rank);
    for (std::uint32_t i = 0; i < rank; ++i) {
      dims[i] = get<std::int64_t>(field + "[" + std::to_string(i) + "]");
      if (dims[i] < 1 || dims[i] > kMaxDim) {
        fail(field + "[" + std::to_string(i) + "]", std::to_string(dims[i]),
             "a dimension in [1, 2^31]");
      }
    }
    return dims;
  }

  bool at_end() const { return pos_ == size_; }
  std::size_t remaining() const { return size_ - pos_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::string source_;
  std::size_t base_;
  std::size_t pos_ = 0;
};

std::int64_t checked_numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 1 || d > kMaxDim || n > kMaxNumel / d) return -1;
    n *= d;
  }
  return n;
}

std::size_t storage_bytes_for(DType dtype, std::int64_t numel) {
  const auto n = static_cast<std::size_t>(numel);
  return dtype == DType::kBits ? words_for_bits(n) * sizeof(BitWord) : n * 4;
}

// Binary conv2d / dense read thermometer planes ("input_planes") from this version on.
constexpr std::uint32_t kInputPlanesVersion = 4;

// What `version` cannot hold is an error, not a silently different model: op types newer than
// the version, and names the reader would reject. (Names themselves start in version 3.) As
// before versions existed, the writer does not judge the graph otherwise: unknown op types and
// bad attributes are written as they are and rejected by the reader or the interpreter.
void check_writable(const Model& model, std::uint32_t version) {
  if (version < 1 || version > kModelFormatVersion) {
    throw ModelError("serialize_model: format version " + std::to_string(version) +
                     ", expected 1 to " + std::to_string(kModelFormatVersion));
  }
  for (std::size_t i = 0; i < model.ops.size(); ++i) {
    const Op& op = model.ops[i];
    const detail::OpDef* def = detail::find_op_def(static_cast<std::uint32_t>(op.type));
    const std::string where =
        "serialize_model: op " + std::to_string(i) + " (" + op_name(op.type) + ")";
    if (def != nullptr && def->since_version > version) {
      throw ModelError(where + " needs format version " + std::to_string(def->since_version) +
                       ", cannot write version " + std::to_string(version));
    }
    if (version < kInputPlanesVersion && op.ints.count("input_planes") != 0) {
      throw ModelError(where +
                       " has attribute 'input_planes' (thermometer input), which needs "
                       "format version " +
                       std::to_string(kInputPlanesVersion) + ", cannot write version " +
                       std::to_string(version));
    }
    if (version >= 3 && op.name.size() > kMaxString) {
      throw ModelError(where + ": name of " + std::to_string(op.name.size()) +
                       " bytes, expected at most " + std::to_string(kMaxString));
    }
  }
}

void write_meta(const Model& model, Writer& w, const std::vector<std::uint64_t>& offsets,
                std::uint32_t version) {
  w.put(static_cast<std::uint32_t>(model.metadata.size()));
  for (const auto& [key, value] : model.metadata) {
    w.put_string(key);
    w.put_string(value);
  }
  w.put(static_cast<std::uint32_t>(model.input_shape.size()));
  for (std::int64_t d : model.input_shape) w.put(d);
  w.put(static_cast<std::uint32_t>(model.tensors.size()));
  for (std::size_t i = 0; i < model.tensors.size(); ++i) {
    const Tensor& t = model.tensors[i];
    w.put_string(t.name);
    w.put(static_cast<std::uint8_t>(t.dtype));
    w.put(static_cast<std::uint8_t>(t.shape.size()));
    for (std::int64_t d : t.shape) w.put(d);
    w.put(offsets[i]);
    w.put(static_cast<std::uint64_t>(t.storage_bytes()));
  }
  w.put(static_cast<std::uint32_t>(model.ops.size()));
  for (const Op& op : model.ops) {
    w.put(static_cast<std::uint16_t>(op.type));
    w.put(static_cast<std::uint16_t>(op.inputs.size()));
    for (std::int32_t v : op.inputs) w.put(v);
    w.put(static_cast<std::uint16_t>(op.ints.size()));
    for (const auto& [key, values] : op.ints) {
      w.put_string(key);
      w.put(static_cast<std::uint32_t>(values.size()));
      for (std::int64_t v : values) w.put(v);
    }
    w.put(static_cast<std::uint16_t>(op.tensors.size()));
    for (const auto& [role, index] : op.tensors) {
      w.put_string(role);
      w.put(static_cast<std::uint32_t>(index));
    }
    if (version >= 3) w.put_string(op.name);
  }
  w.put(model.output);
}

struct TensorEntry {
  std::uint64_t offset = 0, size = 0;
};

Tensor read_tensor(Reader& r, const std::string& f, TensorEntry& entry) {
  Tensor t;
  t.name = r.string(f + ".name");
  const auto dtype = r.get<std::uint8_t>(f + ".dtype");
  if (dtype > 2) r.fail(f + ".dtype", std::to_string(dtype), "0 (float32), 1 (int32) or 2 (bits)");
  t.dtype = static_cast<DType>(dtype);
  const auto rank = r.get<std::uint8_t>(f + ".rank");
  if (rank > kMaxRank) r.fail(f + ".rank", std::to_string(rank), "at most 8");
  t.shape = r.shape(f + ".shape", rank);
  const std::int64_t numel = checked_numel(t.shape);
  if (numel < 0) r.fail(f + ".shape", "too many elements", "at most 2^36 elements");
  entry.offset = r.get<std::uint64_t>(f + ".offset");
  entry.size = r.get<std::uint64_t>(f + ".size");
  if (entry.size != storage_bytes_for(t.dtype, numel)) {
    r.fail(f + ".size", std::to_string(entry.size),
           std::to_string(storage_bytes_for(t.dtype, numel)) + " for its shape and dtype");
  }
  if (entry.offset % kPayloadAlign != 0) {
    r.fail(f + ".offset", std::to_string(entry.offset), "a multiple of 64");
  }
  return t;
}

// The op table decides which types exist, since which format version, and their arity.
Op read_op(Reader& r, const std::string& f, std::int32_t own_id, std::size_t tensor_count,
           std::uint32_t version) {
  Op op;
  const auto type = r.get<std::uint16_t>(f + ".type");
  const detail::OpDef* def = detail::find_op_def(type);
  if (def == nullptr) {
    r.fail(f + ".type", std::to_string(type),
           "an op type in [1, " + std::to_string(detail::op_def_count()) + "]");
  }
  if (def->since_version > version) {
    r.fail(f + ".type", std::to_string(type) + " (" + def->name + ")",
           "an op type of format version " + std::to_string(version) + " (" + def->name +
               " needs version " + std::to_string(def->since_version) + ")");
  }
  op.type = def->type;
  const auto n_inputs = r.get<std::uint16_t>(f + ".input_count");
  if (n_inputs < def->min_inputs || n_inputs > def->max_inputs) {
    r.fail(
        f + ".input_count", std::to_string(n_inputs),
        std::to_string(def->min_inputs) +
            (def->min_inputs == def->max_inputs ? "" : " to " + std::to_string(def->max_inputs)) +
            " for " + def->name);
  }
  for (std::uint16_t i = 0; i < n_inputs; ++i) {
    const auto v = r.get<std::int32_t>(f + ".inputs");
    if (v < 0 || v >= own_id) {
      r.fail(f + ".inputs", std::to_string(v), "a value id in [0, " + std::to_string(own_id) + ")");
    }
    op.inputs.push_back(v);
  }
  const auto n_attrs = r.get<std::uint16_t>(f + ".attribute_count");
  if (n_attrs > 64) r.fail(f + ".attribute_count", std::to_string(n_attrs), "at most 64");
  for (std::uint16_t i = 0; i < n_attrs; ++i) {
    std::string key = r.string(f + ".attribute.key");
    const std::uint32_t n = r.count(f + ".attribute." + key + ".count", 64);
    std::vector<std::int64_t> values(n);
    for (auto& v : values) v = r.get<std::int64_t>(f + ".attribute." + key);
    if (key == "input_planes" && version < kInputPlanesVersion) {
      r.fail(f + ".attribute.key", key,
             "an attribute of format version " + std::to_string(version) +
                 " (input_planes needs version " + std::to_string(kInputPlanesVersion) + ")");
    }
    op.ints[key] = std::move(values);
  }
  const auto n_refs = r.get<std::uint16_t>(f + ".tensor_count");
  if (n_refs > 16) r.fail(f + ".tensor_count", std::to_string(n_refs), "at most 16");
  for (std::uint16_t i = 0; i < n_refs; ++i) {
    std::string role = r.string(f + ".tensor.role");
    const auto index = r.get<std::uint32_t>(f + ".tensor." + role);
    if (index >= tensor_count) {
      r.fail(f + ".tensor." + role, std::to_string(index),
             "a tensor index below " + std::to_string(tensor_count));
    }
    op.tensors[role] = static_cast<std::int32_t>(index);
  }
  if (version >= 3) op.name = r.string(f + ".name");
  return op;
}

Model read_meta(Reader& r, const std::uint8_t* payload, std::uint64_t payload_size,
                std::uint32_t version) {
  Model model;
  const std::uint32_t n_meta = r.count("metadata.count", 1024);
  for (std::uint32_t i = 0; i < n_meta; ++i) {
    std::string key = r.string("metadata.key");
    model.metadata[key] = r.string("metadata." + key);
  }
  const std::uint32_t rank = r.count("input.rank", kMaxRank);
  model.input_shape = r.shape("input.shape", rank);
  if (checked_numel(model.input_shape) < 0) r.fail("input.shape", "too many elements", "fewer");
  const std::uint32_t n_tensors = r.count("tensor_count", kMaxCount);
  for (std::uint32_t i = 0; i < n_tensors; ++i) {
    const std::string f = "tensor[" + std::to_string(i) + "]";
    TensorEntry entry;
    Tensor t = read_tensor(r, f, entry);
    if (entry.offset > payload_size || payload_size - entry.offset < entry.size) {
      r.fail(f + ".offset", std::to_string(entry.offset) + " + size " + std::to_string(entry.size),
             "a range within the payload of " + std::to_string(payload_size) + " bytes");
    }
    t.data.assign((entry.size + 7) / 8, 0);
    if (entry.size > 0) std::memcpy(t.data.data(), payload + entry.offset, entry.size);
    model.tensors.push_back(std::move(t));
  }
  const std::uint32_t n_ops = r.count("op_count", kMaxCount);
  for (std::uint32_t i = 0; i < n_ops; ++i) {
    model.ops.push_back(read_op(r, "op[" + std::to_string(i) + "]",
                                static_cast<std::int32_t>(i + 1), model.tensors.size(), version));
  }
  model.output = r.get<std::int32_t>("output");
  if (model.output < 0 || model.output > static_cast<std::int32_t>(n_ops)) {
    r.fail("output", std::to_string(model.output),
           "a value id in [0, " + std::to_string(n_ops) + "]");
  }
  if (!r.at_end())
    r.fail("metadata section", std::to_string(r.remaining()) + " extra bytes", "none");
  return model;
}

std::uint64_t read_u64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

std::uint32_t read_u32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

std::string hex(std::uint32_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kInt32:
      return "int32";
    case DType::kBits:
      return "bits";
    case DType::kFloat32:
      break;
  }
  return "float32";
}

std::int64_t Tensor::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

std::size_t Tensor::storage_bytes() const { return storage_bytes_for(dtype, numel()); }

Tensor Tensor::from_floats(std::string name, std::vector<std::int64_t> shape,
                           const std::vector<float>& values) {
  Tensor t{std::move(name), DType::kFloat32, std::move(shape), {}};
  if (static_cast<std::size_t>(t.numel()) != values.size()) {
    throw ModelError("tensor '" + t.name + "': " + std::to_string(values.size()) +
                     " values for a shape of " + std::to_string(t.numel()) + " elements");
  }
  t.data.assign((values.size() * 4 + 7) / 8, 0);
  std::memcpy(t.data.data(), values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::from_ints(std::string name, std::vector<std::int64_t> shape,
                         const std::vector<std::int32_t>& values) {
  Tensor t{std::move(name), DType::kInt32, std::move(shape), {}};
  if (static_cast<std::size_t>(t.numel()) != values.size()) {
    throw ModelError("tensor '" + t.name + "': " + std::to_string(values.size()) +
                     " values for a shape of " + std::to_string(t.numel()) + " elements");
  }
  t.data.assign((values.size() * 4 + 7) / 8, 0);
  std::memcpy(t.data.data(), values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::from_signs(std::string name, std::vector<std::int64_t> shape,
                          const std::vector<float>& values) {
  Tensor t{std::move(name), DType::kBits, std::move(shape), {}};
  if (static_cast<std::size_t>(t.numel()) != values.size()) {
    throw ModelError("tensor '" + t.name + "': " + std::to_string(values.size()) +
                     " values for a shape of " + std::to_string(t.numel()) + " elements");
  }
  t.data.assign(words_for_bits(values.size()), 0);
  pack_signs(values.data(), values.size(), t.data.data());
  return t;
}

std::vector<std::int64_t> Op::attr(const std::string& key,
                                   std::vector<std::int64_t> fallback) const {
  const auto it = ints.find(key);
  return it == ints.end() ? fallback : it->second;
}

std::vector<std::uint8_t> serialize_model(const Model& model, std::uint32_t version) {
  check_writable(model, version);
  std::vector<std::uint64_t> offsets;
  std::uint64_t payload_size = 0;
  for (const Tensor& t : model.tensors) {
    offsets.push_back(payload_size);
    payload_size += (t.storage_bytes() + kPayloadAlign - 1) / kPayloadAlign * kPayloadAlign;
  }
  Writer meta;
  write_meta(model, meta, offsets, version);
  const std::uint64_t meta_size = meta.bytes().size();
  const std::uint64_t payload_offset =
      (kHeaderBytes + meta_size + kPayloadAlign - 1) / kPayloadAlign * kPayloadAlign;
  std::vector<std::uint8_t> file(payload_offset + payload_size, 0);
  std::memcpy(file.data() + kHeaderBytes, meta.bytes().data(), meta_size);
  for (std::size_t i = 0; i < model.tensors.size(); ++i) {
    std::memcpy(file.data() + payload_offset + offsets[i], model.tensors[i].data.data(),
                model.tensors[i].storage_bytes());
  }
  Writer header;
  for (char c : kMagic) header.put(c);
  header.put(version);
  header.put(static_cast<std::uint32_t>(kHeaderBytes));
  header.put(static_cast<std::uint64_t>(file.size()));
  header.put(static_cast<std::uint64_t>(kHeaderBytes));
  header.put(meta_size);
  header.put(payload_offset);
  header.put(payload_size);
  header.put(crc32(file.data() + kHeaderBytes, meta_size));
  header.put(crc32(file.data() + payload_offset, payload_size));
  std::memcpy(file.data(), header.bytes().data(), kHeaderBytes);
  return file;
}

Model parse_model(const std::uint8_t* bytes, std::size_t size, const std::string& source) {
  Reader h(bytes, size < kHeaderBytes ? size : kHeaderBytes, source, 0);
  if (size < kHeaderBytes) {
    h.fail("header", std::to_string(size) + " bytes", "a file of at least 64 bytes");
  }
  if (std::memcmp(bytes, kMagic, sizeof(kMagic)) != 0) {
    h.fail("magic", "other bytes", "\"ONEBITNN\" (not an .obnn model)");
  }
  const std::uint32_t version = read_u32(bytes + 8);
  if (version > kModelFormatVersion) {
    throw ModelError(source + ": field 'format_version': found " + std::to_string(version) +
                     ", expected at most " + std::to_string(kModelFormatVersion) +
                     " (the newest format version this build of onebit reads; the file was "
                     "written by a newer onebit: upgrade the runtime)");
  }
  if (version == 0) {
    throw ModelError(source + ": field 'format_version': found 0, expected a version in [1, " +
                     std::to_string(kModelFormatVersion) + "]");
  }
  const auto check = [&](const char* field, std::uint64_t value, bool ok, const std::string& want) {
    if (!ok) {
      throw ModelError(source + ": field '" + field + "': found " + std::to_string(value) +
                       ", expected " + want);
    }
  };
  check("header_size", read_u32(bytes + 12), read_u32(bytes + 12) == kHeaderBytes, "64");
  const std::uint64_t file_size = read_u64(bytes + 16);
  check("file_size", file_size, file_size == size,
        std::to_string(size) + " (the actual size; the file is truncated or has extra bytes)");
  const std::uint64_t meta_offset = read_u64(bytes + 24), meta_size = read_u64(bytes + 32);
  const std::uint64_t payload_offset = read_u64(bytes + 40), payload_size = read_u64(bytes + 48);
  check("meta_offset", meta_offset, meta_offset == kHeaderBytes, "64");
  check("meta_size", meta_size, meta_size <= size - kHeaderBytes, "a size within the file");
  check("payload_offset", payload_offset,
        payload_offset >= kHeaderBytes + meta_size && payload_offset <= size &&
            payload_offset % kPayloadAlign == 0,
        "a multiple of 64 after the metadata and within the file");
  check("payload_size", payload_size, payload_size == size - payload_offset,
        std::to_string(size - payload_offset) + " (up to the end of the file)");
  for (std::uint64_t i = kHeaderBytes + meta_size; i < payload_offset; ++i) {
    check("alignment padding", bytes[i], bytes[i] == 0, "0 (padding before the payload)");
  }
  const std::uint32_t meta_crc = crc32(bytes + meta_offset, meta_size);
  if (meta_crc != read_u32(bytes + 56)) {
    throw ModelError(source + ": field 'meta_crc32': found " + hex(read_u32(bytes + 56)) +
                     ", expected " + hex(meta_crc) + " (the metadata section is corrupt)");
  }
  const std::uint32_t payload_crc = crc32(bytes + payload_offset, payload_size);
  if (payload_crc != read_u32(bytes + 60)) {
    throw ModelError(source + ": field 'payload_crc32': found " + hex(read_u32(bytes + 60)) +
                     ", expected " + hex(payload_crc) + " (the tensor payload is corrupt)");
  }
  Reader meta(bytes + meta_offset, meta_size, source, meta_offset);
  return read_meta(meta, bytes + payload_offset, payload_size, version);
}

Model load_model(const std::string& path, std::uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw ModelError(path + ": cannot open for reading: " + std::strerror(errno));
  const std::streamoff end = in.tellg();
  if (end < 0) throw ModelError(path + ": cannot determine the file size (not a regular file?)");
  const auto size = static_cast<std::uint64_t>(end);
  if (size > max_bytes) {
    throw ModelError(path + ": file of " + std::to_string(size) +
                     " bytes is larger than the limit of " + std::to_string(max_bytes) +
                     " bytes (raise InterpreterOptions::max_model_bytes or load_model's max_bytes "
                     "to load it)");
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.seekg(0);
  if (!bytes.empty())
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (!in || in.gcount() != static_cast<std::streamsize>(size)) {
    throw ModelError(path + ": read error (the file changed or could not be read to its end)");
  }
  return parse_model(bytes.data(), bytes.size(), path);
}

std::size_t save_model(const Model& model, const std::string& path, std::uint32_t version) {
  const std::vector<std::uint8_t> bytes = serialize_model(model, version);
  const std::string temp =
      path + ".tmp." + std::to_string(reinterpret_cast<std::uintptr_t>(&bytes));
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw ModelError(temp + ": cannot open for writing: " + std::strerror(errno));
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::remove(temp.c_str());
      throw ModelError(temp + ": write failed");
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temp.c_str());
    throw ModelError(path + ": cannot rename temporary file " + temp + ": " + reason);
  }
  return bytes.size();
}

}  // namespace onebit::runtime
