#!/usr/bin/env bash
# A fleet rollout through etcd beside a shell loop deploying host after host: see bench/fleet.py.
set -euo pipefail
exec python3 "$(dirname "$0")/fleet.py" "$@"
