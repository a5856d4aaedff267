#!/usr/bin/env bash
# The shim and the rolling swap on the Node that Debian 12 ships (18.x), whatever Node the
# machine has installed: fetches Debian's nodejs and libnode packages with apt-get download,
# unpacks them under the build directory, puts a `node` wrapper first on PATH, and runs the
# Node e2e tests with it. Exit 77 (skipped) only if the packages cannot be fetched.
set -uo pipefail
: "${AGENT:?}" "${REPO:?}"
dir="$(dirname "$AGENT")/e2e-cache/debian-node"
if [ ! -x "$dir/bin/node" ]; then
  rm -rf "$dir" && mkdir -p "$dir/debs" && cd "$dir/debs" || exit 1
  version=$(apt-cache madison nodejs | awk '$3 ~ /dfsg/ && $0 ~ /debian/ { print $3; exit }')
  if [ -z "$version" ] || ! apt-get download -qq "nodejs=$version" "libnode108=$version" 2>/dev/null; then
    [ -n "$version" ] || echo "no Debian nodejs in the apt lists (run apt-get update)"
    echo "skipped: cannot fetch Debian's nodejs $version"
    exit 77
  fi
  for f in *.deb; do dpkg -x "$f" "$dir/root"; done
  mkdir -p "$dir/bin"
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$dir/root/usr/lib/x86_64-linux-gnu" "$dir/root/usr/bin/node" > "$dir/bin/node"
  chmod +x "$dir/bin/node"
fi
# Debian's Node loads some builtins from /usr/share/nodejs, packaged apart (JavaScript only;
# they sit beside any other Node without touching it).
need=()
for p in node-acorn node-cjs-module-lexer node-undici; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then echo "skipped: installing ${need[*]} needs root"; exit 77; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || { echo "skipped: cannot install ${need[*]}"; exit 77; }
fi
export PATH="$dir/bin:$PATH"
echo "node on PATH: $(command -v node) $(node --version)"
case "$(node --version)" in v18.*) ;; *) echo "FAIL: expected Debian's Node 18"; exit 1 ;; esac
rc=0
for t in test_shim test_rolling; do python3 -u "$REPO/tests/e2e/$t.py" || rc=1; done
exit $rc
