#!/usr/bin/env bash
# Sanitizer builds of the test suites (GCC):
#   asan-runtime  AddressSanitizer + UndefinedBehaviorSanitizer, runtime and data-format tests
#                 (no LibTorch; a few minutes; run by CI)
#   asan          the same for every suite, the LibTorch training library included (about
#                 25 minutes on 2 cores)
#   tsan          ThreadSanitizer, runtime tests (multi-threaded kernels and interpreters)
# Usage: scripts/sanitize.sh [MODE...]   (default: asan tsan). Build trees: build-asan*, build-tsan.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(asan tsan)
jobs=$(nproc 2>/dev/null || echo 2)
# The Python package is left out: its modules would be loaded by an uninstrumented python3.
common=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONEBIT_BUILD_BENCHMARKS=OFF -DONEBIT_BUILD_PYTHON=OFF)
asan_flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
# LibTorch is not instrumented: its allocations freed by instrumented code (and the reverse) look
# mismatched to ASan, and its own odr definitions repeat; neither is an error in onebit.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:alloc_dealloc_mismatch=0:detect_odr_violation=0:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
for mode in "${modes[@]}"; do
  case "$mode" in
    asan-runtime)
      build="$root/build-asan-runtime"
      cmake -S "$root" -B "$build" "${common[@]}" -DONEBIT_BUILD_TRAINING=OFF \
        -DCMAKE_CXX_FLAGS="$asan_flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
      ;;
    asan)
      build="$root/build-asan"
      cmake -S "$root" -B "$build" "${common[@]}" -DONEBIT_BUILD_TRAINING=ON \
        -DCMAKE_CXX_FLAGS="$asan_flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
        -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
      ;;
    tsan)
      build="$root/build-tsan"
      cmake -S "$root" -B "$build" "${common[@]}" -DONEBIT_BUILD_TRAINING=OFF \
        -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
      ;;
    *) echo "sanitize.sh: unknown mode \"$mode\" (known: asan-runtime, asan, tsan)" >&2; exit 2 ;;
  esac
  echo "== $mode: building in $build"
  cmake --build "$build" -j"$jobs"
  echo "== $mode: running the tests"
  ctest --test-dir "$build" --output-on-failure -j"$jobs"
done
