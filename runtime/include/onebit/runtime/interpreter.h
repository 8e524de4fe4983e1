#pragma once
/// \file
/// Runs a model on a batch of float NCHW images.
///
/// Example:
/// \code
///   onebit::runtime::Interpreter net = onebit::runtime::Interpreter::from_file("mnist.obnn");
///   std::vector<float> logits = net.run(images, 64);  // images: 64 x 1 x 28 x 28 floats
/// \endcode

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "onebit/runtime/kernels.h"
#include "onebit/runtime/model.h"

namespace onebit::runtime {

/// Options of an `Interpreter`.
struct InterpreterOptions {
  /// Threads per `run` call (the calling thread included); work is split over images and
  /// output rows. 1 runs everything on the caller's thread.
  int threads = 1;
  /// Kernel table; nullptr uses `active_kernels()` (CPUID or `ONEBIT_ISA`).
  const KernelTable* kernels = nullptr;
};

/// A prepared model. Construction validates every op (shapes, attributes, tensor roles) and
/// lays weights out for the kernels; `run` is const and keeps all scratch per call, so one
/// Interpreter may be used from several threads at once.
class Interpreter {
 public:
  /// Prepares `model`; throws `ModelError` if it is inconsistent.
  explicit Interpreter(Model model, InterpreterOptions options = {});
  /// Loads and prepares a `.obnn` file.
  static Interpreter from_file(const std::string& path, InterpreterOptions options = {});
  /// Parses and prepares `.obnn` bytes.
  static Interpreter from_bytes(const std::uint8_t* bytes, std::size_t size,
                                InterpreterOptions options = {});
  ~Interpreter();
  Interpreter(Interpreter&&) noexcept;
  Interpreter& operator=(Interpreter&&) noexcept;
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  /// Runs `batch` images given as float NCHW (`batch * C * H * W` values, C,H,W as
  /// `input_shape()`); returns the output value as float NCHW (`batch * output_size()` values;
  /// logits for classifiers, +-1 for bit outputs). Throws `std::invalid_argument` when the
  /// input size does not match.
  std::vector<float> run(const std::vector<float>& input, std::size_t batch) const;
  /// Same as above on a raw buffer of `size` floats.
  std::vector<float> run(const float* input, std::size_t size, std::size_t batch) const;

  /// Input shape of one image: C, H, W.
  std::vector<std::int64_t> input_shape() const;
  /// Output shape of one image: C, H, W (C, 1, 1 for logits).
  std::vector<std::int64_t> output_shape() const;
  /// Floats per image in the output.
  std::size_t output_size() const;
  /// Peak bytes of activation buffers that one `run` of `batch` images holds at once (input,
  /// op outputs and the output; not per-op scratch). Each value lives from the op that produces
  /// it to its last consumer, however many consumers it has; values nothing consumes are freed
  /// right after they are produced. Example: `net.activation_bytes(64)`.
  std::size_t activation_bytes(std::size_t batch) const;
  /// Binary multiply-accumulates per image (for throughput reports).
  std::int64_t binary_macs_per_image() const;
  /// The model as loaded.
  const Model& model() const;
  /// Changes the thread count used by later `run` calls.
  void set_threads(int threads);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace onebit::runtime
