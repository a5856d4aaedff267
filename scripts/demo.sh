#!/usr/bin/env bash
# The first command of the README: installs what is needed, builds the agent, and runs it on the
# bundled example app (examples/hello-node), state under build/demo. It walks through a deploy
# and a rollback; run from a terminal, it then leaves the agent running until Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
cmake -S "$repo" -B "$repo/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$repo/build"
agent="$repo/build/agent"
demo="$repo/build/demo"
export AGENT_CONFIG
AGENT_CONFIG=$("$repo/scripts/render-example.sh" hello-node "$demo")
port=$(sed -n 's/^listen = \["127.0.0.1:\([0-9]*\)"\].*/\1/p' "$AGENT_CONFIG")

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; "$@"; }

step "$agent" check
step "$agent" env hello

printf '\n%sstarting the agent (log: %s)%s\n' "$bold" "$demo/agent.log" "$plain"
"$agent" run >"$demo/agent.log" 2>&1 &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; echo "agent stopped"; }
trap stop EXIT
for _ in $(seq 100); do  # up to 10 s for the first release to be staged and ready
  if "$agent" status --json 2>/dev/null | grep -q '"state": "ready"'; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$demo/agent.log"; exit 1; }
  sleep 0.1
done
step "$agent" status
step curl -s "http://127.0.0.1:$port/"

# A new version arrives: here a copy of the app with its version bumped.
next="$demo/hello-1.1.0"
rm -rf "$next" && cp -r "$repo/examples/hello-node/app" "$next"
sed -i 's/"version": "[^"]*"/"version": "1.1.0"/' "$next/package.json"
step "$agent" deploy hello --from "$next"
step curl -s "http://127.0.0.1:$port/"
step "$agent" releases
step "$agent" rollback 1
step curl -s "http://127.0.0.1:$port/"

cat <<TXT

${bold}Try it${plain} (the agent runs as pid $pid, with AGENT_CONFIG=$AGENT_CONFIG):
  $agent status                 # workers, releases, memory
  $agent reload hello           # a rolling restart: no request fails
  sed -i 's/"version": "1.0.0"/"version": "1.0.2"/' $repo/examples/hello-node/app/package.json
                                # the watch deploys it after 2 s of quiet (put it back after)
  $agent deploy hello --from DIR  # or stage any copy of the app by hand
  $agent rollback 1             # back to the previous release
  $agent logs hello -f
TXT
if [ -t 0 ] && [ -t 1 ] && [ -z "${CI:-}" ]; then
  echo "Ctrl-C here stops it (every worker drains first)."
  wait "$pid" || true
fi
