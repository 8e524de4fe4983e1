"""Fashion-MNIST / MNIST from IDX gzip files (Debian's dataset-fashion-mnist package), as
float32 NumPy arrays scaled to [-1, 1] as onebit's C++ loader scales them (x / 127.5 - 1), so
that models trained in Python and in C++ see the same inputs."""

import gzip
import os

import numpy as np

__all__ = ["load_idx", "fashion_mnist"]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"


def load_idx(path):
    """The array stored in an IDX file (gzip or plain). Raises ValueError naming the file for a
    bad magic number or a size that does not match the header."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4]!r})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes), the file "
                         f"holds {len(data) - offset}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{directory}: no {stem}[.gz] (install dataset-fashion-mnist)")


def fashion_mnist(split="train", directory=DEFAULT_DIR):
    """(images float32 [N, 1, 28, 28] in [-1, 1], labels int64 [N]) of `split` ("train" or
    "test")."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = load_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = load_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    x = (images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).reshape(-1, 1, 28, 28)
    return x, labels.astype(np.int64)
