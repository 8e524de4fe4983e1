"""onebit: binarized neural networks for PyTorch users, and their fast runtime.

- `onebit.runtime.Model`: run converted `.obnn` models on NumPy arrays (no torch needed).
- `onebit.quantizers`, `onebit.nn`, `onebit.optim`: Larq's quantizers (with their
  pseudo-gradients, computed by onebit's C++ library), quantized layers, Bop and CaseOptimizer,
  for training with PyTorch.
- `onebit.summary(model, input_shape)`, `onebit.convert(model, input_shape, path)`,
  `onebit.describe(model, input_shape)`: read a model through the same architecture description
  the C++ library uses; `onebit.zoo.build(name)` makes the zoo's models as PyTorch modules.

The training half needs PyTorch (Debian's python3-torch, the LibTorch onebit is built with); it
is loaded on first use, so `import onebit.runtime` works without torch.
"""

__version__ = "0.1.0"

_LAZY = {"quantizers", "nn", "optim", "zoo", "graph", "datasets"}
_GRAPH_FUNCTIONS = {"summary", "convert", "describe", "from_architecture"}


def __getattr__(name):
    import importlib
    if name in _LAZY:
        return importlib.import_module(f"onebit.{name}")
    if name in _GRAPH_FUNCTIONS:
        return getattr(importlib.import_module("onebit.graph"), name)
    if name == "runtime":
        return importlib.import_module("onebit.runtime")
    raise AttributeError(f"module 'onebit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_GRAPH_FUNCTIONS) + ["runtime"])
