#include "onebit/nn/blocks.h"

#include <ATen/ATen.h>

#include <sstream>
#include <stdexcept>

#include "layer_util.h"
#include "onebit/nn/padding.h"

namespace onebit::nn {
namespace {

std::string shape_of(const at::Tensor& x) {
  std::ostringstream s;
  s << x.sizes();
  return s.str();
}

}  // namespace

// ---- Multiply -------------------------------------------------------------------------------

at::Tensor MultiplyImpl::forward(const std::vector<at::Tensor>& xs) {
  if (xs.size() != 2) {
    throw std::invalid_argument("Multiply: needs exactly 2 inputs, got " +
                                std::to_string(xs.size()));
  }
  const at::Tensor& x = xs[0];
  const at::Tensor& s = xs[1];
  if (s.sizes() == x.sizes()) return x * s;
  const bool per_channel = x.dim() == 4 && s.size(0) == x.size(0) && s.dim() >= 2 &&
                           s.size(1) == x.size(1) &&
                           (s.dim() == 2 || (s.dim() == 4 && s.size(2) == 1 && s.size(3) == 1));
  if (!per_channel) {
    throw std::invalid_argument("Multiply: the second input must have the first's shape " +
                                shape_of(x) + " or be a per-channel scale [N, C] or [N, C, 1, 1]" +
                                ", got " + shape_of(s));
  }
  return x * s.reshape({s.size(0), s.size(1), 1, 1});
}

void MultiplyImpl::pretty_print(std::ostream& stream) const { stream << "onebit::nn::Multiply()"; }

// ---- Slice ----------------------------------------------------------------------------------

SliceImpl::SliceImpl(SliceOptions options_) : options(options_) {
  if (options.begin() < 0 || options.end() <= options.begin()) {
    throw std::invalid_argument("Slice: expected 0 <= begin < end, got begin " +
                                std::to_string(options.begin()) + ", end " +
                                std::to_string(options.end()));
  }
}

at::Tensor SliceImpl::forward(const at::Tensor& x) {
  if (x.dim() < 2 || x.size(1) < options.end()) {
    throw std::invalid_argument("Slice(" + std::to_string(options.begin()) + ", " +
                                std::to_string(options.end()) + "): input must have at least " +
                                std::to_string(options.end()) + " channels (dim 1), got shape " +
                                shape_of(x));
  }
  return x.slice(1, options.begin(), options.end());
}

void SliceImpl::pretty_print(std::ostream& stream) const {
  stream << "onebit::nn::Slice(begin=" << options.begin() << ", end=" << options.end() << ")";
}

// ---- LearnableBias --------------------------------------------------------------------------

LearnableBiasImpl::LearnableBiasImpl(LearnableBiasOptions options_) : options(options_) {
  if (options.channels() < 1) {
    throw std::invalid_argument("LearnableBias: channels must be >= 1, got " +
                                std::to_string(options.channels()));
  }
  reset();
}

void LearnableBiasImpl::reset() {
  bias = register_parameter("bias", at::zeros({options.channels()}));
}

at::Tensor LearnableBiasImpl::forward(const at::Tensor& x) {
  if (x.dim() < 2 || x.size(1) != options.channels()) {
    throw std::invalid_argument("LearnableBias(" + std::to_string(options.channels()) +
                                "): expected input [N, " + std::to_string(options.channels()) +
                                ", ...], got shape " + shape_of(x));
  }
  std::vector<int64_t> shape(static_cast<std::size_t>(x.dim()), 1);
  shape[1] = options.channels();
  return x + bias.view(shape);
}

void LearnableBiasImpl::pretty_print(std::ostream& stream) const {
  stream << "onebit::nn::LearnableBias(" << options.channels() << ")";
}

// ---- BlurPool2d -----------------------------------------------------------------------------

BlurPool2dImpl::BlurPool2dImpl(BlurPool2dOptions options_) : options(options_) {
  if (options.channels() < 1 || options.stride() < 1) {
    throw std::invalid_argument("BlurPool2d: channels and stride must be >= 1, got channels " +
                                std::to_string(options.channels()) + ", stride " +
                                std::to_string(options.stride()));
  }
  reset();
}

void BlurPool2dImpl::reset() {
  const at::Tensor taps = at::tensor({1.0f, 2.0f, 1.0f});
  const at::Tensor filter = at::outer(taps, taps) / 16.0;
  weight = register_parameter(
      "weight", filter.view({1, 1, 3, 3}).repeat({options.channels(), 1, 1, 1}).contiguous(),
      /*requires_grad=*/false);
}

at::Tensor BlurPool2dImpl::forward(const at::Tensor& x) {
  detail::check_input_shape(x, options.channels(), 2, [this] {
    std::ostringstream s;
    pretty_print(s);
    return s.str();
  });
  const torch::ExpandingArray<2> kernel(3), stride(options.stride()), dilation(1);
  const auto padded =
      pad_input<2>(x, ConvPadding<2>(torch::kSame), kernel, stride, dilation, 0.0, [this] {
        std::ostringstream s;
        pretty_print(s);
        return s.str();
      });
  return at::conv2d(padded.input, weight.to(x.scalar_type()), {}, *stride, padded.conv_padding,
                    *dilation, options.channels());
}

void BlurPool2dImpl::pretty_print(std::ostream& stream) const {
  stream << "onebit::nn::BlurPool2d(" << options.channels() << ", stride=" << options.stride()
         << ")";
}

}  // namespace onebit::nn
