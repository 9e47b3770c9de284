"""Retyping results made without the type prior: the prior `engine run` applies per answer, applied afterwards.

Results made before the prior existed (or with `--no-type-prior`) can be measured with it without rerunning
the model: `engine retype RESULTS OUT --prior ADAPTER` (the adapter's type_prior.json) or `--data LABELS`
(learned from seed-format labels, as the trainer learns it). Only the `metrics` column's `metric_type`
changes, as the engine's decoding does (decoding.row_from_completion -> TypePrior.apply); the model's
answer stays in `raw`, every other column and the shard layout are kept. Base-model rows, error rows and
rows without metrics are copied unchanged. (Was scripts/retype_results.py; docs/RESULTS.md round 3.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reportminer.data.errors import ConfigError
from reportminer.data.io import iter_jsonl, parquet_files
from reportminer.data.schema import BASE_ADAPTER, OK
from reportminer.data.type_prior import PRIOR_NAME, TypePrior, build_type_prior, label_pairs


@dataclass
class RetypeReport:
    files: int
    prior_sha256: str
    keys: int  # name keys the prior decides by
    retyped_metrics: dict[str, int] = field(default_factory=dict)  # per adapter column

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_prior(data: Path | None = None, prior_dir: Path | None = None) -> TypePrior:
    """The prior from an adapter folder's type_prior.json, or learned from seed-format labels: exactly one."""
    if (data is None) == (prior_dir is None):
        raise ConfigError("retype: give exactly one of --data and --prior")
    if prior_dir is not None:
        prior = TypePrior.read(prior_dir)
        if prior is None:
            raise ConfigError(f"--prior {prior_dir}: no {PRIOR_NAME}")
        return prior
    assert data is not None
    return build_type_prior(label_pairs(r.obj.get("output") or {} for r in iter_jsonl(data)))


def retype_results(results: Path, out: Path, prior: TypePrior, only: tuple[str, ...] = ()) -> RetypeReport:
    """Every result shard of `results` (a file or a folder) with `prior` applied, written under `out` at the
    same relative path; `only`: retype just these adapter columns (default every one but base)."""
    files = parquet_files(results) if results.is_dir() else [results]
    out.mkdir(parents=True, exist_ok=True)
    report = RetypeReport(files=len(files), prior_sha256=prior.sha256(), keys=len(prior.counts))
    for f in files:
        t = pq.read_table(f)
        rows = t.to_pylist()
        for r in rows:
            name = r.get("adapter")
            if r.get("status") != OK or not r.get("metrics") or name == BASE_ADAPTER or (only and name not in only):
                continue
            r["metrics"], n = prior.apply(r["metrics"])
            report.retyped_metrics[name] = report.retyped_metrics.get(name, 0) + n
        target = out / (f.relative_to(results) if results.is_dir() else Path(f.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), target)
    return report


__all__ = ["RetypeReport", "load_prior", "retype_results"]
