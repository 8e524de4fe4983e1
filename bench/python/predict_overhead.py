#!/usr/bin/python3
"""What calling the runtime from Python costs: `Model.predict` at batch 1 timed from Python,
against the same Interpreter::run timed from C++ (same process, model, input and threads).

    /usr/bin/python3 bench/python/predict_overhead.py [model.obnn] [--calls 20000] [--threads 1]

Without a model file it converts larq-mnist with fresh weights (timing does not depend on the
weights). Prints the medians and their difference, the Python overhead per call.
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import onebit
import onebit.runtime


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?")
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of each")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    path = a.model
    if path is None:
        import torch
        torch.manual_seed(0)
        path = os.path.join(tempfile.mkdtemp(), "larq-mnist.obnn")
        onebit.convert(onebit.zoo.build("larq-mnist"), (1, 28, 28), path)
    m = onebit.runtime.Model(path, threads=a.threads)
    x = np.random.default_rng(0).uniform(-1, 1, (1, *m.input_shape)).astype(np.float32)

    clock = time.perf_counter_ns
    py, cpp = [], []
    for _ in range(a.rounds):  # alternate, so that both see the same machine load
        for _ in range(100):
            m.predict(x)
        for _ in range(a.calls // a.rounds):
            t0 = clock()
            m.predict(x)
            py.append(clock() - t0)
        cpp.extend(s * 1e9 for s in m._time_runs(x, a.calls // a.rounds))
    py_us, cpp_us = statistics.median(py) / 1e3, statistics.median(cpp) / 1e3
    print(f"model {path}, batch 1, threads {a.threads}, {len(py)} calls each")
    print(f"C++ Interpreter::run      median {cpp_us:8.2f} us")
    print(f"Python Model.predict      median {py_us:8.2f} us")
    print(f"Python overhead per call         {py_us - cpp_us:8.2f} us")


if __name__ == "__main__":
    main()
