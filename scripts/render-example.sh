#!/usr/bin/env bash
# Renders examples/<name>/agent.toml.in into a runnable config: @APP@ becomes the absolute path
# of the example's app/ directory, @ROOT@ the directory given (state, logs, socket go there).
# Usage: scripts/render-example.sh NAME ROOT   -> prints the path of ROOT/agent.toml
set -euo pipefail
name=${1:?usage: render-example.sh NAME ROOT}
root=${2:?usage: render-example.sh NAME ROOT}
repo=$(cd "$(dirname "$0")/.." && pwd)
src="$repo/examples/$name"
[ -f "$src/agent.toml.in" ] || { echo "render-example: no $src/agent.toml.in" >&2; exit 1; }
mkdir -p "$root"
root=$(cd "$root" && pwd)
sed -e "s|@ROOT@|$root|g" -e "s|@APP@|$src/app|g" "$src/agent.toml.in" > "$root/agent.toml"
chmod 0644 "$root/agent.toml"
echo "$root/agent.toml"
