"""Larq's quantizers as PyTorch autograd operators, computed by onebit's C++ library.

>>> import torch, onebit.quantizers as q
>>> x = torch.randn(5, requires_grad=True)
>>> y = q.SteSign(clip_value=1.0)(x)            # sign(x), +1 for x >= 0
>>> y.sum().backward()                          # x.grad = 1{|x| <= 1} (the STE)
>>> torch.ops.onebit.quantize(x, '"ste_sign"')  # the operator itself (TorchScript sees it)

A quantizer is given as a string id ("ste_sign"), Larq's class name ("SteSign"), a dict
{"class_name": id, "config": {...}} or a `Quantizer`; `get` turns any of them into a `Quantizer`.
Forward values and pseudo-gradients are those of onebit's C++ quantizers
(include/onebit/quantizers.h): the C++ code runs in both passes.
"""

import json

import torch

from onebit._ops import ops

__all__ = ["Quantizer", "get", "known_ids", "NoOp", "SteSign", "ApproxSign", "SteHeaviside",
           "SwishSign", "MagnitudeAwareSign", "SteTern", "DoReFa"]

_ROLES = {"kernel": 0, "activation": 1}


class Quantizer:
    """A quantizer (immutable). `q(x, role)` applies it with autograd; `role` is "kernel"
    (per-output-channel statistics on axis 0, the default) or "activation" ([N, C, ...])."""

    def __init__(self, spec):
        text = json.dumps(spec)
        canonical, precision, kind = ops.quantizer_spec(text)
        self._spec = canonical
        self.precision = int(precision)
        #: "sign" (converts to a binary runtime op), "identity" or "other".
        self.forward_kind = kind
        parsed = json.loads(canonical)
        self.id = parsed["class_name"]
        self.config = parsed.get("config", {})

    @property
    def spec(self):
        """The canonical JSON string passed to the operators."""
        return self._spec

    def to_json(self):
        """{"class_name": id, "config": {...}}, as onebit's C++ side stores it."""
        return json.loads(self._spec)

    def __call__(self, x, role="kernel", depth_multiplier=0):
        return ops.quantize(x, self._spec, _role(role), depth_multiplier)

    def gradient(self, x, dy, role="kernel", depth_multiplier=0):
        """The pseudo-gradient with respect to `x` given the output gradient `dy` (no autograd)."""
        return ops.quantizer_gradient(x, dy, self._spec, _role(role), depth_multiplier)

    def __eq__(self, other):
        return isinstance(other, Quantizer) and other._spec == self._spec

    def __hash__(self):
        return hash(self._spec)

    def __repr__(self):
        return f"onebit.quantizers.Quantizer({self._spec})"


def _role(role):
    try:
        return _ROLES[role]
    except KeyError:
        raise ValueError(f"quantizer role must be 'kernel' or 'activation', got {role!r}") from None


def get(spec):
    """`Quantizer` of a string id, class name, dict or `Quantizer`; None for None."""
    if spec is None or isinstance(spec, Quantizer):
        return spec
    if isinstance(spec, (str, dict)):
        return Quantizer(spec)
    raise TypeError(f"a quantizer must be a string id, a dict, a onebit.quantizers.Quantizer or "
                    f"None, got {type(spec).__name__}")


def known_ids():
    """The quantizer ids onebit knows, sorted."""
    return list(ops.quantizer_ids())


def _make(id_, **config):
    return Quantizer({"class_name": id_, "config": config})


def NoOp(precision):  # noqa: N802 (Larq's class names)
    """The identity, tagged with `precision` bits (marks a variable as k-bit, e.g. for Bop)."""
    return _make("noop", precision=precision)


def SteSign(clip_value=1.0):  # noqa: N802
    """sign(x) (+1 for x >= 0); gradient dy * 1{|x| <= clip_value} (None: unclipped)."""
    return _make("ste_sign", clip_value=clip_value)


def ApproxSign():  # noqa: N802
    """sign(x); gradient dy * (2 - 2|x|) for |x| <= 1, else 0."""
    return _make("approx_sign")


def SteHeaviside(clip_value=1.0):  # noqa: N802
    """1 for x > 0, else 0; STE gradient."""
    return _make("ste_heaviside", clip_value=clip_value)


def SwishSign(beta=5.0):  # noqa: N802
    """sign(x) with the SwishSign pseudo-gradient."""
    return _make("swish_sign", beta=beta)


def MagnitudeAwareSign(clip_value=1.0):  # noqa: N802
    """a * sign(x), a = mean |x| per channel (XNOR-Net / Bi-Real Net scaling)."""
    return _make("magnitude_aware_sign", clip_value=clip_value)


def SteTern(threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0):  # noqa: N802
    """Ternarization to -1, 0, +1 with the STE gradient."""
    return _make("ste_tern", threshold_value=threshold_value,
                 ternary_weight_networks=ternary_weight_networks, clip_value=clip_value)


def DoReFa(k_bit=2, mode="activations"):  # noqa: N802
    """DoReFa-Net's k-bit quantizer ("activations" or "weights")."""
    return _make("dorefa_quantizer", k_bit=k_bit, mode=mode)
