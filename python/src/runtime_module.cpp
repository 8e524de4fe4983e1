// onebit._runtime: the inference runtime (onebit_runtime, no LibTorch) for Python and NumPy.
// Python-facing names and documentation live in python/onebit/runtime.py; this file only adapts
// types: NumPy arrays in and out (zero-copy both ways), C++ exceptions to Python ones.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/model.h"

namespace py = pybind11;
using onebit::runtime::Interpreter;
using onebit::runtime::InterpreterOptions;

namespace {

std::string shape_string(const std::vector<py::ssize_t>& dims) {
  std::ostringstream s;
  s << "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s << (i ? ", " : "") << dims[i];
  if (dims.size() == 1) s << ",";
  s << ")";
  return s.str();
}

std::string expected_shape(const std::vector<std::int64_t>& image) {
  std::ostringstream s;
  s << "(batch";
  for (auto d : image) s << ", " << d;
  s << ")";
  return s.str();
}

/// A prepared model and the file it came from (for messages).
class PyModel {
 public:
  PyModel(const std::string& path, int threads, bool allow_non_finite) : path_(path) {
    if (threads < 1) {
      throw py::value_error("onebit.runtime.Model(\"" + path + "\"): threads must be >= 1, got " +
                            std::to_string(threads));
    }
    InterpreterOptions o;
    o.threads = threads;
    o.non_finite = allow_non_finite ? onebit::runtime::NonFiniteInput::kPropagate
                                    : onebit::runtime::NonFiniteInput::kReject;
    net_ = std::make_unique<Interpreter>(Interpreter::from_file(path, o));
    input_shape_ = net_->input_shape();
    output_shape_ = net_->output_shape();
    // A classifier's output is C x 1 x 1: NumPy users expect (batch, C).
    while (output_shape_.size() > 1 && output_shape_.back() == 1) output_shape_.pop_back();
  }

  /// Runs a float32 C-contiguous batch without copying it; anything else is refused with the
  /// dtype, layout or shape that was expected.
  py::array_t<float> predict(const py::object& x) const {
    if (!py::isinstance<py::array>(x)) {
      throw py::type_error("Model(\"" + path_ +
                           "\").predict: expected a numpy.ndarray of dtype "
                           "float32 and shape " +
                           expected_shape(input_shape_) + ", got " +
                           std::string(py::str(py::type::of(x))));
    }
    auto a = py::reinterpret_borrow<py::array>(x);
    if (!a.dtype().is(py::dtype::of<float>())) {
      throw py::type_error("Model(\"" + path_ + "\").predict: expected dtype float32, got " +
                           std::string(py::str(a.dtype())) +
                           " (convert with x.astype(numpy.float32))");
    }
    std::vector<py::ssize_t> dims(a.shape(), a.shape() + a.ndim());
    bool ok = dims.size() == input_shape_.size() + 1;
    for (std::size_t i = 0; ok && i < input_shape_.size(); ++i) ok = dims[i + 1] == input_shape_[i];
    if (!ok) {
      throw py::value_error("Model(\"" + path_ + "\").predict: expected shape " +
                            expected_shape(input_shape_) + ", got " + shape_string(dims));
    }
    if (!(a.flags() & py::array::c_style)) {
      throw py::value_error("Model(\"" + path_ +
                            "\").predict: expected a C-contiguous array "
                            "(got a strided view; use numpy.ascontiguousarray(x))");
    }
    std::vector<py::ssize_t> out_dims{dims[0]};
    for (auto d : output_shape_) out_dims.push_back(d);
    if (dims[0] == 0) return py::array_t<float>(out_dims);  // NumPy's rule: an empty batch
    const auto batch = static_cast<std::size_t>(dims[0]);
    const auto size = static_cast<std::size_t>(a.size());
    const auto* data = static_cast<const float*>(a.data());
    auto out = std::make_unique<std::vector<float>>();
    {
      py::gil_scoped_release release;
      *out = net_->run(data, size, batch);
    }
    float* out_data = out->data();
    py::capsule owner(out.get(), [](void* p) { delete static_cast<std::vector<float>*>(p); });
    out.release();
    return py::array_t<float>(out_dims, out_data, owner);
  }

  /// Times `iterations` runs of `x` (checked like predict) from C++, one clock reading before
  /// and after each run: the seconds of each call, for comparing with predict's from Python.
  std::vector<double> time_runs(const py::array_t<float, py::array::c_style>& x,
                                int iterations) const {
    const py::object checked = predict(x);  // same checks, warms the arena
    const auto batch = static_cast<std::size_t>(x.shape(0));
    std::vector<double> seconds(static_cast<std::size_t>(std::max(iterations, 0)));
    py::gil_scoped_release release;
    for (auto& s : seconds) {
      const auto t0 = std::chrono::steady_clock::now();
      auto out = net_->run(x.data(), static_cast<std::size_t>(x.size()), batch);
      const auto t1 = std::chrono::steady_clock::now();
      s = std::chrono::duration<double>(t1 - t0).count();
    }
    return seconds;
  }

  std::vector<std::int64_t> input_shape() const { return input_shape_; }
  std::vector<std::int64_t> output_shape() const { return output_shape_; }
  std::string output_name() const {
    const auto& m = net_->model();
    const auto id = m.output;
    return id >= 1 && static_cast<std::size_t>(id) <= m.ops.size() ? m.ops[id - 1].name : "";
  }
  std::map<std::string, std::string> metadata() const { return net_->model().metadata; }
  std::int64_t binary_macs() const { return net_->binary_macs_per_image(); }
  std::size_t num_ops() const { return net_->model().ops.size(); }
  void set_threads(int threads) {
    if (threads < 1) throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
    net_->set_threads(threads);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<Interpreter> net_;
  std::vector<std::int64_t> input_shape_;
  std::vector<std::int64_t> output_shape_;
};

}  // namespace

PYBIND11_MODULE(_runtime, m) {
  m.doc() = "onebit's inference runtime (no LibTorch); use onebit.runtime";
  static py::exception<onebit::runtime::ModelError> model_error(m, "ModelError",
                                                                PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const onebit::runtime::ModelError& e) {
      model_error(e.what());
    }
  });
  py::class_<PyModel>(m, "Model")
      .def(py::init<const std::string&, int, bool>(), py::arg("path"), py::arg("threads") = 1,
           py::arg("allow_non_finite") = false)
      .def("predict", &PyModel::predict, py::arg("x"))
      .def_property_readonly("input_shape", &PyModel::input_shape)
      .def_property_readonly("output_shape", &PyModel::output_shape)
      .def_property_readonly("output_name", &PyModel::output_name)
      .def_property_readonly("metadata", &PyModel::metadata)
      .def_property_readonly("binary_macs_per_image", &PyModel::binary_macs)
      .def_property_readonly("num_ops", &PyModel::num_ops)
      .def_property_readonly("path", &PyModel::path)
      .def("set_threads", &PyModel::set_threads, py::arg("threads"))
      .def("_time_runs", &PyModel::time_runs, py::arg("x"), py::arg("iterations"));
}
