#!/usr/bin/env bash
# Rounds 6-8 as arms (evalkit compare --arm; docs/evalkit.md), run after docs/analysis/r8/score.sh:
#   bash docs/analysis/r8/arms.sh
# Arms: b05 (the plain 0.5B recipe: b05a seed 42, b05s2 seed 7, b05s3 seed 1234), r05fr (the 0.5B with the team's
# rows: r05fr 42, r05fr7 7), b15 (the 1.5B: b15a 42, b15s2 7), r15fr (the 1.5B with the team's rows, 42), r05fm
# (r05fr + benchmarks/multi-train, 42). A run
# that did not come back is left out of its arm. Two unions: the 194 cases every run has (genbench-flat + the 34
# genbench-cause cases round 7 served) and the full 240 (flat + all 80 cause) without round 7's runs.
# Decoding levers of one adapter (self-consistency, FP8) are paired against that adapter's greedy bf16 run.
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=.cache/r8 R6=.cache/r6 R7=.cache/r7 EV=(.venv/bin/python -m reportminer.evalkit.cli)
declare -A U=([b05a]=$R6/union/scores/serve-m05/b05a.gen.cases.parquet [b15a]=$R6/union.b15a.gen.cases.parquet
  [b05s2]=$R7/union/serve-m05all/b05s2.gen.cases.parquet [r05fr]=$R7/union/serve-m05all/r05fr.gen.cases.parquet
  [b05s3]=$R/union/serve-m05/b05s3.gen.cases.parquet [r05fr7]=$R/union/serve-m05/r05fr7.gen.cases.parquet
  [b15s2]=$R/union/serve-m15b/b15s2.gen.cases.parquet [r15fr]=$R/union/serve-m15/r15fr.gen.cases.parquet
  [r05fm]=$R/union/serve-m05/r05fm.gen.cases.parquet)
declare -A GB=([b05a]=$R6/genbench/scores/serve-m05/b05a [b15a]=$R6/genbench/scores/serve-m15a/b15a
  [b05s2]=$R7/genbench/serve-m05all/b05s2 [r05fr]=$R7/genbench/serve-m05all/r05fr
  [b05s3]=$R/genbench/serve-m05/b05s3 [r05fr7]=$R/genbench/serve-m05/r05fr7
  [b15s2]=$R/genbench/serve-m15b/b15s2 [r15fr]=$R/genbench/serve-m15/r15fr [r05fm]=$R/genbench/serve-m05/r05fm)
declare -A ARM=([b05]="b05a b05s2 b05s3" [r05fr]="r05fr r05fr7" [b15]="b15a b15s2" [r15fr]="r15fr" [r05fm]="r05fm")
ORDER=(b05 r05fr b15 r15fr r05fm)
# $1 = output stem, $2 = name of the path map, $3 = suffix appended to each path, $4 = runs to leave out
arms() {
  local -n P=$2; local runs=() a=() r m members
  for arm in "${ORDER[@]}"; do
    members=""
    for r in ${ARM[$arm]}; do
      case " $4 " in *" $r "*) continue ;; esac
      [ -f "${P[$r]}$3" ] || { echo "$1: no $r (${P[$r]}$3)"; continue; }
      runs+=("$r=${P[$r]}$3"); members+="${members:+,}$r"
    done
    [ -n "$members" ] && a+=(--arm "$arm=$members")
  done
  "${EV[@]}" compare "${runs[@]}" "${a[@]}" --json "$R/arms.$1.json" > "$R/arms.$1.txt" 2>&1 || echo "compare failed: $1"
}
arms union194 U "" ""
arms union240 U "" "b05s2 r05fr"
arms genbench-gen GB .gen.cases.parquet ""
arms genbench-dev GB .dev.cases.parquet ""
# decoding levers, paired on one adapter (r05fr7, or r05fm in the lease's tiny and lever modes): the grammar without
# length caps in it (cap: the default before the eighth session), self-consistency (5 samples) and FP8 weights against the same adapter's greedy bf16 rows
for b in union genbench genbench-flat cause; do
  for a in r05fr7 r05fm; do
    base=$R/$b/serve-m05/$a.gen.cases.parquet; [ -f "$base" ] || continue
    alt=(); for t in m05cap m05sc m05fp8; do f=$R/$b/serve-$t/$a.gen.cases.parquet; [ -f "$f" ] && alt+=("$a-${t#m05}=$f"); done
    [ ${#alt[@]} -gt 0 ] && "${EV[@]}" compare "$a=$base" "${alt[@]}" --json "$R/decode.$b.$a.json" > "$R/decode.$b.$a.txt" 2>&1
  done
done
# the lever of the small and tiny modes: r05fm against round 7's r05fr (same seed, + benchmarks/multi-train)
for b in union genbench genbench-flat cause; do
  m=$R/$b/serve-m05/r05fm.gen.cases.parquet; [ -f "$m" ] || continue
  case $b in union) r=$R7/union/serve-m05all/r05fr.gen.cases.parquet ;; cause) r=$R7/cause/serve-m05all/r05fr.gen.cases.parquet ;;
    *) r=$R7/$b/serve-m05all/r05fr.gen.cases.parquet ;; esac
  "${EV[@]}" compare "r05fr=$r" "r05fm=$m" --json "$R/multi.$b.json" > "$R/multi.$b.txt" 2>&1
done
ls "$R"/arms.*.txt "$R"/decode.*.txt "$R"/multi.*.txt 2>/dev/null
