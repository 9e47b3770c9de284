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
    # round 9's figures were scored on the gold before the naming lever (git show 7c242b9:benchmarks/...),
    # as its members' were: evalkit bench score .cache/r9/vote/serve-vote --bench .stage/bench700 \\
    #     --genbench OLD/genbench-flat.jsonl --genbench OLD/genbench-cause.jsonl --present-only --out ...

The voting is the product's `engine vote` (engine/vote_adapters.py.vote_results); this script only puts the shards
of serves made in different leases together first (the same input shards, so the same file names), since
`engine vote` reads adapters served in one run.

Its price in production would be one decode per adapter (k adapters in one engine: k answers a row, like
`--samples k` but greedy), so it is compared with `--samples 5` at ~4x the GPU time, not with one greedy adapter.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reportminer.engine.vote_adapters import vote_results


def _combine(serves: tuple[str, ...], adapters: set[str], out: Path) -> None:
    """One shard per input shard holding every listed adapter's rows from every serve (the first serve's schema)."""
    names = sorted(p.name for p in Path(serves[0]).glob("*.parquet"))
    if not names:
        raise click.ClickException(f"{serves[0]}: no shards")
    for name in names:
        parts = []
        for s in serves:
            t = pq.read_table(Path(s) / name)
            parts.append(t.filter(pc.is_in(t["adapter"], pa.array(sorted(adapters)))))
        schema = parts[0].schema
        pq.write_table(pa.concat_tables([t.select(schema.names).cast(schema) for t in parts]), out / name)


@click.command()
@click.option("--serve", "serves", multiple=True, required=True, help="A serve's results folder (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder to write.")
@click.option("--vote", "votes", multiple=True, required=True,
              help="NAME=A,B,C[@THRESHOLD]: vote over adapters A, B, C (threshold 0.5 unless given).")
def main(serves: tuple[str, ...], out: Path, votes: tuple[str, ...]) -> None:
    specs = []
    for spec in votes:
        name, rest = spec.split("=", 1)
        members, _, thr = rest.partition("@")
        specs.append((name, members.split(","), float(thr) if thr else 0.5))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        _combine(serves, {a for _, m, _ in specs for a in m}, src)
        for k, (name, members, threshold) in enumerate(specs):  # each vote reads the previous one's output
            dst = out if k == len(specs) - 1 else Path(tmp) / f"v{k}"
            rep = vote_results(src, dst, members, name, threshold)
            click.echo(f"{name}: {len(members)} adapters, threshold {threshold}: {rep.metrics} metrics over {rep.rows} rows")
            src = dst


if __name__ == "__main__":
    main()
