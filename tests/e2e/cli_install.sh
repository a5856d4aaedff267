#!/usr/bin/env bash
# `cmake --install` into a temporary prefix: the binary, the Node shim where the installed binary
# finds it, the systemd units naming that prefix (and passing systemd-analyze verify), the
# example config (which passes agent check), the README.
source "$(dirname "$0")/lib.sh"
: "${BUILD_DIR:?BUILD_DIR must point at the build tree}"

prefix="$TMP/prefix"
run cmake --install "$BUILD_DIR" --prefix "$prefix"
expect_rc 0
for f in bin/agent share/deploy-agent/shims/node/shim.js lib/systemd/system/agent.service \
         lib/systemd/system/agent.socket etc/agent/agent.toml.example share/doc/deploy-agent/README.md; do
  [ -f "$prefix/$f" ] && pass || fail "not installed: $prefix/$f"
done

# The installed binary finds the installed shim (not the one in the source tree).
cat > "$TMP/shim.toml" <<TOML
[agent]
state_dir = "$TMP/state"
log_dir = "$TMP/log"
control_socket = "$TMP/agent.sock"

[[app]]
name = "web"
source = "$REPO/examples/hello-node/app"
command = ["node", "server.js"]
listen = ["127.0.0.1:8197"]
shim = "node"
TOML
run "$prefix/bin/agent" env web -c "$TMP/shim.toml"
expect_rc 0
expect_out "--require \"$prefix/share/deploy-agent/shims/node/shim.js\""

# A build tree anywhere finds its shim: it mirrors the installed layout beside the binary.
mkdir -p "$TMP/elsewhere/build"
cp -a "$BUILD_DIR/agent" "$BUILD_DIR/share" "$TMP/elsewhere/build/"
run "$TMP/elsewhere/build/agent" env web -c "$TMP/shim.toml"
expect_rc 0
expect_out "--require \"$TMP/elsewhere/build/share/deploy-agent/shims/node/shim.js\""
rm -r "$TMP/elsewhere/build/share"
run "$TMP/elsewhere/build/agent" env web -c "$TMP/shim.toml"
expect_rc 1
expect_err "the agent's Node shim is not installed (looked in $TMP/elsewhere/build/../share/deploy-agent/shims/node/shim.js, $TMP/elsewhere/build/share/deploy-agent/shims/node/shim.js)"

# The example config is valid as shipped.
run "$prefix/bin/agent" check -c "$prefix/etc/agent/agent.toml.example"
expect_rc 0
expect_out "ok (2 apps: nuomi, h5)"

# The units name this prefix, and systemd's own checker accepts them.
run grep -E '^ExecStart=' "$prefix/lib/systemd/system/agent.service"
expect_out "ExecStart=$prefix/bin/agent run -c $prefix/etc/agent/agent.toml"
# agent.socket ships with no address; `agent systemd-socket` writes the config's as a drop-in.
run grep -c '^ListenStream=' "$prefix/lib/systemd/system/agent.socket"
expect_out "0"
mkdir -p "$prefix/lib/systemd/system/agent.socket.d"
run "$prefix/bin/agent" systemd-socket -c "$prefix/etc/agent/agent.toml.example"
expect_rc 0
expect_out "ListenStream=0.0.0.0:8197"
expect_out "ListenStream=0.0.0.0:8198"
printf '%s\n' "$out" > "$prefix/lib/systemd/system/agent.socket.d/listen.conf"
if command -v systemd-analyze >/dev/null; then
  run systemd-analyze verify "$prefix/lib/systemd/system/agent.service" "$prefix/lib/systemd/system/agent.socket"
  expect_rc 0
  # ...and it is a real check: a broken copy is refused.
  mkdir -p "$TMP/broken"
  sed 's/^Type=notify/Type=sometimes/' "$prefix/lib/systemd/system/agent.service" > "$TMP/broken/agent.service"
  run systemd-analyze verify "$TMP/broken/agent.service"
  [ -n "$errout$out" ] && grep -q "sometimes" <<<"$errout$out" && pass || fail "systemd-analyze did not notice Type=sometimes: $errout"
else
  fail "systemd-analyze not found (Debian's systemd package provides it)"
fi
# --strip: the installed binary has no debug sections (the unstripped one is ~50 MB).
run cmake --install "$BUILD_DIR" --prefix "$TMP/stripped" --strip
expect_rc 0
run readelf -S "$TMP/stripped/bin/agent"
grep -q debug_info <<<"$out" && fail "cmake --install --strip left debug sections in bin/agent" || pass
run readelf -S "$BUILD_DIR/agent"
grep -q debug_info <<<"$out" && pass || fail "the build's own binary has no debug sections to strip: the check above proves nothing"
run "$TMP/stripped/bin/agent" --version
expect_rc 0

# A package build: DESTDIR staging for /usr puts the config in /etc, everything once, and lists
# every file in the install manifest.
run env DESTDIR="$TMP/dest" cmake --install "$BUILD_DIR" --prefix /usr
expect_rc 0
for f in usr/bin/agent usr/lib/systemd/system/agent.service etc/agent/agent.toml.example; do
  [ -f "$TMP/dest/$f" ] && pass || fail "not staged: $TMP/dest/$f"
done
[ ! -e "$TMP/dest$TMP" ] && pass || fail "DESTDIR applied twice: $TMP/dest$TMP exists"
run grep -E '^ExecStart=' "$TMP/dest/usr/lib/systemd/system/agent.service"
expect_out "ExecStart=/usr/bin/agent run -c /etc/agent/agent.toml"
run cat "$BUILD_DIR/install_manifest.txt"
expect_out "/usr/lib/systemd/system/agent.socket"
expect_out "/etc/agent/agent.toml.example"
# libgit2 and libcurl are opened on first use, never linked: a daemon whose apps neither push
# nor alert does not map them (bench/footprint.sh measures what that saves).
run objdump -p "$TMP/dest/usr/bin/agent"
expect_out "NEEDED"
if grep -Eq 'NEEDED +lib(git2|curl)' <<<"$out"; then fail "the agent links libgit2 or libcurl: $(grep NEEDED <<<"$out" | tr -s ' ' | tr '\n' ' ')"; else pass; fi
done_ok
