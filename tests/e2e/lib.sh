# Shared helpers for the end-to-end tests: each test is a bash script run by ctest with
# AGENT (the binary) and REPO (the source tree) set. A failed check prints what was expected
# and what came, and the script exits 1.
set -uo pipefail
: "${AGENT:?AGENT must point at the agent binary}"
: "${REPO:?REPO must point at the source tree}"

TMP=$(mktemp -d /tmp/agent-e2e.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
checks=0

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { checks=$((checks + 1)); }

# run CMD...: runs it, keeping stdout in $out, stderr in $errout and the exit code in $rc.
run() {
  out=$("$@" 2>"$TMP/.stderr"); rc=$?
  errout=$(cat "$TMP/.stderr")
}
expect_rc() { [ "$rc" = "$1" ] && pass || fail "exit code $rc, expected $1 (stdout: $out; stderr: $errout)"; }
expect_out() { grep -qF -- "$1" <<<"$out" && pass || fail "stdout lacks [$1]: $out"; }
expect_err() { grep -qF -- "$1" <<<"$errout" && pass || fail "stderr lacks [$1]: $errout"; }
expect_no_out() { ! grep -qF -- "$1" <<<"$out" && pass || fail "stdout has [$1] but must not: $out"; }
done_ok() { echo "ok: $checks checks"; }
