#!/usr/bin/env bash
# Split files into carry folders for the device machine, each small enough to travel BESIDE the working tree.
#
#   scripts/chunk_carry.sh FILE...                    # .carry/p01, p02, ... and .carry/MANIFEST
#   CARRY=.carry-vllm scripts/chunk_carry.sh WHEELS/*.whl
#   CHUNK_MIB=40 scripts/chunk_carry.sh FILE...       # a fixed folder size instead of the computed one
#   scripts/chunk_carry.sh --fits .whl,.stage .carry-vllm/p01 ...   # check calls: tree + each comma group
#   scripts/chunk_carry.sh --tree                     # the tree's size in MiB (rounded up)
#
# Why: the device refuses a call whose working tree (tracked + untracked-not-ignored files, and a shared/
# folder inside the checkout) plus its carried paths exceed 64 MiB. The tree is ~14 MiB now (2026-12-06:
# 13.5 MiB, the demo adapter alone 8.4), so ../shared/tools/chunk-carry.sh's fixed 60 MiB folders were
# refused and the lead re-chunked the model and vLLM sets at 46 MiB by hand.
# Folder size: CHUNK_MIB when set, else 64 - (the tree, MiB rounded up) - MARGIN_MIB (default 4: room for
# the tree to grow between chunking and the lease; 14 MiB today -> 46 MiB folders). Run it in the checkout
# whose tree travels (the one the session started in, /work/main; a helper's worktree sends nothing).
# Same layout as ../shared/tools/chunk-carry.sh (FILE or FILE.chunkNNN, MANIFEST of whole-file sha256s in
# .carry and in the last folder), so the rebuild steps (gpu_experiment.sh setup, gpu_engine.sh) are unchanged:
#   cd STAGE && for f in *.chunk000; do b=${f%.chunk000}; cat "$b".chunk* > "$b" && rm "$b".chunk*; done; sha256sum -c MANIFEST
set -euo pipefail
LIMIT_MIB=64
MiB=$((1024 * 1024))

tree_bytes() {  # what travels besides carry: git's tracked + untracked-not-ignored files, and ./shared
  local b
  b=$(git ls-files -z --cached --others --exclude-standard -- . ':(exclude)shared' \
      | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}') || true
  if [ -d shared ]; then b=$((b + $(find shared -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'))); fi
  echo "${b:-0}"
}
tree_mib() { local b; b=$(tree_bytes); echo $(((b + MiB - 1) / MiB)); }
path_bytes() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

case "${1:-}" in
--tree) tree_mib; exit 0 ;;
--fits)
  shift
  [ $# -gt 0 ] || { echo "usage: $0 --fits PATH[,PATH...]..." >&2; exit 2; }
  tb=$(tree_bytes); bad=0
  mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
  echo "tree $(mib "$tb") MiB; a call may carry $(mib $((LIMIT_MIB * MiB - tb))) MiB beside it"
  for group in "$@"; do
    IFS=, read -r -a paths <<< "$group"
    for p in "${paths[@]}"; do [ -e "$p" ] || { echo "no such path: $p" >&2; exit 2; }; done
    cb=$(path_bytes "${paths[@]}"); total=$((tb + cb))
    if [ "$total" -le $((LIMIT_MIB * MiB)) ]; then st=ok; else st="TOO BIG: over by $(mib $((total - LIMIT_MIB * MiB))) MiB"; bad=1; fi
    printf '  %-36s %6s MiB + tree = %6s MiB  %s\n' "$group" "$(mib "$cb")" "$(mib "$total")" "$st"
  done
  exit "$bad"
  ;;
-h|--help) sed -n 2,8p "$0"; exit 0 ;;
"") sed -n 2,8p "$0" >&2; exit 2 ;;
esac

CARRY=${CARRY:-.carry}
MARGIN_MIB=${MARGIN_MIB:-4}
# the carry folder must not travel as part of the tree: ignore it here (.git/info/exclude) unless git does
mkdir -p "$CARRY"
if ! git check-ignore -q "$CARRY/"; then
  echo "/${CARRY#./}/" >> "$(git rev-parse --git-path info/exclude)"; echo "added /${CARRY#./}/ to $(git rev-parse --git-path info/exclude)"
fi
if [ -n "${CHUNK_MIB:-}" ]; then
  chunk=$CHUNK_MIB why="CHUNK_MIB"
else
  t=$(tree_mib); chunk=$((LIMIT_MIB - t - MARGIN_MIB)) why="64 - tree $t - margin $MARGIN_MIB"
fi
[ "$chunk" -ge 1 ] || { echo "no room: folders of $chunk MiB ($why); ignore or carry less of the tree" >&2; exit 1; }
limit=$((chunk * MiB))
rm -rf "$CARRY" && mkdir -p "$CARRY/p01"
n=1; used=0
dir() { printf '%s/p%02d' "$CARRY" "$n"; }
next() { n=$((n + 1)); used=0; mkdir -p "$(dir)"; }
: > "$CARRY/MANIFEST"
for f in "$@"; do
  [ -f "$f" ] || { echo "not a file: $f" >&2; exit 2; }
  base=$(basename "$f")
  (cd "$(dirname "$f")" && sha256sum "$base") >> "$CARRY/MANIFEST"
  size=$(stat -c %s "$f")
  if [ "$size" -le "$limit" ]; then  # whole: here, or in the next folder
    [ "$size" -le $((limit - used)) ] || next
    cp "$f" "$(dir)/"; used=$((used + size)); continue
  fi
  tmp=$(mktemp -d)
  split -b "$limit" -d -a 3 "$f" "$tmp/$base.chunk"
  for c in "$tmp"/*; do
    cs=$(stat -c %s "$c")
    [ "$cs" -le $((limit - used)) ] || next
    mv "$c" "$(dir)/"; used=$((used + cs))
  done
  rm -rf "$tmp"
done
cp "$CARRY/MANIFEST" "$(dir)/MANIFEST"
echo "made $n carry folders under $CARRY/ (each <= $chunk MiB: $why):"
du -sh "$CARRY"/p* | sed 's/^/  /'
