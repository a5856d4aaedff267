#!/usr/bin/env bash
# `agent check`: the bundled example passes; a broken config gets every error as file:line:col.
source "$(dirname "$0")/lib.sh"

cfg=$("$REPO/scripts/render-example.sh" hello-node "$TMP/demo")
run "$AGENT" check -c "$cfg"
expect_rc 0
expect_out "ok (1 app: hello)"

AGENT_CONFIG="$cfg" run "$AGENT" check
expect_rc 0

# Every example's config passes (two-apps is checked as installed, by cli_install).
for example in git-push rpm; do
  cfg=$("$REPO/scripts/render-example.sh" "$example" "$TMP/$example")
  run "$AGENT" check -c "$cfg"
  expect_rc 0
  expect_out "ok (1 app: hello)"
done
run "$AGENT" check -c "$REPO/examples/two-apps/agent.toml"
expect_rc 0
run "$AGENT" check -c "$REPO/examples/fleet/agent.toml"
expect_rc 0
expect_out "ok (1 app: api)"

cat > "$TMP/bad.toml" <<'TOML'
[agent]
state_dir = "var/lib/agent"

[[app]]
name = "web"
command = ["node", "app.js"]
instances = 0
listen = ["0.0.0.0:8197"]
drain_timout = "5s"
max_memory = "lots"

[[app]]
name = "web"
command = ["node"]
listen = ["127.0.0.1:8197"]
TOML
run "$AGENT" check -c "$TMP/bad.toml"
expect_rc 1
expect_err "$TMP/bad.toml:2:13: [agent] state_dir: \"var/lib/agent\" must be an absolute path"
expect_err "$TMP/bad.toml:7:13: [[app]] \"web\" instances: 0 is out of range (1 to 1024)"
expect_err "$TMP/bad.toml:9:1: unknown key \"drain_timout\" in [[app]] \"web\" (did you mean \"drain_timeout\"?)"
expect_err "$TMP/bad.toml:10:14: [[app]] \"web\" max_memory: \"lots\" is not a size"
expect_err "$TMP/bad.toml:13:8: duplicate app name \"web\" (first defined on line 5)"
expect_err "$TMP/bad.toml:15:11: listen \"127.0.0.1:8197\" of app \"web\" overlaps \"0.0.0.0:8197\""
expect_err "agent: 6 errors in $TMP/bad.toml"

printf '[[app]]\nname = "x"\ncommand = ["x"\n' > "$TMP/syntax.toml"
run "$AGENT" check -c "$TMP/syntax.toml"
expect_rc 1
expect_err "$TMP/syntax.toml:3:"

run "$AGENT" check -c "$TMP/nope.toml"
expect_rc 1
expect_err "$TMP/nope.toml:1:1: cannot read: No such file or directory"

run "$AGENT" --help
expect_rc 0
expect_out "Usage: agent"
run "$AGENT" check --help
expect_rc 0
expect_out "file:line:col"
# --deep: the host too. A good one passes; each problem is one line and the exit is 1.
cfg=$("$REPO/scripts/render-example.sh" hello-node "$TMP/deep-ok")
run "$AGENT" check --deep -c "$cfg"
expect_rc 0
expect_out "env files, commands, accounts and sources checked on this host"
mkdir -p "$TMP/src"
cat > "$TMP/deep.toml" <<TOML
[agent]
state_dir = "$TMP/deep-state"
[[app]]
name = "web"
command = ["nodez", "server.js"]
source = "$TMP/src"
[[app]]
name = "api"
command = ["node", "server.js"]
source = "$TMP/not-installed"
[[app]]
name = "worker"
command = ["node", "server.js"]
source = "$TMP/src"
env_file = "$TMP/missing.env"
TOML
run "$AGENT" check -c "$TMP/deep.toml"
expect_rc 0
run "$AGENT" check --deep -c "$TMP/deep.toml"
expect_rc 1
expect_err "app web: command \"nodez\" is not on the launch PATH"
expect_err "app api: source $TMP/not-installed: no such directory"
expect_err "app worker: env_file: read $TMP/missing.env: No such file or directory"
expect_err "3 problems on this host (the config itself is valid)"
# Every problem of one app, not the first one alone.
cat > "$TMP/deep-all.toml" <<TOML
[agent]
state_dir = "$TMP/deep-state"
[[app]]
name = "web"
command = ["nodez", "server.js"]
source = "$TMP/src"
env_file = "$TMP/missing.env"
TOML
run "$AGENT" check --deep -c "$TMP/deep-all.toml"
expect_rc 1
expect_err "app web: env_file: read $TMP/missing.env: No such file or directory"
expect_err "app web: command \"nodez\" is not on the launch PATH"
expect_err "2 problems on this host"

# A size without its unit, and PM2's names for agent keys.
printf '[[app]]\nname = "a"\ncommand = ["node"]\nmax_memory = "200"\nmax_memory_restart = "1G"\n' > "$TMP/units.toml"
run "$AGENT" check -c "$TMP/units.toml"
expect_rc 1
expect_err 'max_memory = "200": 200 what? use K, M or G'
expect_err "PM2's max_memory_restart is max_memory here"

run "$AGENT" frobnicate
expect_rc 2
expect_err 'unknown command "frobnicate"'
run "$AGENT" check --bogus
expect_rc 2
expect_err "check: unknown option --bogus"
done_ok
