#!/usr/bin/env bash
# The main job: set up, build, train larq-mnist on Fashion-MNIST (test accuracy and where the model
# was saved), convert it to a bit-packed runtime model, and run that on the 10,000 test images,
# checking every prediction against LibTorch. Extra options go to `onebit train` (e.g. --epochs 1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
out=runs/larq-mnist
tool=build/tools/onebit
echo "== training larq-mnist on Fashion-MNIST (output in $out)"
"$tool" train --model larq-mnist --dataset fashion-mnist --epochs 6 --batch-size 64 \
  --lr 1e-3 --seed 42 --out "$out" "$@"
echo "== converting to the runtime format"
"$tool" convert --checkpoint "$out" --out "$out/model.obnn"
echo "== running the runtime model on the test set (agreement = same class as LibTorch)"
"$tool" infer --model "$out/model.obnn" --dataset fashion-mnist --checkpoint "$out" --threads 1
echo "model saved to: $out/checkpoint.pt (training) and $out/model.obnn (runtime)"
