#pragma once
/// \file
/// Which kernels quantized layers use in their forward pass: LibTorch's float operations on the
/// quantized values (the reference), or onebit's runtime kernels, which run a layer with a +-1
/// kernel on bit-packed data (XNOR-popcount) while it trains.
///
/// ```
/// onebit::nn::TrainingKernelsGuard guard(onebit::nn::TrainingKernels::kBinary);
/// auto loss = criterion(model->forward(x), y);  // binary convs and dense layers run packed
/// loss.backward();                               // the straight-through backward, unchanged
/// ```

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "onebit/quantizers.h"

namespace onebit::nn {

/// The forward kernels of quantized layers (QuantConv2d, QuantDense).
enum class TrainingKernels {
  /// LibTorch float convolution / matrix product on the quantized values.
  kFloat,
  /// onebit's runtime kernels for every QuantConv2d and QuantDense whose kernel quantizer gives
  /// exactly +-1 (`ForwardKind::kSign` without a scale) on float32 CPU tensors: with a sign
  /// input quantizer the layer runs as a binary GEMM on packed bits, whose integer sums equal
  /// the float path's exactly (bit for bit without a bias); with a float input (a first layer)
  /// it runs on the runtime's float kernels, equal within float rounding. A convolution's output
  /// keeps its input's layout (channels-last when the input is, or has one channel: a first
  /// layer starts a channels-last network, on which LibTorch's pooling and batch norm run
  /// faster). The backward pass computes the float path's gradients on the same saved values:
  /// `detail::conv2d_backward_gemm` for large patches and first layers, else LibTorch's
  /// convolution / matrix-product gradient. Every other layer keeps the float path.
  kBinary,
};

/// "float" or "binary".
const char* training_kernels_name(TrainingKernels kernels);
/// Parses "float" or "binary"; throws std::invalid_argument naming the value otherwise.
TrainingKernels parse_training_kernels(const std::string& name);

/// The kernels quantized layers use when they run on this thread (default kFloat: layers called
/// from your own code compute as LibTorch does unless you opt in; the trainer sets
/// `TrainOptions::training_kernels`, "binary" by default). Like
/// LibTorch's grad mode, the choice is per thread: data-parallel ranks that are threads of one
/// process set it independently.
TrainingKernels training_kernels();
/// Sets this thread's choice (see `TrainingKernelsGuard` for a scoped one).
void set_training_kernels(TrainingKernels kernels);

/// Sets the training kernels for its lifetime and restores the previous choice afterwards.
class TrainingKernelsGuard {
 public:
  explicit TrainingKernelsGuard(TrainingKernels kernels);
  ~TrainingKernelsGuard();
  TrainingKernelsGuard(const TrainingKernelsGuard&) = delete;
  TrainingKernelsGuard& operator=(const TrainingKernelsGuard&) = delete;

 private:
  TrainingKernels previous_;
};

/// True when the training kernels are kBinary and at least one layer of `model` (itself or a
/// submodule) runs on the runtime kernels: a `QuantConv2d` or `QuantDense` whose kernel
/// quantizer gives exactly +-1 and whose input quantizer is a sign or absent (see
/// `detail::use_runtime_kernels`). Models with scaled kernels only (Bi-Real Net's
/// magnitude-aware sign, ReActNet-A) have none: they train on the float path either way.
bool uses_runtime_kernels(const torch::nn::Module& model);

/// A batch of images (N, C, H, W) in the memory layout its model trains fastest in, given
/// `runtime_layers` = `uses_runtime_kernels(model)` (computed once per model, not per batch: it
/// walks every module): a channels-last copy when true (strides of NHWC even for one channel,
/// so that LibTorch's own first convolution also writes channels-last and the whole network
/// stays in the runtime's layout); otherwise, or for other ranks, `batch` itself (LibTorch's
/// float convolution gradients are up to 2x slower channels-last on this project's CPUs).
at::Tensor training_layout(const at::Tensor& batch, bool runtime_layers);

/// Sets LibTorch's intra-op threads and sizes OpenBLAS's own pool to one thread when the process
/// uses OpenBLAS (LibTorch calls it from its threads; a second pool of idle OpenBLAS threads
/// spins in sched_yield and takes the cores from them). `threads` <= 0 keeps LibTorch's default.
void set_intra_op_threads(int threads);

/// Makes glibc's malloc keep freed memory for reuse instead of returning it to the system:
/// blocks up to 32 MiB come from the heap (M_MMAP_THRESHOLD) and the heap is never trimmed
/// (M_TRIM_THRESHOLD). A training step frees and allocates the same few hundred MiB of
/// activations, gradients and optimizer temporaries every time; by default each of them came
/// back as fresh pages, and the kernel's page faults took a quarter of a step (a 32x32
/// QuickNet-Small step at batch 32 on one thread: 414 -> 276 ms). The process's memory stays
/// at its peak afterwards. The trainer and `onebit bench --train` call it. Does nothing (and
/// returns false) without glibc, or when the environment already sets malloc's thresholds
/// (`GLIBC_TUNABLES` with a `glibc.malloc.` entry, `MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_`): the user's own settings win. Safe to call more than once. When it
/// sets the thresholds it also calls `keep_large_blocks` (glibc maps blocks above 32 MiB afresh
/// whatever the threshold).
bool retain_freed_memory();

/// Tensors of at least this many bytes come from `keep_large_blocks`'s cache once installed.
inline constexpr std::size_t kLargeBlockBytes = std::size_t{32} << 20;

/// What the large-block cache holds (`large_block_stats`).
struct LargeBlockStats {
  std::size_t live_bytes = 0;       ///< In tensors now.
  std::size_t cached_bytes = 0;     ///< Freed, kept mapped for reuse.
  std::size_t peak_live_bytes = 0;  ///< The most ever live at once.
  std::size_t hits = 0;             ///< Requests served from the cache.
  std::size_t misses = 0;           ///< Requests that mapped a new block.
};

/// Installs a LibTorch CPU allocator that keeps tensors of `kLargeBlockBytes` or more mapped
/// when they are freed and hands them out again (glibc maps such blocks afresh on every
/// allocation, and every page of them faulted again on first touch: a third of a ReActNet-A
/// training step, whose 1024-channel kernels, their gradients and the quantizers' temporaries
/// are 38 MB each). Blocks are rounded up to 2 MiB and asked for as transparent huge pages; a
/// freed block serves a request of its size or up to a fifth less; the memory mapped stays
/// within a quarter (plus 64 MiB) above the most that was ever live at once. Smaller tensors
/// keep LibTorch's allocator. Installed with priority 1: an allocator a program set with a
/// higher priority wins (then this returns false). Process-wide, idempotent, thread-safe.
bool keep_large_blocks();

/// The cache's counters (all zero before `keep_large_blocks`).
LargeBlockStats large_block_stats();

/// Unmaps every block the cache keeps (e.g. after training, before a long phase that needs
/// the memory elsewhere); live tensors keep theirs. Returns the bytes given back.
std::size_t release_large_blocks();

namespace detail {

/// Geometry of a 2-D convolution. The runtime reads the layer's own padding from `same` /
/// `pads` and `pad_value` (so that a binary input is never padded with materialized zeros, which
/// a sign would read as +1); the backward pass reads `pad_before` / `pad_after`.
struct Conv2dGeometry {
  std::vector<int64_t> stride, dilation;
  int64_t groups = 1;
  bool same = false;          ///< Keras "same" padding (else explicit `pads`).
  std::vector<int64_t> pads;  ///< Explicit symmetric padding per spatial dimension.
  /// The padding per spatial dimension before and after the input (`conv_pads`).
  std::vector<int64_t> pad_before, pad_after;
  double pad_value = 0;  ///< Value of padded inputs: 0 or 1.
};

/// Who computes the gradients of a convolution that runs forward on the runtime's kernels:
/// LibTorch's convolution_backward (oneDNN, as the float path) or `conv2d_backward_gemm`
/// (im2col + OpenBLAS products, sparse products behind max pools). The two agree within float
/// rounding; which is faster depends on the CPU and the shape (`conv_gradient_uses_products`).
enum class ConvGradient {
  kAuto,      ///< Per layer, the faster on this CPU as measured (the default).
  kLibTorch,  ///< Always LibTorch's.
  kProducts,  ///< The products wherever they won without AVX-512 (the rules of AVX2 CPUs).
};

/// "auto", "libtorch" or "products".
const char* conv_gradient_name(ConvGradient gradient);

/// The ConvGradient named `name` (as `conv_gradient_name`); std::invalid_argument naming the
/// choices otherwise.
ConvGradient parse_conv_gradient(const std::string& name);

/// Sets the gradient implementation for this process (tests and benchmarks compare both). Not
/// thread-safe against training steps that run meanwhile.
void set_conv_gradient(ConvGradient gradient);

/// The setting (kAuto unless set).
ConvGradient conv_gradient();

/// Output maps of up to this many pixels (2x2) take the per-tap products
/// (`conv2d_backward_taps`) where the products are chosen, except 1x1 maps, on which the patch
/// products skip the dead taps as well and ran as fast or faster. On a Zen 5 core, batch 32,
/// 3x3, "same" zero padding, in = out channels (`bench_training
/// --benchmark_filter=ConvBackwardSmallMaps`), on 2x2 maps: 128-1024 channels 1.0-4x as fast as
/// oneDNN and 1.4-2.8x as fast as the patch products; on 4x4 maps oneDNN won (1.2-1.8x).
inline constexpr int64_t kTapProductsMaxPixels = 4;

/// True when the gradients of a one-group convolution with `outputs` output channels and output
/// gradient `grad_output` (N, O, OH, OW) are onebit's products (`conv2d_backward_gemm`, or
/// `conv2d_backward_taps` on 2 to `kTapProductsMaxPixels` output pixels) under `setting`
/// (`input_grad`: the input needs a gradient). kProducts, and kAuto without the runtime's
/// AVX-512 (Zen 3, `bench_training --benchmark_filter=ConvBackward`): 64 or more outputs (the
/// products ran at 0.96-1.6x oneDNN's speed), no input gradient, or an output gradient at most
/// `kSparseGradientDensity` nonzero. kAuto with AVX-512 (Zen 5): 64 or more outputs on maps of
/// at most `kTapProductsMaxPixels` pixels (256-512 channels on 1x1 maps: patch products
/// 1.4-2.1x oneDNN's speed, 3-4x once the padding is left out; 2x2 maps: see
/// kTapProductsMaxPixels). On 3x3 to 14x14 outputs
/// oneDNN's AVX-512 kernels ran 2.0-2.3x as fast as the dense products on one thread, and at a
/// max pool's 25% nonzero 1.2-2.5x as fast as the sparse products on two threads (on one thread
/// the sparse products won 1.1-1.4x from 64 outputs; a choice by thread count would make the
/// gradients depend on it). kLibTorch: never.
bool conv_gradient_uses_products(ConvGradient setting, int64_t outputs,
                                 const at::Tensor& grad_output, bool input_grad);

/// True when a layer with these quantizers can use the runtime kernels for `input`: the
/// training kernels are kBinary, the kernel quantizer gives exactly +-1, the input quantizer
/// is a sign or absent (then `pad_value` must be 0: the runtime pads float inputs with zeros
/// only), and the tensors are float32 on the CPU.
bool use_runtime_kernels(const quantizers::QuantizerPtr& input_quantizer,
                         const quantizers::QuantizerPtr& kernel_quantizer, const at::Tensor& input,
                         const at::Tensor& weight, double pad_value = 0);

/// conv2d of quantized `x` (N, C, H, W) and +-1 `w` (O, C/groups, kh, kw) plus `bias`, with
/// the padding of `geometry`, on the runtime's kernels (binary when `binary_input`). When the
/// runtime refuses the values (a kernel quantizer that declares a sign but gives other values)
/// the float path's convolution gives the result. Differentiable with respect to `x`, `w` and
/// `bias`, on the same values as the float path but without its padded copy of `x`: the
/// gradients of a zero-padded convolution (`conv2d_backward_gemm` for one group where
/// `conv_gradient_uses_products` says so, else LibTorch's convolution gradient), so that no
/// product runs for outputs that only padding receives, plus `padding_kernel_gradient` when the
/// pad value is not 0.
at::Tensor runtime_conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                          const Conv2dGeometry& geometry, bool binary_input);

/// `runtime_conv2d` of `x` and the kernel `kernel_quantizer` makes of the `latent` kernel,
/// differentiable with respect to `latent`. A quantizer with a FoldedGradient (ste_sign,
/// magnitude_aware_sign) is applied without autograd and its gradient is folded into the last
/// pass over the kernel gradient (`fold_kernel_gradient`): the same values as the quantizer's
/// own gradient node after the convolution's, without the separate pass and tensor (a third of
/// a QuickNet step's kernel-gradient traffic). Other quantizers run as their own autograd node.
at::Tensor runtime_conv2d(const at::Tensor& x, const at::Tensor& latent,
                          const quantizers::Quantizer& kernel_quantizer, const at::Tensor& bias,
                          const Conv2dGeometry& geometry, bool binary_input);

/// The gradient of a latent kernel from the gradient `gw` (O, I, kh, kw, contiguous or
/// channels-last; or a dense kernel's (O, I)) of its quantized value, in one pass, contiguous:
/// scale[o] * ((gw[o][i][ky][kx] + padding[o][ky][kx]) * 1{|latent[o][i][ky][kx]| <= clip}),
/// each factor only where given: `padding` (O, kh, kw, see padding_kernel_gradient) or
/// undefined, `latent` undefined or no `clip` for no mask, `scale` (O) or undefined.
/// The same operations in the same order as the unfolded ones, so the same values. Writes into
/// `gw` when it is contiguous (pass a temporary).
at::Tensor fold_kernel_gradient(at::Tensor gw, const at::Tensor& padding, const at::Tensor& latent,
                                std::optional<double> clip, const at::Tensor& scale);

/// The part of a convolution's kernel gradient that comes from its padding when the input is
/// padded with `pad_value`: out[o][ky][kx] = pad_value * (the sum of `grad_output`[n][o][oy][ox]
/// over the images and the output pixels at which tap (ky, kx) reads padding). The same for every
/// input channel, so (O, kh, kw); the kernel gradient of the padded convolution is the
/// zero-padded one's plus this, broadcast over the input channels. `input_size` is the
/// unpadded (H, W).
at::Tensor padding_kernel_gradient(const at::Tensor& grad_output,
                                   const std::vector<int64_t>& input_size,
                                   const std::vector<int64_t>& kernel_size,
                                   const std::vector<int64_t>& stride,
                                   const std::vector<int64_t>& dilation,
                                   const std::vector<int64_t>& pad_before, double pad_value);

/// Fraction of nonzero output-gradient entries up to which `conv2d_backward_gemm` multiplies
/// with the gradient as a sparse matrix: a 2x2 max pool's gradient (a quarter or less). From
/// `bench_training --benchmark_filter=ConvBackwardSparse` on a Zen 3 core (batch 64, 3x3, one
/// thread, medians of 3): at 25% the sparse products took 3.4 / 5.7 / 65 / 67 ms against
/// oneDNN's 4.6 / 8.9 / 117 / 116 for 32 -> 32 and 32 -> 64 channels on 13x13, 64 -> 64 on
/// 30x30 and 128 -> 128 on 16x16; at 40% they won on three of the four shapes (0.94-1.2x), at
/// 60% they lost on all.
inline constexpr double kSparseGradientDensity = 0.25;

/// Gradients of a one-group 2-D convolution `y = conv2d(input, weight)` (zero `padding`, any
/// stride and dilation) with respect to `input` and `weight` (each only when asked; the other is
/// undefined): input patches copied to an NHWC matrix (im2col) and multiplied with the output
/// gradient by OpenBLAS, and the output gradient times the kernel added back onto the input
/// positions (col2im). Equal to LibTorch's convolution_backward within float rounding; the input
/// gradient is channels-last. The patches of at most `max_patch_floats` floats (default 1 MiB,
/// about one core's L2 cache) are formed at once: the batch runs in chunks of whole images.
/// The products split over LibTorch's threads (the kernel gradient by output channels, the
/// patch gradient by patches); the results do not depend on the thread count. Faster than
/// oneDNN's gradient from 64 output channels on (3x on the small feature maps of deep layers,
/// where oneDNN is slow): the binary path's backward for such convolutions and for first
/// layers (whose input needs no gradient). A chunk whose output gradient has at most
/// `max_sparse_density` of its entries nonzero (behind a 2x2 max pool: a quarter or less) is
/// multiplied as a sparse matrix (the runtime's `csr_sgemm` kernel), so that both gradients cost
/// its nonzero entries times the patch size; the result is the same within float rounding and
/// again independent of the thread count.
std::pair<at::Tensor, at::Tensor> conv2d_backward_gemm(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
    const std::vector<int64_t>& dilation, bool input_grad, bool weight_grad,
    int64_t max_patch_floats = int64_t{256} << 10,
    double max_sparse_density = kSparseGradientDensity);

/// The same gradients as `conv2d_backward_gemm` (zero `padding`), as one pair of products per
/// kernel tap over only the output pixels at which that tap reads inside the input: the rows of
/// the output gradient and of the input for those pixels are gathered, the tap's kernel
/// gradient is (gathered output gradient)^T x (gathered input) and its input gradient
/// (gathered output gradient) x (the tap's kernel slice), added back onto the input positions.
/// On small maps most patch entries are padding (5 of 9 on a 2x2 map with a 3x3 kernel,
/// 8 of 9 on 1x1), which `conv2d_backward_gemm` multiplies and this does not. The input
/// gradient is channels-last; the results do not depend on the thread count.
std::pair<at::Tensor, at::Tensor> conv2d_backward_taps(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
    const std::vector<int64_t>& dilation, bool input_grad, bool weight_grad);

/// linear(x, w, bias) of quantized `x` (N, F) and +-1 `w` (O, F) on the runtime's kernels, as
/// `runtime_conv2d`.
at::Tensor runtime_dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                         bool binary_input);

/// `runtime_dense` of `x` and the kernel `kernel_quantizer` makes of the `latent` kernel, with
/// the quantizer's gradient folded in where it has a FoldedGradient, as the `runtime_conv2d`
/// that takes a latent kernel.
at::Tensor runtime_dense(const at::Tensor& x, const at::Tensor& latent,
                         const quantizers::Quantizer& kernel_quantizer, const at::Tensor& bias,
                         bool binary_input);

}  // namespace detail
}  // namespace onebit::nn
