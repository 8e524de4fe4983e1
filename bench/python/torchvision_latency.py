"""Float baselines a user would pick instead of a BNN: torchvision's ResNet-18 and MobileNet-V2
in plain PyTorch at 3x224x224, batch 1, eval mode under torch.inference_mode(), random weights;
the median of at least 2 s of timed runs after 3 warm-ups, at 1, 2 and 4 threads. Prints one
JSON line. Needs torch and torchvision (not Debian's python3-torch, which has no torchvision).

    python3 bench/python/torchvision_latency.py
"""
import json
import statistics
import time

import torch
import torchvision

res = {"torch": torch.__version__}
for name in ["resnet18", "mobilenet_v2"]:
    m = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, 224, 224)
    for t in [1, 2, 4]:
        torch.set_num_threads(t)
        with torch.inference_mode():
            for _ in range(3): m(x)
            ts = []
            start = time.perf_counter()
            while time.perf_counter() - start < 2.0 or len(ts) < 5:
                t0 = time.perf_counter(); m(x); ts.append(time.perf_counter() - t0)
        res[f"{name}_ms_threads{t}"] = 1e3 * statistics.median(ts)
print(json.dumps(res))
