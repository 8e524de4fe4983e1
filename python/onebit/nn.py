"""Quantized layers as `torch.nn.Module`s, with Larq's arguments.

>>> import onebit.nn as obn
>>> conv = obn.QuantConv2d(32, 64, 3, padding="same", pad_values=1.0, bias=False,
...                        input_quantizer="ste_sign", kernel_quantizer="ste_sign",
...                        kernel_constraint="weight_clip")
>>> dense = obn.QuantDense(512, 10, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
...                        kernel_constraint="weight_clip")

The layers call onebit's quantizer operators (onebit.quantizers) and compute what the C++
layers of the same name compute (include/onebit/nn/*.h), with the same options, so that
`onebit.describe`, `onebit.summary` and `onebit.convert` hand them to the C++ library as those
layers. Constraints (Larq's `kernel_constraint`) are applied by `apply_constraints(model)` after
each optimizer step.
"""

import json
import math

import torch
import torch.nn.functional as F

from onebit import quantizers as _q
from onebit._ops import ops

__all__ = ["QuantDense", "QuantConv1d", "QuantConv2d", "QuantDepthwiseConv2d",
           "QuantSeparableConv1d", "QuantSeparableConv2d", "BatchNorm", "Quantizer", "Add",
           "Concat", "Multiply", "Slice", "LearnableBias", "BlurPool2d", "apply_constraints",
           "quantized_parameters"]


def _constraint(spec):
    if spec is None:
        return None
    if not isinstance(spec, (str, dict)):
        raise TypeError(f"a constraint must be a string id, a dict or None, got "
                        f"{type(spec).__name__}")
    return json.loads(ops.constraint_spec(json.dumps(spec)))


def _ntuple(v, n, name):
    if isinstance(v, int):
        return (v,) * n
    t = tuple(v)
    if len(t) != n or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or {n} ints, got {v!r}")
    return t


def _conv_padding(padding, dims):
    """"same", or the per-dimension amounts ("valid" is zeros)."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or amounts, got {padding!r}")
        return "same" if padding == "same" else (0,) * dims
    return _ntuple(padding, dims, "padding")


def _pad_for_conv(x, padding, kernel_size, stride, dilation, pad_values):
    """(input, conv padding) as onebit's C++ `pad_input` computes them: symmetric zero padding
    is left to the convolution; anything else (Keras' "same" with an odd total, pad_values != 0)
    is padded explicitly with pad_values. "same" is Keras' rule: out = ceil(in / stride), the
    odd pixel after."""
    dims = len(kernel_size)
    if padding != "same":
        pads = [(p, p) for p in padding]
    else:
        pads = []
        for i in range(dims):
            size, k, s, d = x.shape[2 + i], kernel_size[i], stride[i], dilation[i]
            out = (size + s - 1) // s
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
    if pad_values == 0.0 and all(a == b for a, b in pads):
        return x, [a for a, _ in pads]
    flat = []
    for a, b in reversed(pads):  # last dimension first, as F.pad expects
        flat += [a, b]
    return F.pad(x, flat, value=pad_values), [0] * dims


class _ConvGeometry:
    """Kernel size, stride, dilation, padding ("same" or amounts) and pad_values of a
    convolution over `dims` spatial dimensions: how the quantized convolutions store, describe
    and apply them."""

    def _init_geometry(self, dims, kernel_size, stride, padding, dilation, pad_values):
        self.kernel_size = _ntuple(kernel_size, dims, "kernel_size")
        self.stride = _ntuple(stride, dims, "stride")
        self.dilation = _ntuple(dilation, dims, "dilation")
        self.padding = _conv_padding(padding, dims)
        self.pad_values = float(pad_values)

    def _geometry_json(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if self.padding == "same" else list(self.padding),
                "dilation": list(self.dilation), "pad_values": self.pad_values}

    def _pad(self, x):
        """(input, conv padding): see `_pad_for_conv`."""
        return _pad_for_conv(x, self.padding, self.kernel_size, self.stride, self.dilation,
                             self.pad_values)


def _check_input(x, layer, channels, dims):
    if x.dim() != 2 + dims or x.shape[1] != channels:
        spatial = ", ".join(["L"] if dims == 1 else ["H", "W"])
        raise ValueError(f"{layer}: expected input of shape [N, {channels}, {spatial}], got "
                         f"{list(x.shape)}")


class _QuantLayer(torch.nn.Module):
    """What the quantized layers share: quantizers, constraint, options as JSON. A layer whose
    kernels are not (weight, kernel_quantizer, kernel_constraint) overrides `quantized_kernels`."""

    def _init_quant(self, input_quantizer, kernel_quantizer, kernel_constraint):
        self.input_quantizer = _q.get(input_quantizer)
        self.kernel_quantizer = _q.get(kernel_quantizer)
        self.kernel_constraint = _constraint(kernel_constraint)

    def _quant_json(self):
        return {"input_quantizer": self.input_quantizer.to_json() if self.input_quantizer else None,
                "kernel_quantizer":
                    self.kernel_quantizer.to_json() if self.kernel_quantizer else None,
                "kernel_constraint": self.kernel_constraint}

    def quantized_kernels(self):
        """(parameter name, quantizer, constraint, depth multiplier) of each kernel (the depth
        multiplier decides how a per-channel quantizer groups a depthwise kernel; 0 otherwise)."""
        return [("weight", self.kernel_quantizer, self.kernel_constraint, 0)]

    def _kernels(self):
        """Each kernel of `quantized_kernels` as the forward pass uses it."""
        out = []
        for name, quantizer, _, depth_multiplier in self.quantized_kernels():
            w = getattr(self, name)
            out.append(quantizer(w, "kernel", depth_multiplier) if quantizer else w)
        return out

    def quantized_weight(self):
        """The kernel as the forward pass uses it (e.g. exact +-1), detached; a tuple for layers
        with several kernels (separable: depthwise, pointwise)."""
        with torch.no_grad():
            kernels = self._kernels()
            return kernels[0] if len(kernels) == 1 else tuple(kernels)

    def _quantize(self, x):
        return self.input_quantizer(x, "activation") if self.input_quantizer else x

    def extra_repr(self):
        return json.dumps(self.options())


class QuantDense(_QuantLayer):
    """y = q_in(x) q_k(W)^T + b (Larq's QuantDense); without quantizers it is torch.nn.Linear,
    initialized like it."""

    kind = "QuantDense"

    def __init__(self, in_features, out_features, bias=True, input_quantizer=None,
                 kernel_quantizer=None, kernel_constraint=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = torch.nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = torch.nn.Parameter(torch.empty(self.out_features)) if bias else None
        self._init_quant(input_quantizer, kernel_quantizer, kernel_constraint)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def options(self):
        """The options as onebit's C++ QuantDense describes them."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, **self._quant_json()}

    @classmethod
    def from_options(cls, o):
        return cls(o["in_features"], o["out_features"], bias=o.get("bias", True),
                   input_quantizer=o.get("input_quantizer"),
                   kernel_quantizer=o.get("kernel_quantizer"),
                   kernel_constraint=o.get("kernel_constraint"))

    def forward(self, x):
        (w,) = self._kernels()
        return F.linear(self._quantize(x), w, self.bias)


class _QuantConvNd(_QuantLayer, _ConvGeometry):
    """conv(pad(q_in(x), pad_values), q_k(W)) + b over `dims` spatial dimensions (Larq's
    QuantConv1D/2D). `padding` is an int, `dims` ints, "valid" or "same" (Keras' rule: out =
    ceil(in / stride), the odd pixel after); `pad_values` 1.0 keeps a binary input binary."""

    dims = 2
    _conv = staticmethod(F.conv2d)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, pad_values=0.0, input_quantizer=None,
                 kernel_quantizer=None, kernel_constraint=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self._init_geometry(self.dims, kernel_size, stride, padding, dilation, pad_values)
        self.groups = int(groups)
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups ({groups}) must divide in_channels ({in_channels}) and "
                             f"out_channels ({out_channels})")
        self.weight = torch.nn.Parameter(
            torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size))
        self.bias = torch.nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self._init_quant(input_quantizer, kernel_quantizer, kernel_constraint)
        self.reset_parameters()

    def reset_parameters(self):
        _init_like_torch_conv(self.weight, self.bias)

    def options(self):
        """The options as onebit's C++ layer of the same kind describes them."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                **self._geometry_json(), "groups": self.groups, "bias": self.bias is not None,
                **self._quant_json()}

    @classmethod
    def from_options(cls, o):
        return cls(o["in_channels"], o["out_channels"], o["kernel_size"],
                   stride=o.get("stride", 1), padding=o.get("padding", 0),
                   dilation=o.get("dilation", 1), groups=o.get("groups", 1),
                   bias=o.get("bias", True), pad_values=o.get("pad_values", 0.0),
                   input_quantizer=o.get("input_quantizer"),
                   kernel_quantizer=o.get("kernel_quantizer"),
                   kernel_constraint=o.get("kernel_constraint"))

    def forward(self, x):
        _check_input(x, f"{self.kind}({self.in_channels}, {self.out_channels})",
                     self.in_channels, self.dims)
        (w,) = self._kernels()
        x, conv_padding = self._pad(self._quantize(x))
        return self._conv(x, w, self.bias, self.stride, conv_padding, self.dilation, self.groups)


class QuantConv1d(_QuantConvNd):
    """A quantized 1-D convolution over [N, C, L] (Larq's QuantConv1D); options as QuantConv2d."""

    kind = "QuantConv1d"
    dims = 1
    _conv = staticmethod(F.conv1d)


class QuantConv2d(_QuantConvNd):
    """A quantized 2-D convolution over [N, C, H, W] (Larq's QuantConv2D): conv2d(pad(q_in(x),
    pad_values), q_k(W)) + b, grouped and dilated if asked."""

    kind = "QuantConv2d"
    dims = 2
    _conv = staticmethod(F.conv2d)


def _init_like_torch_conv(weight, bias):
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        torch.nn.init.uniform_(bias, -bound, bound)


class QuantDepthwiseConv2d(_QuantLayer, _ConvGeometry):
    """A quantized depthwise convolution (Larq's QuantDepthwiseConv2D): each input channel is
    convolved with its own `depth_multiplier` kernels; output channels in_channels x
    depth_multiplier. A per-channel `depthwise_quantizer` (e.g. magnitude_aware_sign) groups the
    kernel as Larq does, per depth-multiplier index."""

    kind = "QuantDepthwiseConv2d"

    def __init__(self, in_channels, kernel_size, depth_multiplier=1, stride=1, padding=0,
                 dilation=1, bias=True, pad_values=0.0, input_quantizer=None,
                 depthwise_quantizer=None, depthwise_constraint=None):
        super().__init__()
        self.in_channels = int(in_channels)
        self.depth_multiplier = int(depth_multiplier)
        if self.in_channels < 1 or self.depth_multiplier < 1:
            raise ValueError(f"QuantDepthwiseConv2d: in_channels and depth_multiplier must be "
                             f">= 1, got {in_channels} and {depth_multiplier}")
        self._init_geometry(2, kernel_size, stride, padding, dilation, pad_values)
        out = self.in_channels * self.depth_multiplier
        self.weight = torch.nn.Parameter(torch.empty(out, 1, *self.kernel_size))
        self.bias = torch.nn.Parameter(torch.empty(out)) if bias else None
        self._init_quant(input_quantizer, depthwise_quantizer, depthwise_constraint)
        _init_like_torch_conv(self.weight, self.bias)

    def quantized_kernels(self):
        return [("weight", self.kernel_quantizer, self.kernel_constraint, self.depth_multiplier)]

    def options(self):
        """The options as onebit's C++ QuantDepthwiseConv2d describes them."""
        q = self._quant_json()
        return {"in_channels": self.in_channels, "depth_multiplier": self.depth_multiplier,
                **self._geometry_json(), "bias": self.bias is not None,
                "input_quantizer": q["input_quantizer"],
                "depthwise_quantizer": q["kernel_quantizer"],
                "depthwise_constraint": q["kernel_constraint"]}

    @classmethod
    def from_options(cls, o):
        return cls(o["in_channels"], o["kernel_size"],
                   depth_multiplier=o.get("depth_multiplier", 1), stride=o.get("stride", 1),
                   padding=o.get("padding", 0), dilation=o.get("dilation", 1),
                   bias=o.get("bias", True), pad_values=o.get("pad_values", 0.0),
                   input_quantizer=o.get("input_quantizer"),
                   depthwise_quantizer=o.get("depthwise_quantizer"),
                   depthwise_constraint=o.get("depthwise_constraint"))

    def forward(self, x):
        _check_input(x, f"QuantDepthwiseConv2d({self.in_channels})", self.in_channels, 2)
        (w,) = self._kernels()
        x, conv_padding = self._pad(self._quantize(x))
        return F.conv2d(x, w, self.bias, self.stride, conv_padding, self.dilation,
                        self.in_channels)


class _QuantSeparableConvNd(_QuantLayer, _ConvGeometry):
    """A depthwise convolution (`depth_multiplier` kernels per input channel, no bias) followed
    by a 1x1 pointwise convolution with bias (Larq's QuantSeparableConv1D/2D); the input is
    quantized once, each kernel by its own quantizer and constraint."""

    dims = 2
    _conv = staticmethod(F.conv2d)

    def __init__(self, in_channels, out_channels, kernel_size, depth_multiplier=1, stride=1,
                 padding=0, dilation=1, bias=True, pad_values=0.0, input_quantizer=None,
                 depthwise_quantizer=None, pointwise_quantizer=None, depthwise_constraint=None,
                 pointwise_constraint=None):
        super().__init__()
        n = self.dims
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.depth_multiplier = int(depth_multiplier)
        if min(self.in_channels, self.out_channels, self.depth_multiplier) < 1:
            raise ValueError(f"{self.kind}: in_channels, out_channels and depth_multiplier must "
                             f"be >= 1, got {in_channels}, {out_channels}, {depth_multiplier}")
        self._init_geometry(n, kernel_size, stride, padding, dilation, pad_values)
        mid = self.in_channels * self.depth_multiplier
        self.depthwise_weight = torch.nn.Parameter(torch.empty(mid, 1, *self.kernel_size))
        self.pointwise_weight = torch.nn.Parameter(
            torch.empty(self.out_channels, mid, *([1] * n)))
        self.bias = torch.nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.input_quantizer = _q.get(input_quantizer)
        self.depthwise_quantizer = _q.get(depthwise_quantizer)
        self.pointwise_quantizer = _q.get(pointwise_quantizer)
        self.depthwise_constraint = _constraint(depthwise_constraint)
        self.pointwise_constraint = _constraint(pointwise_constraint)
        _init_like_torch_conv(self.depthwise_weight, None)
        _init_like_torch_conv(self.pointwise_weight, self.bias)

    def quantized_kernels(self):
        return [("depthwise_weight", self.depthwise_quantizer, self.depthwise_constraint,
                 self.depth_multiplier),
                ("pointwise_weight", self.pointwise_quantizer, self.pointwise_constraint, 0)]

    def options(self):
        """The options as onebit's C++ layer of the same kind describes them."""
        def q(v):
            return v.to_json() if v else None
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "depth_multiplier": self.depth_multiplier, **self._geometry_json(),
                "bias": self.bias is not None, "input_quantizer": q(self.input_quantizer),
                "depthwise_quantizer": q(self.depthwise_quantizer),
                "pointwise_quantizer": q(self.pointwise_quantizer),
                "depthwise_constraint": self.depthwise_constraint,
                "pointwise_constraint": self.pointwise_constraint}

    @classmethod
    def from_options(cls, o):
        return cls(o["in_channels"], o["out_channels"], o["kernel_size"],
                   depth_multiplier=o.get("depth_multiplier", 1), stride=o.get("stride", 1),
                   padding=o.get("padding", 0), dilation=o.get("dilation", 1),
                   bias=o.get("bias", True), pad_values=o.get("pad_values", 0.0),
                   input_quantizer=o.get("input_quantizer"),
                   depthwise_quantizer=o.get("depthwise_quantizer"),
                   pointwise_quantizer=o.get("pointwise_quantizer"),
                   depthwise_constraint=o.get("depthwise_constraint"),
                   pointwise_constraint=o.get("pointwise_constraint"))

    def forward(self, x):
        _check_input(x, f"{self.kind}({self.in_channels}, {self.out_channels})",
                     self.in_channels, self.dims)
        wd, wp = self._kernels()
        x, conv_padding = self._pad(self._quantize(x))
        mid = self._conv(x, wd, None, self.stride, conv_padding, self.dilation, self.in_channels)
        return self._conv(mid, wp, self.bias)


class QuantSeparableConv1d(_QuantSeparableConvNd):
    """A quantized separable 1-D convolution over [N, C, L] (Larq's QuantSeparableConv1D)."""

    kind = "QuantSeparableConv1d"
    dims = 1
    _conv = staticmethod(F.conv1d)


class QuantSeparableConv2d(_QuantSeparableConvNd):
    """A quantized separable 2-D convolution over [N, C, H, W] (Larq's QuantSeparableConv2D)."""

    kind = "QuantSeparableConv2d"
    dims = 2
    _conv = staticmethod(F.conv2d)


class BatchNorm(torch.nn.Module):
    """Batch normalization over dim 1 with Keras' options (onebit::nn::BatchNorm): `scale`
    (gamma) and `center` (beta) can be switched off; eps 1e-3; `momentum` in PyTorch's convention
    (Keras' 0.99 is 0.01)."""

    kind = "BatchNorm"

    def __init__(self, num_features, eps=1e-3, momentum=0.01, scale=True, center=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.weight = torch.nn.Parameter(torch.ones(self.num_features)) if scale else None
        self.bias = torch.nn.Parameter(torch.zeros(self.num_features)) if center else None
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))

    def options(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "scale": self.weight is not None, "center": self.bias is not None}

    @classmethod
    def from_options(cls, o):
        return cls(o["num_features"], eps=o.get("eps", 1e-3), momentum=o.get("momentum", 0.01),
                   scale=o.get("scale", True), center=o.get("center", True))

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}): expected input of shape "
                             f"[N, {self.num_features}, ...], got {list(x.shape)}")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)

    def extra_repr(self):
        return json.dumps(self.options())


class Quantizer(torch.nn.Module):
    """A quantizer as a layer (applied to activations), e.g. a sign between layers."""

    kind = "Quantizer"

    def __init__(self, quantizer):
        super().__init__()
        self.quantizer = _q.get(quantizer)
        if self.quantizer is None:
            raise ValueError("onebit.nn.Quantizer needs a quantizer, got None")

    def options(self):
        return {"quantizer": self.quantizer.to_json()}

    @classmethod
    def from_options(cls, o):
        return cls(o["quantizer"])

    def forward(self, x):
        return self.quantizer(x, "activation")


class _Merge(torch.nn.Module):
    """A layer of a list of tensors without options (Add, Concat, Multiply)."""

    def options(self):
        return {}

    @classmethod
    def from_options(cls, o):
        return cls()


class Add(_Merge):
    """Elementwise sum of a list of tensors (a shortcut merge); `x + y` in a traced model
    becomes the same node."""

    kind = "Add"

    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(_Merge):
    """Concatenation of a list of tensors along dim 1; `torch.cat([...], 1)` in a traced model
    becomes the same node."""

    kind = "Concat"

    def forward(self, xs):
        return torch.cat(list(xs), 1)


class Multiply(_Merge):
    """[x, s] -> x * s, where s has x's shape or is a per-channel scale [N, C] or [N, C, 1, 1]
    (Real-to-Binary's squeeze-excite scaling branch); `x * s` in a traced model becomes the
    same node."""

    kind = "Multiply"

    def forward(self, xs):
        if len(xs) != 2:
            raise ValueError(f"Multiply: needs exactly 2 inputs, got {len(xs)}")
        x, s = xs
        if s.shape == x.shape:
            return x * s
        per_channel = (x.dim() == 4 and s.dim() in (2, 4) and s.shape[:2] == x.shape[:2] and
                       (s.dim() == 2 or tuple(s.shape[2:]) == (1, 1)))
        if not per_channel:
            raise ValueError(f"Multiply: the second input must have the first's shape "
                             f"{list(x.shape)} or be a per-channel scale [N, C] or [N, C, 1, 1], "
                             f"got {list(s.shape)}")
        return x * s.reshape(s.shape[0], s.shape[1], 1, 1)


class Slice(torch.nn.Module):
    """Channels [begin, end) of the input (dim 1); `x[:, begin:end]` in a traced model becomes
    the same node (MeliusNet's improvement block adds into such a slice)."""

    kind = "Slice"

    def __init__(self, begin, end):
        super().__init__()
        self.begin, self.end = int(begin), int(end)
        if self.begin < 0 or self.end <= self.begin:
            raise ValueError(f"Slice: expected 0 <= begin < end, got begin {begin}, end {end}")

    def options(self):
        return {"begin": self.begin, "end": self.end}

    @classmethod
    def from_options(cls, o):
        return cls(o["begin"], o["end"])

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] < self.end:
            raise ValueError(f"Slice({self.begin}, {self.end}): input must have at least "
                             f"{self.end} channels (dim 1), got shape {list(x.shape)}")
        return x[:, self.begin:self.end]

    def extra_repr(self):
        return f"begin={self.begin}, end={self.end}"


class LearnableBias(torch.nn.Module):
    """x + b with one trainable bias per channel (dim 1), zero at first (ReActNet's RSign and
    RPReLU shifts)."""

    kind = "LearnableBias"

    def __init__(self, channels):
        super().__init__()
        self.channels = int(channels)
        if self.channels < 1:
            raise ValueError(f"LearnableBias: channels must be >= 1, got {channels}")
        self.bias = torch.nn.Parameter(torch.zeros(self.channels))

    def options(self):
        return {"channels": self.channels}

    @classmethod
    def from_options(cls, o):
        return cls(o["channels"])

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"LearnableBias({self.channels}): expected input [N, "
                             f"{self.channels}, ...], got shape {list(x.shape)}")
        return x + self.bias.view(1, self.channels, *([1] * (x.dim() - 2)))

    def extra_repr(self):
        return str(self.channels)


class BlurPool2d(torch.nn.Module):
    """QuickNet's anti-aliased downsampling: a fixed depthwise [1 2 1]^T [1 2 1] / 16 filter,
    Keras' "same" padding, then `stride` (a non-trainable weight, as in the C++ layer)."""

    kind = "BlurPool2d"

    def __init__(self, channels, stride=2):
        super().__init__()
        self.channels, self.stride = int(channels), int(stride)
        if self.channels < 1 or self.stride < 1:
            raise ValueError(f"BlurPool2d: channels and stride must be >= 1, got channels "
                             f"{channels}, stride {stride}")
        taps = torch.tensor([1.0, 2.0, 1.0])
        blur = (torch.outer(taps, taps) / 16.0).view(1, 1, 3, 3).repeat(self.channels, 1, 1, 1)
        self.weight = torch.nn.Parameter(blur.contiguous(), requires_grad=False)

    def options(self):
        return {"channels": self.channels, "stride": self.stride}

    @classmethod
    def from_options(cls, o):
        return cls(o["channels"], o.get("stride", 2))

    def forward(self, x):
        _check_input(x, f"BlurPool2d({self.channels})", self.channels, 2)
        s = (self.stride, self.stride)
        x, conv_padding = _pad_for_conv(x, "same", (3, 3), s, (1, 1), 0.0)
        return F.conv2d(x, self.weight.to(x.dtype), None, s, conv_padding, 1, self.channels)

    def extra_repr(self):
        return f"{self.channels}, stride={self.stride}"


def quantized_parameters(model):
    """(name, parameter, quantizer) of every quantized kernel in `model`."""
    for name, m in model.named_modules():
        if isinstance(m, _QuantLayer):
            for pname, quantizer, _, _ in m.quantized_kernels():
                if quantizer is not None:
                    yield (f"{name}.{pname}" if name else pname), getattr(m, pname), quantizer


def apply_constraints(model):
    """Applies every layer's `kernel_constraint` in place (call after each optimizer step, as
    Keras does after each update). Uses onebit's C++ constraints."""
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, _QuantLayer):
                continue
            for pname, _, constraint, _ in m.quantized_kernels():
                if constraint is not None:
                    w = getattr(m, pname)
                    w.copy_(ops.constrain(w, json.dumps(constraint)))
