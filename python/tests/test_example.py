"""The Python example runs end to end (on a few training images)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_train_larq_mnist_example(tmp_path):
    script = os.path.join(ROOT, "examples", "python", "train_larq_mnist.py")
    out = subprocess.run([sys.executable, script, "--train-images", "1280", "--test-images", "2000", "--out",
                          str(tmp_path)], check=True, capture_output=True, text=True,
                         env=dict(os.environ)).stdout
    assert "larq-mnist stats" in out
    assert os.path.exists(tmp_path / "model.obnn")
    same = re.search(r"same class as PyTorch on ([\d,]+) / 2,000 images", out)
    assert same and same.group(1) == "2,000", out
