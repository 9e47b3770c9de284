#!/usr/bin/env bash
# Round 7 scoring (docs/RESULTS.md round 7), run here after the lease: reads .cache/r7 (the lease's results, not in
# git), .cache/r6 (round 6's b05a/b15a cases) and .stage/bench700 (built from ../shared/seed, not in git).
#   bash docs/analysis/r7/score.sh
# What came back: serve-m05all, one engine pass of b05s2 and r05fr over the 50 sample rows, genbench,
# genbench-flat and the first 34 genbench-cause cases (W8's) with every variant; the lease's device time ran out
# before the other 46 cause cases (docs/leases/2026-12-06-round7.sh says why). Cases without results are not
# scored as fails: genbench-cause is cut to the cases present (with both variants) before scoring, and every
# comparison with round 6 is paired on the cases both runs have.
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=.cache/r7 R6=.cache/r6 EV=(.venv/bin/python -m reportminer.evalkit.cli)
.venv/bin/python - <<'PY'
import glob, json
import polars as pl
ids = set(pl.concat([pl.read_parquet(f) for f in sorted(glob.glob(".cache/r7/serve-m05all/*.parquet"))],
                    how="diagonal_relaxed")["id"].to_list())
with open(".cache/r7/cause-present.jsonl", "w", encoding="utf-8") as out:
    for line in open("benchmarks/genbench-cause/cases.jsonl", encoding="utf-8"):
        r = json.loads(line); p = r.get("perturb") or {}
        need = [r["id"]] + [r["id"] + "~ins"] * bool(p.get("insert")) + [r["id"] + "~rem"] * bool(p.get("remove"))
        if all(x in ids for x in need):
            out.write(line)
PY
declare -A G=([genbench]="benchmarks/genbench/cases.jsonl" [genbench-flat]="benchmarks/genbench-flat/cases.jsonl"
  [cause]="$R/cause-present.jsonl" [union]="benchmarks/genbench-flat/cases.jsonl $R/cause-present.jsonl")
for b in genbench genbench-flat cause union; do
  g=(); for f in ${G[$b]}; do g+=(--genbench "$f"); done
  rm -rf "$R/$b"
  "${EV[@]}" bench score "$R/serve-m05all" --bench .stage/bench700 "${g[@]}" --out "$R/$b/serve-m05all" \
    --baseline b05s2 > "$R/$b.md" 2>&1 || echo "score failed: $b"
done
# Paired with round 6 (seed 42 trainings of the same recipes): b05a first, then this round's runs, then b15a.
declare -A R6B=([genbench]=genbench [genbench-flat]=genbench-flat [cause]=genbench-cause)
for b in genbench genbench-flat cause union; do
  if [ "$b" = union ]; then a5=$R6/union/scores/serve-m05/b05a.gen.cases.parquet a15=$R6/union.b15a.gen.cases.parquet
  else a5=$R6/${R6B[$b]}/scores/serve-m05/b05a.gen.cases.parquet a15=$R6/${R6B[$b]}/scores/serve-m15a/b15a.gen.cases.parquet; fi
  d=$R/$b/serve-m05all
  "${EV[@]}" compare "b05a=$a5" "b05s2=$d/b05s2.gen.cases.parquet" "r05fr=$d/r05fr.gen.cases.parquet" "b15a=$a15" \
    --json "$R/compare.$b.json" > "$R/compare.$b.txt" 2>&1
done
"${EV[@]}" compare "b15a=$R6/union.b15a.gen.cases.parquet" "b05s2=$R/union/serve-m05all/b05s2.gen.cases.parquet" \
  "r05fr=$R/union/serve-m05all/r05fr.gen.cases.parquet" --json "$R/compare.union.vs15.json" > "$R/compare.union.vs15.txt" 2>&1
"${EV[@]}" compare "b05a=$R6/genbench/scores/serve-m05/b05a.dev.cases.parquet" \
  "b05s2=$R/genbench/serve-m05all/b05s2.dev.cases.parquet" "r05fr=$R/genbench/serve-m05all/r05fr.dev.cases.parquet" \
  "b15a=$R6/genbench/scores/serve-m15a/b15a.dev.cases.parquet" --json "$R/compare.dev.json" > "$R/compare.dev.txt" 2>&1
ls "$R"/compare.*.txt
