#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, preset "fuzz") and runs each for a bounded time on a
# scratch copy of its corpus. A crash fails the run and names the input: copy that file into
# tests/fuzz/corpus/TARGET/ so that it replays as a regression test in every test run.
# Usage: tests/fuzz/run_fuzzers.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
targets=$(ls tests/fuzz/corpus)
cmake --preset fuzz >/dev/null
for t in $targets; do cmake --build --preset fuzz --target "fuzz_$t" >/dev/null; done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for t in $targets; do
  mkdir -p "$work/$t" "$work/artifacts-$t"
  cp tests/fuzz/corpus/"$t"/* "$work/$t/"
  echo "== fuzz_$t for ${seconds}s"
  if ! timeout $((seconds + 120)) "build/fuzz/tests/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/artifacts-$t/" "$work/$t" >"$work/$t.log" 2>&1; then
    status=1
    tail -n 40 "$work/$t.log"
    for a in "$work/artifacts-$t"/*; do
      [ -f "$a" ] || continue
      echo "fuzz_$t found a failing input ($(basename "$a")), base64:"
      base64 "$a"
    done
  else
    grep -E '^Done [0-9]+ runs' "$work/$t.log" || tail -n 2 "$work/$t.log"
  fi
done
exit $status
