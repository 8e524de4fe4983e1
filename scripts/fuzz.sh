#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (address + undefined sanitizers), generates their seed
# corpora, and fuzzes each for a bounded time:
#   model       - the .obnn model loader and interpreter (fuzz/fuzz_model_loader.cpp)
#   data        - the data-file readers: gzip, IDX, CIFAR-10 (fuzz/fuzz_data_formats.cpp)
#   checkpoint  - checkpoints, optimizer state, weights-only and whole-model files
#                 (fuzz/fuzz_checkpoint.cpp; needs the LibTorch training library)
#   config      - training configs and architecture descriptions (fuzz/fuzz_config.cpp)
# The runtime targets build in build-fuzz/ (no LibTorch), the training ones in build-fuzz-train/.
# Usage: scripts/fuzz.sh [SECONDS [TARGET...]]   (default 60 seconds each, all targets).
# Exits non-zero on a finding (the crashing input is left in the build directory as crash-*).
set -euo pipefail
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(model data checkpoint config)
root="$(cd "$(dirname "$0")/.." && pwd)"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link"
configure() {  # build dir, ONEBIT_BUILD_TRAINING
  cmake -S "$root" -B "$1" -G Ninja \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DONEBIT_BUILD_TRAINING="$2" -DONEBIT_BUILD_TESTS=OFF -DONEBIT_BUILD_BENCHMARKS=OFF \
    -DONEBIT_BUILD_FUZZERS=ON -DONEBIT_BUILD_PYTHON=OFF -DCMAKE_CXX_FLAGS="$flags" >/dev/null
}
for t in "${targets[@]}"; do
  options=()
  case "$t" in
    model) build="$root/build-fuzz" training=OFF fuzzer=fuzz_model_loader corpus_tool=fuzz_make_corpus max_len=65536 ;;
    data) build="$root/build-fuzz" training=OFF fuzzer=fuzz_data_formats corpus_tool=fuzz_make_data_corpus max_len=32768 ;;
    checkpoint | config)
      build="$root/build-fuzz-train" training=ON fuzzer="fuzz_$t" corpus_tool=fuzz_make_training_corpus
      max_len=131072
      # LibTorch itself is not instrumented: its allocations freed by instrumented code look
      # mismatched to ASan, its odr definitions repeat, and its process-lifetime caches look
      # like leaks. None of these is an error in onebit.
      export ASAN_OPTIONS="detect_odr_violation=0:alloc_dealloc_mismatch=0:detect_leaks=0"
      options=(-detect_leaks=0)
      ;;
    *) echo "fuzz.sh: unknown target \"$t\" (known: model, data, checkpoint, config)" >&2; exit 2 ;;
  esac
  configure "$build" "$training"
  cmake --build "$build" -j2 --target "$fuzzer" "$corpus_tool"
  corpus="$build/corpus-$t"
  seeds="$build/seeds-$t"
  mkdir -p "$corpus" "$seeds"
  case "$t" in
    checkpoint) "$build/fuzz/$corpus_tool" "$seeds" "$build/seeds-config" ;;
    config) "$build/fuzz/$corpus_tool" "$build/seeds-checkpoint" "$seeds" ;;
    *) "$build/fuzz/$corpus_tool" "$seeds" ;;
  esac
  echo "== fuzzing $t ($fuzzer) for $seconds s"
  log="$build/fuzz-$t.log"
  if ! (cd "$build" && "$build/fuzz/$fuzzer" "$corpus" "$seeds" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" -print_final_stats=1 "${options[@]}" \
    >"$log" 2>&1); then
    tail -n 60 "$log"
    echo "fuzz.sh: $fuzzer found a problem (log: $log; input: $build/crash-*)" >&2
    exit 1
  fi
  grep -E "^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || tail -n 5 "$log"
done
