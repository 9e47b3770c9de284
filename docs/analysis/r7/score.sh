#!/usr/bin/env bash
# Round 7 scoring (docs/RESULTS.md round 7), run here after the lease: reads .cache/r7 (the lease's results, not in
# git), .cache/r6 (round 6's b05a/b15a cases, for the across-seed pairs) and .stage/bench700 (built from
# ../shared/seed at run time, not in git).
#   bash docs/analysis/r7/score.sh
# Each serve scored per benchmark (genbench, genbench-flat, genbench-cause) and on the union flat + cause (the
# benchmark defaults are chosen by), then paired comparisons with `evalkit compare` (2,000 paired resamples).
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=.cache/r7 R6=.cache/r6 EV=(.venv/bin/python -m reportminer.evalkit.cli)
declare -A FILES=([genbench]=benchmarks/genbench/cases.jsonl [genbench-flat]=benchmarks/genbench-flat/cases.jsonl
  [genbench-cause]=benchmarks/genbench-cause/cases.jsonl [union]="benchmarks/genbench-flat/cases.jsonl benchmarks/genbench-cause/cases.jsonl")
declare -A BASE=([serve-m05]=b05s2 [serve-m05f8]=b05s2 [serve-m05r]=r05fr [serve-m05a]=r05fa [serve-m15]=b15s2)
for s in serve-m05 serve-m05f8 serve-m05r serve-m05a serve-m15; do
  [ -d "$R/$s" ] || { echo "no $R/$s"; continue; }
  for b in genbench genbench-flat genbench-cause union; do
    g=(); for f in ${FILES[$b]}; do g+=(--genbench "$f"); done
    "${EV[@]}" bench score "$R/$s" --bench .stage/bench700 "${g[@]}" --out "$R/$b/$s" --baseline "${BASE[$s]}" \
      > "$R/$b.$s.md" 2>&1 || echo "score failed: $b $s"
  done
done
# Pairs (first = reference): the second seed's ranking, the levers, FP8 against bf16, and each seed-7 run against
# its round-6 twin (same recipe, another training: how much a training seed moves the figure).
pairs=(
  "seed7:b05s2=serve-m05/b05s2 b15s2=serve-m15/b15s2"
  "lever05:b05s2=serve-m05/b05s2 r05fa=serve-m05a/r05fa r05fr=serve-m05r/r05fr"
  "roottrain:r05fa=serve-m05a/r05fa r05fr=serve-m05r/r05fr"
  "fp8:bf16=serve-m05/b05s2 fp8=serve-m05f8/b05s2"
)
for b in genbench genbench-flat genbench-cause union; do
  for k in gen genp dev; do
    for p in "${pairs[@]}"; do
      name=${p%%:*} args=()
      for run in ${p#*:}; do
        lab=${run%%=*} sv=${run#*=}
        f=$R/$b/${sv%/*}/${sv#*/}.$k.cases.parquet; [ -f "$f" ] && args+=("$lab=$f")
      done
      [ ${#args[@]} -ge 2 ] && "${EV[@]}" compare "${args[@]}" --json "$R/compare.$b.$k.$name.json" \
        > "$R/compare.$b.$k.$name.txt" 2>&1
    done
    # across seeds: round 6's adapters (same recipe, seed 42) against this round's seed 7
    for m in 05 15; do
      a=$R6/$b/scores/serve-m${m}$([ $m = 15 ] && echo a)/b${m}a.$k.cases.parquet
      [ -f "$a" ] || a=$R6/$b.b${m}a.$k.cases.parquet  # round 6 kept the 1.5B union cases at the top
      s=$R/$b/serve-m$m/b${m}s2.$k.cases.parquet
      [ -f "$a" ] && [ -f "$s" ] && "${EV[@]}" compare "b${m}a=$a" "b${m}s2=$s" \
        --json "$R/compare.$b.$k.seeds$m.json" > "$R/compare.$b.$k.seeds$m.txt" 2>&1
    done
  done
done
ls "$R"/compare.*.txt | wc -l
