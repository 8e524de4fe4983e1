#!/usr/bin/python3
"""Trains larq-mnist on Fashion-MNIST with PyTorch and onebit, converts it, runs it.

    /usr/bin/python3 examples/python/train_larq_mnist.py                # 1 epoch, Adam
    /usr/bin/python3 examples/python/train_larq_mnist.py --optimizer bop --out runs/py

Prints the summary, the test accuracy of PyTorch's model, then of the converted `.obnn` model
in onebit's runtime, and how many of the test images both classify alike.
"""

import argparse
import os
import time

import numpy as np
import torch

import onebit
import onebit.runtime


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=["adam", "bop"], default="adam",
                   help="bop: Bop for the binary kernels, Adam for the rest (CaseOptimizer)")
    p.add_argument("--train-images", type=int, default=0, help="use only the first N (0: all)")
    p.add_argument("--test-images", type=int, default=0, help="evaluate on the first N (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/python-larq-mnist")
    a = p.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    x, y = onebit.datasets.fashion_mnist("train")
    tx, ty = onebit.datasets.fashion_mnist("test")
    if a.train_images:
        x, y = x[:a.train_images], y[:a.train_images]
    if a.test_images:
        tx, ty = tx[:a.test_images], ty[:a.test_images]

    model = onebit.zoo.build("larq-mnist")
    onebit.summary(model, (1, 28, 28), name="larq-mnist")
    if a.optimizer == "bop":
        opt = onebit.optim.CaseOptimizer(
            model, [(onebit.optim.is_binary(model),
                     lambda ps: onebit.optim.Bop(ps, threshold=1e-6, gamma=1e-3))],
            default=lambda ps: torch.optim.Adam(ps, lr=a.lr))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=a.lr)

    rng = np.random.default_rng(a.seed)
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = rng.permutation(len(x))
        start, total, seen = time.time(), 0.0, 0
        for i in range(0, len(x), a.batch_size):
            idx = order[i:i + a.batch_size]
            xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            onebit.nn.apply_constraints(model)  # Larq's kernel_constraint (weight_clip)
            total += loss.item() * len(idx)
            seen += len(idx)
        print(f"epoch {epoch}: loss {total / seen:.4f}, {seen / (time.time() - start):.0f} "
              "images/s")

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(tx[i:i + 1000]))
                            for i in range(0, len(tx), 1000)]).numpy()
    print(f"PyTorch: test accuracy {np.mean(logits.argmax(1) == ty) * 100:.2f}%")

    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.obnn")
    info = onebit.convert(model, (1, 28, 28), path, model_name="larq-mnist")
    print(f"converted: {path}, {info['file_bytes']:,} bytes, "
          f"{info['binary_weights']:,} binary weights")

    m = onebit.runtime.Model(path, threads=a.threads)
    start = time.time()
    out = m.predict(tx)
    seconds = time.time() - start
    print(f"runtime: test accuracy {np.mean(out.argmax(1) == ty) * 100:.2f}%, "
          f"{len(tx) / seconds:,.0f} images/s, same class as PyTorch on "
          f"{int(np.sum(out.argmax(1) == logits.argmax(1))):,} / {len(tx):,} images")


if __name__ == "__main__":
    main()
