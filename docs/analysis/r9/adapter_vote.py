"""Voting across adapters (seeds) instead of across samples: measured on served rows, no GPU.

Round 9 found the recommended recipe's two seeds 6.7 points apart on the validated benchmark, one under- and one
over-answering. Self-consistency (`engine run --samples 5`, one adapter) gained +7.1 there in round 8 by keeping
only the metrics most samples name. The same vote over adapters trained with other seeds or levers asks whether the
seeds' disagreement is the noise that voting removes. Every adapter here answered the same 1,400 rows (the sample
rows, genbench, genbench-flat, genbench-cause and their variants) in round 8's and round 9's serves, so the vote needs
no new decoding: this reads their shards, votes per row with the engine's own `vote` (the `--samples` rule: a metric
stays when >= `threshold` of the answers name it), and writes a results folder shaped like a serve's, one `adapter`
per vote, for `evalkit bench score` (docs/analysis/r8/score.sh with `R=`).

    PYTHONPATH=$(scripts/srcview.sh) .venv/bin/python docs/analysis/r9/adapter_vote.py \\
        --serve .cache/r8/serve-m05 --serve .cache/r9/lease2/serve-m05 --out .cache/r9/vote/serve-vote \\
        --vote vote3=r05fm,r05fm7,r05fg --vote vote2and=r05fm,r05fm7@1.0
    R=.cache/r9/vote bash docs/analysis/r8/score.sh

The product command is `engine vote RESULTS OUT --adapters a,b,c` (engine/vote_adapters.py), for adapters served in one
run; this script stays as the record of round 9's figures, whose adapters were served in two leases.

Its price in production would be one decode per adapter (k adapters in one engine: k answers a row, like
`--samples k` but greedy), so it is compared with `--samples 5` at ~4x the GPU time, not with one greedy adapter.
"""
from __future__ import annotations

import glob
from pathlib import Path

import click
import polars as pl

from reportminer.data.schema import Extraction
from reportminer.engine.vote import vote


def _load(serves: tuple[str, ...]) -> pl.DataFrame:
    frames = []
    for s in serves:
        files = sorted(glob.glob(f"{s}/*.parquet"))
        if not files:
            raise click.ClickException(f"{s}: no shards")
        frames += [pl.read_parquet(f) for f in files]
    return pl.concat(frames, how="diagonal_relaxed")


@click.command()
@click.option("--serve", "serves", multiple=True, required=True, help="A serve's results folder (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder to write (one shard).")
@click.option("--vote", "votes", multiple=True, required=True,
              help="NAME=A,B,C[@THRESHOLD]: vote over adapters A, B, C (threshold 0.5 unless given).")
def main(serves: tuple[str, ...], out: Path, votes: tuple[str, ...]) -> None:
    df = _load(serves)
    base = df.unique("id", keep="first", maintain_order=True).drop("adapter", "analysis", "metrics", "raw", "samples",
                                                                      "dropped_metrics", "status", "error")
    by = {(r["id"], r["adapter"]): r for r in df.iter_rows(named=True)}
    rows = []
    for spec in votes:
        name, rest = spec.split("=", 1)
        members, _, thr = rest.partition("@")
        adapters = members.split(",")
        threshold = float(thr) if thr else 0.5
        missing = [a for a in adapters if not any(k[1] == a for k in by)]
        if missing:
            raise click.ClickException(f"{spec}: no rows for {missing}")
        kept = 0
        for b in base.iter_rows(named=True):
            answers = []
            for a in adapters:
                r = by.get((b["id"], a))
                ok = r is not None and r["status"] == "ok" and r["metrics"] is not None
                answers.append(Extraction.from_dict({"analysis": r["analysis"], "metrics": r["metrics"]}) if ok else None)
            v = vote(answers, threshold=threshold)
            metrics = [] if v is None else [{"metric_name": m["metric_name"], "metric_type": m["metric_type"],
                                              "score": float(m["score"]), "reason": m.get("reason", "")}
                                             for m in v.metrics]
            kept += len(metrics)
            rows.append({**b, "adapter": name, "analysis": "" if v is None else v.analysis, "metrics": metrics,
                         "status": "ok" if v is not None else "error", "error": None if v is not None else "no valid answer"})
        click.echo(f"{name}: {len(adapters)} adapters, threshold {threshold}: {kept} metrics over {base.height} rows")
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(out / "vote-00000.parquet")
    click.echo(f"wrote {len(rows)} rows to {out / 'vote-00000.parquet'}")


if __name__ == "__main__":
    main()
