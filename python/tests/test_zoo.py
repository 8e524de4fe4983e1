"""Every zoo model from Python: built from the C++ zoo's description with onebit.nn's layers,
it describes itself back identically, computes what the C++ model computes, trains, and
converts to a .obnn that the runtime runs. The layers the published models need (depthwise,
separable and 1-D convolutions, Multiply, Slice, LearnableBias, BlurPool2d, PReLU) are checked
one by one against the C++ layers of the same description."""

import json

import pytest
import torch

import onebit
import onebit.graph as graph
import onebit.nn as obn
from onebit._ops import ops

from conftest import cpp_forward, inline_graphs, randomize

ALEXNETS = {"binary-alexnet", "xnornet", "dorefanet"}
PUBLISHED = ["binary-alexnet", "xnornet", "dorefanet", "birealnet", "binary-resnet-e18",
             "binary-densenet28", "binary-densenet37", "binary-densenet37-dilated",
             "binary-densenet45", "meliusnet22", "real-to-binary-net", "quicknet-small",
             "quicknet", "quicknet-large", "reactnet-a"]


def small_shape(name):
    """3x64x64 for the AlexNet family (three 3x3/2 max pools), 3x32x32 for the rest."""
    return (3, 64, 64) if name in ALEXNETS else (3, 32, 32)


def matching_images(a, b):
    """Images whose logits agree within float rounding (1e-3 of the largest magnitude + 1e-3).
    An image may differ wholesale when a float value feeding a binary layer lies within
    rounding of zero and takes the other sign (see tests/training/test_zoo.cpp)."""
    diff = (a - b).abs().amax(1)
    return int((diff <= a.abs().amax(1) * 1e-3 + 1e-3).sum())


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_model_builds_describes_and_equals_cpp(name):
    torch.manual_seed(0)
    model = onebit.zoo.build(name, input_shape=small_shape(name), num_classes=10)
    arch = graph.describe(model)
    cpp = onebit.zoo.architecture(name, input_shape=small_shape(name), num_classes=10)
    assert [(n["type"], n["options"]) for n in arch["nodes"]] == \
        [(n["type"], n["options"]) for n in inline_graphs(cpp)]
    randomize(model)
    x = torch.randn(8, *small_shape(name), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(x)
    theirs = cpp_forward(model, x)
    assert ours.shape == (8, 10)
    # The same ATen calls in the same order: equal but for a rare sign flip.
    assert matching_images(ours, theirs) >= 7, (name, (ours - theirs).abs().amax(1))


@pytest.mark.parametrize("name", ["meliusnet22", "real-to-binary-net", "quicknet-small",
                                  "reactnet-a"])
def test_published_model_trains_and_converts(name, tmp_path):
    torch.manual_seed(0)
    shape = small_shape(name)
    model = onebit.zoo.build(name, input_shape=shape, num_classes=10)
    trainable = [p for p in model.parameters() if p.requires_grad]
    binary = onebit.optim.is_binary(model)
    opt = onebit.optim.CaseOptimizer(
        model, [(binary, lambda ps: onebit.optim.Bop(ps, threshold=1e-6, gamma=1e-3))],
        default=lambda ps: torch.optim.Adam(ps, 1e-2))
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(4))
    y = torch.arange(8) % 10
    model.train()
    for _ in range(2):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        obn.apply_constraints(model)
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in trainable), name
    assert any(binary("", p) for p in trainable), name
    model.eval()
    stored = onebit.convert(model, shape, tmp_path / "m.obnn", model_name=name)
    assert stored["binary_weights"] > 0
    runtime = onebit.runtime.Model(str(tmp_path / "m.obnn"), threads=1)
    images = torch.randn(16, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(images)
    got = torch.from_numpy(runtime.predict(images.numpy()))
    assert got.shape == expected.shape
    assert matching_images(expected, got) >= 12, (name, (expected - got).abs().amax(1))


def check_layer(layer, shape, tol=1e-5):
    """`layer` (in a Sequential) computes what the C++ layer of its description computes."""
    model = torch.nn.Sequential(layer).eval()
    arch = graph.describe(model)
    assert json.loads(ops.describe(json.dumps(arch))) == arch
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(model(x), cpp_forward(model, x), rtol=tol, atol=tol)
    return arch["nodes"][0]


@pytest.mark.parametrize("kw", [dict(padding="same", pad_values=1.0), dict(stride=2, padding=1),
                                dict(depth_multiplier=2, padding="same", dilation=2)])
def test_depthwise_conv_equals_cpp(kw):
    torch.manual_seed(7)
    layer = obn.QuantDepthwiseConv2d(4, 3, input_quantizer="ste_sign",
                                     depthwise_quantizer="magnitude_aware_sign",
                                     depthwise_constraint="weight_clip", **kw)
    node = check_layer(layer, (2, 4, 9, 8))
    assert node["type"] == "QuantDepthwiseConv2d"
    assert layer(torch.randn(1, 4, 9, 8)).shape[1] == 4 * kw.get("depth_multiplier", 1)


@pytest.mark.parametrize("cls,shape", [(obn.QuantSeparableConv2d, (2, 4, 7, 9)),
                                       (obn.QuantSeparableConv1d, (2, 4, 11))])
def test_separable_conv_equals_cpp(cls, shape):
    torch.manual_seed(8)
    layer = cls(4, 6, 3, depth_multiplier=2, padding="same", pad_values=1.0,
                input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                pointwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
                pointwise_constraint="weight_clip")
    check_layer(layer, shape)
    names = [n for n, _, _ in obn.quantized_parameters(torch.nn.Sequential(layer))]
    assert names == ["0.depthwise_weight", "0.pointwise_weight"]
    with torch.no_grad():
        layer.depthwise_weight.fill_(3.0)
    obn.apply_constraints(layer)
    assert float(layer.depthwise_weight.max()) == 1.0


def test_conv1d_and_1d_pools_equal_cpp():
    torch.manual_seed(9)
    model = torch.nn.Sequential(
        obn.QuantConv1d(3, 8, 5, stride=2, padding="same", pad_values=1.0,
                        input_quantizer="ste_sign", kernel_quantizer="ste_sign"),
        torch.nn.MaxPool1d(2), torch.nn.Conv1d(8, 4, 3, padding=1), torch.nn.AvgPool1d(2))
    arch = graph.describe(model)
    assert [n["type"] for n in arch["nodes"]] == ["QuantConv1d", "torch.MaxPool1d",
                                                  "torch.Conv1d", "torch.AvgPool1d"]
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), cpp_forward(model, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"QuantConv1d\(3, 8\): expected input of shape "
                                         r"\[N, 3, L\], got \[2, 3, 4, 4\]"):
        model[0](torch.randn(2, 3, 4, 4))


class ScaledBlock(torch.nn.Module):
    """Real-to-Binary's scaling branch, a MeliusNet-style slice and ReActNet's RPReLU, written
    as plain PyTorch forward code."""

    def __init__(self):
        super().__init__()
        self.shift = obn.LearnableBias(8)
        self.conv = obn.QuantConv2d(8, 8, 3, padding="same", bias=False, pad_values=1.0,
                                    input_quantizer="ste_sign", kernel_quantizer="ste_sign")
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 8),
                                      torch.nn.Sigmoid())
        self.scale = obn.Multiply()
        self.prelu = torch.nn.PReLU(8)
        self.blur = obn.BlurPool2d(12)

    def forward(self, x):
        y = self.conv(self.shift(x))
        y = self.scale([y, self.fc(self.pool(x))])  # a per-channel scale [N, C]
        y = self.prelu(y) * y
        return self.blur(torch.cat([x, y[:, 2:6]], 1))


def test_multiply_slice_bias_prelu_blur_equal_cpp():
    model = randomize(ScaledBlock())
    arch = graph.describe(model)
    kinds = [n["type"] for n in arch["nodes"]]
    assert kinds == ["LearnableBias", "QuantConv2d", "torch.AdaptiveAvgPool2d", "torch.Flatten",
                     "torch.Linear", "torch.Sigmoid", "Multiply", "torch.PReLU", "Multiply",
                     "Slice", "Concat", "BlurPool2d"]
    assert arch["nodes"][9]["options"] == {"begin": 2, "end": 6}
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, cpp_forward(model, x), rtol=1e-5, atol=1e-5)
    assert out.shape == (2, 12, 5, 5)
    # The blur filter is fixed: not trained.
    assert not model.blur.weight.requires_grad


def test_new_layers_explain_bad_input():
    with pytest.raises(ValueError, match=r"Multiply: the second input must have the first's "
                                         r"shape \[2, 3, 4, 4\] or be a per-channel scale"):
        obn.Multiply()([torch.ones(2, 3, 4, 4), torch.ones(2, 4)])
    with pytest.raises(ValueError, match=r"Slice\(0, 5\): input must have at least 5 channels"):
        obn.Slice(0, 5)(torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="expected 0 <= begin < end"):
        obn.Slice(3, 3)
    with pytest.raises(ValueError, match=r"LearnableBias\(4\): expected input \[N, 4, ...\]"):
        obn.LearnableBias(4)(torch.ones(1, 3))
    with pytest.raises(ValueError, match="depth_multiplier must be >= 1"):
        obn.QuantDepthwiseConv2d(4, 3, depth_multiplier=0)
    with pytest.raises(ValueError, match="only a channel slice"):
        graph.describe(type("Rows", (torch.nn.Module,), {
            "forward": lambda self, x: x[:, :, 1:3]})())
