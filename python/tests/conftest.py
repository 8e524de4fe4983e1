"""Shared fixtures: torch is imported before onebit's operator library (as onebit does)."""

import os

import numpy as np
import pytest
import torch

import onebit
import onebit.graph as graph
import onebit.nn as obn
from onebit._ops import ops

torch.set_num_threads(2)


def cpp_forward(model, x):
    """The output of the C++ model built from `model`'s description and weights (eval mode)."""
    arch, names, values = graph._cpp_args(model)
    return ops.forward(arch, names, values, x)


def inline_graphs(arch):
    """The nodes of an architecture with nested graphs replaced by their nodes (as the trace
    of a Python model inlines them)."""
    out = []
    for n in arch["nodes"]:
        out.extend(inline_graphs(n["options"]) if n["type"] == "Graph" else [n])
    return out


def randomize(model, seed=1):
    """`model` in eval mode with non-trivial batch-norm statistics and affine parameters, and
    non-zero learnable biases and PReLU slopes, so that every layer matters."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t, low, high):
        t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (obn.BatchNorm, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                uniform(m.running_mean, -0.5, 0.5)
                uniform(m.running_var, 0.5, 2.0)
                if m.weight is not None:
                    uniform(m.weight, 0.5, 1.5)
                if m.bias is not None:
                    uniform(m.bias, -0.3, 0.3)
            elif isinstance(m, obn.LearnableBias):
                uniform(m.bias, -0.1, 0.1)
            elif isinstance(m, torch.nn.PReLU):
                uniform(m.weight, 0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="session")
def fashion_test():
    """Fashion-MNIST's 10,000 test images ([-1, 1]) and labels."""
    return onebit.datasets.fashion_mnist("test")


@pytest.fixture(scope="session")
def fashion_train():
    return onebit.datasets.fashion_mnist("train")


@pytest.fixture(scope="session")
def fresh_model_file(tmp_path_factory):
    """larq-mnist with fresh weights, converted: a valid .obnn for the runtime tests."""
    torch.manual_seed(0)
    model = onebit.zoo.build("larq-mnist")
    path = tmp_path_factory.mktemp("fresh") / "larq-mnist.obnn"
    onebit.convert(model, (1, 28, 28), path, model_name="larq-mnist")
    return str(path)


@pytest.fixture(scope="session")
def tool():
    """The onebit command-line tool (set by ctest), or skip."""
    path = os.environ.get("ONEBIT_TOOL")
    if not path or not os.path.exists(path):
        pytest.skip("ONEBIT_TOOL is not set (ctest sets it)")
    return path


def rng(seed=0):
    return np.random.default_rng(seed)
