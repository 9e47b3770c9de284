"""Voting across adapters: one answer a row from the answers of several adapters of one run.

Why: round 9 (docs/RESULTS.md) found the recommended 0.5B recipe's two training seeds 6.7 points apart on the
validated benchmark (39.2 against 45.8 %, beyond noise), one over-answering: a user who trains one adapter draws a
seed. The vote of three adapters (the two seeds and a graft variant) by the rule `engine run --samples` uses passed
47.1 %: within noise of the better seed (+1.3 [-2.1, +4.6]), +7.9 beyond noise over the worse, pred/gold 0.94
(docs/analysis/r9/adapter_vote.py). It does not steady the count under perturbation and reaches no issue-16 target:
it removes the seed lottery, at one decode per adapter (k adapters in one `engine run` read the input once).
Round 10 found the same on the renamed rows: r05fn + r05fn7 + r05fm7 voted 42.9 %, between its members (48.3, 40.8,
34.6 %) and -5.4 beyond noise below the best; what it buys is never drawing the worst seed, not beating the best.

`engine vote RESULTS OUT --adapters a,b,c` writes every shard of RESULTS under OUT at the same relative path,
with one more row per input row after that row's own: adapter NAME, the vote (engine/vote.py: a metric stays when
at least `threshold` of the valid answers name it; analysis, raw text and order from the answer that names most
of what stays). Its `samples` is {valid, total} over the adapters; its token counts are null (it decoded nothing:
the members' rows hold the tokens); its metrics carry `agreement` and their evidence (`spans`, `grounded`), as an
engine row does. A row none of the adapters answered validly is an error row naming the first adapter's reason.

It is per-row Python (Arrow to dicts, the vote, dicts to Arrow), like the `--samples` vote inside a run: 1,400
votes over 3 adapters (4,200 rows, 23 shards) took 2.4 s on the 2-core sandbox, ~580 votes/s, so a million rows
is ~30 minutes of one core: small beside their decoding (28.8 answers/s on an H200, round 9), and shards could
be voted in parallel if it ever mattered.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reportminer.data.errors import ConfigError, DataError
from reportminer.data.io import parquet_files
from reportminer.data.schema import (
    ADAPTER,
    ANALYSIS,
    BASE_ADAPTER,
    DROPPED_METRICS,
    ERROR,
    FINISH_REASON,
    ID,
    METRICS,
    OK,
    OUTPUT_TOKENS,
    PARAGRAPH,
    PROMPT_TOKENS,
    RAW,
    RAW_SAMPLES,
    ROW_ERROR,
    SAMPLES,
    STATUS,
    Extraction,
)

from .rows import grounded
from .vote import DEFAULT_VOTE_THRESHOLD, vote


@dataclass
class AdapterVoteReport:
    name: str
    adapters: list[str]
    threshold: float
    files: int = 0
    rows: int = 0  # voted rows written (one per input row)
    failed: int = 0  # of them, rows no adapter answered validly
    metrics: int = 0  # metrics kept by the vote, over all rows
    member_metrics: dict[str, int] = field(default_factory=dict)  # each adapter's metrics on the same rows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_adapters(spec: str | Sequence[str]) -> list[str]:
    """`a,b,c` (or a list) as adapter names: at least two, distinct, none of them `base`."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if len(names) < 2:
        raise ConfigError(f"--adapters {','.join(names) or '(none)'}: give at least two adapter names to vote over")
    if len(set(names)) != len(names):
        raise ConfigError(f"--adapters {','.join(names)}: a name appears twice")
    return names


def _voted_row(name: str, members: list[dict[str, Any] | None], threshold: float, columns: list[str],
               fallback: dict[str, Any]) -> dict[str, Any]:
    present = [m for m in members if m is not None]
    answers = [Extraction.from_dict({"analysis": m.get(ANALYSIS) or "", "metrics": m.get(METRICS) or []})
               if m is not None and m.get(STATUS) == OK and m.get(METRICS) is not None else None for m in members]
    v = vote(answers, threshold)
    template = (present[0] if present else fallback) if v is None else members[v.chosen]
    assert template is not None
    row = {c: template.get(c) for c in columns}  # the input's own columns come along unchanged
    row.update({ADAPTER: name, PROMPT_TOKENS: None, OUTPUT_TOKENS: None, DROPPED_METRICS: None})
    if RAW_SAMPLES in columns:
        row[RAW_SAMPLES] = [m.get(RAW) if m is not None else None for m in members]
    if v is None:
        errors = [m.get(ERROR) or "?" for m in present] or ["missing: none of these adapters has a row for it"]
        row.update({ANALYSIS: None, METRICS: None, RAW: None, FINISH_REASON: None, STATUS: ROW_ERROR,
                    SAMPLES: {"valid": 0, "total": len(members)},
                    ERROR: f"{errors[0].split(':', 1)[0]}: no adapter answered validly ({len(members)} adapters; "
                           f"first: {errors[0]})"})
        return row
    row.update({ANALYSIS: v.analysis, METRICS: grounded(template.get(PARAGRAPH), v.metrics) or [], STATUS: OK,
                ERROR: None, SAMPLES: {"valid": v.valid, "total": v.total}})
    return row


def vote_results(results: Path, out: Path, adapters: Sequence[str], name: str = "vote",
                 threshold: float = DEFAULT_VOTE_THRESHOLD) -> AdapterVoteReport:
    """Every result shard of `results` (a file or a folder) with a voted row per input row added, under `out`."""
    members = parse_adapters(adapters)
    if not name or name == BASE_ADAPTER or name in members:
        raise ConfigError(f"--name {name!r}: the voted rows need a name of their own (not {BASE_ADAPTER!r} nor a "
                          f"voting adapter's)")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: the share of adapters that must name a metric, in (0, 1]")
    if out.resolve() == results.resolve() or (results.is_file() and out.resolve() == results.parent.resolve()):
        raise ConfigError(f"{out}: write the voted results to another folder than RESULTS ({results})")
    files = parquet_files(results) if results.is_dir() else [results]
    if not files:
        raise DataError(f"{results}: no result shards (.parquet) to vote over")
    report = AdapterVoteReport(name=name, adapters=members, threshold=threshold, files=len(files),
                               member_metrics={a: 0 for a in members})
    for f in files:
        t = pq.read_table(f)
        for col in (ID, ADAPTER, STATUS, METRICS):
            if col not in t.schema.names:
                raise DataError(f"{f}: not engine results (no `{col}` column)")
        rows = t.to_pylist()
        seen = {r[ADAPTER] for r in rows}
        if name in seen:
            raise ConfigError(f"{f}: already holds rows of adapter {name!r}; choose another --name")
        missing = [a for a in members if a not in seen]
        if missing:
            raise DataError(f"{f}: no rows for adapter(s) {', '.join(missing)}; adapters present: "
                            f"{', '.join(sorted(map(str, seen)))}")
        # One block per input row: an id's rows by adapter, the k-th row of each adapter together (`engine run`
        # writes an input row's adapters side by side, rows.output_table; an input may repeat an id without
        # --strict-ids, and results put together by hand may order rows otherwise). Blocks in order of first id.
        by_id: dict[Any, dict[str, list[dict[str, Any]]]] = {}
        for r in rows:
            by_id.setdefault(r[ID], {}).setdefault(r[ADAPTER], []).append(r)
        blocks = [[rs[k] for rs in per.values() if k < len(rs)]
                  for per in by_id.values() for k in range(max(map(len, per.values())))]
        out_rows: list[dict[str, Any]] = []
        for own in blocks:
            pick = {r[ADAPTER]: r for r in own}
            voted = _voted_row(name, [pick.get(a) for a in members], threshold, t.schema.names, own[0])
            out_rows += own + [voted]
            report.rows += 1
            report.failed += voted[STATUS] != OK
            report.metrics += len(voted[METRICS] or [])
            for a in members:
                m = pick.get(a)
                report.member_metrics[a] += len(m.get(METRICS) or []) if m is not None and m.get(STATUS) == OK else 0
        target = out / (f.relative_to(results) if results.is_dir() else Path(f.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(out_rows, schema=t.schema), target)
    return report


__all__ = ["AdapterVoteReport", "parse_adapters", "vote_results"]
