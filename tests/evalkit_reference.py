"""A plain reference reader for evalkit's JSONL inputs: `json.loads` and `data.parse.parse_output` a line,
the documented rules written out once (docs/evalkit.md "Inputs"). evalkit reads JSONL one way only
(`jsonl_chunks`, in or out of process); the tests hold its frames to these, row for row."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from reportminer.data.io import iter_jsonl
from reportminer.data.parse import parse_output
from reportminer.evalkit.loaders import GOLD_SCHEMA, PRED_SCHEMA


def group(obj: dict[str, Any]) -> str | None:
    """A row's group: `scenario` when set, else `type`, as text."""
    for k in ("scenario", "type"):
        if obj.get(k) is not None:
            return str(obj[k])
    return None


def gold(path: Path) -> pl.DataFrame:
    rows: dict[str, list[Any]] = {k: [] for k in GOLD_SCHEMA}
    for case, row in enumerate(iter_jsonl(path), 1):
        out = row.obj["output"]
        if isinstance(out, str):
            out = json.loads(out)
        ms = out["metrics"] or []
        rows["id"].append(row.id)
        rows["case"].append(case)
        rows["scenario"].append(group(row.obj))
        rows["gold_names"].append([m["metric_name"] for m in ms])
        rows["gold_types"].append([str(m.get("metric_type") or "") for m in ms])
        rows["source"].append(f"{row.file}:{row.line}")
    return pl.DataFrame(rows, schema=GOLD_SCHEMA)


def answer(output: Any) -> tuple[list[str], list[str], bool, str | None, list[str]]:
    """Names, types, json_valid, error, reasons of one `output` value: its JSON text through `parse_output`."""
    text = output if output is None or isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    parsed = parse_output(text)
    ms = parsed.extraction.metrics if parsed.extraction is not None else ()
    return [m.metric_name for m in ms], [m.metric_type for m in ms], parsed.json_valid, parsed.error, [m.reason for m in ms]


def preds(path: Path, gold_frame: pl.DataFrame) -> pl.DataFrame:
    ids = gold_frame["id"].to_list()
    rows: dict[str, list[Any]] = {k: [] for k in PRED_SCHEMA}
    for k, row in enumerate(iter_jsonl(path), 1):
        rid = row.obj.get("id")
        names, types, valid, err, _ = answer(row.obj["output"])
        rows["id"].append(str(rid) if rid is not None else ids[k - 1])
        rows["pred_names"].append(names)
        rows["pred_types"].append(types)
        rows["json_valid"].append(valid)
        rows["error"].append(err)
        rows["pred_scenario"].append(group(row.obj))
        rows["source"].append(f"{row.file}:{row.line}")
    return pl.DataFrame(rows, schema=PRED_SCHEMA)
