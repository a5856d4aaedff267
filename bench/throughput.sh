#!/usr/bin/env bash
# Steady throughput: the same app (examples/hello-node/app), the same 4 instances, no reloads.
# PM2 cluster mode (its master accepts and hands connections round-robin to the workers), the
# same with --no-pmx (without the @pm2/io instrumentation PM2 loads into each worker, which
# separates what the socket model costs from what that costs), and the agent (every worker
# accepts on the one shared socket). Two loads, one after the other:
#   keep-alive       wrk -c50, connections kept open
#   new connections  wrk -c16 with "Connection: close", a connection per request
# Each DURATION seconds (default 10) after 2 s of warm-up. Medians of ROUNDS.
#   bench/throughput.sh [ROUNDS=3] [DURATION=10]
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
duration=${2:-10}
instances=4
bench_init
cp -r "$hello" "$work/app"

# "req/s p99_ms errors" of one wrk run.
load() {
  wrk -t1 "$@" -d2s "$url" >/dev/null 2>&1   # warm-up
  wrk -t1 "$@" -d"${duration}s" --latency "$url" >"$work/wrk.out" 2>&1 || { cat "$work/wrk.out" >&2; return 1; }
  wrk_summary "$work/wrk.out" | awk '{ print $2, $3, $4 }'
}
both_loads() {
  local k f
  k=$(load -c50) && f=$(load -c16 -H 'Connection: close') && echo "$k $f"
}

run_pm2() {  # NAME [pm2 start options]
  local name=$1; shift
  local port; port=$(free_port); url="http://127.0.0.1:$port/"
  pm2_start_app "$work/app" "$port" $instances bench "$@" || return 1
  local r; r=$(both_loads) || return 1
  "$pm2" kill >/dev/null 2>&1
  echo "$name $r"
}

run_agent() {
  local port; port=$(free_port); url="http://127.0.0.1:$port/"
  rm -rf "$work/agent" && mkdir -p "$work/agent"
  agent_config "$work/agent/agent.toml" "bench $port $instances $work/app"
  start_agent "$work/agent/agent.toml"
  local r; r=$(both_loads) || return 1
  stop_agent
  echo "agent $r"
}

echo "$instances instances, ${duration}s per load, $rounds rounds; per round: peer keep-alive req/s p99 errors, new-conn req/s p99 errors"
: >"$work/results"
for r in $(seq "$rounds"); do  # which peer goes first alternates
  if ((r % 2)); then row run_pm2 pm2; row run_pm2 pm2-nopmx --no-pmx; row run_agent
  else row run_agent; row run_pm2 pm2-nopmx --no-pmx; row run_pm2 pm2; fi
done

col() { awk -v p="$1" -v c="$2" '$1 == p { print $c }' "$work/results" | median; }
table=$(cat <<TXT
### Steady throughput: shared socket vs PM2 cluster mode, $instances instances ($(date -u +%F))

Command: \`bench/throughput.sh $rounds $duration\` on $(versions). Medians of $rounds rounds, ${duration} s per load
after 2 s of warm-up; wrk (one thread) shares the 2 cores with the workers, the same for both.

| peer | keep-alive (50 conns) req/s | p99 ms | errors | new conn per request (16 clients) req/s | p99 ms | errors |
|---|---|---|---|---|---|---|
| PM2 cluster (master round-robin) | $(col pm2 2) | $(col pm2 3) | $(col pm2 4) | $(col pm2 5) | $(col pm2 6) | $(col pm2 7) |
| PM2 cluster, \`--no-pmx\` | $(col pm2-nopmx 2) | $(col pm2-nopmx 3) | $(col pm2-nopmx 4) | $(col pm2-nopmx 5) | $(col pm2-nopmx 6) | $(col pm2-nopmx 7) |
| agent (shared accept queue) | $(col agent 2) | $(col agent 3) | $(col agent 4) | $(col agent 5) | $(col agent 6) | $(col agent 7) |

Agent / PM2: keep-alive **$(ratio "$(col agent 2)" "$(col pm2 2)")**, new connections **$(ratio "$(col agent 5)" "$(col pm2 5)")** (target: at least 1.00).
Agent / PM2 --no-pmx: keep-alive $(ratio "$(col agent 2)" "$(col pm2-nopmx 2)"), new connections $(ratio "$(col agent 5)" "$(col pm2-nopmx 5)").
With keep-alive, PM2's master only hands over the 50 connections, so that column compares the
workers (and what PM2 loads into them); new connections go through the master each time.

Every round:

$(sed 's/^/    /' "$work/results")
TXT
)
record "$table"
