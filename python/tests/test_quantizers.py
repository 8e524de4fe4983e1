"""Quantizers: the Python operators are onebit's C++ quantizers, forward and pseudo-gradient.

For each quantizer: autograd through torch.ops.onebit.quantize gives the C++ gradient
(Quantizer::gradient_as), and both passes equal an independent formula (Larq's definitions)."""

import math

import pytest
import torch

import onebit
from onebit import quantizers as q

torch.manual_seed(0)
# Values around every threshold the quantizers have (0, +-1, +-D) plus random ones.
EDGES = torch.tensor([-2.0, -1.0, -0.999, -0.5, -0.05, -1e-6, 0.0, 1e-6, 0.05, 0.5, 0.999, 1.0,
                      2.0])


def kernel():
    x = torch.cat([EDGES, torch.randn(4 * 3 * 3 * 3 - EDGES.numel()) * 1.5])
    return x.reshape(4, 3, 3, 3)


def sign(x):
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def ste(x, clip=1.0):
    return (x.abs() <= clip).to(x.dtype)


def per_channel_mean_abs(x):
    return x.abs().mean(dim=tuple(range(1, x.dim())), keepdim=True)


def dorefa_weights(x, k):
    n = 2 ** k - 1
    t = torch.tanh(x)
    m = t.abs().max()
    v = t / (2 * m) + 0.5
    return 2 * torch.round(v * n) / n - 1, (1 - t * t) / m


# (spec, forward reference, gradient reference given x and dy) ; None: not checked by formula.
CASES = [
    ("ste_sign", lambda x: sign(x), lambda x, dy: dy * ste(x)),
    ({"class_name": "ste_sign", "config": {"clip_value": 0.5}}, lambda x: sign(x),
     lambda x, dy: dy * ste(x, 0.5)),
    ({"class_name": "ste_sign", "config": {"clip_value": None}}, lambda x: sign(x),
     lambda x, dy: dy),
    ("approx_sign", lambda x: sign(x),
     lambda x, dy: dy * torch.where(x.abs() <= 1, 2 - 2 * x.abs(), torch.zeros_like(x))),
    ("ste_heaviside", lambda x: (x > 0).to(x.dtype), lambda x, dy: dy * ste(x)),
    ("swish_sign", lambda x: sign(x),
     lambda x, dy: dy * 5.0 * (2 - 5.0 * x * torch.tanh(5.0 * x / 2)) / (1 + torch.cosh(5.0 * x))),
    ("magnitude_aware_sign", lambda x: per_channel_mean_abs(x) * sign(x),
     lambda x, dy: dy * per_channel_mean_abs(x) * ste(x)),
    ("magnitude_aware_sign_unclipped", lambda x: x.abs().mean() * sign(x), lambda x, dy: dy),
    ("xnor_weight_scale",
     lambda x: per_channel_mean_abs(x.clamp(-1, 1)) * sign(x.clamp(-1, 1)), None),
    ("ste_tern",
     lambda x: torch.where(x >= 0.05, 1.0, torch.where(x <= -0.05, -1.0, 0.0)),
     lambda x, dy: dy * ste(x)),
    ({"class_name": "ste_tern", "config": {"ternary_weight_networks": True}},
     lambda x: (lambda d: torch.where(x >= d, 1.0, torch.where(x <= -d, -1.0, 0.0)))(
         0.7 * x.abs().mean()),
     lambda x, dy: dy * ste(x)),
    ("dorefa_quantizer", lambda x: torch.round(x.clamp(0, 1) * 3) / 3,
     lambda x, dy: dy * ((x >= 0) & (x <= 1)).to(x.dtype)),
    ({"class_name": "dorefa_quantizer", "config": {"k_bit": 3, "mode": "weights"}},
     lambda x: dorefa_weights(x, 3)[0], lambda x, dy: dy * dorefa_weights(x, 3)[1]),
    ({"class_name": "noop", "config": {"precision": 1}}, lambda x: x, lambda x, dy: dy),
]


def spec_id(spec):
    return spec if isinstance(spec, str) else spec["class_name"] + str(spec.get("config"))


def test_cases_cover_every_builtin_quantizer():
    covered = {c[0] if isinstance(c[0], str) else c[0]["class_name"] for c in CASES}
    assert set(q.known_ids()) <= covered, set(q.known_ids()) - covered


@pytest.mark.parametrize("spec,forward,gradient", CASES, ids=[spec_id(c[0]) for c in CASES])
def test_forward_and_gradient(spec, forward, gradient):
    quantizer = q.get(spec)
    x = kernel().requires_grad_(True)
    dy = torch.randn_like(x)
    y = quantizer(x)
    y.backward(dy)
    cpp_gradient = quantizer.gradient(x.detach(), dy)
    # Autograd through the operator is the C++ pseudo-gradient, bit for bit.
    torch.testing.assert_close(x.grad, cpp_gradient, rtol=0, atol=0)
    torch.testing.assert_close(y.detach(), forward(x.detach()).to(y.dtype), rtol=1e-6, atol=1e-6)
    if gradient is not None:
        torch.testing.assert_close(x.grad, gradient(x.detach(), dy), rtol=1e-5, atol=1e-6)


def test_activation_role_reduces_per_channel_over_batch_and_space():
    quantizer = q.MagnitudeAwareSign()
    x = torch.randn(2, 3, 4, 4)
    y = quantizer(x, "activation")
    scale = x.abs().mean(dim=(0, 2, 3), keepdim=True)
    torch.testing.assert_close(y, scale * sign(x))


def test_canonical_spec_precision_and_kind():
    s = q.SteSign()
    assert s.to_json() == {"class_name": "ste_sign", "config": {"clip_value": 1.0}}
    assert s.precision == 1 and s.forward_kind == "sign"
    assert q.get("SteSign") == s  # Larq's class name
    assert q.NoOp(8).precision == 8 and q.NoOp(8).forward_kind == "identity"
    assert q.DoReFa(4).precision == 4 and q.DoReFa(4).forward_kind == "other"


def test_bad_specs_raise_the_cpp_message():
    with pytest.raises(Exception, match="no_such_quantizer"):
        q.get("no_such_quantizer")
    with pytest.raises(Exception, match="bogus"):
        q.get({"class_name": "ste_sign", "config": {"bogus": 1}})
    with pytest.raises(TypeError, match="string id"):
        q.get(3)
    with pytest.raises(ValueError, match="role"):
        q.SteSign()(torch.zeros(2), "weights")


def test_operators_are_visible_to_torchscript():
    @torch.jit.script
    def binarize(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.onebit.quantize(x, '"ste_sign"', 1, 0)

    x = torch.tensor([-0.5, 0.0, 2.0])
    assert binarize(x).tolist() == [-1.0, 1.0, 1.0]
    assert "onebit::quantize" in str(binarize.graph)


def test_quantized_layers_script_and_trace():
    layer = onebit.nn.QuantDense(4, 2, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    x = torch.randn(3, 4)
    traced = torch.jit.trace(layer, x)
    torch.testing.assert_close(traced(x), layer(x))
    assert "onebit::quantize" in str(traced.graph)


def test_double_and_float_inputs():
    x = torch.tensor([-0.5, 0.25], dtype=torch.float64, requires_grad=True)
    y = q.SteSign()(x)
    assert y.dtype == torch.float64
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


def test_swish_sign_gradient_is_finite_and_beta_at_zero():
    x = torch.linspace(-3, 3, 61, requires_grad=True)
    q.SwishSign(beta=2.0)(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.shape == x.shape
    assert math.isclose(x.grad[30].item(), 2.0 * 2 / 2, rel_tol=1e-6)  # beta * 2 / (1 + 1) at 0
