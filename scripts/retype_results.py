#!/usr/bin/env python
"""Apply a learned metric-type prior to engine results made without it (what `engine run` now does per
answer, `data/type_prior.py`), to measure it with `evalkit compare` on results that already exist.

    # the prior from the labels the adapter was trained on, onto one adapter's rows of a results folder
    python scripts/retype_results.py .cache/gpu3/serve-greedy /tmp/retyped --data .stage/bench/train.jsonl
    # or the prior stored in the adapter folder by the trainer
    python scripts/retype_results.py RESULTS OUT --prior runs/demo/best

Only the `metrics` column's `metric_type` changes (the model's answer stays in `raw`); every other column
and the shard layout are kept. It prints how many metrics were retyped per adapter.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reportminer.data.io import iter_jsonl, parquet_files  # noqa: E402
from reportminer.data.type_prior import TypePrior, build_type_prior, label_pairs  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path), help="Seed-format JSONL labels (a file or a folder) to learn from.")
@click.option("--prior", "prior_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An adapter folder holding type_prior.json.")
@click.option("--adapter", "only", multiple=True, help="Retype only these adapter columns (default: all but base).")
def main(results: Path, out: Path, data: Path | None, prior_dir: Path | None, only: tuple[str, ...]) -> None:
    if bool(data) == bool(prior_dir):
        raise click.UsageError("give exactly one of --data and --prior")
    if prior_dir:
        prior = TypePrior.read(prior_dir)
        if prior is None:
            raise click.BadParameter(f"{prior_dir}: no type_prior.json", param_hint="--prior")
    else:
        assert data is not None
        prior = build_type_prior(label_pairs(r.obj.get("output") or {} for r in iter_jsonl(data)))
    files = parquet_files(results) if results.is_dir() else [results]
    out.mkdir(parents=True, exist_ok=True)
    changed: dict[str, int] = {}
    for f in files:
        t = pq.read_table(f)
        rows = t.to_pylist()
        for r in rows:
            name = r.get("adapter")
            if r.get("status") != "ok" or not r.get("metrics") or name == "base" or (only and name not in only):
                continue
            r["metrics"], n = prior.apply(r["metrics"])
            changed[name] = changed.get(name, 0) + n
        pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), out / f.name)
    click.echo(json.dumps({"files": len(files), "prior_sha256": prior.sha256(), "keys": len(prior.counts),
                           "retyped_metrics": changed}, ensure_ascii=False))


if __name__ == "__main__":
    main()
