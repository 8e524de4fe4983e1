"""The Python benchmark scripts the README quotes run and report what they claim."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_plain_pytorch_training_baseline_runs_and_learns_the_same_network():
    script = os.path.join(ROOT, "bench", "python", "plain_pytorch_train.py")
    out = subprocess.run([sys.executable, script, "--threads", "1", "--batch-size", "8",
                          "--seconds", "0.1"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"batch 8, 1 thread\(s\): (\d+) images/s \(median step ([\d.]+) ms\)", out)
    assert m, out
    assert int(m.group(1)) > 0

    # The network is larq-mnist: as many trainable parameters as onebit's zoo model.
    sys.path.insert(0, os.path.dirname(script))
    try:
        import plain_pytorch_train
        import onebit.zoo

        plain = plain_pytorch_train.larq_mnist()
        ours = onebit.zoo.build("larq-mnist")
        count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
        assert count(plain) == count(ours)
    finally:
        sys.path.pop(0)
