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

__all__ = ["QuantDense", "QuantConv2d", "BatchNorm", "Quantizer", "Add", "Concat",
           "apply_constraints", "quantized_parameters"]


def _constraint(spec):
    if spec is None:
        return None
    if not isinstance(spec, (str, dict)):
        raise TypeError(f"a constraint must be a string id, a dict or None, got "
                        f"{type(spec).__name__}")
    return json.loads(ops.constraint_spec(json.dumps(spec)))


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    t = tuple(v)
    if len(t) != 2 or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or 2 ints, got {v!r}")
    return t


class _QuantLayer(torch.nn.Module):
    """What QuantDense and QuantConv2d share: quantizers, constraint, options as JSON."""

    def _init_quant(self, input_quantizer, kernel_quantizer, kernel_constraint):
        self.input_quantizer = _q.get(input_quantizer)
        self.kernel_quantizer = _q.get(kernel_quantizer)
        self.kernel_constraint = _constraint(kernel_constraint)

    def _quant_json(self):
        return {"input_quantizer": self.input_quantizer.to_json() if self.input_quantizer else None,
                "kernel_quantizer":
                    self.kernel_quantizer.to_json() if self.kernel_quantizer else None,
                "kernel_constraint": self.kernel_constraint}

    def quantized_weight(self):
        """The kernel as the forward pass uses it (e.g. exact +-1), detached."""
        with torch.no_grad():
            return self.kernel_quantizer(self.weight) if self.kernel_quantizer else self.weight

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
        w = self.kernel_quantizer(self.weight) if self.kernel_quantizer else self.weight
        return F.linear(self._quantize(x), w, self.bias)


class QuantConv2d(_QuantLayer):
    """conv2d(pad(q_in(x), pad_values), q_k(W)) + b (Larq's QuantConv2D). `padding` is an int,
    2 ints, "valid" or "same" (Keras' rule: out = ceil(in / stride), the odd pixel after);
    `pad_values` 1.0 keeps a binary input binary."""

    kind = "QuantConv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, pad_values=0.0, input_quantizer=None,
                 kernel_quantizer=None, kernel_constraint=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or amounts, got {padding!r}")
            self.padding = "same" if padding == "same" else (0, 0)
        else:
            self.padding = _pair(padding, "padding")
        self.groups = int(groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups ({groups}) must divide in_channels ({in_channels}) and "
                             f"out_channels ({out_channels})")
        self.pad_values = float(pad_values)
        self.weight = torch.nn.Parameter(
            torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size))
        self.bias = torch.nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self._init_quant(input_quantizer, kernel_quantizer, kernel_constraint)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def options(self):
        """The options as onebit's C++ QuantConv2d describes them."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if self.padding == "same" else list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups,
                "bias": self.bias is not None, "pad_values": self.pad_values,
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

    def _pads(self, x):
        if self.padding != "same":
            return [(p, p) for p in self.padding]
        pads = []
        for i in range(2):
            size, k, s, d = x.shape[2 + i], self.kernel_size[i], self.stride[i], self.dilation[i]
            out = (size + s - 1) // s
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"QuantConv2d({self.in_channels}, {self.out_channels}): expected "
                             f"input of shape [N, {self.in_channels}, H, W], got {list(x.shape)}")
        x = self._quantize(x)
        w = self.kernel_quantizer(self.weight) if self.kernel_quantizer else self.weight
        # As the C++ layer: symmetric zero padding is left to the convolution, anything else is
        # padded explicitly with pad_values.
        pads = self._pads(x)
        if self.pad_values == 0.0 and all(a == b for a, b in pads):
            conv_padding = [a for a, _ in pads]
        else:
            x = F.pad(x, [pads[1][0], pads[1][1], pads[0][0], pads[0][1]],
                      value=self.pad_values)
            conv_padding = [0, 0]
        return F.conv2d(x, w, self.bias, self.stride, conv_padding, self.dilation, self.groups)


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


class Add(torch.nn.Module):
    """Elementwise sum of a list of tensors (a shortcut merge); `x + y` in a traced model
    becomes the same node."""

    kind = "Add"

    def options(self):
        return {}

    @classmethod
    def from_options(cls, o):
        return cls()

    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(torch.nn.Module):
    """Concatenation of a list of tensors along dim 1; `torch.cat([...], 1)` in a traced model
    becomes the same node."""

    kind = "Concat"

    def options(self):
        return {}

    @classmethod
    def from_options(cls, o):
        return cls()

    def forward(self, xs):
        return torch.cat(list(xs), 1)


def quantized_parameters(model):
    """(name, parameter, layer) of every quantized kernel in `model`."""
    for name, m in model.named_modules():
        if isinstance(m, _QuantLayer) and m.kernel_quantizer is not None:
            yield (f"{name}.weight" if name else "weight"), m.weight, m


def apply_constraints(model):
    """Applies every layer's `kernel_constraint` in place (call after each optimizer step, as
    Keras does after each update). Uses onebit's C++ constraints."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _QuantLayer) and m.kernel_constraint is not None:
                m.weight.copy_(ops.constrain(m.weight, json.dumps(m.kernel_constraint)))
