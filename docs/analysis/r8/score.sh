#!/usr/bin/env bash
# Round 8 scoring (docs/RESULTS.md round 8), run here after the lease: reads .cache/r8 (the lease's results, not in
# git), .cache/r6 and .cache/r7 (earlier runs' cases files) and .stage/bench700 (built from ../shared/seed).
#   bash docs/analysis/r8/score.sh
# Every serve covered the 50 sample rows, genbench, genbench-flat and all 80 genbench-cause cases with their
# variants. A serve cut short by the lease scores only the cases it has (cut to those present, as in round 7).
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=.cache/r8 EV=(.venv/bin/python -m reportminer.evalkit.cli)
for s in "$R"/serve-*/; do
  s=${s%/}; t=$(basename "$s")
  ls "$s"/*.parquet > /dev/null 2>&1 || { echo "no shards: $t"; continue; }
  .venv/bin/python - "$s" <<'PY'
import glob, json, sys
import polars as pl
serve = sys.argv[1]
ids = set(pl.concat([pl.read_parquet(f) for f in sorted(glob.glob(serve + "/*.parquet"))],
                    how="diagonal_relaxed")["id"].to_list())
for name in ("genbench", "genbench-flat", "genbench-cause"):
    kept = 0
    with open(f"{serve}.{name}.present.jsonl", "w", encoding="utf-8") as out:
        for line in open(f"benchmarks/{name}/cases.jsonl", encoding="utf-8"):
            r = json.loads(line); p = r.get("perturb") or {}
            need = [r["id"]] + [r["id"] + "~ins"] * bool(p.get("insert")) + [r["id"] + "~rem"] * bool(p.get("remove"))
            if all(x in ids for x in need):
                out.write(line); kept += 1
    print(f"{serve}: {name} {kept} cases present")
PY
  declare -A G=([genbench]="$s.genbench.present.jsonl" [genbench-flat]="$s.genbench-flat.present.jsonl"
    [cause]="$s.genbench-cause.present.jsonl" [union]="$s.genbench-flat.present.jsonl $s.genbench-cause.present.jsonl")
  for b in genbench genbench-flat cause union; do
    g=(); for f in ${G[$b]}; do g+=(--genbench "$f"); done
    rm -rf "$R/$b/$t"
    "${EV[@]}" bench score "$s" --bench .stage/bench700 "${g[@]}" --out "$R/$b/$t" > "$R/$b.$t.md" 2>&1 \
      || echo "score failed: $b $t"
  done
done
ls "$R"/*/serve-*/*.gen.cases.parquet
