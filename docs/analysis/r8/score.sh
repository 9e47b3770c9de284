#!/usr/bin/env bash
# Round 8 scoring (docs/RESULTS.md round 8), run here after the lease: reads .cache/r8 (the lease's results, not in
# git), .cache/r6 and .cache/r7 (earlier runs' cases files) and .stage/bench700 (built from ../shared/seed).
#   bash docs/analysis/r8/score.sh            (R=.cache/r9 bash ... scores another round's serves)
# Every serve covered the 50 sample rows, genbench, genbench-flat and all 80 genbench-cause cases with their
# variants. A serve cut short by the lease scores only the cases it answered in full (`--present-only`, as round 7 cut).
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=${R:-.cache/r8} EV=(.venv/bin/python -m reportminer.evalkit.cli)
for s in "$R"/serve-*/; do
  s=${s%/}; t=$(basename "$s")
  ls "$s"/*.parquet > /dev/null 2>&1 || { echo "no shards: $t"; continue; }
  declare -A G=([genbench]="benchmarks/genbench/cases.jsonl" [genbench-flat]="benchmarks/genbench-flat/cases.jsonl"
    [cause]="benchmarks/genbench-cause/cases.jsonl"
    [union]="benchmarks/genbench-flat/cases.jsonl benchmarks/genbench-cause/cases.jsonl")
  for b in genbench genbench-flat cause union; do
    g=(); for f in ${G[$b]}; do g+=(--genbench "$f"); done
    rm -rf "$R/$b/$t"
    "${EV[@]}" bench score "$s" --bench .stage/bench700 "${g[@]}" --present-only --out "$R/$b/$t" > "$R/$b.$t.md" 2>&1 \
      || echo "score failed: $b $t"
  done
done
ls "$R"/*/serve-*/*.gen.cases.parquet
