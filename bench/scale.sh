#!/usr/bin/env bash
# Scale: how the rollout time and the daemon's memory grow
#   with workers: one app of 1, 4, 16, 64 instances;
#   with apps:    1, 4, 16 apps of 4 instances each;
# under the agent (`agent reload` of each app, all apps at once, one worker at a time each) and
# under PM2 (`pm2 reload all`, one worker at a time (PM2_CONCURRENT_ACTIONS=1): PM2 refuses a
# second `pm2 reload` while one runs, so its apps roll one after the other). The app is examples/hello-node/app. Memory is the daemon's RSS after
# the rollout (the workers are not counted). Medians of ROUNDS. Draws bench/scale.png.
#   bench/scale.sh [ROUNDS=3]
source "$(dirname "$0")/lib.sh"
rounds=${1:-3}
bench_init
cp -r "$hello" "$work/app"

# point APPS INSTANCES: prints "pm2 <apps> <instances> <rollout ms> <rss kB>" and the same for the agent.
point() {
  local apps=$1 n=$2 i ports=() lines=() t0 t1
  for i in $(seq "$apps"); do ports+=("$(free_port)"); done
  for i in $(seq "$apps"); do
    pm2_start_app "$work/app" "${ports[$((i - 1))]}" "$n" "app$i" || return 1
  done
  t0=$(now_ms)
  "$pm2" reload all >/dev/null || return 1  # PM2 refuses a second reload while one runs ("Reload already in progress")
  t1=$(now_ms)
  echo "pm2 $apps $n $((t1 - t0)) $(rss_kb "$(pm2_pid)")"
  pm2_ping_ms >>"$work/ping"
  "$pm2" kill >/dev/null 2>&1

  rm -rf "$work/agent" && mkdir -p "$work/agent"
  for i in $(seq "$apps"); do lines+=("app$i ${ports[$((i - 1))]} $n $work/app"); done
  agent_config "$work/agent/agent.toml" "${lines[@]}"
  start_agent "$work/agent/agent.toml"
  t0=$(now_ms)
  pids=()  # not a bare `wait`: the daemon is a child of this shell too
  for i in $(seq "$apps"); do "$agent" reload "app$i" -c "$work/agent/agent.toml" >/dev/null & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || return 1; done
  t1=$(now_ms)
  echo "agent $apps $n $((t1 - t0)) $(rss_kb "$apid")"
  stop_agent
}

: >"$work/results"
for _ in $(seq "$rounds"); do
  for n in 1 4 16 64; do row point 1 "$n"; done
  for a in 4 16; do row point "$a" 4; done
done

# Medians per (peer, apps, instances): "peer apps instances rollout_ms rss_kb".
awk '{ k = $1 " " $2 " " $3; print k, $4, $5 }' "$work/results" | sort -k1,1 -k2,2n -k3,3n | awk '
  { k = $1 " " $2 " " $3; if (k != last && last != "") flush(); last = k; n++; r[n] = $4; m[n] = $5 }
  function flush(   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) { if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t } if (m[j] < m[i]) { t = m[i]; m[i] = m[j]; m[j] = t } }
    print last, r[int((n + 1) / 2)], m[int((n + 1) / 2)]; n = 0
  }
  END { if (last != "") flush() }' >"$work/medians"

row() {  # APPS INSTANCES
  local p a
  p=$(awk -v a="$1" -v n="$2" '$1 == "pm2" && $2 == a && $3 == n' "$work/medians")
  a=$(awk -v a="$1" -v n="$2" '$1 == "agent" && $2 == a && $3 == n' "$work/medians")
  awk -v p="$p" -v a="$a" -v apps="$1" -v n="$2" 'BEGIN {
    split(p, P, " "); split(a, A, " ")
    printf "| %d | %d | %d | %.2f | %.2f | %.1f | %.1f | %.2f |\n", apps, n, apps * n, P[4] / 1000, A[4] / 1000, P[5] / 1024, A[5] / 1024, A[5] / P[5] }'
}
/usr/bin/python3 - "$work/medians" "$here/scale.png" <<'PY'
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = [l.split() for l in open(sys.argv[1])]
fig, ax = plt.subplots(2, 2, figsize=(10, 7))
for col, (label, pick, xkey) in enumerate([("workers (one app)", lambda r: r[1] == "1", 2),
                                           ("apps (4 workers each)", lambda r: r[2] == "4" and r[1] != "1" or r[1] == "1" and r[2] == "4", 1)]):
    for peer, style in (("pm2", "o-"), ("agent", "s-")):
        pts = sorted((int(r[xkey]), int(r[3]) / 1000, int(r[4]) / 1024) for r in rows if r[0] == peer and pick(r))
        xs = [p[0] for p in pts]
        ax[0][col].plot(xs, [p[1] for p in pts], style, label=peer)
        ax[1][col].plot(xs, [p[2] for p in pts], style, label=peer)
    for row, ylabel in ((0, "rollout (s)"), (1, "daemon RSS (MiB)")):
        ax[row][col].set_xscale("log", base=2 if col == 0 else 4)
        ax[row][col].set_xlabel(label)
        ax[row][col].set_ylabel(ylabel)
        ax[row][col].grid(True, alpha=0.3)
        ax[row][col].legend()
fig.suptitle("Rollout time and daemon memory: agent vs PM2 (bench/scale.sh)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=80)
PY

table=$(cat <<TXT
### Scale: rollout time and daemon memory with workers and with apps ($(date -u +%F))

Command: \`bench/scale.sh $rounds\` on $(versions). Medians of $rounds rounds. Rollout, one worker
at a time per app: the agent reloads every app at once (each app has its own queue); PM2 runs
\`pm2 reload all\` (it refuses a second reload while one runs), so its apps go one after the
other. Times include each CLI's start (\`pm2 ping\` takes $(median <"$work/ping") ms). RSS: the
daemon after the rollout, workers not counted.

| apps | workers per app | workers | PM2 rollout s | agent rollout s | PM2 daemon RSS MiB | agent RSS MiB | agent/PM2 RSS |
|---|---|---|---|---|---|---|---|
$(row 1 1)
$(row 1 4)
$(row 1 16)
$(row 1 64)
$(row 4 4)
$(row 16 4)

![rollout time and daemon memory against workers and apps](scale.png)

Every round (peer, apps, workers per app, rollout ms, RSS KiB):

$(sed 's/^/    /' "$work/results")
TXT
)
record "$table"
