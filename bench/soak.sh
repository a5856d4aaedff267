#!/usr/bin/env bash
# Soak: the agent under load for MINUTES (default 30), with `agent reload` every RELOAD_EVERY
# seconds (default 30) and a deploy every DEPLOY_EVERY seconds (default 120), the deploy
# triggered as an RPM would: a new version written to the watched package.json. Load: wrk with
# 20 keep-alive connections and wrk with 4 clients opening a connection per request, for the
# whole run. Samples the daemon's RSS and open fds each minute.
# Pass: every operation went live, both load clients got answers and 0 failed requests, RSS
# flat (the last sample under load within 1 MiB of the one at a third of the run, after the
# release store and journal have grown to their steady size), and the same open fds at the end
# as after the first deploy and reload (a descriptor opened once on first use is no leak). A reliability check (issue 9), agent only: it
# compares the agent with itself over time, not with PM2.
#   bench/soak.sh [MINUTES=30] [RELOAD_EVERY=30] [DEPLOY_EVERY=120]
source "$(dirname "$0")/lib.sh"
minutes=${1:-30}
reload_every=${2:-30}
deploy_every=${3:-120}
bench_init
cp -r "$hello" "$work/src"
port=$(free_port)
url="http://127.0.0.1:$port/"
cfg="$work/agent/agent.toml"
mkdir -p "$work/agent"
agent_config "$cfg" "web $port 4 $work/src settle = \"500ms\""
start_agent "$cfg"
fds() { ls "/proc/$apid/fd" | wc -l; }
rss_start=$(rss_kb "$apid") fds_start=""
echo "agent pid $apid: RSS ${rss_start} KiB; ${minutes} min, reload every ${reload_every}s, deploy every ${deploy_every}s"

secs=$((minutes * 60))
wrk -t1 -c20 -d"${secs}s" --latency "$url" >"$work/keep.out" 2>&1 & kpid=$!
wrk -t1 -c4 -d"${secs}s" --latency -H "Connection: close" "$url" >"$work/fresh.out" 2>&1 & fpid=$!
t0=$SECONDS reloads=0 deploys=0 failed_ops=0 version=1
: >"$work/samples"
next_reload=$reload_every next_deploy=$deploy_every next_sample=60
while ((SECONDS - t0 < secs - 5)); do
  sleep 1  # the schedule's tick; every operation below is waited for by its own command
  now=$((SECONDS - t0))
  if ((now >= next_deploy)); then
    version=$((version + 1))
    printf '{"name":"hello-node","version":"%d.0.0"}\n' "$version" >"$work/src/package.json"
    deadline=$((SECONDS + 60))
    until "$agent" status web -c "$cfg" --json 2>/dev/null | grep -q "\"version\": \"$version.0.0\"" &&
      agent_wait_idle "$cfg" 1 2>/dev/null && curl -fs "$url" | grep -q "hello from $version.0.0 "; do
      ((SECONDS < deadline)) || { echo "deploy of $version.0.0 did not go live" >&2; failed_ops=$((failed_ops + 1)); break; }
      sleep 0.2
    done
    deploys=$((deploys + 1)) next_deploy=$((next_deploy + deploy_every))
  elif ((now >= next_reload)); then
    "$agent" reload web -c "$cfg" >/dev/null || failed_ops=$((failed_ops + 1))
    reloads=$((reloads + 1)) next_reload=$((next_reload + reload_every))
  fi
  if ((now >= next_sample)); then
    echo "$now $(rss_kb "$apid") $(fds)" | tee -a "$work/samples"
    next_sample=$((next_sample + 60))
  fi
  # The fd baseline: once a deploy and a reload have each run (first-use descriptors open).
  if [ -z "$fds_start" ] && ((deploys > 0 && reloads > 0)); then
    agent_wait_idle "$cfg" 30 && sleep 1 && fds_start=$(fds) && ls -l "/proc/$apid/fd" >"$work/fds.start"
  fi
done
wrk_ok=1
wait $kpid || wrk_ok=0
wait $fpid || wrk_ok=0
agent_wait_idle "$cfg" 60
sleep 1  # let the control connection of that last status close
rss_end=$(rss_kb "$apid") fds_end=$(fds)
ls -l "/proc/$apid/fd" >"$work/fds.end"
read -r keep_req _ _ keep_err < <(wrk_summary "$work/keep.out")
read -r fresh_req _ _ fresh_err < <(wrk_summary "$work/fresh.out")
n_samples=$(wc -l <"$work/samples")
base=$(awk -v k=$(((n_samples + 2) / 3)) 'NR == k { print $2 }' "$work/samples")
last=$(awk 'END { print $2 }' "$work/samples")
table=$(cat <<TXT
### Soak: ${minutes} min under load, reload every ${reload_every} s, deploy every ${deploy_every} s ($(date -u +%F))

Command: \`bench/soak.sh $minutes $reload_every $deploy_every\` on $(versions). 4 workers of examples/hello-node/app.

| | figure |
|---|---|
| reloads / deploys done | $reloads / $deploys (operations that failed: $failed_ops) |
| keep-alive requests (20 conns) / failed | $keep_req / **$keep_err** |
| new-connection requests (4 clients) / failed | $fresh_req / **$fresh_err** |
| agent RSS at start; at a third of the run; last sample under load; at the end (KiB) | $rss_start; ${base:-?}; ${last:-?}; $rss_end |
| agent open fds after the first deploy and reload / at the end | ${fds_start:-?} / $fds_end |

RSS and fds each minute (seconds, RSS KiB, fds):

$(sed 's/^/    /' "$work/samples")
TXT
)
record "$table"
ok=1
((wrk_ok && keep_req > 0 && fresh_req > 0 && keep_err == 0 && fresh_err == 0 && failed_ops == 0)) || ok=0
[ -n "$fds_start" ] && ((fds_end == fds_start)) || { ok=0; diff "$work/fds.start" "$work/fds.end" >&2 || true; }
((n_samples >= 3)) && ((last - base <= 1024)) || ok=0
((ok)) && echo "soak: pass" || { echo "soak: FAIL" >&2; exit 1; }
