"""Shared fixtures: torch is imported before onebit's operator library (as onebit does)."""

import os

import numpy as np
import pytest
import torch

import onebit

torch.set_num_threads(2)


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
