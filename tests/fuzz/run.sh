#!/usr/bin/env bash
# Runs one libFuzzer target for a time budget over its corpus in tests/fuzz/corpus/<name>/.
# What it finds new stays in a scratch directory (the committed corpus is only read); a crash
# leaves its input in the scratch dir, named in the output, and fails the test.
#   run.sh FUZZER CORPUS_DIR [SECONDS=${FUZZ_SECONDS:-20}]
set -uo pipefail
fuzzer=$1 corpus=$2 seconds=${3:-${FUZZ_SECONDS:-20}}
scratch=$(mktemp -d /tmp/agent-fuzz.XXXXXX)
mkdir "$scratch/new"
cd "$scratch"
# -timeout: one input taking over 10 s is a hang, reported as a failure.
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$scratch/" "$scratch/new" "$corpus" >"$scratch/log" 2>&1
rc=$?
if [ "$rc" = 0 ]; then
  grep -E '^(stat::|#[0-9]+ +DONE)' "$scratch/log"
  rm -rf "$scratch"
else
  cat "$scratch/log"  # the whole sanitizer report
  echo "fuzz: $fuzzer failed (rc $rc); the input that did it and the log are in $scratch" >&2
fi
exit "$rc"
