"""How much of the perturbation share is the GPU's own noise: two passes of one adapter over the same rows.

Issue 16's perturbation check counts a case as moved when any of its variants (a background sentence inserted or
removed) gets another metric count than the case itself, within one serve. Greedy decoding on a GPU is not
batch-invariant (docs/BENCHMARKS.md, ninth session: a tenth of the rows change their count between two passes of
one setting), so a case can "move" with no change in the model's judgement. This measures that noise on the
benchmark's own rows: two serves of one adapter over the same 1,400 rows (round 8: r05fr7 in serve-m05, the default
grammar, and in serve-m05cap, the capped grammar, which the ninth session found no further from the default than
two passes of one setting), and turns the per-row flip rate q into the share of cases a perfectly steady model would
still be seen to move: 1 - (1 - q)^k for a case with k variants, averaged over the cases.

    .venv/bin/python docs/analysis/r9/perturb_floor.py .cache/r8/serve-m05 .cache/r8/serve-m05cap r05fr7 \\
        benchmarks/genbench-flat/cases.jsonl benchmarks/genbench-cause/cases.jsonl
"""
from __future__ import annotations

import glob
import json
import statistics
import sys

import polars as pl


def counts(serve: str, adapter: str) -> dict[str, int]:
    files = sorted(glob.glob(f"{serve}/*.parquet"))
    if not files:
        sys.exit(f"{serve}: no shards")
    df = pl.concat([pl.read_parquet(f, columns=["id", "adapter", "metrics"]) for f in files])
    df = df.filter(pl.col("adapter") == adapter)
    if not df.height:
        sys.exit(f"{serve}: no rows for adapter {adapter}")
    return dict(df.select("id", pl.col("metrics").list.len()).iter_rows())


def main(a_dir: str, b_dir: str, adapter: str, *cases_files: str) -> None:
    a, b = counts(a_dir, adapter), counts(b_dir, adapter)
    ids = [json.loads(line)["id"] for f in cases_files for line in open(f, encoding="utf-8") if line.strip()]
    moved, flips, ks = [], [], []
    for c in ids:
        if c not in a or c not in b:
            continue
        variants = [r for r in a if r.startswith(c + "~")]
        ks.append(len(variants))
        moved.append(any(a[v] != a[c] for v in variants))
        flips += [a[r] != b[r] for r in [c, *variants] if r in b]
    q = sum(flips) / len(flips)
    floor = statistics.mean(1 - (1 - q) ** k for k in ks)
    print(f"cases {len(ks)}, variants a case {statistics.mean(ks):.2f}")
    print(f"moved within the first serve (the perturbation share): {sum(moved)}/{len(moved)} = {sum(moved) / len(moved):.1%}")
    print(f"count differs between the two serves, same rows: q = {sum(flips)}/{len(flips)} = {q:.1%}")
    print(f"share a steady model would still be seen to move (1 - (1 - q)^k): {floor:.1%}")


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
