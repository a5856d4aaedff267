#!/usr/bin/env bash
# `agent releases`: reads the store as plain files (made here with shell tools, as an operator
# could), marks the current release and shows each state; --json for scripts.
source "$(dirname "$0")/lib.sh"

app="$TMP/state/web"
mkdir -p "$app/releases"/{20261120T080000Z-1.0.0,20261121T080000Z-1.1.0,20261122T080000Z-1.2.0,20261122T090000Z-1.3.0}
# Two staged in the same second: the id string would put 1.10.0 below 1.9.0; the journal says
# 1.10.0 came last.
mkdir -p "$app/releases"/{20261123T080000Z-1.9.0,20261123T080000Z-1.10.0}
mkdir -p "$app/releases/20261122T100000Z-1.4.0.tmp"   # half-staged: never listed
ln -s releases/20261121T080000Z-1.1.0 "$app/current"
j() { printf '{"time":"%s","event":"%s","release":"%s","version":"%s","source":"%s","revision":"","reason":"%s","uid":0}\n' "$@"; }
{
  j 2026-11-20T08:00:00Z staged    20261120T080000Z-1.0.0 1.0.0 rpm ""
  j 2026-11-20T08:00:05Z activated 20261120T080000Z-1.0.0 1.0.0 rpm deploy
  j 2026-11-21T08:00:00Z staged    20261121T080000Z-1.1.0 1.1.0 git ""
  j 2026-11-21T08:00:05Z activated 20261121T080000Z-1.1.0 1.1.0 git deploy
  j 2026-11-22T08:00:00Z staged    20261122T080000Z-1.2.0 1.2.0 cli ""
  j 2026-11-22T08:00:09Z failed    20261122T080000Z-1.2.0 1.2.0 cli "worker exited before ready"
  echo '{"torn": '
  j 2026-11-22T09:00:00Z staged    20261122T090000Z-1.3.0 1.3.0 rpm ""
  j 2026-11-23T08:00:00Z staged    20261123T080000Z-1.9.0 1.9.0 cli ""
  j 2026-11-23T08:00:00Z staged    20261123T080000Z-1.10.0 1.10.0 cli ""
} > "$app/journal.jsonl"
printf '[agent]\nstate_dir = "%s"\n[[app]]\nname = "web"\ncommand = ["node"]\n[[app]]\nname = "api"\ncommand = ["node"]\n' "$TMP/state" > "$TMP/agent.toml"

run "$AGENT" releases web -c "$TMP/agent.toml"
expect_rc 0
expect_out "*  2026-11-21 08:00:00  20261121T080000Z-1.1.0   1.1.0"
expect_out "   2026-11-22 08:00:00  20261122T080000Z-1.2.0   1.2.0    cli     failed"
expect_out "worker exited before ready"
expect_out "2026-11-20 08:00:00  20261120T080000Z-1.0.0   1.0.0    rpm     previous"
expect_out "2026-11-22 09:00:00  20261122T090000Z-1.3.0   1.3.0    rpm     staged"
expect_no_out ".tmp"
expect_err "journal.jsonl:7: not a JSON object"
[ "$(sed -n 2,4p <<<"$out" | awk '{print $3}' | tr '\n' ' ')" = "20261123T080000Z-1.10.0 20261123T080000Z-1.9.0 20261122T090000Z-1.3.0 " ] && pass || fail "not newest staged first: $out"

run "$AGENT" releases -c "$TMP/agent.toml"
expect_rc 0
expect_out "api:"
expect_out "no releases yet in $TMP/state/api/releases"

run "$AGENT" releases web --json -c "$TMP/agent.toml"
expect_rc 0
python3 - "$out" <<'PY' && pass || fail "json: $out"
import json, sys
j = json.loads(sys.argv[1])
assert j["app"] == "web"
r = {x["id"]: x for x in j["releases"]}
assert len(r) == 6
assert [x["id"] for x in j["releases"]][:2] == ["20261123T080000Z-1.10.0", "20261123T080000Z-1.9.0"]
assert r["20261121T080000Z-1.1.0"]["current"] and r["20261121T080000Z-1.1.0"]["state"] == "active"
assert r["20261121T080000Z-1.1.0"]["source"] == "git"
assert r["20261122T080000Z-1.2.0"]["state"] == "failed"
assert r["20261122T080000Z-1.2.0"]["reason"] == "worker exited before ready"
PY
done_ok
