"""Python models through the C++ model description: layers compute what the C++ layers of the
same description compute, describe/from_architecture round trips, summary equals the CLI's."""

import json
import subprocess

import pytest
import torch

import onebit
import onebit.graph as graph
import onebit.nn as obn
from onebit._ops import ops

from conftest import cpp_forward, inline_graphs, randomize


def binary_conv(i, o, **kw):
    return obn.QuantConv2d(i, o, 3, bias=False, input_quantizer="ste_sign",
                           kernel_quantizer="ste_sign", kernel_constraint="weight_clip", **kw)


class Block(torch.nn.Module):
    """A Bi-Real block and a DenseNet layer, written as plain PyTorch forward code."""

    def __init__(self):
        super().__init__()
        self.stem = obn.QuantConv2d(2, 8, 3, padding="same", bias=True)
        self.conv = binary_conv(8, 8, padding="same", pad_values=1.0)
        self.bn = obn.BatchNorm(8, momentum=0.1)
        self.dense_conv = binary_conv(8, 4, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.head = torch.nn.Sequential(torch.nn.Flatten(),
                                        obn.QuantDense(12 * 3 * 3, 5, input_quantizer="ste_sign",
                                                       kernel_quantizer="ste_sign"),
                                        torch.nn.BatchNorm1d(5))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.bn(self.conv(x))
        x = torch.cat([x, self.dense_conv(x)], 1)
        return self.head(self.pool(x))


def test_describe_of_plain_pytorch_code():
    arch = graph.describe(Block())
    kinds = [(n["name"], n["type"], n["inputs"]) for n in arch["nodes"]]
    assert kinds == [("stem", "QuantConv2d", [0]), ("conv", "QuantConv2d", [1]),
                     ("bn", "BatchNorm", [2]), ("add", "Add", [1, 3]),
                     ("dense_conv", "QuantConv2d", [4]), ("cat", "Concat", [4, 5]),
                     ("pool", "torch.MaxPool2d", [6]),
                     ("head_0", "torch.Flatten", [7]), ("head_1", "QuantDense", [8]),
                     ("head_2", "torch.BatchNorm1d", [9])]
    assert arch["output"] == 10
    # The C++ side builds it and describes it the same way.
    assert json.loads(ops.describe(json.dumps(arch))) == arch


@pytest.mark.parametrize("kw", [dict(padding="same", pad_values=1.0), dict(padding="same"),
                                dict(padding=1, pad_values=1.0), dict(stride=2, padding="same"),
                                dict(padding="valid", dilation=2), dict(groups=2, padding=1)])
def test_quant_conv2d_equals_cpp(kw):
    torch.manual_seed(2)
    layer = binary_conv(4, 6, **kw)
    x = torch.randn(2, 4, 9, 8)
    torch.testing.assert_close(layer(x), cpp_forward(layer_model(layer), x), rtol=0, atol=0)


def layer_model(layer):
    return torch.nn.Sequential(layer)


def test_float_layers_and_whole_model_equal_cpp():
    model = randomize(Block()).eval()
    x = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), cpp_forward(model, x), rtol=1e-5, atol=1e-5)


def test_zoo_model_round_trips_through_the_cpp_description():
    for name in ["larq-mnist", "bnn-mlp", "bireal-mnist", "densenet-mnist"]:
        cpp = onebit.zoo.architecture(name)
        model = onebit.zoo.build(name)
        arch = graph.describe(model)
        # Same layers, options and wiring (nested graphs are inlined by the trace).
        assert json.loads(ops.describe(json.dumps(arch))) == arch
        flat = [(n["type"], n["options"]) for n in arch["nodes"]]
        expected = [(n["type"], n["options"]) for n in inline_graphs(cpp)]
        assert flat == expected, name


def test_summary_prints_the_cli_table(tool, capsys):
    model = onebit.zoo.build("larq-mnist")
    numbers = onebit.summary(model, (1, 28, 28), name="larq-mnist")
    printed = capsys.readouterr().out
    cli = subprocess.run([tool, "summary", "--model", "larq-mnist"], check=True,
                         capture_output=True, text=True).stdout
    assert printed.strip() == cli.strip()
    json_cli = subprocess.run([tool, "summary", "--model", "larq-mnist", "--json"], check=True,
                              capture_output=True, text=True).stdout
    assert numbers == json.loads(json_cli)
    assert numbers["totals"]["total_params"] == 93556


def test_summary_without_the_tool_counts_bits():
    model = torch.nn.Sequential(torch.nn.Flatten(),
                                obn.QuantDense(16, 4, bias=False, kernel_quantizer="ste_sign",
                                               kernel_constraint="weight_clip"))
    lines = []
    onebit.summary(model, (1, 4, 4), print_fn=lines.append)
    assert "1:QuantDense" in lines[0] and "64" in lines[0]


def test_unsupported_code_is_named():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return torch.tanh(self.fc(x))

    with pytest.raises(ValueError, match="calls tanh, which has no onebit layer kind"):
        graph.describe(Odd())
    with pytest.raises(ValueError, match="torch.cat must join channels"):
        graph.describe(type("Cat0", (torch.nn.Module,), {
            "forward": lambda self, x: torch.cat([x, x], 0)})())


def test_convert_errors_come_from_cpp(tmp_path):
    # C++ std::invalid_argument arrives as ValueError with the C++ message, unchanged.
    model = torch.nn.Sequential(obn.QuantDense(4, 2, input_quantizer="ste_heaviside"))
    with pytest.raises(ValueError, match=r'convert: node "0" \(QuantDense\): input quantizer '
                                         r'.*ste_heaviside.* expected a sign'):
        onebit.convert(model, (4,), tmp_path / "m.obnn")
    reflect = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="padding_mode kReflect is not supported"):
        onebit.convert(reflect, (1, 5, 5), tmp_path / "m.obnn")
    assert not (tmp_path / "m.obnn").exists()
    with pytest.raises(ValueError, match="input_shape must be positive"):
        onebit.convert(model, (0,), tmp_path / "m.obnn")


def test_from_architecture_refuses_unknown_kinds():
    with pytest.raises(ValueError, match="'d' is a QuantConvTranspose2d, which the Python "
                                         "package cannot build"):
        graph.from_architecture({"type": "Graph", "output": 1, "nodes": [
            {"name": "d", "type": "QuantConvTranspose2d", "options": {}, "inputs": [0]}]})
