"""The fast path of the JSONL loaders: msgspec decodes the common shapes straight into what scoring needs.

`evalkit score` on 200,000 JSONL cases spent its time reading (profile of a 20k-case run, cProfile:
`json.loads` of every gold and prediction line, then per prediction `json.dumps` + `data.parse.parse_output`
+ the contract check + `Extraction`, and polars building list columns from Python lists: ~8 of 11 s). Here
each line is decoded once by msgspec into a typed struct that skips the fields scoring does not read
(paragraphs, analyses, reasons are parsed, not built).

Exactness is by construction, not by imitation: a line takes the fast path only when its typed decode
succeeds, and the types accept only what the slow path would turn into the same row:

- gold: an object with `output` an object holding `metrics` (null or a list of objects with a string
  `metric_name`); anything else (an `output` kept as JSON text, a malformed row) sends the whole file to
  `loaders._gold_from_jsonl`, which reads it as before and raises its error naming the line;
- predictions: `output` an object that meets the whole output contract as `data.check._plainly_valid`
  states it (exact keys, types, lengths, enum, score range), with no blank and no repeated name: exactly
  the answers for which `parse_output` returns `json_valid`, no error and every metric. Any other line
  (raw text, a contract breach, bad JSON) goes through `loaders` row by row as before, so messages and
  `error` texts are unchanged.

The tests compare both paths frame for frame (tests/test_evalkit_loaders.py).
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import polars as pl
import pyarrow as pa

from reportminer.data import check
from reportminer.data.io import DataError, generated_id, jsonl_files, not_utf8_message, relative_name
from reportminer.data.schema import (
    MAX_ANALYSIS_CHARS,
    MAX_METRICS,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    METRIC_TYPES,
    OUTPUT_JSON_SCHEMA,
)

_BOM = b"\xef\xbb\xbf"
_SCORE = OUTPUT_JSON_SCHEMA["properties"]["metrics"]["items"]["properties"]["score"]
# The prediction fast path is on only while data.check's quick check knows every keyword of the schema.
PRED_FAST_PATH: bool = check._FAST_PATH and tuple(METRIC_TYPES) == ("financial", "business")
# False: every line the slow way (the tests compare both paths frame for frame).
ENABLED = True


class _GoldMetric(msgspec.Struct, gc=False):
    metric_name: str
    metric_type: Any = None


class _GoldOutput(msgspec.Struct, gc=False):
    metrics: list[_GoldMetric] | None


class _GoldRow(msgspec.Struct, gc=False):
    output: _GoldOutput
    id: Any = None
    scenario: Any = None
    type: Any = None


class _PredMetric(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    metric_name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
    metric_type: Literal["financial", "business"]
    score: Annotated[float, msgspec.Meta(ge=_SCORE["minimum"], le=_SCORE["maximum"])]
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]


class _PredOutput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    analysis: Annotated[str, msgspec.Meta(max_length=MAX_ANALYSIS_CHARS)]
    metrics: Annotated[list[_PredMetric], msgspec.Meta(max_length=MAX_METRICS)]


class _PredRow(msgspec.Struct, gc=False):
    output: _PredOutput
    id: Any = None
    scenario: Any = None
    type: Any = None


class _PredLine(msgspec.Struct, gc=False):
    output: msgspec.Raw  # any JSON value, kept as its bytes: decoded strictly (or the slow way) per row
    id: Any = None
    scenario: Any = None
    type: Any = None


_GOLD = msgspec.json.Decoder(_GoldRow)
_PRED = msgspec.json.Decoder(_PredRow)
_PRED_LINE = msgspec.json.Decoder(_PredLine)
_PRED_OUTPUT = msgspec.json.Decoder(_PredOutput)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a file's rows are built: 200k rows make ~1M containers,
    and the collector's repeated passes over them doubled the time of reading the gold (2.2 s -> 1.2 s CPU
    at 200k rows). Nothing built here forms a cycle; reference counting frees what is dropped."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def jsonl_lines(path: Path) -> Iterator[tuple[Path, str, int, bytes]]:
    """(file, its name in ids, 1-based line, bytes) of each non-blank line, as `data.io.iter_jsonl` counts
    them: a leading BOM dropped, lines split at \\n, \\r and \\r\\n (text mode's universal newlines)."""
    for f in jsonl_files(path):
        rel = relative_name(path, f)
        data = f.read_bytes()
        if data.startswith(_BOM):
            data = data[len(_BOM) :]
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                yield f, rel, n, line


def group(obj_scenario: Any, obj_type: Any) -> str | None:
    """`loaders._group` on decoded fields: the scenario when set, else the type, as text."""
    if obj_scenario is not None:
        return str(obj_scenario)
    return None if obj_type is None else str(obj_type)


def _clean_lines(data: bytes) -> int | None:
    """The number of lines when every line starts with `{` and ends with `}` (no blank line, no \r, no
    padding: the usual file), else None.

    msgspec's `decode_lines` reads an object across a newline and two objects on one line, both errors
    for `json.loads` per line; with every line opening with `{` and closing with `}`, no object can span
    two lines (after a `}` a continued object needs `,` or `}`, never `{`), so when the object count
    equals the line count, object k is line k and each line holds exactly one object."""
    if not data.startswith(b"{") or not (data.endswith(b"}") or data.endswith(b"}\n")):
        return None
    newlines = data.count(b"\n")
    if data.count(b"}\n") != newlines or data.count(b"\n{") != newlines - data.endswith(b"\n"):
        return None
    return newlines + (not data.endswith(b"\n"))


def gold_rows(path: Path) -> dict[str, list[Any]] | None:
    """The gold frame's columns, or None when some line needs the slow path (then read the file that way)."""
    if not ENABLED:
        return None
    with no_gc():
        return _gold_rows(path)


def _gold_rows(path: Path) -> dict[str, list[Any]] | None:
    cols: dict[str, list[Any]] = {"id": [], "case": [], "scenario": [], "gold_names": [], "gold_types": [], "source": []}
    for f in jsonl_files(path):
        rel = relative_name(path, f)
        data = f.read_bytes()
        if data.startswith(_BOM):
            data = data[len(_BOM) :]
        n_lines = _clean_lines(data)
        try:
            if n_lines is not None:  # one call for the whole file: 0.84 s CPU for 200k seed rows (320 MB)
                rows = _GOLD.decode_lines(data)
                if len(rows) != n_lines:  # a whitespace-only line: number the lines one by one
                    return None
                numbers: Any = range(1, n_lines + 1)
            else:
                pairs = [(n, _GOLD.decode(line)) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
                numbers, rows = [n for n, _ in pairs], [r for _, r in pairs]
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        start = len(cols["case"])
        cols["case"].extend(range(start + 1, start + len(rows) + 1))
        ids, scen, names, types, src = cols["id"], cols["scenario"], cols["gold_names"], cols["gold_types"], cols["source"]
        prefix = f"{f}:"
        # One pass, plain appends: the per-row Python here cost as much as the decoding (1.1 s of 2.2 s at 200k).
        for r, n in zip(rows, numbers):
            i = r.id
            ids.append(i if type(i) is str else (str(i) if i is not None else generated_id(rel, n)))
            sc = r.scenario if r.scenario is not None else r.type
            scen.append(sc if sc is None or type(sc) is str else str(sc))
            ms = r.output.metrics
            if ms:
                names.append([m.metric_name for m in ms])
                types.append([t if type(t) is str else str(t or "") for t in (m.metric_type for m in ms)])
            else:
                names.append([])
                types.append([])
            src.append(prefix + str(n))
    return cols


def pred_row(line: bytes) -> tuple[Any, Any, Any, list[str], list[str]] | None:
    """(id, scenario, type, names, types) of a prediction line whose `output` plainly meets the contract,
    else None (the caller reads the line the slow way)."""
    if not (PRED_FAST_PATH and ENABLED):
        return None
    try:
        row = _PRED.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    ms = row.output.metrics
    names = [m.metric_name for m in ms]
    if len(set(names)) != len(names) or not all(nm.strip() for nm in names):
        return None  # a repeated name is a contract error; a blank one is dropped by parse_output
    return row.id, row.scenario, row.type, names, [m.metric_type for m in ms]


def pred_lines(path: Path) -> list[tuple[Path, int, Any]] | None:
    """(file, line, decoded line) of every prediction line, each file decoded in one call, when every
    line is a JSON object with an `output` (then `output` is raw bytes for `pred_output`); else None and
    the caller reads line by line."""
    if not ENABLED:
        return None
    out: list[tuple[Path, int, Any]] = []
    for f in jsonl_files(path):
        data = f.read_bytes()
        if data.startswith(_BOM):
            data = data[len(_BOM) :]
        n_lines = _clean_lines(data)
        if n_lines is None:
            return None
        try:
            rows = _PRED_LINE.decode_lines(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if len(rows) != n_lines:
            return None
        out.extend(zip([f] * n_lines, range(1, n_lines + 1), rows))
    return out


def pred_output(raw: bytes | msgspec.Raw) -> tuple[list[str], list[str]] | None:
    """(names, types) of an `output` that plainly meets the contract (see the module docstring), else None."""
    if not PRED_FAST_PATH:
        return None
    try:
        out = _PRED_OUTPUT.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    ms = out.metrics
    names = [m.metric_name for m in ms]
    if len(set(names)) != len(names) or not all(nm.strip() for nm in names):
        return None
    return names, [m.metric_type for m in ms]


def decode_line(f: Path, n: int, line: bytes) -> dict[str, Any]:
    """A line the slow way: `json.loads`, with `data.io.iter_jsonl`'s messages."""
    import json

    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(not_utf8_message(f)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{f}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{f}:{n}: expected a JSON object, got {type(obj).__name__}")
    return obj


def string_lists(lists: list[list[str]]) -> pa.Array:
    """A list<string> column from Python lists, through flat values and offsets: polars' own conversion of
    200k nested Python lists took 3.9 s, this 0.4 s. (Through polars, not `pa.array`: that imports pandas,
    ~1 s of a cold start.)"""
    offsets = [0]
    flat: list[str] = []
    for x in lists:
        flat.extend(x)
        offsets.append(len(flat))
    values = pl.Series(flat, dtype=pl.String).to_arrow()
    return pa.LargeListArray.from_arrays(pl.Series(offsets, dtype=pl.Int64).to_arrow(), values)
