#!/bin/sh
# Runs the libFuzzer targets of tests/fuzz one after the other from their seed corpora, with the
# libFuzzer options given (CI: -runs=N; by hand: -max_total_time=SECONDS). New inputs go to a
# temporary directory, never into the checked-in corpus; a crash, leak, timeout or sanitizer report
# writes the input to $FUZZ_ARTIFACTS (default: the current directory) and ends with failure.
# Usage: tools/fuzz.sh BUILD_DIR [libFuzzer options...]   (BUILD_DIR configured with -DSOFTMOE_FUZZ=ON)
set -eu
build=$1
shift
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in model input config; do
    mkdir -p "$work/$target"
    log=$work/$target.log
    echo "fuzz_$target $*"
    if ! "$build/tests/fuzz/fuzz_$target" -dict="$src/tests/fuzz/softmoe.dict" -max_len=20000 -timeout=20 \
        -print_final_stats=1 -artifact_prefix="${FUZZ_ARTIFACTS:-./}fuzz_$target-" "$@" \
        "$work/$target" "$src/tests/fuzz/corpus/$target" > "$log" 2>&1; then
        grep -v '^#[0-9]*[[:space:]]*\(NEW\|REDUCE\|pulse\|RELOAD\)' "$log" | tail -80
        echo "fuzz_$target: FAILED (the input is in ${FUZZ_ARTIFACTS:-./}fuzz_$target-*)"
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log"
done
