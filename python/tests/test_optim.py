"""Bop's rule (onebit::optim::bop_update, Larq's) and CaseOptimizer's routing."""

import pytest
import torch

import onebit
import onebit.nn as obn
from onebit.optim import Bop, CaseOptimizer, is_binary


def test_bop_flips_as_larq():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 1.0, -1.0, 0.3, 1.0]))
    w.grad = torch.tensor([5.0, -5.0, -5.0, 5.0, 5.0, 0.0])
    opt = Bop([w], threshold=0.2, gamma=0.1)
    opt.step()
    m = 0.1 * w.grad
    assert torch.equal(opt.state[w]["m"], m)
    # w m = [0.5, 0.5, -0.5, -0.5, 0.15, 0]: flip where > threshold, keep sign elsewhere.
    assert w.tolist() == [-1.0, 1.0, 1.0, -1.0, 1.0, 1.0]
    opt.step()  # m grows: 0.19 gamma-weighted
    assert torch.allclose(opt.state[w]["m"], m + 0.1 * (w.grad - m))
    assert opt.state[w]["step"] == 2


def test_bop_tie_gives_plus_one_and_skips_params_without_grad():
    w = torch.nn.Parameter(torch.tensor([-1.0]))
    untouched = torch.nn.Parameter(torch.tensor([0.5]))
    w.grad = torch.tensor([0.0])
    Bop([w, untouched], threshold=0.0, gamma=0.5).step()
    assert w.item() == 1.0 and untouched.item() == 0.5


def test_bop_options():
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        Bop([torch.nn.Parameter(torch.ones(1))], threshold=-1)
    with pytest.raises(ValueError, match="gamma must be in"):
        Bop([torch.nn.Parameter(torch.ones(1))], gamma=2)
    p = torch.nn.Parameter(torch.tensor([0.2, -0.3, 0.0]))
    Bop([p], binarize_at_start=True)
    assert p.tolist() == [1.0, -1.0, 1.0]


def model():
    return torch.nn.Sequential(
        obn.QuantDense(4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
        obn.BatchNorm(3),
        obn.QuantDense(3, 2, kernel_quantizer="dorefa_quantizer"))


def test_case_optimizer_routes_and_saves():
    m = model()
    opt = CaseOptimizer(m, [(is_binary(m), lambda ps: Bop(ps))],
                        default=lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert [len(o.param_groups[0]["params"]) for o in opt.optimizers] == [1, 5]
    assert isinstance(opt.optimizers[0], Bop)
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    assert set(m[0].weight.unique().tolist()) <= {-1.0, 1.0}
    state = opt.state_dict()
    other = CaseOptimizer(m, [(is_binary(m), lambda ps: Bop(ps))],
                          default=lambda ps: torch.optim.SGD(ps, lr=0.1))
    other.load_state_dict(state)
    assert torch.equal(other.optimizers[0].state[m[0].weight]["m"],
                       opt.optimizers[0].state[m[0].weight]["m"])
    # A learning-rate scheduler sees the inner groups.
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    opt.step()
    scheduler.step()
    assert opt.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5e-4)  # Bop's gamma


def test_case_optimizer_errors():
    m = model()
    with pytest.raises(ValueError, match="claimed by cases"):
        CaseOptimizer(m, [(lambda n, p: True, Bop), (lambda n, p: True, Bop)])
    with pytest.raises(ValueError, match="case 0 claims no parameter"):
        CaseOptimizer(m, [(lambda n, p: False, Bop)])
    with pytest.warns(UserWarning, match="not trained"):
        CaseOptimizer(m, [(is_binary(m), Bop)])


def test_constraints_are_the_cpp_ones():
    layer = obn.QuantDense(3, 2, kernel_quantizer="ste_sign",
                           kernel_constraint={"class_name": "weight_clip",
                                              "config": {"clip_value": 0.5}})
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -0.25, -3.0], [0.5, 0.1, -0.6]]))
    obn.apply_constraints(layer)
    assert layer.weight.tolist() == [[0.5, -0.25, -0.5], [0.5, pytest.approx(0.1), -0.5]]
    with pytest.raises(Exception, match="clip_value must be a positive number"):
        obn.QuantDense(3, 2, kernel_constraint={"class_name": "weight_clip",
                                                "config": {"clip_value": -1}})
