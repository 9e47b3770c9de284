#!/usr/bin/env python
"""Calibrate the engine's score_threshold on labelled rows and optionally store it in the adapter manifest.

    scripts/calibrate_threshold.py RESULTS GOLD [--adapter NAME] [--write-manifest ADAPTER_DIR]

RESULTS: `engine run` output (file or folder) of the labelled paragraphs, run with the threshold off
(`--score-threshold 0`, or an adapter without `decoding` in its manifest). GOLD: the same rows' labels,
seed-format JSONL (`{"output": {"metrics": [...]}}`, test-case rows with `scenario` too) or Parquet with
`gold_metrics`, as `evalkit score` reads it. The threshold bounds `score` for a run with one sample a
row and `agreement` for a run with `--samples N > 1` (read from the results' `samples` column), as the
engine applies it.

For every candidate threshold (0 = off, and each distinct observed value) the metrics below it are
removed from the predictions and the rows are scored with evalkit's upstream protocol (the seed's
verdicts). The table shows pass / strict / F1 / predicted-per-gold; the best threshold maximises pass,
then strict, then is the lowest. With --write-manifest it is written into the adapter's
reportminer_adapter.json as `decoding`, which the engine applies by default to runs with the same
sample count. Calibrating on the rows you then report on overstates the gain: use a dev split.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import click
import polars as pl
import pyarrow.compute as pc

from reportminer.data.io import read_table
from reportminer.data.manifest import AdapterManifest
from reportminer.evalkit.loaders import PredictionSet, load_gold, load_predictions
from reportminer.evalkit.matchers import make_matcher
from reportminer.evalkit.score import score_set


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
        raise click.ClickException(f"{results}: {dropped} metric(s) were already dropped by a threshold; "
                                   "rerun the engine with --score-threshold 0")
    return out


def _samples(results: Path) -> int:
    t = read_table(results)
    if "samples" not in t.column_names:
        return 1
    totals = pc.struct_field(t.column("samples"), "total").drop_null()
    return int(pc.max(totals).as_py() or 1) if len(totals) else 1


def _filtered(ps: PredictionSet, values: dict[str, list[float]], threshold: float) -> PredictionSet:
    def keep(i, names, types):
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


def sweep(results: Path, gold_path: Path, adapter: str | None = None) -> tuple[str, int, list[dict]]:
    """(key, samples, one summary row per threshold) — the library half of this script."""
    gold = load_gold(gold_path)
    sets = load_predictions(results, gold, adapter=adapter)
    if len(sets) != 1:
        raise click.ClickException(f"{results}: adapters {[s.name for s in sets]}; pick one with --adapter")
    ps = sets[0]
    samples = _samples(results)
    key = "agreement" if samples > 1 else "score"
    values = _values(results, ps.name, key)
    candidates = sorted({0.0} | {round(v, 6) for vs in values.values() for v in vs})
    matcher = make_matcher("upstream")
    table = []
    for t in candidates:
        s = score_set(gold, _filtered(ps, values, t), matcher).summary
        table.append({"threshold": t, "n": s["n"], "passed": s["passed"], "pass_rate": s["pass_rate"],
                      "strict": s["strict"], "f1": s["f1"], "pred_total": s["pred_total"], "gold_total": s["gold_total"]})
    return key, samples, table


def best(table: list[dict]) -> dict:
    return max(table, key=lambda r: (r["passed"], r["strict"], -r["threshold"]))


@click.command(help=__doc__)
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.argument("gold", type=click.Path(exists=True, path_type=Path))
@click.option("--adapter", help="Adapter rows to calibrate (needed when RESULTS holds several).")
@click.option("--write-manifest", "adapter_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Store the best threshold in this adapter's reportminer_adapter.json (`decoding`).")
def main(results: Path, gold: Path, adapter: str | None, adapter_dir: Path | None) -> None:
    key, samples, table = sweep(results, gold, adapter)
    b = best(table)
    click.echo(f"threshold on {key} (samples={samples}); upstream protocol; {table[0]['n']} gold rows")
    click.echo(f"{'threshold':>9}  {'pass':>11}  {'strict':>6}  {'F1':>5}  {'pred/gold':>9}")
    for r in table:
        mark = "  <- best" if r is b else ""
        ratio = r["pred_total"] / r["gold_total"] if r["gold_total"] else float("nan")
        click.echo(f"{r['threshold']:>9.4f}  {r['passed']:>4}/{r['n']:<3} {r['pass_rate']:>4.0%}  {r['strict']:>6}  "
                   f"{(r['f1'] or 0):>5.3f}  {ratio:>9.2f}{mark}")
    if adapter_dir is None:
        return
    man = AdapterManifest.read(adapter_dir)
    if man is None:
        raise click.ClickException(f"{adapter_dir}: no reportminer_adapter.json to store the threshold in")
    man.decoding = {
        **(man.decoding or {}),
        "score_threshold": b["threshold"],
        "samples": samples,
        "threshold_on": key,
        "calibrated_on": str(gold),
        "calibrated_results": str(results),
        "pass_rate": b["pass_rate"],
        "pass_rate_off": table[0]["pass_rate"],
        "calibrated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    man.write(adapter_dir)
    click.echo(f"wrote decoding.score_threshold={b['threshold']} (samples={samples}) to {adapter_dir}", err=True)


if __name__ == "__main__":
    sys.exit(main())
