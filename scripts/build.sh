#!/usr/bin/env bash
# Configures and builds onebit (Release) into build/. Extra arguments go to CMake's configure.
# When the Python package is built (build/python/onebit), puts build/python on the path of
# Debian's /usr/bin/python3 with a onebit.pth file, so that `python3 -c "import onebit"` works.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$jobs"

if [ -f build/python/onebit/__init__.py ]; then
  pkg_dir=$(cd build/python && pwd)
  site_dir=$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')
  if ! { mkdir -p "$site_dir" && [ -w "$site_dir" ]; } 2>/dev/null; then
    site_dir=$(/usr/bin/python3 -c 'import site; print(site.getusersitepackages())')
    mkdir -p "$site_dir"
  fi
  echo "$pkg_dir" > "$site_dir/onebit.pth"
  echo "build: /usr/bin/python3 imports onebit from $pkg_dir ($site_dir/onebit.pth)"
fi
