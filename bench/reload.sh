#!/usr/bin/env bash
# Zero downtime, measured beside PM2 in one run: the same app, the same load, the same number of
# reloads, under PM2 cluster mode (`pm2 reload`) and under the agent (`agent reload`).
#
#   bench/reload.sh [naive|drains] [ROUNDS=3]
#
# naive:  tests/e2e/apps/naive/server.js, the seed-003 server: a plain listen, no signal
#         handling. The agent runs it with shim = "node"; PM2 runs it as it is.
# drains: examples/hello-node/app/server.js, an app that drains properly on SIGTERM (under
#         PM2 it listens on PORT, PM2's cluster module shares it).
# Load: wrk, 50 keep-alive connections, plus a second wrk with "Connection: close" (a new
# connection per request), during 10 reloads of 4 instances. Each round runs PM2, then the agent.
# Prints a table and appends it, with this command, to bench/RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
kind=${1:-naive}
rounds=${2:-3}
instances=4
reloads=10
"$here/setup.sh" >/dev/null
pm2="$here/.deps/node_modules/.bin/pm2"
agent="$repo/build/agent"
case "$kind" in
  naive) src="$repo/tests/e2e/apps/naive"; shim='shim = "node"' ;;
  drains) src="$repo/examples/hello-node/app"; shim='' ;;
  *) echo "usage: $0 [naive|drains] [rounds]" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/agent-bench.XXXXXX)
trap 'PM2_HOME=$work/pm2 "$pm2" kill >/dev/null 2>&1 || true; [ -n "${apid:-}" ] && kill $apid 2>/dev/null; rm -rf "$work"' EXIT
# Both peers run the same copy of the app, with a package.json of its own.
cp -r "$src" "$work/app"
[ -f "$work/app/package.json" ] || echo '{"name":"bench","version":"1.0.0"}' > "$work/app/package.json"
src="$work/app"
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port/"

wait_http() { for _ in $(seq 200); do curl -fs "$url" >/dev/null && return 0; sleep 0.05; done; echo "no answer on $url" >&2; return 1; }

# load_during CMD...: wrk keep-alive and wrk new-connection during CMD; prints "errors p99 requests" for both.
load_during() {
  wrk -t1 -c50 -d300s --latency "$url" > "$work/keep.out" 2>&1 & local k=$!
  wrk -t1 -c4 -d300s --latency -H "Connection: close" "$url" > "$work/fresh.out" 2>&1 & local f=$!
  sleep 2   # steady state first
  "$@"
  sleep 2   # and after
  kill -INT $k $f; wait $k $f || true
}

# "errors p99_ms requests" from a wrk output: socket errors of every kind plus non-2xx answers.
wrk_figures() {
  awk '
    /Socket errors/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
    /Non-2xx/ { e += $NF }
    /^ +99%/ { p = $2; if (p ~ /us$/) { sub(/us/, "", p); p /= 1000 } else if (p ~ /ms$/) { sub(/ms/, "", p) } else if (p ~ /s$/) { sub(/s/, "", p); p *= 1000 } }
    /requests in/ { r = $1 }
    END { printf "%d %.1f %d\n", e, p, r }' "$1"
}

run_pm2() {
  export PM2_HOME="$work/pm2"
  rm -rf "$work/pm2app" && cp -r "$src" "$work/pm2app"
  (cd "$work/pm2app" && PORT=$port "$pm2" start server.js -i $instances --name bench >/dev/null)
  wait_http
  load_during bash -c "for i in \$(seq $reloads); do '$pm2' reload bench >/dev/null 2>&1; sleep 0.5; done"
  "$pm2" kill >/dev/null 2>&1
  echo "pm2 $(wrk_figures "$work/keep.out") $(wrk_figures "$work/fresh.out")"
}

run_agent() {
  rm -rf "$work/agent" && mkdir -p "$work/agent"
  cat > "$work/agent/agent.toml" <<TOML
[agent]
state_dir = "$work/agent/state"
log_dir = "$work/agent/log"
control_socket = "$work/agent/agent.sock"
[[app]]
name = "bench"
source = "$src"
command = ["node", "server.js"]
instances = $instances
listen = ["127.0.0.1:$port"]
$shim
TOML
  "$agent" run -c "$work/agent/agent.toml" > "$work/agent/agent.log" 2>&1 & apid=$!
  wait_http
  for _ in $(seq 100); do "$agent" status -c "$work/agent/agent.toml" --json 2>/dev/null | grep -q '"operation": ""' && break; sleep 0.05; done
  load_during bash -c "for i in \$(seq $reloads); do '$agent' reload bench -c '$work/agent/agent.toml' >/dev/null; sleep 0.5; done"
  kill -TERM $apid; wait $apid || true; apid=""
  [ -n "${BENCH_VERBOSE:-}" ] && cat "$work/keep.out" "$work/fresh.out" >&2
  echo "agent $(wrk_figures "$work/keep.out") $(wrk_figures "$work/fresh.out")"
}

echo "app=$kind instances=$instances reloads=$reloads rounds=$rounds port=$port"
: > "$work/results"
for r in $(seq "$rounds"); do
  [ -n "${BENCH_AGENT_ONLY:-}" ] || run_pm2 | tee -a "$work/results"
  run_agent | tee -a "$work/results"
done

# Medians per peer. Columns: keep-alive errors, p99 ms, requests; new-connection errors, p99 ms, requests.
table=$(awk '
  { n[$1]++; for (i = 2; i <= 7; i++) v[$1, i, n[$1]] = $i }
  function median(peer, col,   k, a, m, j, t) {
    m = n[peer]; for (k = 1; k <= m; k++) a[k] = v[peer, col, k]
    for (k = 1; k <= m; k++) for (j = k + 1; j <= m; j++) if (a[j] + 0 < a[k] + 0) { t = a[k]; a[k] = a[j]; a[j] = t }
    return a[int((m + 1) / 2)]
  }
  END {
    print "| peer | keep-alive: failed | keep-alive: p99 ms | keep-alive: requests | new conn: failed | new conn: p99 ms | new conn: requests |"
    print "|---|---|---|---|---|---|---|"
    split("pm2 agent", order, " ")
    for (i = 1; i <= 2; i++) { p = order[i]; if (p in n) printf "| %s | %s | %s | %s | %s | %s | %s |\n", p, median(p,2), median(p,3), median(p,4), median(p,5), median(p,6), median(p,7) }
  }' "$work/results")
echo "$table"
{
  echo
  echo "### Zero downtime: $kind app, $instances instances, $reloads reloads ($(date -u +%Y-%m-%d))"
  echo
  echo "Command: \`bench/reload.sh $kind $rounds\` on $(nproc) cores ($(uname -m)), Node $(node --version), PM2 $("$pm2" --version 2>/dev/null | tail -1), agent $("$agent" --version | awk '{print $2}')."
  echo "Load: wrk -c50 keep-alive and wrk -c4 with Connection: close, 2 s before the first reload and 2 s after the last."
  echo "Medians of $rounds rounds; failed = socket errors (connect, read, write, timeout) plus non-2xx answers."
  echo
  echo "$table"
  echo
  echo "Every round (peer, then keep-alive failed, p99 ms, requests, then the same for new connections):"
  echo
  sed 's/^/    /' "$work/results"
} >> "$here/RESULTS.md"
