#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/setup.sh), then
#   1. builds with the default compiler in build/ and runs every test;
#   2. builds again with clang, AddressSanitizer and UndefinedBehaviorSanitizer in build-san/,
#      runs every test against that build, and runs each fuzz target (tests/fuzz/) for
#      FUZZ_SECONDS (default 20) over its corpus.
# Usage: scripts/test.sh [ctest args...]   e.g. scripts/test.sh -L unit   or   -L e2e
# SANITIZE=0 skips the second pass (a quicker run while working).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"

echo "== build/: $(c++ --version | head -1)"
cmake -S "$repo" -B "$repo/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$repo/build"
(cd "$repo/build" && ctest --output-on-failure --timeout 600 -j2 "$@")

[ "${SANITIZE:-1}" != 0 ] || exit 0
echo "== build-san/: clang, ASan + UBSan, fuzz targets"
CC=clang CXX=clang++ cmake -S "$repo" -B "$repo/build-san" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGENT_SANITIZE=ON >/dev/null
cmake --build "$repo/build-san"
# A sanitizer report fails the process it is in: the test that ran it fails with the report.
# Leaks are checked too (LeakSanitizer runs at exit).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$repo/build-san" && ctest --output-on-failure --timeout 900 -j2 "$@")
