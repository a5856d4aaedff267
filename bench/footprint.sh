#!/usr/bin/env bash
# Footprint: the agent daemon beside the PM2 daemon ("God"), each running the same 2 apps x 8
# workers (examples/hello-node/app). Per peer and round:
#   idle: RSS and CPU time of the daemon over a 10 s window once every worker serves;
#   rollout: its CPU time, the wall time and its peak RSS (VmHWM) while both apps roll
#   (`pm2 reload all`: PM2 refuses a second `pm2 reload` while one runs; `agent reload a` and
#   `agent reload b` at once).
# Only the daemon is counted, never the workers or the CLI process that asks. The agent runs
# twice: as configured here (both apps from a directory, no alerts), and with app a taking git
# pushes, which loads libgit2 into the daemon (it is opened on first use, not linked).
#   bench/footprint.sh [ROUNDS=3]
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
instances=8
window=10
bench_init
tick_ms=$((1000 / $(getconf CLK_TCK)))
cp -r "$hello" "$work/a" && cp -r "$hello" "$work/b"

# measure PID CMD...: "idle_rss_kB idle_cpu_ms rollout_cpu_ms rollout_ms peak_rss_kB".
measure() {
  local pid=$1; shift
  local c0 c1 t0 t1 idle_cpu
  c0=$(cpu_ticks "$pid")
  sleep "$window"   # the idle window itself: nothing to wait for
  c1=$(cpu_ticks "$pid")
  idle_cpu=$(((c1 - c0) * tick_ms))
  local rss; rss=$(rss_kb "$pid")
  c0=$(cpu_ticks "$pid"); t0=$(now_ms)
  "$@" >/dev/null
  t1=$(now_ms); c1=$(cpu_ticks "$pid")
  echo "$rss $idle_cpu $(((c1 - c0) * tick_ms)) $((t1 - t0)) $(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")"
}

run_pm2() {
  local pa pb; pa=$(free_port); pb=$(free_port)
  pm2_start_app "$work/a" "$pa" $instances a || return 1
  pm2_start_app "$work/b" "$pb" $instances b || return 1
  local m; m=$(measure "$(pm2_pid)" "$pm2" reload all) || return 1
  pm2_ping_ms >>"$work/ping"
  "$pm2" kill >/dev/null 2>&1
  echo "pm2 $m"
}

reload_both() {
  "$agent" reload a -c "$1" & local p1=$!
  "$agent" reload b -c "$1" & local p2=$!
  wait $p1 && wait $p2
}

run_agent() {  # [git]
  rm -rf "$work/agent" && mkdir -p "$work/agent"
  local cfg="$work/agent/agent.toml" name=agent git=""
  [ -z "${1:-}" ] || { name=agent+git; git="git = \"$work/agent/a.git\""; }
  agent_config "$cfg" "a $(free_port) $instances $work/a $git" "b $(free_port) $instances $work/b"
  start_agent "$cfg"
  local m; m=$(measure "$apid" reload_both "$cfg") || return 1
  stop_agent
  echo "$name $m"
}

echo "2 apps x $instances workers, $rounds rounds; per round: peer idle_rss_kB idle_cpu_ms rollout_cpu_ms rollout_ms peak_rss_kB"
: >"$work/results"
for r in $(seq "$rounds"); do
  if ((r % 2)); then row run_pm2; row run_agent; else row run_agent; row run_pm2; fi
  row run_agent git
done

col() { awk -v p="$1" -v c="$2" '$1 == p { print $c }' "$work/results" | median; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
line() {  # PEER LABEL
  echo "| $2 | $(mib "$(col "$1" 2)") | $(col "$1" 3) | $(col "$1" 4) | $(awk -v m="$(col "$1" 5)" 'BEGIN { printf "%.2f", m / 1000 }') | $(mib "$(col "$1" 6)") |"
}
p_rss=$(col pm2 2) a_rss=$(col agent 2)
table=$(cat <<TXT
### Footprint: 2 apps x $instances workers, the daemon alone ($(date -u +%F))

Command: \`bench/footprint.sh $rounds\` on $(versions). Medians of $rounds rounds (peers alternate
which runs first). Idle: RSS at the end of a ${window} s window once all $((2 * instances)) workers
serve, and the daemon's CPU time in it. Rollout: both apps reloaded (PM2: \`pm2 reload all\`, one
worker at a time; the agent: both apps at once, one worker at a time each); CPU time of the
daemon over it (clock ticks of ${tick_ms} ms), its wall time including the CLI's start
(\`pm2 ping\` takes $(median <"$work/ping") ms); peak = VmHWM over the daemon's life.

| daemon | idle RSS MiB | idle CPU ms / ${window} s | rollout CPU ms | rollout s | peak RSS MiB |
|---|---|---|---|---|---|
$(line pm2 "PM2 (God daemon)")
$(line agent "agent")
$(line agent+git "agent, app a taking git pushes (libgit2 loaded)")

Agent idle RSS / PM2 idle RSS: **$(ratio "$a_rss" "$p_rss" 3)** (target: at most 0.100); with libgit2 loaded: $(ratio "$(col agent+git 2)" "$p_rss" 3).
libcurl (alerts) is opened the same way, when the first alert goes out.

Every round (peer, idle RSS KiB, idle CPU ms, rollout CPU ms, rollout ms, peak RSS KiB):

$(sed 's/^/    /' "$work/results")
TXT
)
record "$table"
