#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/setup.sh), builds, runs every test.
# Usage: scripts/test.sh [ctest args...]   e.g. scripts/test.sh -L unit   or   -L e2e
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
cmake -S "$repo" -B "$repo/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$repo/build"
cd "$repo/build"
ctest --output-on-failure --timeout 600 -j2 "$@"
