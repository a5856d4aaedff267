# Shared by the bench scripts (sourced, not run): where things are, a scratch directory that is
# cleaned up with whatever PM2 or agent it started, and the few measurements every script takes.
# shellcheck shell=bash
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
pm2="$here/.deps/node_modules/.bin/pm2"
agent="$repo/build/agent"
hello="$repo/examples/hello-node/app"   # drains on SIGTERM; under PM2 it listens on $PORT
apid=""
# Some machines set NODE_EXTRA_CA_CERTS globally; Node then parses the whole CA bundle at every
# start (about 45 ms here). PM2 hands its environment to its workers, the agent's allow-list
# does not: unset for every peer so the start times compare the managers, not this setting.
unset NODE_EXTRA_CA_CERTS
# PM2 reloads 2 processes at a time when there are more than 2 (PM2_CONCURRENT_ACTIONS); the
# agent's default max_surge is 1. One at a time for both, so a rollout compares like with like.
export PM2_CONCURRENT_ACTIONS=1

bench_init() {
  "$here/setup.sh" >/dev/null
  work=$(mktemp -d /tmp/agent-bench.XXXXXX)
  export PM2_HOME="$work/pm2"
  trap bench_cleanup EXIT
}

bench_cleanup() {
  "$pm2" kill >/dev/null 2>&1 || true
  [ -z "$apid" ] || { kill -TERM "$apid" 2>/dev/null; wait "$apid" 2>/dev/null || true; }
  rm -rf "$work"
}

# A port nobody listens on, below the kernel's ephemeral range (32768 and up here): the load
# clients' own outgoing connections, thousands of them in TIME_WAIT, use that range, and a port
# one of them holds cannot be bound for listening.
free_port() {
  local p
  while :; do
    p=$((12000 + RANDOM % 18000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# wait_http URL [SECONDS]: until URL answers 2xx, or fail.
wait_http() {
  local deadline=$((SECONDS + ${2:-30}))
  until curl -fs -o /dev/null "$1"; do
    ((SECONDS < deadline)) || {
      echo "bench: no answer on $1" >&2
      # Under PM2: what it thinks of its processes, and what they said.
      [ ! -d "$PM2_HOME" ] || { "$pm2" ls >&2 2>&1; tail -n 20 "$PM2_HOME"/logs/*error*.log >&2 2>/dev/null; }
      return 1
    }
    sleep 0.05
  done
}

# agent_config FILE then APP lines "name port instances source [extra toml...]": writes an agent
# config with one [[app]] per line, every app running `node server.js` from its source.
agent_config() {
  local file=$1; shift
  local dir; dir=$(dirname "$file")
  {
    printf '[agent]\nstate_dir = "%s/state"\nlog_dir = "%s/log"\ncontrol_socket = "%s/agent.sock"\n' "$dir" "$dir" "$dir"
    local line name port n src extra
    for line in "$@"; do
      read -r name port n src extra <<<"$line"
      printf '\n[[app]]\nname = "%s"\nsource = "%s"\ncommand = ["node", "server.js"]\ninstances = %s\nlisten = ["127.0.0.1:%s"]\n' \
        "$name" "$src" "$n" "$port"
      [ -z "$extra" ] || printf '%b\n' "$extra"
    done
  } >"$file"
}

# start_agent CONFIG: runs the daemon in the background (pid in $apid) and waits until every app
# is idle with all its workers ready.
start_agent() {
  "$agent" run -c "$1" >"$(dirname "$1")/agent.out" 2>&1 &
  apid=$!
  agent_wait_idle "$1" 120
}

# agent_wait_idle CONFIG [SECONDS]: until no app has an operation running or queued and every
# worker is ready.
# running PID: the process exists and is not a zombie (a daemon that died stays one until waited for).
running() { local st; st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }

agent_wait_idle() {
  local deadline=$((SECONDS + ${2:-60}))
  while :; do
    if [ -n "$apid" ] && ! running "$apid"; then
      echo "bench: the agent exited:" >&2; tail -5 "$(dirname "$1")/agent.out" >&2; return 1
    fi
    "$agent" status -c "$1" --json 2>/dev/null | /usr/bin/python3 2>/dev/null -c '
import json, sys
apps = json.load(sys.stdin)["apps"]
ok = all(a["operation"] == "" and a["queued"] == "" and len(a["workers"]) == a["instances"]
         and all(w["state"] == "ready" for w in a["workers"]) for a in apps)
sys.exit(0 if ok else 1)' && return 0
    ((SECONDS < deadline)) || { echo "bench: agent not idle after ${2:-60}s" >&2; tail -20 "$(dirname "$1")/agent.out" >&2; return 1; }
    sleep 0.05
  done
}

stop_agent() {
  [ -z "$apid" ] || { kill -TERM "$apid" 2>/dev/null || true; wait "$apid" || true; }
  apid=""
}

# The PM2 daemon ("God") pid, once PM2 runs.
pm2_pid() { cat "$PM2_HOME/pm2.pid"; }

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# wrk_summary FILE: "requests req_per_s p99_ms failed" of one wrk --latency output; failed =
# socket errors of every kind (connect, read, write, timeout) plus non-2xx answers.
wrk_summary() {
  awk '
    /Socket errors/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
    /Non-2xx/ { e += $NF }
    /^ +99%/ { p = $2; if (p ~ /us$/) { sub(/us/, "", p); p /= 1000 } else if (p ~ /ms$/) { sub(/ms/, "", p) } else if (p ~ /s$/) { sub(/s/, "", p); p *= 1000 } }
    /requests in/ { n = $1 }
    /^Requests\/sec/ { r = $2 }
    END { printf "%d %.0f %.1f %d\n", n, r, p, e }' "$1"
}

# median: of the numbers on stdin, one per line (the mean of the two middle ones for an even count).
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else if (NR) print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# ratio A B [DECIMALS=2]: A/B.
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b == 0) print "-"; else printf "%.*f\n", d, a / b }'; }

# row CMD...: runs CMD (a function of the script, in this shell, so the daemon it starts stays
# known to the cleanup), appends its one-line output to $work/results and prints it. A failed
# CMD ends the bench: a missing row would silently change the medians.
row() {
  "$@" >"$work/row" || { echo "bench: $* failed" >&2; exit 1; }
  cat "$work/row" >>"$work/results"
  cat "$work/row"
}

# wait_workers URL N: until N different workers (the "pid=" hello-node answers with) have
# answered, over new connections: PM2 says "online" when it has forked a worker, not when the
# worker listens, so this is how a PM2 run knows its workers serve.
wait_workers() {
  local deadline=$((SECONDS + 60)) seen=""
  while (($(wc -w <<<"$seen") < $2)); do
    ((SECONDS < deadline)) || { echo "bench: only $(wc -w <<<"$seen") of $2 workers answered on $1" >&2; return 1; }
    local pid; pid=$(curl -fs -H 'Connection: close' "$1" | grep -o 'pid=[0-9]*') || { sleep 0.05; continue; }
    grep -qw "$pid" <<<"$seen" || seen="$seen $pid"
  done
}

# pm2_start_app DIR PORT INSTANCES NAME [pm2 start options]: starts DIR/server.js under PM2
# cluster mode on PORT and waits until every worker answers. Now and then a PM2 start here
# leaves workers that never answer; what PM2 said is kept in /tmp/pm2-start-failure.*.log,
# the app deleted and started once more.
pm2_start_app() {
  local dir=$1 port=$2 n=$3 name=$4; shift 4
  local try
  for try in 1 2; do
    (cd "$dir" && PORT=$port "$pm2" start server.js -i "$n" --name "$name" "$@" >/dev/null) &&
      wait_workers "http://127.0.0.1:$port/" "$n" && return 0
    local keep; keep=$(mktemp /tmp/pm2-start-failure.XXXXXX.log)
    { "$pm2" ls; "$pm2" logs "$name" --nostream --lines 40; } >"$keep" 2>&1 || true
    echo "bench: PM2 start of $name (try $try) did not serve on $port; PM2's view in $keep" >&2
    "$pm2" delete "$name" >/dev/null 2>&1 || true
  done
  return 1
}

# The PM2 command line's own round trip (a Node start plus a call to its daemon): part of every
# PM2 timing below, printed so a reader can take it out.
pm2_ping_ms() {
  local t0; t0=$(now_ms)
  "$pm2" ping >/dev/null
  echo $(($(now_ms) - t0))
}

versions() {
  echo "$(nproc) cores ($(uname -m)), Node $(node --version), PM2 $("$pm2" --version 2>/dev/null | tail -1), agent $("$agent" --version | awk '{print $2}')"
}

# record TEXT: prints it and appends it to bench/RESULTS.md.
record() {
  echo "$1"
  printf '\n%s\n' "$1" >>"$here/RESULTS.md"
}
