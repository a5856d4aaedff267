#!/bin/sh
# build.sh VERSION OUTDIR [rpmbuild args...]: build hello-node-VERSION-1.noarch.rpm from
# hello-node.spec and print its path. Everything rpmbuild writes stays under OUTDIR.
# Extra args go to rpmbuild, e.g. --define 'broken_crash 1' or --define 'rel 2'.
# APP_DIR (default: ../hello-node/app beside this directory) holds server.js and package.json.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 VERSION OUTDIR [rpmbuild args...]" >&2; exit 2; }
ver=$1 out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
app=${APP_DIR:-$here/../hello-node/app}

mkdir -p "$out"
top=$(cd "$out" && pwd)/rpmbuild
rm -rf "$top"
mkdir -p "$top/SOURCES" "$top/tmp"
cp "$app/server.js" "$app/package.json" "$top/SOURCES/"

# --nodeps: skip the BuildRequires check. There are none, but the check still opens the rpm
#   database, and Debian's rpm keeps it in ~/.rpmdb, which it would create.
# _topdir: BUILD, BUILDROOT, RPMS, SOURCES... under OUTDIR, not ~/rpmbuild.
# _tmppath: the scripts rpmbuild runs go there, not to /var/tmp.
if ! rpmbuild -bb --nodeps \
    --define "_topdir $top" --define "_tmppath $top/tmp" \
    --define "ver $ver" "$@" "$here/hello-node.spec" > "$top/build.log" 2>&1; then
  cat "$top/build.log" >&2
  exit 1
fi
sed -n 's/^Wrote: //p' "$top/build.log"
