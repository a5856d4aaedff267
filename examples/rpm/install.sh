#!/bin/sh
# install.sh RPM PREFIX DBPATH [rpm args...]: install or upgrade (rpm -U) a relocatable package
# under PREFIX, recorded in a private rpm database at DBPATH (created on first use). Nothing
# outside PREFIX and DBPATH is written. Extra args go to rpm, e.g. --oldpackage for a downgrade.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 RPM PREFIX DBPATH [rpm args...]" >&2; exit 2; }
pkg=$1 prefix=$2 db=$3
shift 3
# rpm wants both absolute.
case $prefix in /*) ;; *) prefix=$PWD/$prefix ;; esac
case $db in /*) ;; *) db=$PWD/$db ;; esac
mkdir -p "$db/tmp"

# --nodeps: the private database is empty, so nothing provides the /bin/sh that rpm makes every
#   package with a shell scriptlet require (AutoReqProv: no does not drop it).
# _tmppath: rpm writes each scriptlet to a file there before running it; keep them out of /var/tmp.
# --force-debian: Debian's patched rpm otherwise prints "RPM should not be used directly install
#   RPM packages, use Alien instead!" on stderr (a warning only). Other rpms reject the option.
set -- --nodeps --define "_tmppath $db/tmp" "$@"
if rpm --help 2>/dev/null | grep -q -- --force-debian; then set -- --force-debian "$@"; fi
exec rpm -U --dbpath "$db" --prefix "$prefix" "$@" "$pkg"
