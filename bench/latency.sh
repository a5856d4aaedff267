#!/usr/bin/env bash
# Deploy latency: from the moment the version marker (package.json) changes to the moment every
# worker answers with the new version, seen by a client asking over new connections
# (bench/poll_version.py), 4 instances of examples/hello-node/app:
#   pm2 --watch          PM2's closest offer: it restarts the app when a file in it changes
#   agent                the watch with its default settle (2 s of quiet before it deploys)
#   agent, settle 100ms  the same with the quiet time cut down, to show the agent's own part
# Then the agent's overhead per batch beyond the app's own start time: `agent reload` of 4
# workers one at a time (4 batches), against the app started by hand the same way the agent
# starts it (spawn to its ready line, median of 5). `pm2 reload` of the same 4 (one at a time,
# PM2_CONCURRENT_ACTIONS=1) is timed beside it.
#   bench/latency.sh [ROUNDS=3]
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
instances=4
bench_init

fresh_app() { rm -rf "$1" && cp -r "$hello" "$1"; }
new_version() { echo "printf '{\"name\":\"hello-node\",\"version\":\"2.0.0\"}\\n' > '$1/package.json'"; }
pm2_pids() { "$pm2" jlist | /usr/bin/python3 -c 'import json,sys; print(",".join(str(p["pid"]) for p in json.load(sys.stdin)))'; }
agent_pids() { "$agent" status -c "$1" --json | /usr/bin/python3 -c 'import json,sys; print(",".join(str(w["pid"]) for a in json.load(sys.stdin)["apps"] for w in a["workers"]))'; }

run_pm2_watch() {
  local port; port=$(free_port)
  fresh_app "$work/pm2app"
  pm2_start_app "$work/pm2app" "$port" $instances bench --watch || return 1
  sleep 1  # PM2 arms its watcher after the start returns; nothing to wait on from outside
  local r; r=$(/usr/bin/python3 "$here/poll_version.py" "http://127.0.0.1:$port/" "hello from 1.0.0 " "$(new_version "$work/pm2app")" "$(pm2_pids)") || return 1
  "$pm2" kill >/dev/null 2>&1
  echo "pm2-watch $r"
}

run_agent_watch() {  # NAME SETTLE
  local port; port=$(free_port)
  fresh_app "$work/src"
  rm -rf "$work/agent" && mkdir -p "$work/agent"
  agent_config "$work/agent/agent.toml" "bench $port $instances $work/src settle = \"$2\""
  start_agent "$work/agent/agent.toml"
  local r; r=$(/usr/bin/python3 "$here/poll_version.py" "http://127.0.0.1:$port/" "hello from 1.0.0 " "$(new_version "$work/src")" "$(agent_pids "$work/agent/agent.toml")") || return 1
  stop_agent
  echo "$1 $r"
}

# The app's own start time, in ms: spawned by hand with a READY_FD pipe, as the agent spawns
# it, to the ready line it writes once it listens (on a port of its own here).
app_start_ms() {
  (cd "$hello" && PORT=$(free_port) /usr/bin/python3 -c '
import os, subprocess, time
r, w = os.pipe()
t0 = time.monotonic()
p = subprocess.Popen(["node", "server.js"], pass_fds=[w], env=dict(os.environ, READY_FD=str(w)))
os.close(w)
os.read(r, 1)
print(round((time.monotonic() - t0) * 1000))
p.terminate(); p.wait()')
}
app_start() { echo "app-start $(for _ in 1 2 3 4 5; do app_start_ms; done | median)"; }

# "agent-reload <total ms> <median 'ready in' ms>"; the agent logs "ready in 38ms" or "1.2s".
agent_reload() {
  local port; port=$(free_port)
  fresh_app "$work/src"
  rm -rf "$work/agent" && mkdir -p "$work/agent"
  agent_config "$work/agent/agent.toml" "bench $port $instances $work/src"
  start_agent "$work/agent/agent.toml"
  local t0 t1 out
  t0=$(now_ms); out=$("$agent" reload bench -c "$work/agent/agent.toml") || return 1; t1=$(now_ms)
  stop_agent
  local ready; ready=$(grep -oE 'ready in [0-9.]+(ms|s)' <<<"$out" | awk '{ v = $3; if (v ~ /ms$/) { sub(/ms/, "", v) } else { sub(/s/, "", v); v *= 1000 } print v }' | median)
  echo "agent-reload $((t1 - t0)) $ready"
}

# "pm2-reload <total ms> <pm2 ping ms>"
pm2_reload() {
  local port; port=$(free_port)
  fresh_app "$work/pm2app"
  pm2_start_app "$work/pm2app" "$port" $instances bench || return 1
  local t0 t1
  t0=$(now_ms); "$pm2" reload bench >/dev/null || return 1; t1=$(now_ms)
  local ping; ping=$(pm2_ping_ms)
  "$pm2" kill >/dev/null 2>&1
  echo "pm2-reload $((t1 - t0)) $ping"
}

echo "$instances instances, $rounds rounds"
: >"$work/results"
for _ in $(seq "$rounds"); do
  row run_pm2_watch
  row run_agent_watch agent 2s
  row run_agent_watch agent-settle-100ms 100ms
  row agent_reload
  row pm2_reload
  row app_start
done

col() { awk -v p="$1" -v c="$2" '$1 == p { print $c }' "$work/results" | median; }
start=$(col app-start 2)
a_total=$(col agent-reload 2)
per_batch=$(awk -v t="$a_total" -v n=$instances 'BEGIN { printf "%.0f", t / n }')
p_per=$(awk -v t="$(col pm2-reload 2)" -v n=$instances 'BEGIN { printf "%.0f", t / n }')
latency_row() { echo "| $2 | $(col "$1" 2) | $(col "$1" 3) | $(col "$1" 4) | $(col "$1" 5) |"; }
table=$(cat <<TXT
### Deploy latency: marker change to every worker on the new version, $instances instances ($(date -u +%F))

Command: \`bench/latency.sh $rounds\` on $(versions). Medians of $rounds rounds.
The client asks over a new connection per request. "All answers new": the first answer after
the last one from the old version (and none from it for 2 s after); "old workers gone": the
last old worker process exited. "Failed": requests of that tight loop refused, reset or not 200.

| peer | all answers new, ms | first new answer, ms | old workers gone, ms | failed requests |
|---|---|---|---|---|
$(latency_row pm2-watch "PM2 --watch (restarts on any change in the app dir)")
$(latency_row agent "agent, watch on package.json, settle 2 s (default)")
$(latency_row agent-settle-100ms "agent, settle 100 ms")

The agent waits \`settle\` on purpose (an RPM install writes the tree over seconds); then it
stages a copy, and rolls one worker at a time. PM2 restarts the running directory in place.

Per batch (one worker, \`max_surge = 1\`), against the app's own start time:

| | ms |
|---|---|
| the app's own start (\`node server.js\` spawned by hand with a READY_FD pipe, to its ready line) | $start |
| agent reload of $instances workers, total (the CLI's round trip included) | $a_total |
| agent, per batch | $per_batch |
| agent, median "ready in" per worker (spawn to the ready line, as the agent logs it) | $(col agent-reload 3) |
| **agent overhead per batch beyond the app's start** | **$(awk -v a="$per_batch" -v b="$start" 'BEGIN { printf "%.0f", a - b }')** (target: within 100) |
| PM2 reload of $instances workers, per worker (its CLI's round trip, \`pm2 ping\`: $(col pm2-reload 3) ms, included) | $p_per |

Every round:

$(sed 's/^/    /' "$work/results")
TXT
)
record "$table"
