#!/usr/bin/env bash
# The main job: set up, build, train larq-mnist on Fashion-MNIST, report the test accuracy and
# where the model was saved. Options are passed to `onebit train` (e.g. --epochs 1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
out=runs/larq-mnist
echo "== training larq-mnist on Fashion-MNIST (output in $out)"
build/tools/onebit train --model larq-mnist --dataset fashion-mnist --epochs 6 --batch-size 64 \
  --lr 1e-3 --seed 42 --out "$out" "$@"
