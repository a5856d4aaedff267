#!/usr/bin/env bash
# The first command of the README: installs what is needed, builds the agent, and runs it on
# the bundled example app (examples/hello-node) with all state under build/demo.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
cmake -S "$repo" -B "$repo/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$repo/build"
agent="$repo/build/agent"
cfg=$("$repo/scripts/render-example.sh" hello-node "$repo/build/demo")

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }
step agent check -c "$cfg"
"$agent" check -c "$cfg"
step agent env hello -c "$cfg"
"$agent" env hello -c "$cfg"
step agent releases hello -c "$cfg"
"$agent" releases hello -c "$cfg"
cat <<TXT

The config is $cfg; the state goes under $repo/build/demo.
Try:  export AGENT_CONFIG=$cfg
      $agent env hello --json
TXT
