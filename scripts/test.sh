#!/usr/bin/env bash
# The test suite: set up, build, run every test with ctest, then install the library and build the
# consumer example against the installed CMake package, run the runtime and data-format tests
# under AddressSanitizer + UndefinedBehaviorSanitizer and under ThreadSanitizer, and fuzz the
# readers. `scripts/test.sh --sanitize` then also runs every suite under ASan/UBSan (LibTorch
# training library included, about 25 more minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize_all=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize_all=1 ;;
    *) echo "test.sh: unknown option \"$arg\" (known: --sanitize)" >&2; exit 2 ;;
  esac
done
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

echo "== runtime and data-format tests under ASan/UBSan, then under ThreadSanitizer"
scripts/sanitize.sh asan-runtime tsan

echo "== fuzzing the model loader and the data readers (60 s each, clang libFuzzer + ASan/UBSan)"
scripts/fuzz.sh 60 model data
echo "== fuzzing the checkpoint and config readers (30 s each; builds the training library with clang)"
scripts/fuzz.sh 30 checkpoint config

if [ "$sanitize_all" = 1 ]; then
  scripts/sanitize.sh asan
fi
