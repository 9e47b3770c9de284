"""Reading gold labels and predictions into two narrow polars frames that scoring joins on `id`.

Every input format ends up as the same two shapes, so the matchers and the summary never know where a
prediction came from:

GOLD frame (one row per case, in gold order)::

    id: str (rows without one: data.io.generated_id), case: int (1-based position), scenario: str|null,
    gold_names: list[str],
    gold_types: list[str], source: str ("file:LINE" or "file#row", for messages)

A case's `scenario` (the group it is reported under) is its `scenario` field when it has one (the seed's
test-case format: `{"type": "test", "scenario": "single_metric", ...}`), else its `type` (A/B/C/D).

PREDICTION frame (at most one row per id)::

    id: str, pred_names: list[str], pred_types: list[str], json_valid: bool, error: str|null,
    pred_scenario: str|null, source: str

Raw model text always goes through `data.parse.parse_output`, so "valid JSON" means the same thing here
as in the engine's run summary. Errors are `data.io.DataError` and name the file and line (or id).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import polars as pl

from reportminer.data.io import DataError, data_kind, iter_jsonl, read_table
from reportminer.data.schema import (
    ADAPTER,
    BASE_ADAPTER,
    ERROR,
    GOLD_METRICS,
    ID,
    METRICS,
    OK,
    PARAGRAPH,
    RAW,
    SCENARIO,
    STATUS,
)

from . import fastload
from .jsonl_chunks import Answer, is_batch_row, parsed_row
from .pardecode import Prefetch

# BASE_ADAPTER (data.schema) also labels engine rows whose `adapter` is null/empty.
# A row's group: its `scenario` field when present (test-case files), else its `type` (data.schema.SCENARIO).
GROUP_FIELDS = ("scenario", SCENARIO)

GOLD_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "id": pl.String,
    "case": pl.Int64,
    "scenario": pl.String,
    "gold_names": pl.List(pl.String),
    "gold_types": pl.List(pl.String),
    "source": pl.String,
}
PRED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "id": pl.String,
    "pred_names": pl.List(pl.String),
    "pred_types": pl.List(pl.String),
    "json_valid": pl.Boolean,
    "error": pl.String,
    "pred_scenario": pl.String,
    "source": pl.String,
}


@dataclass(frozen=True)
class PredictionSet:
    """Predictions of one model/adapter, keyed by gold id. `name` labels it in tables and comparisons."""

    name: str
    frame: pl.DataFrame
    path: str
    format: str  # "engine-parquet" | "jsonl" | "batch-json"


# --------------------------------------------------------------------------------------------- gold


def _names_types(metrics: Any, where: str) -> tuple[list[str], list[str]]:
    if metrics is None:
        return [], []
    if not isinstance(metrics, list):
        raise DataError(f"{where}: output.metrics is a {type(metrics).__name__}, expected a list")
    names, types = [], []
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or not isinstance(m.get("metric_name"), str):
            raise DataError(f"{where}: output.metrics[{i}] has no string metric_name")
        names.append(m["metric_name"])
        types.append(str(m.get("metric_type") or ""))
    return names, types


def _gold_from_jsonl(path: Path, pre: Prefetch | None = None, text: bool = False) -> pl.DataFrame:
    gold = fastload.gold_frame(path, GOLD_SCHEMA, pre, text=text)
    if gold is None:
        _name_gold_error(path)
    return gold


def _name_gold_error(path: Path) -> NoReturn:
    """The first error of a gold JSONL input that `jsonl_chunks` refused, named line by line (the only
    use of a slow path: reading is theirs)."""
    for row in iter_jsonl(path):
        where = f"{row.file}:{row.line}"
        out = row.obj.get("output")
        if isinstance(out, str):  # a gold answer kept as its JSON text
            try:
                out = json.loads(out)
            except json.JSONDecodeError:
                raise DataError(f"{where}: gold `output` is a string that is not JSON") from None
        if not isinstance(out, dict) or "metrics" not in out:
            raise DataError(f"{where}: gold row has no output.metrics (evalkit needs labelled rows)")
        _names_types(out.get("metrics"), where)
    raise DataError(_UNREADABLE.format(path=path, what="gold"))


# What a range refused for a reason no line check names: text json.loads reads but that cannot be held as
# UTF-8 (a lone surrogate escape such as "\ud800"), or nesting deeper than json.loads recurses.
_UNREADABLE = ("{path}: cannot be read as {what} JSONL: a value is not valid text (a lone surrogate escape "
               "such as \\ud800?) or is nested too deeply")


def _group_column(df: pl.DataFrame) -> pl.Series:
    """Per row, the first non-null of the GROUP_FIELDS columns present (all null when none is)."""
    cols = [c for c in GROUP_FIELDS if c in df.columns]
    if not cols:
        return pl.Series([None] * df.height, dtype=pl.String)
    return df.select(pl.coalesce([pl.col(c).cast(pl.String) for c in cols])).to_series()


def _gold_from_parquet(path: Path, text: bool = False) -> pl.DataFrame:
    df = pl.from_arrow(read_table(path))
    assert isinstance(df, pl.DataFrame)
    missing = [c for c in (ID, GOLD_METRICS) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: gold Parquet lacks column(s) {missing}; it needs `id` and `gold_metrics`")
    bad = df.filter(pl.col(GOLD_METRICS).is_null())
    if bad.height:
        raise DataError(f"{path}: id {bad[ID][0]!r} has no gold_metrics ({bad.height} row(s) unlabelled)")
    metric = pl.element().struct
    extra = {}
    if text:  # the shard's paragraph and the gold reasons (grounding)
        reason = metric.field("reason") if "reason" in _struct_fields(df, GOLD_METRICS) else pl.lit("")
        extra = {
            "paragraph": df[PARAGRAPH].cast(pl.String) if PARAGRAPH in df.columns else pl.Series([None] * df.height, dtype=pl.String),
            "gold_reasons": df.select(pl.col(GOLD_METRICS).list.eval(reason.fill_null(""))).to_series(),
        }
    return pl.DataFrame(
        {
            "id": df[ID].cast(pl.String),
            "case": pl.int_range(1, df.height + 1, eager=True, dtype=pl.Int64),
            "scenario": _group_column(df),
            "gold_names": df.select(pl.col(GOLD_METRICS).list.eval(metric.field("metric_name"))).to_series(),
            "gold_types": df.select(
                pl.col(GOLD_METRICS).list.eval(metric.field("metric_type").fill_null(""))
            ).to_series(),
            "source": pl.Series([f"{path}#{i}" for i in range(1, df.height + 1)], dtype=pl.String),
            **extra,
        },
        schema={**GOLD_SCHEMA, **(fastload.GOLD_TEXT if text else {})},
    )


def _struct_fields(df: pl.DataFrame, col: str) -> list[str]:
    """The field names of a list<struct> column."""
    dt = df.schema[col]
    inner = getattr(dt, "inner", None)
    return [f.name for f in getattr(inner, "fields", [])]


GOLD_FORMATS = (
    "gold must be seed-format JSONL (a .jsonl file, or a folder of them: one {\"id\"?, \"type\", \"input\", "
    "\"output\": {\"metrics\": [...]}} object a line) or Parquet with `id` and `gold_metrics` columns (datakit shard)"
)
_NOT_JSONL = (": invalid JSON:", ": expected a JSON object", ": not UTF-8 text")


def load_gold(path: str | os.PathLike, pre: Prefetch | None = None, text: bool = False) -> pl.DataFrame:
    """Gold cases from seed-format JSONL (file or folder) or Parquet with `id` + `gold_metrics` columns.

    `pre`: JSONL decoding already under way in worker processes (`pardecode.Prefetch`, as `score_paths`
    starts it for gold and predictions together); the frame is the same with or without. `text`: also
    `paragraph` and `gold_reasons` (fastload.GOLD_TEXT), for grounding."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such gold file or folder")
    if _is_parquet(p):
        gold = _gold_from_parquet(p, text)
    else:
        try:
            gold = _gold_from_jsonl(p, pre, text)
        except DataError as e:
            if any(k in str(e) for k in _NOT_JSONL):  # e.g. a CSV: say what gold may be, not only "invalid JSON"
                raise DataError(f"{e}; {GOLD_FORMATS}") from None
            raise
    if gold.height == 0:
        raise DataError(f"{p}: no gold cases")
    dup = gold.filter(~pl.col("id").is_first_distinct())
    if dup.height:
        raise DataError(f"{dup['source'][0]}: duplicate gold id {dup['id'][0]!r}; ids must be unique")
    nulls = gold.filter(pl.col("gold_names").list.eval(pl.element().is_null()).list.any())
    if nulls.height:
        raise DataError(f"{nulls['source'][0]}: a gold metric has no metric_name")
    return gold


def _is_parquet(p: Path) -> bool:
    return data_kind(p) == "parquet"


# -------------------------------------------------------------------------------------- predictions


def _case_to_id(gold: pl.DataFrame) -> list[str]:
    return gold["id"].to_list()


def _columns_frame(rows: dict[str, list[Any]], schema: dict[str, Any], list_cols: tuple[str, ...]) -> pl.DataFrame:
    """A frame from Python columns, the list<str> ones built through Arrow (fastload.string_lists)."""
    return pl.DataFrame(
        [
            fastload.series(k, fastload.string_lists(v)) if k in list_cols else pl.Series(k, v, dtype=schema[k])
            for k, v in rows.items()
        ]
    ).cast(schema)  # type: ignore[arg-type]


def _frame(rows: dict[str, list[Any]]) -> pl.DataFrame:
    schema = {**PRED_SCHEMA, **(fastload.PRED_TEXT if "pred_reasons" in rows else {})}
    return _columns_frame(rows, schema, ("pred_names", "pred_types", "pred_reasons"))


def _empty_rows(text: bool = False) -> dict[str, list[Any]]:
    return {k: [] for k in (*PRED_SCHEMA, *(fastload.PRED_TEXT if text else ()))}


def _add(rows: dict[str, list[Any]], cid: str, a: Answer, scenario: str | None, source: str, error: str | None = None) -> None:
    """One prediction row of `a` (`error`: the row's own, before the answer's)."""
    rows["id"].append(cid)
    rows["pred_names"].append(a.names)
    rows["pred_types"].append(a.types)
    rows["json_valid"].append(a.json_valid)
    rows["error"].append(error or a.error)
    rows["pred_scenario"].append(scenario)
    rows["source"].append(source)
    if "pred_reasons" in rows:
        rows["pred_reasons"].append(a.reasons)


def _preds_from_batch_json(path: Path, gold: pl.DataFrame, text: bool = False) -> pl.DataFrame:
    """The seed's batch results: a JSON list of {index (1-based gold case), pred_raw, scenario, ...}."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON: {e.msg} (line {e.lineno})") from None
    items = obj
    if isinstance(obj, dict):  # tolerate a wrapper object holding the list under one key
        lists = [v for v in obj.values() if isinstance(v, list) and v and isinstance(v[0], dict) and "index" in v[0]]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of objects with `index` and `pred_raw`")
        items = lists[0]
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of objects with `index` and `pred_raw`")
    ids = _case_to_id(gold)
    rows = _empty_rows(text)
    for k, it in enumerate(items):
        where = f"{path}: item {k}"
        if not isinstance(it, dict) or "index" not in it:
            raise DataError(f"{where}: not an object with an `index`")
        try:
            idx = int(it["index"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: index {it['index']!r} is not an integer") from None
        if not 1 <= idx <= len(ids):
            raise DataError(f"{where}: index {idx} matches no gold case (gold has cases 1..{len(ids)})")
        scen = it.get("scenario")
        _add(rows, ids[idx - 1], parsed_row(it.get("pred_raw", it.get("raw"))), None if scen is None else str(scen),
             f"{path}: index {idx}")
    return _frame(rows)


def _preds_from_jsonl(path: Path, gold: pl.DataFrame, pre: Prefetch | None = None, text: bool = False) -> pl.DataFrame:
    """JSONL with an `output` (object or raw string) per row, joined on `id`, else aligned by line; or OpenAI
    batch output (`vllm run-batch`: `custom_id`, `response.body.choices[0].message.content`), joined on
    `custom_id`."""
    preds = fastload.pred_frame(path, gold["id"], PRED_SCHEMA, pre, text=text)
    if preds is None:
        _name_pred_error(path, gold.height)
    return preds


def _name_pred_error(path: Path, n_gold: int) -> NoReturn:
    """The first error of a predictions JSONL input that `fastload` refused, named line by line."""
    with_id: bool | None = None
    for k, row in enumerate(iter_jsonl(path), 1):
        where = f"{row.file}:{row.line}"
        batch = "output" not in row.obj and is_batch_row(row.obj)
        if "output" not in row.obj and not batch:
            raise DataError(f"{where}: prediction row has no `output` (object or raw model text) and is no OpenAI "
                            f"batch output row either (`custom_id` and `response`, as `vllm run-batch` writes); "
                            f"keys: {', '.join(sorted(map(str, row.obj))[:8]) or 'none'}")
        has_id = batch or row.obj.get(ID) is not None
        if with_id is None:
            with_id = has_id
        elif with_id != has_id:
            raise DataError(f"{where}: some rows have an `id` and some do not; use ids on every row or none")
        if not has_id and k > n_gold:
            raise DataError(f"{where}: prediction row {k} has no gold case {k} (gold has {n_gold} cases)")
    raise DataError(_UNREADABLE.format(path=path, what="predictions"))


def _engine_sets(path: Path, adapter: str | None, text: bool = False) -> list[PredictionSet]:
    """Engine results: structured `metrics` where the row succeeded, else `raw` parsed leniently."""
    df = pl.from_arrow(read_table(path))
    assert isinstance(df, pl.DataFrame)
    if ID not in df.columns:
        raise DataError(f"{path}: engine results lack an `id` column")
    if METRICS not in df.columns and RAW not in df.columns:
        raise DataError(f"{path}: engine results need a `{METRICS}` or a `{RAW}` column")
    n = df.height
    col = lambda c, dt: df[c] if c in df.columns else pl.Series(c, [None] * n, dtype=dt)  # noqa: E731
    has_reason = METRICS in df.columns and "reason" in _struct_fields(df, METRICS)
    df = df.select(
        pl.col(ID).cast(pl.String).alias("id"),
        col(ADAPTER, pl.String).cast(pl.String).fill_null("").alias("adapter"),
        col(METRICS, pl.List(pl.Struct({"metric_name": pl.String, "metric_type": pl.String}))).alias("metrics"),
        col(RAW, pl.String).cast(pl.String).alias("raw"),
        col(STATUS, pl.String).cast(pl.String).alias("status"),
        col(ERROR, pl.String).cast(pl.String).alias("error"),
        col(SCENARIO, pl.String).cast(pl.String).alias("pred_scenario"),
    ).with_columns(
        pl.when(pl.col("adapter") == "").then(pl.lit(BASE_ADAPTER)).otherwise(pl.col("adapter")).alias("adapter"),
        pl.format("{}: id {}", pl.lit(str(path)), pl.col("id")).alias("source"),
    )
    adapters = df["adapter"].unique(maintain_order=True).to_list()
    if adapter is not None:
        if adapter not in adapters:
            raise DataError(f"{path}: no rows for adapter {adapter!r}; adapters present: {adapters}")
        adapters = [adapter]
    # A row is trusted as structured output when it has metrics and did not fail; otherwise its raw text
    # (possibly truncated or unguided) is parsed like any other prediction.
    structured = pl.col("metrics").is_not_null() & (
        pl.col("status").is_null() | pl.col("status").str.to_lowercase().is_in([OK, "success", "done"])
    ) & (pl.col("error").is_null() | (pl.col("error") == ""))
    elem = pl.element()
    keep = elem.filter(elem.struct.field("metric_name").str.strip_chars().str.len_chars() > 0)
    out = []
    for name in adapters:
        sub = df.filter(pl.col("adapter") == name)
        dup = sub.filter(~pl.col("id").is_first_distinct())
        if dup.height:
            raise DataError(f"{path}: id {dup['id'][0]!r} appears more than once for adapter {name!r}")
        good = sub.filter(structured).with_columns(pl.col("metrics").list.eval(keep))
        good = good.select(
            "id",
            pl.col("metrics").list.eval(elem.struct.field("metric_name")).alias("pred_names"),
            pl.col("metrics").list.eval(elem.struct.field("metric_type").fill_null("")).alias("pred_types"),
            pl.lit(True).alias("json_valid"),
            pl.lit(None, dtype=pl.String).alias("error"),
            "pred_scenario",
            "source",
            *([pl.col("metrics").list.eval(elem.struct.field("reason").fill_null("") if has_reason else pl.lit(""))
               .alias("pred_reasons")] if text else []),
        )
        bad = sub.filter(~structured)
        rows = _empty_rows(text)
        for rid, raw, err, scen, src in bad.select("id", "raw", "error", "pred_scenario", "source").iter_rows():
            _add(rows, rid, parsed_row(raw), scen, src, error=err)
        schema = {**PRED_SCHEMA, **(fastload.PRED_TEXT if text else {})}
        frame = pl.concat([good.cast(schema), _frame(rows)])  # type: ignore[arg-type]
        out.append(PredictionSet(name, frame, str(path), "engine-parquet"))
    return out


def _has_content(p: Path) -> bool:
    """False for a file of zero bytes or only whitespace (read in blocks: a large file stops at once)."""
    with open(p, "rb") as fh:
        while block := fh.read(1 << 16):
            if block.strip():
                return True
    return False


def detect_format(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such predictions file or folder")
    if p.is_dir():
        return "engine-parquet" if data_kind(p) == "parquet" else "jsonl"
    if p.suffix == ".parquet":
        return "engine-parquet"
    if p.suffix == ".jsonl":
        return "jsonl"
    if p.suffix == ".json":
        return "batch-json"
    # Unknown extension: sniff the first non-blank character.
    with open(p, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("["):
        return "batch-json"
    if head.startswith("{"):
        return "jsonl"
    raise DataError(f"{p}: cannot tell the predictions format (use .parquet, .jsonl or .json)")


def load_predictions(
    path: str | os.PathLike, gold: pl.DataFrame, adapter: str | None = None, name: str | None = None,
    pre: Prefetch | None = None, text: bool = False,
) -> list[PredictionSet]:
    """Predictions at `path` as one set per adapter (engine Parquet) or a single set (JSONL, batch JSON).
    `pre`: as for `load_gold`; `text`: also `pred_reasons` (fastload.PRED_TEXT), for grounding."""
    p = Path(path)
    if p.is_file() and not _has_content(p):
        raise DataError(f"{p}: the predictions file is empty; nothing to score")
    fmt = detect_format(p)
    if fmt == "engine-parquet":
        sets = _engine_sets(p, adapter, text)
        if all(s.frame.height == 0 for s in sets):
            raise DataError(f"{p}: the engine results hold no rows; nothing to score")
        if name is not None and len(sets) == 1:
            sets = [PredictionSet(name, sets[0].frame, sets[0].path, sets[0].format)]
        return sets
    if adapter is not None:
        raise DataError(f"{p}: --adapter applies to engine Parquet results only")
    frame = _preds_from_batch_json(p, gold, text) if fmt == "batch-json" else _preds_from_jsonl(p, gold, pre, text)
    if frame.height == 0:
        raise DataError(f"{p}: the predictions file is empty (no {'items' if fmt == 'batch-json' else 'rows'}); nothing to score")
    # (Ids equal to the gold's, in order, are unique as the gold's are: no second look.)
    if not (frame.height == gold.height and frame["id"].equals(gold["id"])):
        dup = frame.filter(~pl.col("id").is_first_distinct())
        if dup.height:
            raise DataError(f"{dup['source'][0]}: a second prediction for gold id {dup['id'][0]!r}")
    return [PredictionSet(name or p.stem, frame, str(p), fmt)]
