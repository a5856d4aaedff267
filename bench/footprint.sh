#!/usr/bin/env bash
# Footprint: the agent daemon beside the PM2 daemon ("God"), each running the same 2 apps x 8
# workers (examples/hello-node/app). Per peer and round:
#   idle RSS and CPU of the daemon over a 10 s window once every worker is up;
#   its CPU, wall time and peak RSS (VmHWM) while both apps roll at once (`pm2 reload all`: PM2
#   refuses a second `pm2 reload` while one runs; `agent reload a` and `agent reload b` in
#   parallel).
# Only the daemon is counted, never the workers or the CLI process that asks. The agent runs
# twice: as configured here (both apps from a directory, no alerts), and with app a taking git
# pushes, which loads libgit2 into the daemon (it is opened on first use, not linked).
#   bench/footprint.sh [ROUNDS=3]
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
instances=8
window=10
bench_init
hz=$(getconf CLK_TCK)
cp -r "$hello" "$work/a" && cp -r "$hello" "$work/b"

# idle_and_rollout PID CMD...: prints "idle_rss_kb idle_cpu_% rollout_cpu_% rollout_ms peak_rss_kb".
idle_and_rollout() {
  local pid=$1; shift
  local c0 c1 t0 t1 rss
  rss=$(rss_kb "$pid"); c0=$(cpu_ticks "$pid")
  sleep "$window"   # the idle window itself: nothing to wait for
  c1=$(cpu_ticks "$pid")
  local idle_cpu; idle_cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v w="$window" 'BEGIN { printf "%.2f", 100 * d / hz / w }')
  c0=$(cpu_ticks "$pid"); t0=$(now_ms)
  "$@" >/dev/null
  t1=$(now_ms); c1=$(cpu_ticks "$pid")
  local roll_cpu; roll_cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", 100 * d / hz / (ms / 1000) }')
  echo "$rss $idle_cpu $roll_cpu $((t1 - t0)) $(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")"
}

pm2_all_online() {
  local deadline=$((SECONDS + 120))
  until [ "$("$pm2" jlist 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print(sum(p["pm2_env"]["status"] == "online" for p in json.load(sys.stdin)))')" = "$1" ]; do
    ((SECONDS < deadline)) || { echo "bench: PM2 never had $1 workers online" >&2; return 1; }
    sleep 0.2
  done
}

run_pm2() {
  local pa pb; pa=$(free_port); pb=$(free_port)
  (cd "$work/a" && PORT=$pa "$pm2" start server.js -i $instances --name a >/dev/null)
  (cd "$work/b" && PORT=$pb "$pm2" start server.js -i $instances --name b >/dev/null)
  pm2_all_online $((2 * instances)); wait_http "http://127.0.0.1:$pa/"; wait_http "http://127.0.0.1:$pb/"
  echo "pm2 $(idle_and_rollout "$(pm2_pid)" "$pm2" reload all)"
  "$pm2" kill >/dev/null 2>&1
}

run_agent() {  # [git]
  rm -rf "$work/agent" && mkdir -p "$work/agent"
  local cfg="$work/agent/agent.toml" name=agent git=""
  [ -z "${1:-}" ] || { name=agent+git; git="git = \"$work/agent/a.git\""; }
  agent_config "$cfg" "a $(free_port) $instances $work/a $git" "b $(free_port) $instances $work/b"
  start_agent "$cfg"
  echo "$name $(idle_and_rollout "$apid" bash -c "'$agent' reload a -c '$cfg' >/dev/null & '$agent' reload b -c '$cfg' >/dev/null & wait")"
  stop_agent
}

echo "2 apps x $instances workers, $rounds rounds; per round: peer idle_rss_kb idle_cpu% rollout_cpu% rollout_ms peak_rss_kb"
: >"$work/results"
for _ in $(seq "$rounds"); do
  run_pm2 | tee -a "$work/results"
  run_agent | tee -a "$work/results"
  run_agent git | tee -a "$work/results"
done

col() { awk -v p="$1" -v c="$2" '$1 == p { print $c }' "$work/results" | median; }
p_rss=$(col pm2 2) a_rss=$(col agent 2)
table=$(cat <<TXT
### Footprint: 2 apps x $instances workers, the daemon alone ($(date -u +%F))

Command: \`bench/footprint.sh $rounds\` on $(versions). Medians of $rounds rounds.
Idle: RSS, and CPU over a ${window} s window once all $((2 * instances)) workers are up. Rollout: both apps
reloaded at once (PM2: \`pm2 reload all\`); CPU of the daemon over the rollout's wall time; peak = VmHWM over the daemon's life.

| daemon | idle RSS MiB | idle CPU % | rollout CPU % | rollout s | peak RSS MiB |
|---|---|---|---|---|---|
| PM2 (God daemon) | $(awk -v k="$p_rss" 'BEGIN { printf "%.1f", k / 1024 }') | $(col pm2 3) | $(col pm2 4) | $(awk -v m="$(col pm2 5)" 'BEGIN { printf "%.2f", m / 1000 }') | $(awk -v k="$(col pm2 6)" 'BEGIN { printf "%.1f", k / 1024 }') |
| agent | $(awk -v k="$a_rss" 'BEGIN { printf "%.1f", k / 1024 }') | $(col agent 3) | $(col agent 4) | $(awk -v m="$(col agent 5)" 'BEGIN { printf "%.2f", m / 1000 }') | $(awk -v k="$(col agent 6)" 'BEGIN { printf "%.1f", k / 1024 }') |
| agent, app a taking git pushes (libgit2 loaded) | $(awk -v k="$(col agent+git 2)" 'BEGIN { printf "%.1f", k / 1024 }') | $(col agent+git 3) | $(col agent+git 4) | $(awk -v m="$(col agent+git 5)" 'BEGIN { printf "%.2f", m / 1000 }') | $(awk -v k="$(col agent+git 6)" 'BEGIN { printf "%.1f", k / 1024 }') |

Agent idle RSS / PM2 idle RSS: **$(ratio "$a_rss" "$p_rss")** (target: at most 0.10); with libgit2 loaded: $(ratio "$(col agent+git 2)" "$p_rss").
libcurl (alerts) is opened the same way, when the first alert goes out.

Every round (peer, idle RSS KiB, idle CPU %, rollout CPU %, rollout ms, peak RSS KiB):

$(sed 's/^/    /' "$work/results")
TXT
)
record "$table"
