#!/usr/bin/env bash
# Builds the model-loader fuzzer with clang (address + undefined sanitizers, libFuzzer) in
# build-fuzz/, generates a seed corpus of valid models, and fuzzes for a bounded time.
# Usage: scripts/fuzz.sh [SECONDS]   (default 60). Exits non-zero on a finding.
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz"
cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DONEBIT_BUILD_TRAINING=OFF -DONEBIT_BUILD_TESTS=OFF -DONEBIT_BUILD_BENCHMARKS=OFF \
  -DONEBIT_BUILD_FUZZERS=ON \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link"
cmake --build "$build" -j2 --target fuzz_model_loader fuzz_make_corpus
corpus="$build/corpus"
seeds="$build/seeds"
mkdir -p "$corpus" "$seeds"
"$build/fuzz/fuzz_make_corpus" "$seeds"
cd "$build"
exec "$build/fuzz/fuzz_model_loader" "$corpus" "$seeds" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
