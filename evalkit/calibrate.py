"""Calibrating the engine's score_threshold on labelled rows, and storing it in the adapter's manifest.

`evalkit calibrate RESULTS --gold GOLD [--adapter NAME] [--write-manifest ADAPTER_DIR]` (formerly
scripts/calibrate_threshold.py). RESULTS: `engine run` output (file or folder) of the labelled paragraphs,
run with the threshold off (`--score-threshold 0`, or an adapter without `decoding` in its manifest).
GOLD: the same rows' labels, as `evalkit score` reads them. The threshold bounds `score` for a run with
one sample a row and `agreement` for a run with `--samples N > 1` (read from the results' `samples`
column), as the engine applies it (`engine/decoding.py`).

For every candidate threshold (0 = off, and each distinct observed value) the metrics below it are removed
from the predictions and the rows are scored with the seed's verdicts (matcher upstream). The best
threshold maximises pass, then strict, then is the lowest. `write_threshold` stores it in the adapter's
reportminer_adapter.json as `decoding` (data.manifest.AdapterManifest), which the engine applies by
default to runs with the same sample count. Calibrating on the rows you then report on overstates the
gain: use a dev split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.compute as pc

from reportminer.data.errors import ConfigError, DataError
from reportminer.data.io import read_table
from reportminer.data.manifest import AdapterManifest

from .loaders import PredictionSet, load_gold, load_predictions
from .matchers import make_matcher
from .score import score_set


@dataclass(frozen=True)
class Calibration:
    """One sweep: `key` the value the threshold bounds ("score" or "agreement"), `samples` the run's
    sample count, `table` one row a candidate threshold (threshold, n, passed, pass_rate, strict, f1,
    pred_total, gold_total), `best` the chosen row."""

    key: str
    samples: int
    table: list[dict[str, Any]]
    best: dict[str, Any]
    results: str
    gold: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "samples": self.samples, "best": self.best, "table": self.table,
                "results": self.results, "gold": self.gold}


def _values(results: Path, adapter: str, key: str) -> dict[str, list[float]]:
    """id -> the `key` value of each metric, in the order evalkit reads the names (ok rows only)."""
    t = read_table(results)
    rows = t.select([c for c in ("id", "adapter", "status", "metrics", "dropped_metrics") if c in t.column_names])
    out: dict[str, list[float]] = {}
    dropped = 0
    for r in rows.to_pylist():
        if (r.get("adapter") or "base") != adapter or r.get("status") != "ok" or r.get("metrics") is None:
            continue
        ms = [m for m in r["metrics"] if (m.get("metric_name") or "").strip()]
        out[str(r["id"])] = [float(m.get(key) if m.get(key) is not None else 1.0) for m in ms]
        dropped += len(r.get("dropped_metrics") or [])
    if dropped:
        raise DataError(f"{results}: {dropped} metric(s) were already dropped by a threshold; "
                        "rerun the engine with --score-threshold 0")
    return out


def _samples(results: Path) -> int:
    t = read_table(results)
    if "samples" not in t.column_names:
        return 1
    totals = pc.struct_field(t.column("samples"), "total").drop_null()
    return int(pc.max(totals).as_py() or 1) if len(totals) else 1


def _filtered(ps: PredictionSet, values: dict[str, list[float]], threshold: float) -> PredictionSet:
    def keep(i: str, names: list[str], types: list[str]) -> tuple[list[str], list[str]]:
        v = values.get(i)
        if v is None or len(v) != len(names):  # not a structured ok row: evalkit parsed its raw text, keep it
            return names, types
        idx = [k for k, x in enumerate(v) if x >= threshold - 1e-9]
        return [names[k] for k in idx], [types[k] for k in idx]

    f = ps.frame
    pairs = [keep(i, n, t) for i, n, t in f.select("id", "pred_names", "pred_types").iter_rows()]
    frame = f.with_columns(pl.Series("pred_names", [p[0] for p in pairs], dtype=pl.List(pl.String)),
                           pl.Series("pred_types", [p[1] for p in pairs], dtype=pl.List(pl.String)))
    return PredictionSet(f"{ps.name}@{threshold:.4g}", frame, ps.path, ps.format)


def best(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the most passed cases, then the most strict ones, then the lowest threshold."""
    return max(table, key=lambda r: (r["passed"], r["strict"], -r["threshold"]))


def calibrate(results: str | os.PathLike, gold: str | os.PathLike, adapter: str | None = None) -> Calibration:
    """Sweep every candidate threshold over engine `results` against `gold` (see the module docstring)."""
    results, gold = Path(results), Path(gold)
    gold_df = load_gold(gold)
    sets = load_predictions(results, gold_df, adapter=adapter)
    if len(sets) != 1:
        raise DataError(f"{results}: adapters {[s.name for s in sets]}; pick one with --adapter")
    if sets[0].format != "engine-parquet":
        raise DataError(f"{results}: calibration needs engine results (Parquet, with per-metric score/agreement)")
    ps = sets[0]
    samples = _samples(results)
    key = "agreement" if samples > 1 else "score"
    values = _values(results, ps.name, key)
    candidates = sorted({0.0} | {round(v, 6) for vs in values.values() for v in vs})
    matcher = make_matcher("upstream")
    table = []
    for t in candidates:
        s = score_set(gold_df, _filtered(ps, values, t), matcher).summary
        table.append({"threshold": t, "n": s["n"], "passed": s["passed"], "pass_rate": s["pass_rate"],
                      "strict": s["strict"], "f1": s["f1"], "pred_total": s["pred_total"], "gold_total": s["gold_total"]})
    return Calibration(key, samples, table, best(table), str(results), str(gold))


def write_threshold(cal: Calibration, adapter_dir: str | os.PathLike) -> dict[str, Any]:
    """Store `cal`'s best threshold in the adapter's manifest as `decoding` (other decoding keys kept);
    returns what was written. The keys and their meaning are the engine's (`engine/decoding.py`)."""
    man = AdapterManifest.read(adapter_dir)
    if man is None:
        raise ConfigError(f"{adapter_dir}: no reportminer_adapter.json to store the threshold in")
    man.decoding = {
        **(man.decoding or {}),
        "score_threshold": cal.best["threshold"],
        "samples": cal.samples,
        "threshold_on": cal.key,
        "calibrated_on": cal.gold,
        "calibrated_results": cal.results,
        "pass_rate": cal.best["pass_rate"],
        "pass_rate_off": cal.table[0]["pass_rate"],
        "calibrated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    man.write(adapter_dir)
    return man.decoding


def format_table(cal: Calibration) -> list[str]:
    """The sweep as text lines (the CLI prints them)."""
    lines = [f"threshold on {cal.key} (samples={cal.samples}); upstream protocol; {cal.table[0]['n']} gold rows",
             f"{'threshold':>9}  {'pass':>11}  {'strict':>6}  {'F1':>5}  {'pred/gold':>9}"]
    for r in cal.table:
        mark = "  <- best" if r is cal.best else ""
        ratio = r["pred_total"] / r["gold_total"] if r["gold_total"] else float("nan")
        lines.append(f"{r['threshold']:>9.4f}  {r['passed']:>4}/{r['n']:<3} {r['pass_rate']:>4.0%}  {r['strict']:>6}  "
                     f"{(r['f1'] or 0):>5.3f}  {ratio:>9.2f}{mark}")
    return lines
