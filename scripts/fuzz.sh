#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (address + undefined sanitizers) in build-fuzz/,
# generates their seed corpora, and fuzzes each for a bounded time:
#   model  - the .obnn model loader and interpreter (fuzz/fuzz_model_loader.cpp)
#   data   - the data-file readers: gzip, IDX, CIFAR-10 (fuzz/fuzz_data_formats.cpp)
# Usage: scripts/fuzz.sh [SECONDS [TARGET...]]   (default 60 seconds each, all targets).
# Exits non-zero on a finding (the crashing input is left in build-fuzz/ as crash-*).
set -euo pipefail
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(model data)
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz"
cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DONEBIT_BUILD_TRAINING=OFF -DONEBIT_BUILD_TESTS=OFF -DONEBIT_BUILD_BENCHMARKS=OFF \
  -DONEBIT_BUILD_FUZZERS=ON \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link" \
  >/dev/null
for t in "${targets[@]}"; do
  case "$t" in
    model) fuzzer=fuzz_model_loader corpus_tool=fuzz_make_corpus max_len=65536 ;;
    data) fuzzer=fuzz_data_formats corpus_tool=fuzz_make_data_corpus max_len=32768 ;;
    *) echo "fuzz.sh: unknown target \"$t\" (known: model, data)" >&2; exit 2 ;;
  esac
  cmake --build "$build" -j2 --target "$fuzzer" "$corpus_tool"
  corpus="$build/corpus-$t"
  seeds="$build/seeds-$t"
  mkdir -p "$corpus" "$seeds"
  "$build/fuzz/$corpus_tool" "$seeds"
  echo "== fuzzing $t ($fuzzer) for $seconds s"
  log="$build/fuzz-$t.log"
  if ! (cd "$build" && "$build/fuzz/$fuzzer" "$corpus" "$seeds" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1); then
    tail -n 60 "$log"
    echo "fuzz.sh: $fuzzer found a problem (log: $log; input: $build/crash-*)" >&2
    exit 1
  fi
  grep -E "^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || tail -n 5 "$log"
done
