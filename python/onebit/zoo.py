"""The zoo's models as PyTorch modules: the architecture comes from onebit's C++ zoo
(serialize::describe of onebit::zoo::build), the modules from onebit.nn and torch.nn.

>>> model = onebit.zoo.build("larq-mnist")           # trainable, fresh weights
>>> onebit.summary(model, (1, 28, 28))
"""

import json

from onebit._ops import ops
from onebit.graph import from_architecture

__all__ = ["build", "architecture", "names", "resolve_options"]


def _options(quantized, input_shape, num_classes, bn_momentum, bn_eps):
    return json.dumps({"quantized": bool(quantized),
                       "input_shape": [int(d) for d in input_shape] if input_shape else [],
                       "num_classes": int(num_classes), "bn_momentum": bn_momentum,
                       "bn_eps": bn_eps})


def architecture(name, quantized=True, input_shape=None, num_classes=0, bn_momentum=None,
                 bn_eps=None):
    """The architecture dict of zoo model `name` (options as `onebit train`'s)."""
    return json.loads(ops.zoo_architecture(
        name, _options(quantized, input_shape, num_classes, bn_momentum, bn_eps)))


def resolve_options(name, quantized=True, input_shape=None, num_classes=0, bn_momentum=None,
                    bn_eps=None):
    """The model's options with its defaults filled in (input_shape, num_classes, ...)."""
    return json.loads(ops.zoo_resolve(
        name, _options(quantized, input_shape, num_classes, bn_momentum, bn_eps)))


def build(name, quantized=True, input_shape=None, num_classes=0, bn_momentum=None, bn_eps=None):
    """Zoo model `name` as a trainable `onebit.graph.Graph` (a torch.nn.Module), fresh weights;
    every model of `names()` builds. `quantized` False gives the float copy. `input_shape`
    (C, H, W) and `num_classes` default to the model's own (3x224x224 and 1000 for the published
    ImageNet models)."""
    return from_architecture(architecture(name, quantized, input_shape, num_classes,
                                          bn_momentum, bn_eps))


def names():
    """The zoo's model names."""
    return list(ops.zoo_names())
