"""Loads libonebit_ops.so (onebit's training library as torch operators, torch.ops.onebit.*)."""

import os

import torch

_LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libonebit_ops.so")
if not os.path.exists(_LIBRARY):
    raise ImportError(f"onebit: {_LIBRARY} is missing: build onebit with the Python package "
                      "(scripts/build.sh; needs python3-torch and pybind11-dev)")
torch.ops.load_library(_LIBRARY)

ops = torch.ops.onebit
