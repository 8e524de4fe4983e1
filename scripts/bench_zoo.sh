#!/usr/bin/env bash
# Times every published zoo model end to end at batch 1 (onebit bench --model NAME --json) and
# prints the README's Markdown table: onebit runtime latency for 1 and 2 threads, LibTorch
# running the same BNN and its float copy in the same process, load time and memory.
# Usage: scripts/bench_zoo.sh [extra onebit bench options]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
tool=build/tools/onebit
models=$("$tool" models --json | python3 -c 'import json,sys; print(" ".join(m["name"] for m in json.load(sys.stdin) if m["num_classes"] == 1000))')
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernels: $("$tool" bench --model quicknet-small --no-baseline --thread-counts 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["isa"])')"
echo
echo "| model | onebit 1 thread | onebit 2 threads | LibTorch BNN 1 thread | LibTorch float copy 1 thread | speedup vs float | load | activations | file |"
echo "|---|---|---|---|---|---|---|---|---|"
for m in $models; do
  "$tool" bench --model "$m" --json "$@" | python3 -c '
import json, sys
j = json.load(sys.stdin)
t = {r["threads"]: r for r in j["latency_batch1"]}
one, two = t.get(1), t.get(2)
print("| `%s` | %.2f ms | %s | %.1f ms | %.1f ms | %.1fx | %.0f ms | %.1f MiB | %.1f MiB |" % (
    j["model"], one["runtime_ms"], ("%.2f ms" % two["runtime_ms"]) if two else "-",
    one["torch_bnn_ms"], one["torch_float_ms"], one["speedup_vs_torch_float"], j["load_ms"],
    j["activation_bytes"] / 2**20, j["file_bytes"] / 2**20))'
done
