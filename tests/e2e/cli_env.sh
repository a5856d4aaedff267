#!/usr/bin/env bash
# `agent env`: the launch environment, through the real binary and a real environment.
# Seed 000: a tool that exists only on the agent's global PATH must be found by the worker,
# and what is not on the inherit list must not leak in.
source "$(dirname "$0")/lib.sh"

mkdir -p "$TMP/tools/bin" "$TMP/src"
printf '#!/bin/sh\necho hi\n' > "$TMP/tools/bin/frontend-build"
chmod 755 "$TMP/tools/bin/frontend-build"
echo '{"name":"web","version":"2.3.4"}' > "$TMP/src/package.json"
cat > "$TMP/agent.toml" <<TOML
[agent]
state_dir = "$TMP/state"
[[app]]
name = "web"
source = "$TMP/src"
command = ["frontend-build", "--serve"]
listen = ["127.0.0.1:18197"]
[app.env]
NODE_ENV = "production"
LANG = "zh_CN.UTF-8"
DB_PASSWORD = "s3cret-pw"
stripe_api_key = "sk_live_x1"
TOML

run env -i PATH="$TMP/tools/bin:/usr/bin:/bin" LANG=C SECRET_TOKEN=hunter2 "$AGENT" env web -c "$TMP/agent.toml"
expect_rc 0
expect_out "command: frontend-build -> $TMP/tools/bin/frontend-build"
expect_out "LANG=zh_CN.UTF-8"
expect_out "config [app.env]  LANG=zh_CN.UTF-8"
expect_out "NODE_ENV=production"
expect_out "APP_VERSION=2.3.4"
expect_out "PATH=$TMP/src/node_modules/.bin:$TMP/src/.node/bin:$TMP/tools/bin:/usr/bin:/bin"
expect_out "nothing is deployed yet"
expect_no_out "SECRET_TOKEN"
expect_no_out "hunter2"
# Values whose names look secret are hidden unless asked for.
expect_out "DB_PASSWORD=<hidden: agent env --show-secrets>"
expect_out "stripe_api_key=<hidden: agent env --show-secrets>"
expect_no_out "s3cret-pw"
expect_no_out "sk_live_x1"
run env -i PATH="$TMP/tools/bin:/usr/bin:/bin" "$AGENT" env web --show-secrets -c "$TMP/agent.toml"
expect_rc 0
expect_out "DB_PASSWORD=s3cret-pw"
expect_out "stripe_api_key=sk_live_x1"
run "$AGENT" status --show-secrets -c "$TMP/agent.toml"
expect_rc 2
expect_err "status: unknown option --show-secrets (env takes it)"

# The JSON form, for scripts.
run env -i PATH="$TMP/tools/bin:/usr/bin:/bin" "$AGENT" env web --json -c "$TMP/agent.toml"
expect_rc 0
python3 - "$out" "$TMP" <<'PY' && pass || fail "json: $out"
import json, sys
j = json.loads(sys.argv[1]); tmp = sys.argv[2]
env = {v["name"]: v for v in j["env"]}
assert j["command_resolved"] == tmp + "/tools/bin/frontend-build", j
assert env["PATH"]["origin"] == "composed"
assert env["READY_FD"]["value"] == "4"
assert env["LISTEN_FDS"]["value"] == "1"
assert env["DB_PASSWORD"]["value"] is None and env["DB_PASSWORD"]["hidden"] is True, env["DB_PASSWORD"]
assert "hidden" not in env["NODE_ENV"]
assert [p["origin"] for p in j["path"]] == ["release", "release", "inherited", "inherited", "inherited"], j["path"]
PY

# Without that PATH the deploy would be refused, before any worker is touched.
run env -i PATH="/usr/bin:/bin" "$AGENT" env web -c "$TMP/agent.toml"
expect_rc 1
expect_err "agent: refused: app web: command \"frontend-build\" is not on the launch PATH"

# A release that is deployed: its directory, not the source.
mkdir -p "$TMP/state/web/releases/20261122T101500Z-2.3.4"
echo '{"version":"2.3.4"}' > "$TMP/state/web/releases/20261122T101500Z-2.3.4/package.json"
ln -s releases/20261122T101500Z-2.3.4 "$TMP/state/web/current"
run env -i PATH="$TMP/tools/bin:/usr/bin" "$AGENT" env -c "$TMP/agent.toml"
expect_rc 0
expect_out "release 20261122T101500Z-2.3.4"
expect_out "APP_RELEASE_DIR=$TMP/state/web/releases/20261122T101500Z-2.3.4"
run "$AGENT" env web --release 20990101T000000Z-9 -c "$TMP/agent.toml"
expect_rc 1
expect_err "app web has no release 20990101T000000Z-9"
run "$AGENT" env nosuch -c "$TMP/agent.toml"
expect_rc 1
expect_err "no app \"nosuch\""
done_ok
