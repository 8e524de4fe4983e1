"""Bop and CaseOptimizer as `torch.optim.Optimizer`s (Larq's optimizers).

>>> import torch, onebit
>>> model = onebit.zoo.build("larq-mnist")
>>> opt = onebit.optim.CaseOptimizer(
...     model,
...     [(onebit.optim.is_binary(model), lambda ps: onebit.optim.Bop(ps, threshold=1e-6,
...                                                                   gamma=1e-3))],
...     default=lambda ps: torch.optim.Adam(ps, lr=1e-3))
>>> loss.backward(); opt.step(); onebit.nn.apply_constraints(model)

Bop's update is onebit's C++ `onebit::optim::bop_update` (the rule of include/onebit/optim/bop.h,
Larq's): m <- m + gamma (g - m); w <- sign(-sign(w m - threshold) w), +1 on a tie.
"""

import torch

from onebit import nn as obn
from onebit._ops import ops

__all__ = ["Bop", "CaseOptimizer", "is_binary"]


class Bop(torch.optim.Optimizer):
    """The latent-free binary optimizer. `threshold` >= 0, `gamma` in [0, 1] (Larq's defaults
    1e-8 and 1e-4; its guide suggests 1e-6 and 1e-3 from scratch). With `binarize_at_start`
    every parameter is set to sign(w) now; otherwise the first step decides on the real values.
    Both hyperparameters live in the parameter groups: gamma, which plays the part of a learning
    rate, under the key "lr", so that torch's learning-rate schedulers schedule it (Larq
    schedules gamma), and "threshold"."""

    def __init__(self, params, threshold=1e-8, gamma=1e-4, binarize_at_start=False):
        if not threshold >= 0:
            raise ValueError(f"Bop: threshold must be >= 0, got {threshold}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"Bop: gamma must be in [0, 1], got {gamma}")
        super().__init__(params, {"threshold": float(threshold), "lr": float(gamma)})
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if not p.is_floating_point():
                    raise ValueError(f"Bop: parameter {i} must be a floating-point tensor, got "
                                     f"{p.dtype}")
                if binarize_at_start:
                    with torch.no_grad():
                        p.copy_(torch.where(p >= 0, torch.ones_like(p), -torch.ones_like(p)))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("Bop does not support sparse gradients")
                state = self.state[p]
                if "m" not in state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["step"] = 0
                ops.bop_update(p, state["m"], p.grad, group["threshold"], group["lr"])
                state["step"] += 1
        return loss


def is_binary(model):
    """A predicate (name, parameter) -> bool claiming the kernels of `model`'s layers whose
    kernel quantizer has 1 bit (Larq's `Bop.is_binary_variable`), as they are now."""
    ids = {id(p) for _, p, quantizer in obn.quantized_parameters(model)
           if quantizer.precision == 1}
    return lambda name, p: id(p) in ids


class CaseOptimizer(torch.optim.Optimizer):
    """Routes each parameter to the one optimizer whose predicate claims it (Larq's
    CaseOptimizer): `cases` is a list of (predicate(name, param) -> bool, factory(params) ->
    optimizer); unclaimed parameters go to `default(params)`, or are not trained (with a
    warning) when there is no default. A parameter claimed twice, or a case that claims none,
    is a ValueError. `model` is a module or an iterable of (name, parameter).

    `param_groups` are the inner optimizers' groups (so learning-rate schedulers work);
    `state_dict`/`load_state_dict` save and restore every inner optimizer."""

    def __init__(self, model, cases, default=None):
        named = list(model.named_parameters() if isinstance(model, torch.nn.Module) else model)
        claimed = [[] for _ in cases]
        rest = []
        for name, p in named:
            owners = [i for i, (pred, _) in enumerate(cases) if pred(name, p)]
            if len(owners) > 1:
                raise ValueError(f"CaseOptimizer: parameter {name!r} is claimed by cases "
                                 f"{owners}; each parameter must go to one optimizer")
            (claimed[owners[0]] if owners else rest).append(p)
        for i, ps in enumerate(claimed):
            if not ps:
                raise ValueError(f"CaseOptimizer: case {i} claims no parameter")
        self.optimizers = [factory(ps) for (_, factory), ps in zip(cases, claimed)]
        if rest:
            if default is None:
                import warnings
                warnings.warn(f"CaseOptimizer: {len(rest)} parameters are claimed by no case and "
                              "there is no default optimizer; they are not trained")
            else:
                self.optimizers.append(default(rest))
        super().__init__([p for _, p in named] or [torch.zeros(0)], {})
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        return loss

    def zero_grad(self, set_to_none=False):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict):
        inner = state_dict.get("optimizers")
        if inner is None or len(inner) != len(self.optimizers):
            raise ValueError(f"CaseOptimizer: the state holds "
                             f"{len(inner) if inner is not None else 'no'} optimizers, this one "
                             f"has {len(self.optimizers)}")
        for o, s in zip(self.optimizers, inner):
            o.load_state_dict(s)
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]
