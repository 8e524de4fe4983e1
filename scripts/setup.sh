#!/usr/bin/env bash
# Installs what onebit needs from Debian's archive, only what is missing. Idempotent; uses sudo
# when not root. Usage: scripts/setup.sh
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread   # LibTorch 1.13 (CPU); OpenBLAS makes its matmuls ~10x faster
  libopenblas-dev                     # cblas.h: the benchmark of onebit's float kernels vs OpenBLAS
  libgloo-dev                         # Gloo's headers, for LibTorch's c10d data-parallel training
  nlohmann-json3-dev libcli11-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  chromium                            # headless browser of the HTML report test
  clang libclang-rt-14-dev            # libFuzzer for the model-loader fuzz target
  dataset-fashion-mnist               # /usr/share/datasets/fashion-mnist
  python3-torch python3-numpy         # the Python package (python/): PyTorch 1.13 as libtorch-dev
  python3-pytest pybind11-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages are installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
