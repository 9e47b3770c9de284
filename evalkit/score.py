"""Per-case verdicts and the three-layer summary, computed on whole columns.

Layers, for any matcher:
1. the seed's verdicts: strict (as many predictions as gold and every gold hit), loose (every gold hit,
   counts differ by at most one), fail; `passed` = strict + loose;
2. metric-level precision, recall (= core hit rate) and micro F1 = 2 hits / (gold + predicted), with the
   hits split into exact-name hits and fuzzy hits (matched pairs whose names differ);
3. type accuracy over hit pairs (gold metric_type == predicted metric_type).
Each is also grouped by scenario (the gold's `scenario`, else its `type`, when it has one) and by the
gold's metric-type mix (financial / business / mixed / none).
4. count bias: predicted / gold metric totals and their ratio (overall and in every group), the same
   layers grouped by the gold's metric count (0, 1, 2, 3, 4+), and the gold-count x predicted-count
   matrix (`count_matrix`, which the HTML report draws).

The cases frame (`ScoreResult.cases`, written by `--cases`) is the unit everything downstream reads:
`compare` and `report` work from it alone, so a saved cases file is a complete record of a run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from reportminer.data.io import DataError

from .fastload import series
from .grounding import GROUNDING_COLUMNS, ground_cases, grounding_summary
from .loaders import PredictionSet, load_gold, load_predictions
from .matchers import Matcher, MatchStats, match
from .pardecode import Prefetch, score_specs

VERDICTS = ("strict", "loose", "fail")
COUNT_TOP = 4  # gold counts of 4 or more share the last `by_gold_count` bucket, "4+"
MIXES = ("financial", "business", "mixed", "none")
HIT_STRUCT = pl.Struct(
    {"gold": pl.String, "pred": pl.String, "score": pl.Float64, "gold_type": pl.String, "pred_type": pl.String}
)
# Columns of a cases file, in order. `row` (0-based) is internal and not written.
CASE_COLUMNS = (
    "run", "matcher", "id", "case", "scenario", "mix", "verdict", "json_valid", "missing", "n_gold", "n_pred",
    "n_hits", "exact_hits", "type_hits", "gold_names", "gold_types", "pred_names", "pred_types", "hits", "error",
)


@dataclass
class ScoreResult:
    name: str
    cases: pl.DataFrame
    summary: dict[str, Any]
    stats: MatchStats = field(default_factory=MatchStats)


def build_cases(gold: pl.DataFrame, preds: pl.DataFrame, where: str = "predictions") -> pl.DataFrame:
    """Gold left-joined with predictions on `id`; a prediction whose id is not in gold is an error."""
    if preds.height == gold.height and preds["id"].equals(gold["id"]):
        # Predictions in gold order, one a case (the usual file): the join is the two side by side
        # (gold ids are unique; 0.01 s instead of 0.1 s for a hash join on 200k string ids).
        joined = pl.concat([gold, preds.drop("id", "source").with_columns(pl.lit(True).alias("_has"))], how="horizontal")
    else:
        unknown = preds.join(gold.select("id"), on="id", how="anti")
        if unknown.height:
            shown = ", ".join(f"{i!r} ({s})" for i, s in unknown.select("id", "source").head(5).iter_rows())
            more = f" and {unknown.height - 5} more" if unknown.height > 5 else ""
            raise DataError(f"{where}: prediction id(s) with no gold case: {shown}{more}")
        joined = gold.join(preds.drop("source").with_columns(pl.lit(True).alias("_has")), on="id", how="left")
    missing = pl.col("_has").is_null()
    return joined.select(
        pl.int_range(0, pl.len(), dtype=pl.UInt32).alias("row"),
        "id",
        "case",
        pl.coalesce("scenario", "pred_scenario").alias("scenario"),
        "gold_names",
        "gold_types",
        pl.col("pred_names").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        pl.col("pred_types").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        pl.col("json_valid").fill_null(False),
        missing.alias("missing"),
        pl.when(missing).then(pl.lit("missing prediction")).otherwise(pl.col("error")).alias("error"),
        *[c for c in ("paragraph", "gold_reasons") if c in joined.columns],
        *([pl.col("pred_reasons").fill_null(pl.lit([], dtype=pl.List(pl.String)))] if "pred_reasons" in joined.columns else []),
    )


def verdict_expr(n_gold: pl.Expr, n_pred: pl.Expr, n_hits: pl.Expr) -> pl.Expr:
    all_hit = n_hits == n_gold
    return (
        pl.when(all_hit & (n_pred == n_gold))
        .then(pl.lit("strict"))
        .when(all_hit & ((n_pred - n_gold).abs() <= 1))
        .then(pl.lit("loose"))
        .otherwise(pl.lit("fail"))
    )


def mix_expr(types: pl.Expr) -> pl.Expr:
    fin = types.list.contains("financial")
    bus = types.list.contains("business")
    return (
        pl.when(types.list.len() == 0)
        .then(pl.lit("none"))
        .when(fin & bus)
        .then(pl.lit("mixed"))
        .when(fin)
        .then(pl.lit("financial"))
        .when(bus)
        .then(pl.lit("business"))
        .otherwise(pl.lit("other"))
    )


def score_cases(cases: pl.DataFrame, matcher: Matcher, run: str = "run", stats: MatchStats | None = None) -> pl.DataFrame:
    """Add hits and verdicts to a frame from `build_cases` (or a slice of one: `row` increasing); returns
    the cases frame (CASE_COLUMNS).

    The hits' names and types are gathered by position from the flattened lists and the per-case counts
    and hit lists laid out by each case's number of hits, instead of joining on (row, position) and
    back onto the cases: 200k cases, difflib, one thread, 0.54 -> 0.46 s."""
    stats = stats if stats is not None else MatchStats()
    hits = match(cases, matcher, stats)  # sorted by row, gi
    n = cases.height
    at = np.searchsorted(cases["row"].to_numpy(), hits["row"].to_numpy())  # each hit's case, 0..n-1
    n_gold = cases["gold_names"].list.len().cast(pl.Int64)
    n_pred = cases["pred_names"].list.len().cast(pl.Int64)

    def flat(names: str, types: str, n_col: pl.Series, pos: str) -> tuple[pl.Series, pl.Series]:
        """The hits' names and types: item `pos` of each hit's case's lists, by its flat position."""
        first = (n_col.cum_sum() - n_col).to_numpy()
        idx = pl.Series(first[at] + hits[pos].to_numpy())
        return cases[names].explode(empty_as_null=False).gather(idx), cases[types].explode(empty_as_null=False).gather(idx)

    g, gt = flat("gold_names", "gold_types", n_gold, "gi")
    p_, pt = flat("pred_names", "pred_types", n_pred, "pi")
    n_hits = np.bincount(at, minlength=n)
    exact = np.bincount(at, weights=(g == p_).to_numpy(), minlength=n)
    typed = np.bincount(at, weights=(gt == pt).to_numpy(), minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_hits, out=offsets[1:])
    hit_structs = pl.DataFrame([g.alias("gold"), p_.alias("pred"), hits["score"], gt.alias("gold_type"),
                                pt.alias("pred_type")]).to_struct("hits").to_arrow()
    hit_lists = pa.LargeListArray.from_arrays(pl.Series(offsets).to_arrow(), hit_structs)
    out = cases.with_columns(
        pl.Series("n_hits", n_hits, dtype=pl.Int64),
        pl.Series("exact_hits", exact, dtype=pl.Int64),
        pl.Series("type_hits", typed, dtype=pl.Int64),
        series("hits", hit_lists).cast(pl.List(HIT_STRUCT)),
        n_gold.alias("n_gold"),
        n_pred.alias("n_pred"),
        pl.lit(run).alias("run"),
        pl.lit(matcher.name).alias("matcher"),
    )
    out = out.with_columns(
        verdict_expr(pl.col("n_gold"), pl.col("n_pred"), pl.col("n_hits")).alias("verdict"),
        mix_expr(pl.col("gold_types")).alias("mix"),
    )
    return out.select(CASE_COLUMNS)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _layer(df: pl.DataFrame) -> pl.DataFrame:
    """Aggregate counts of a (possibly grouped) cases frame; ratios are derived in `_finish`."""
    return df.select(_aggs())


def _aggs() -> list[pl.Expr]:
    v = pl.col("verdict")
    return [
        pl.len().alias("n"),
        pl.col("json_valid").sum().alias("json_valid"),
        pl.col("missing").sum().alias("missing"),
        (v == "strict").sum().alias("strict"),
        (v == "loose").sum().alias("loose"),
        (v != "fail").sum().alias("passed"),
        (v == "fail").sum().alias("fail"),
        pl.col("n_gold").sum().alias("gold_total"),
        pl.col("n_pred").sum().alias("pred_total"),
        pl.col("n_hits").sum().alias("hits"),
        pl.col("exact_hits").sum().alias("exact_hits"),
        pl.col("type_hits").sum().alias("type_correct"),
    ]


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {k: int(v) for k, v in row.items() if k not in ("scenario", "mix", "bucket")}
    r["fuzzy_hits"] = r["hits"] - r["exact_hits"]
    r["pass_rate"] = _ratio(r["passed"], r["n"])
    r["strict_rate"] = _ratio(r["strict"], r["n"])
    r["json_valid_rate"] = _ratio(r["json_valid"], r["n"])
    r["precision"] = _ratio(r["hits"], r["pred_total"])
    r["recall"] = _ratio(r["hits"], r["gold_total"])
    r["core_hit_rate"] = r["recall"]
    r["f1"] = _ratio(2 * r["hits"], r["gold_total"] + r["pred_total"])
    r["type_accuracy"] = _ratio(r["type_correct"], r["hits"])
    r["pred_gold_ratio"] = _ratio(r["pred_total"], r["gold_total"])  # > 1: over-extraction
    r["mean_gold"] = _ratio(r["gold_total"], r["n"])
    r["mean_pred"] = _ratio(r["pred_total"], r["n"])
    return r


def count_bucket_expr(n_gold: pl.Expr) -> pl.Expr:
    """"0", "1", ..., f"{COUNT_TOP}+": the `by_gold_count` bucket of a case."""
    return pl.when(n_gold >= COUNT_TOP).then(pl.lit(f"{COUNT_TOP}+")).otherwise(n_gold.cast(pl.String))


def count_matrix(cases: pl.DataFrame) -> dict[str, Any]:
    """Cases per (gold count, predicted count), both 0..the largest count seen (at least COUNT_TOP - 1).

    `cases[i][j]` = cases with i gold and j predicted metrics; row sums are the gold count histogram,
    column sums the predicted one.
    """
    # polars types Series.max() as any Python literal (dates, strings, ...); both columns are Int64.
    top = max(COUNT_TOP - 1, int(cases["n_gold"].max() or 0), int(cases["n_pred"].max() or 0))  # type: ignore[arg-type]
    cells = {(g, p): n for g, p, n in cases.group_by("n_gold", "n_pred").len().iter_rows()}
    labels = list(range(top + 1))
    return {"counts": labels, "cases": [[int(cells.get((g, p), 0)) for p in labels] for g in labels]}


def summarize(cases: pl.DataFrame) -> dict[str, Any]:
    """The `--json` summary of a cases frame (from `score_cases` or a saved cases file)."""
    if cases.height == 0:
        raise DataError("no cases to summarise")
    overall = _finish(_layer(cases).row(0, named=True))
    by_scenario: dict[str, Any] = {}
    if cases["scenario"].null_count() < cases.height:
        grouped = cases.with_columns(pl.col("scenario").fill_null("(none)")).group_by("scenario").agg(_aggs()).sort("scenario")
        by_scenario = {r["scenario"]: _finish(r) for r in grouped.iter_rows(named=True)}
    grouped = cases.group_by("mix").agg(_aggs())
    order = {m: i for i, m in enumerate(MIXES)}
    by_mix = {
        r["mix"]: _finish(r) for r in sorted(grouped.iter_rows(named=True), key=lambda r: order.get(r["mix"], 99))
    }
    grouped = cases.group_by(count_bucket_expr(pl.col("n_gold")).alias("bucket")).agg(_aggs())
    by_gold_count = {
        r["bucket"]: _finish(r) for r in sorted(grouped.iter_rows(named=True), key=lambda r: int(r["bucket"].rstrip("+")))
    }
    missing_ids = cases.filter(pl.col("missing"))["id"].head(20).to_list()
    runs = cases["run"].unique(maintain_order=True).to_list()
    matchers = cases["matcher"].unique(maintain_order=True).to_list()
    return {
        "run": runs[0] if len(runs) == 1 else runs,
        "matcher": matchers[0] if len(matchers) == 1 else matchers,
        **overall,
        "missing_ids": missing_ids,
        "by_scenario": by_scenario,
        "by_metric_type": by_mix,
        "by_gold_count": by_gold_count,
        "count_matrix": count_matrix(cases),
        **({"grounding": g} if (g := grounding_summary(cases)) is not None else {}),
    }


# Runs of at least this many cases are scored in parts, one thread a CPU (at most 4): polars runs the
# parts' frame operations while the other part is in Python (difflib, the greedy loop). 200k cases, 2
# cores: 0.47 -> 0.41 s in process, 2.20 -> 2.06 s for `evalkit score`; the same cases frame (tests).
# (Since `score_cases` gathers instead of joining, difflib: 0.45 s in one part, 0.39 s in two.)
PARTS_MIN_CASES = 50_000


def score_in_parts(cases: pl.DataFrame, matcher: Matcher, run: str, stats: MatchStats, parts: int | None = None) -> pl.DataFrame:
    """`score_cases` of `cases` split in row order into `parts` (default one a CPU, at most 4, when the
    run is large and the matcher allows it), scored in threads and put back in order."""
    from concurrent.futures import ThreadPoolExecutor

    from .pardecode import cpu_count

    k = parts if parts is not None else (min(cpu_count(), 4) if cases.height >= PARTS_MIN_CASES else 1)
    if k <= 1 or not matcher.parts_ok or cases.height < k:
        return score_cases(cases, matcher, run=run, stats=stats)
    cuts = [cases.height * i // k for i in range(k + 1)]
    part_stats = [MatchStats() for _ in range(k)]
    with ThreadPoolExecutor(k) as pool:
        outs = list(pool.map(lambda i: score_cases(cases[cuts[i] : cuts[i + 1]], matcher, run=run, stats=part_stats[i]), range(k)))
    for f in ("cases", "pairs", "unique_pairs", "unique_names", "looped_cases"):
        setattr(stats, f, sum(getattr(st, f) for st in part_stats))
    return pl.concat(outs)


def score_set(gold: pl.DataFrame, preds: PredictionSet, matcher: Matcher) -> ScoreResult:
    """The cases and summary of one prediction set; grounded (`evalkit.grounding`) when the gold frame
    holds the paragraphs and the predictions their reasons (`score_paths(..., grounding=True)`)."""
    stats = MatchStats()
    built = build_cases(gold, preds.frame, preds.path)
    cases = score_in_parts(built, matcher, run=preds.name, stats=stats)
    if "paragraph" in built.columns and "pred_reasons" in built.columns:
        cases = pl.concat([cases, ground_cases(built)], how="horizontal")
    summary = summarize(cases)
    summary.update(
        {"predictions": preds.path, "format": preds.format, "matcher_config": matcher.describe()}
    )
    return ScoreResult(preds.name, cases, summary, stats)


def score_paths(
    gold_path: str | os.PathLike,
    pred_path: str | os.PathLike,
    matcher: Matcher,
    adapter: str | None = None,
    name: str | None = None,
    gold: pl.DataFrame | None = None,
    prefetch: Prefetch | None = None,
    grounding: bool = False,
) -> list[ScoreResult]:
    """Score predictions at `pred_path` against gold; one result per adapter found (or the one asked).

    JSONL gold and predictions are decoded at the same time, in worker processes when large
    (`pardecode.Prefetch`: on 2 cores the 200k-case benchmark pair reads in about half the wall time);
    `prefetch`: such decoding already started for these paths (else it is stopped and started anew;
    `pardecode.score_specs` says which). `grounding`: read the paragraphs and reasons too and ground every
    metric (`evalkit.grounding`: the cases get GROUNDING_COLUMNS, the summary `grounding`)."""
    specs = score_specs(gold_path if gold is None else None, pred_path, grounding)
    pre = prefetch
    if pre is None or not all(pre.covers(k, p) for k, p in specs):
        if pre is not None:
            pre.close()  # started for other paths (`prefetch`: what the CLI began from its command line)
        pre = Prefetch(specs)
    with pre:
        gold_df = gold if gold is not None else load_gold(gold_path, pre=pre, text=grounding)
        sets = load_predictions(pred_path, gold_df, adapter=adapter, name=name, pre=pre, text=grounding)
    results = []
    for ps in sets:
        r = score_set(gold_df, ps, matcher)
        r.summary["gold"] = str(gold_path)
        results.append(r)
    return results


# --------------------------------------------------------------------------------------- cases files


def readable(path: Path) -> Path:
    """Give a finished output the usual permissions (data.io.atomic_path's temp file is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path


def write_cases(cases: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Cases as Parquet (`.parquet`) or JSONL (anything else), written atomically."""
    from reportminer.data.io import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:
        if p.suffix == ".parquet":
            cases.write_parquet(tmp, compression="zstd")
        else:
            cases.write_ndjson(tmp)
    return readable(p)


CASES_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "run": pl.String, "matcher": pl.String, "id": pl.String, "case": pl.Int64, "scenario": pl.String,
    "mix": pl.String, "verdict": pl.String, "json_valid": pl.Boolean, "missing": pl.Boolean, "n_gold": pl.Int64,
    "n_pred": pl.Int64, "n_hits": pl.Int64, "exact_hits": pl.Int64, "type_hits": pl.Int64,
    "gold_names": pl.List(pl.String), "gold_types": pl.List(pl.String), "pred_names": pl.List(pl.String),
    "pred_types": pl.List(pl.String), "hits": pl.List(HIT_STRUCT), "error": pl.String,
}


def is_cases_file(path: str | os.PathLike) -> bool:
    """A file written by `--cases` (has a `verdict` column), as opposed to predictions."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        if p.suffix == ".parquet":
            return "verdict" in pl.read_parquet_schema(p)
        if p.suffix == ".jsonl":
            with open(p, encoding="utf-8") as fh:
                first = next((ln for ln in fh if ln.strip()), "")
            return '"verdict"' in first and '"n_hits"' in first
    except Exception:
        return False
    return False


def read_cases(path: str | os.PathLike) -> pl.DataFrame:
    p = Path(path)
    try:
        if p.suffix == ".parquet":
            df = pl.read_parquet(p)
        else:
            with open(p, encoding="utf-8") as fh:
                first = next((ln for ln in fh if ln.strip()), "")
            grounded = '"gold_grounded"' in first
            df = pl.read_ndjson(p, schema={**CASES_SCHEMA, **(GROUNDING_COLUMNS if grounded else {})})
    except Exception as e:
        raise DataError(f"{p}: cannot read cases file: {e}") from None
    missing = [c for c in CASE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{p}: not an evalkit cases file (missing columns {missing})")
    extra = {k: v for k, v in GROUNDING_COLUMNS.items() if k in df.columns}
    schema: dict[str, Any] = {**CASES_SCHEMA, **extra}
    return df.select(*CASE_COLUMNS, *extra).cast(schema)  # type: ignore[arg-type]
