"""A model trained in Python converts, and the runtime predicts what PyTorch predicts on all of
Fashion-MNIST's test set."""

import numpy as np
import pytest
import torch

import onebit
import onebit.runtime as rt


def train(model, optimizer, x, y, batch=64, steps=None):
    model.train()
    losses = []
    for i, start in enumerate(range(0, len(x), batch)):
        if steps is not None and i >= steps:
            break
        xb = torch.from_numpy(x[start:start + batch])
        yb = torch.from_numpy(y[start:start + batch])
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        onebit.nn.apply_constraints(model)
        losses.append(loss.item())
    return losses


def torch_logits(model, x):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + 1000])) for i in range(0, len(x), 1000)])


# larq-mnist on the whole test set (the check); the graph model bireal-mnist (float
# shortcuts: add, nested blocks) briefly, on a fifth of it, to keep the suite fast.
@pytest.mark.parametrize("name,steps,images", [("larq-mnist", 60, 10000), ("bireal-mnist", 10, 2000)])
def test_trained_model_converts_and_agrees_on_the_test_set(name, steps, images, fashion_train,
                                                           fashion_test, tmp_path):
    torch.manual_seed(42)
    model = onebit.zoo.build(name)
    x, y = fashion_train
    losses = train(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y, steps=steps)
    third = len(losses) // 3
    assert np.mean(losses[-third:]) < np.mean(losses[:third])

    info = onebit.convert(model, (1, 28, 28), tmp_path / "m.obnn", model_name=name)
    assert info["binary_weights"] > 0 and info["file_bytes"] > 0

    tx, ty = fashion_test[0][:images], fashion_test[1][:images]
    expected = torch_logits(model, tx).numpy()
    got = rt.Model(str(tmp_path / "m.obnn"), threads=2).predict(tx)
    agreement = float(np.mean(got.argmax(1) == expected.argmax(1)))
    assert agreement == 1.0
    if name == "larq-mnist":
        accuracy = float(np.mean(got.argmax(1) == ty))
        assert accuracy > 0.5, accuracy  # trained, not chance


def test_bop_and_case_optimizer_train_binary_kernels(fashion_train):
    torch.manual_seed(0)
    model = onebit.zoo.build("larq-mnist")
    x, y = fashion_train
    is_binary = onebit.optim.is_binary(model)
    opt = onebit.optim.CaseOptimizer(
        model, [(is_binary, lambda ps: onebit.optim.Bop(ps, threshold=1e-6, gamma=1e-3))],
        default=lambda ps: torch.optim.Adam(ps, lr=1e-3))
    losses = train(model, opt, x, y, steps=24)
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    for name, p in model.named_parameters():
        if is_binary(name, p):
            assert set(p.detach().unique().tolist()) <= {-1.0, 1.0}, name
