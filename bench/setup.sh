#!/usr/bin/env bash
# What the benchmarks need beyond scripts/setup.sh: wrk from Debian, PM2 from npm into
# bench/.deps (a peer to measure against, never a dependency of the agent). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/../scripts/setup.sh"
# wrk for load, matplotlib for the plots (drawn with /usr/bin/python3, Debian's).
if ! command -v wrk >/dev/null || ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk python3-matplotlib
fi
if [ ! -x "$here/.deps/node_modules/.bin/pm2" ]; then
  npm install --prefix "$here/.deps" --no-audit --no-fund --loglevel=error pm2@7
fi
cmake -S "$here/.." -B "$here/../build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$here/../build" >/dev/null
