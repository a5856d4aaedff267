#!/usr/bin/env bash
# Staging a node_modules-like tree (20,000 files in 2,000 directories, 1-8 KB each) into a
# release, in one run, beside the usual tools:
#   agent stage (copy)      ReleaseStore::stage from a directory: copy (reflink where the
#                           filesystem can), check, syncfs, rename, journal
#   cp -a                   the copy alone, nothing made durable
#   cp -a && sync -f        the copy made durable, as the agent's is
#   agent stage (git)       ReleaseStore::stage of a commit: libgit2 export, syncfs, rename, journal
#   git archive | tar x     the usual export of a commit
#   git worktree add        a checkout of the commit
# Medians of ROUNDS (default 5) each. Prints a table and appends it, with the command, to
# bench/RESULTS.md.
#   bench/staging.sh [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
rounds=${1:-5}
"$repo/scripts/setup.sh" >/dev/null
cmake -S "$repo" -B "$repo/build" -G Ninja >/dev/null && cmake --build "$repo/build" --target stage_bench >/dev/null
work=$(mktemp -d /var/tmp/agent-stage-bench.XXXXXX)  # on disk, not tmpfs
trap 'rm -rf "$work"' EXIT

echo "making the tree..." >&2
python3 - "$work/src" <<'PY'
import os, random, sys
random.seed(1)
root = sys.argv[1]
os.makedirs(root)
with open(os.path.join(root, "package.json"), "w") as f:
    f.write('{"name":"bench","version":"1.0.0"}\n')
n = 0
for p in range(400):
    for d in range(5):
        dd = os.path.join(root, "node_modules", f"pkg{p}", "lib" if d == 0 else f"lib/sub{d}")
        os.makedirs(dd, exist_ok=True)
        for i in range(10):
            with open(os.path.join(dd, f"f{i}.js"), "wb") as f:
                f.write(os.urandom(random.randint(512, 4096)).hex().encode()[: random.randint(1024, 8192)])
            n += 1
print(n, "files", file=sys.stderr)
PY
files=$(find "$work/src" -type f | wc -l)
bytes=$(du -sb "$work/src" | cut -f1)
git -C "$work/src" init -q -b main && git -C "$work/src" add -A && git -C "$work/src" -c user.email=b@b -c user.name=b commit -qm tree
git clone -q --bare "$work/src" "$work/repo.git"

# median_ms CMD...: runs CMD $rounds times (with a cleanup between) and prints the median in ms.
median_ms() {
  local times=()
  for _ in $(seq "$rounds"); do
    rm -rf "$work/out"; sync
    local t0=$(date +%s%N)
    "$@" >/dev/null 2>&1
    local t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p"
}

sync
read -r _ agent_copy < <("$repo/build/stage_bench" "$work/src" "$work/state" "$rounds" | grep copy)
cp_a=$(median_ms cp -a "$work/src" "$work/out")
cp_sync=$(median_ms sh -c "cp -a '$work/src' '$work/out' && sync -f '$work/out'")
archive=$(median_ms sh -c "mkdir '$work/out' && git -C '$work/repo.git' archive main | tar -x -C '$work/out'")
worktree=$(median_ms sh -c "git -C '$work/src' worktree prune && git -C '$work/src' worktree add -q --detach '$work/out' main")
read -r _ agent_git < <("$repo/build/stage_bench" "$work/src" "$work/state2" "$rounds" "$work/repo.git" main | grep git)

fs=$(stat -f -c %T "$work")
table=$(cat <<TXT
### Staging a ${files}-file tree ($(( bytes / 1048576 )) MiB) into a release ($(date -u +%F))

Machine: $(nproc) cores, $(uname -r), filesystem $fs. Command: \`bench/staging.sh $rounds\` (medians of $rounds).

| how | ms | vs cp -a |
|---|---|---|
| agent stage, from a directory (copy + syncfs + rename + journal) | ${agent_copy%.*} | $(python3 -c "print(f'{${agent_copy}/max(${cp_a},1):.2f}x')") |
| cp -a (nothing made durable) | $cp_a | 1.00x |
| cp -a && sync -f | $cp_sync | $(python3 -c "print(f'{${cp_sync}/max(${cp_a},1):.2f}x')") |
| agent stage, from a git commit (libgit2 export + syncfs + rename + journal) | ${agent_git%.*} | $(python3 -c "print(f'{${agent_git}/max(${cp_a},1):.2f}x')") |
| git archive \| tar -x | $archive | $(python3 -c "print(f'{${archive}/max(${cp_a},1):.2f}x')") |
| git worktree add | $worktree | $(python3 -c "print(f'{${worktree}/max(${cp_a},1):.2f}x')") |
TXT
)
echo "$table"
printf '\n%s\n' "$table" >> "$here/RESULTS.md"
