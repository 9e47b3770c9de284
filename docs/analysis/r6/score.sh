#!/usr/bin/env bash
# Round 6 scoring (docs/RESULTS.md round 6), run here after the lease: reads .cache/r6 (the lease's results,
# not in git) and .stage/bench700 (built from ../shared/seed at run time, not in git).
#   bash docs/analysis/r6/score.sh
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=.cache/r6 PY=.venv/bin/python
declare -A BASE=([serve-m05]=b05a [serve-m15a]=b15a [serve-m15b]=r15fa)
for s in serve-m05 serve-m15a serve-m15b; do
  [ -d "$R/$s" ] || continue
  for b in genbench genbench-flat genbench-cause; do
    $PY scripts/experiment.py --bench .stage/bench700 --work "$R/$b" --genbench "benchmarks/$b/cases.jsonl" \
      score --results "$R/$s" --baseline "${BASE[$s]}" --no-record > "$R/$b.$s.log" 2>&1 || echo "score failed: $b $s"
  done
done
# paired comparisons across serves (evalkit compare: 2,000 paired resamples)
for b in genbench genbench-flat genbench-cause; do
  d=$R/$b/scores
  for k in gen genp; do
    args=()
    for p in serve-m05/b05a serve-m15a/b15a serve-m15b/r15fa; do
      f=$d/${p%/*}/${p#*/}.$k.cases.parquet; [ -f "$f" ] && args+=("${p#*/}=$f")
    done
    [ ${#args[@]} -ge 2 ] && $PY -m reportminer.evalkit.cli compare "${args[@]}" --json "$R/compare.$b.$k.json" > "$R/compare.$b.$k.txt" 2>&1
  done
done
d=$R/genbench/scores
args=(); for p in serve-m05/b05a serve-m15a/b15a serve-m15b/r15fa; do f=$d/${p%/*}/${p#*/}.dev.cases.parquet; [ -f "$f" ] && args+=("${p#*/}=$f"); done
[ ${#args[@]} -ge 2 ] && $PY -m reportminer.evalkit.cli compare "${args[@]}" --json "$R/compare.dev.json" > "$R/compare.dev.txt" 2>&1
ls "$R"/compare.*.txt
