"""Training speed of larq-mnist written in plain PyTorch: what a user without onebit writes.

A hand-made straight-through sign (gradient passed where |x| <= 1), the kernels clipped to
[-1, 1] after each step, Adam, batch 64, random images: the baseline that
`onebit bench --train` is compared with in the README. Run with Debian's python3-torch:

    python3 bench/python/plain_pytorch_train.py --threads 1
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


class SteSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * (x.abs() <= 1).to(dy.dtype)


class BinaryConv(torch.nn.Conv2d):
    def __init__(self, cin, cout, binary_input):
        super().__init__(cin, cout, 3, bias=False)
        self.binary_input = binary_input

    def forward(self, x):
        if self.binary_input:
            x = SteSign.apply(x)
        return F.conv2d(x, SteSign.apply(self.weight))


class BinaryDense(torch.nn.Linear):
    def __init__(self, cin, cout):
        super().__init__(cin, cout, bias=False)

    def forward(self, x):
        return F.linear(SteSign.apply(x), SteSign.apply(self.weight))


def batch_norm(kind, c):
    # Larq's scale=False, center=True: a learned shift, a fixed scale of 1.
    bn = kind(c, eps=1e-3)
    bn.weight.requires_grad_(False)
    return bn


def larq_mnist():
    bn2, bn1 = lambda c: batch_norm(torch.nn.BatchNorm2d, c), lambda c: batch_norm(torch.nn.BatchNorm1d, c)
    return torch.nn.Sequential(
        BinaryConv(1, 32, False), torch.nn.MaxPool2d(2), bn2(32),
        BinaryConv(32, 64, True), torch.nn.MaxPool2d(2), bn2(64),
        BinaryConv(64, 64, True), bn2(64), torch.nn.Flatten(),
        BinaryDense(576, 64), bn1(64), BinaryDense(64, 10), bn1(10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model = larq_mnist().train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    x = torch.randn(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    times = []
    start = time.perf_counter()
    while len(times) < 5 + 3 or time.perf_counter() - start < args.seconds:
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            for m in model:
                if isinstance(m, (BinaryConv, BinaryDense)):
                    m.weight.clamp_(-1, 1)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[3:])
    print(f"plain PyTorch {torch.__version__}, larq-mnist, batch {args.batch_size}, "
          f"{args.threads} thread(s): {args.batch_size / step:.0f} images/s "
          f"(median step {step * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
