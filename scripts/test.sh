#!/usr/bin/env bash
# The test suite: set up, build, run every test with ctest, then install the library and build the
# consumer example against the installed CMake package.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
jobs=$(nproc 2>/dev/null || echo 2)
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== install + find_package(onebit) consumer example"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install build --prefix "$prefix" >/dev/null
cmake -S examples/consumer -B build/consumer -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build/consumer -j"$jobs"
build/consumer/onebit_consumer

echo "== fuzzing the model loader (60 s, clang libFuzzer + ASan/UBSan)"
scripts/fuzz.sh 60
