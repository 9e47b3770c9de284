#!/usr/bin/env bash
# Rounds 6-7 as arms (evalkit compare --arm, two-level bootstrap over cases and training seeds; docs/evalkit.md):
# the 0.5B recipe has two seeds (b05a: 42, b05s2: 7), the recommended one with the team's rows (r05fr) and the 1.5B
# (b15a) one each. Run after docs/analysis/r7/score.sh (it reads the cases files that script and round 6 wrote).
#   bash docs/analysis/r7/arms.sh
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=.cache/r7 R6=.cache/r6 EV=(.venv/bin/python -m reportminer.evalkit.cli)
A=(--arm b05=b05a,b05s2 --arm r05fr=r05fr --arm b15=b15a)
# the validated union (genbench-flat + the 34 genbench-cause cases served in round 7: compare pairs on them)
"${EV[@]}" compare "b05a=$R6/union/scores/serve-m05/b05a.gen.cases.parquet" \
  "b05s2=$R/union/serve-m05all/b05s2.gen.cases.parquet" "r05fr=$R/union/serve-m05all/r05fr.gen.cases.parquet" \
  "b15a=$R6/union.b15a.gen.cases.parquet" "${A[@]}" --json "$R/arms.union.json" > "$R/arms.union.txt" 2>&1
for s in gen dev; do  # genbench, and the 50 sample rows (dev of bench700)
  "${EV[@]}" compare "b05a=$R6/genbench/scores/serve-m05/b05a.$s.cases.parquet" \
    "b05s2=$R/genbench/serve-m05all/b05s2.$s.cases.parquet" "r05fr=$R/genbench/serve-m05all/r05fr.$s.cases.parquet" \
    "b15a=$R6/genbench/scores/serve-m15a/b15a.$s.cases.parquet" "${A[@]}" --json "$R/arms.genbench-$s.json" \
    > "$R/arms.genbench-$s.txt" 2>&1
done
ls "$R"/arms.*.txt
