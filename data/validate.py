"""Validation of labelled and unlabelled data, with every problem named by file and line.

A training run that dies at step 900 on a malformed row, or quietly learns from a row whose metric type
is misspelt, costs far more than reading the data once first. So the trainer (and `datakit validate`)
reads every row, collects every problem instead of stopping at the first, and only then decides.

API (what the trainer calls)::

    from reportminer.data.validate import validate_path
    report = validate_path("train.jsonl")          # a file, a folder of *.jsonl, or Parquet shards
    for issue in report.warnings: log(issue)       # str(issue) == "train.jsonl:12: warning: ..."
    report.raise_for_errors()                      # DataError naming file:line of the first errors

`validate_path(path, seed_rules=True, require_labels=False) -> ValidationReport`; the report has
`.errors`, `.warnings`, `.issues`, `.ok`, `.rows`, `.labelled`, `.files`, `.to_dict()`. Each `Issue` is
(file, line, id, field, message, severity, row): `line` is the 1-based JSONL line, `row` the 1-based row
of a Parquet file (its `id` is given too). `validate_table(table, name)` checks an Arrow table in memory.

Rules. Errors (data the trainer must not use):
  - a line that is not JSON, or not a JSON object;
  - missing or empty `chapter_title` / `paragraph` (in `input`, or at the top level), non-string values;
  - an `id` that repeats one seen before (rows without an id get `file:line`: data.io.generated_id);
  - an `output` that breaks the output contract (data.schema.OUTPUT_JSON_SCHEMA): missing `analysis` or
    `metrics`, unknown fields, more than 4 metrics, a `metric_type` other than financial/business, a
    score outside [0, 1], strings longer than the schema bounds; repeated metric names in one row;
  - seed rules (`seed_rules=True`): a labelled score outside [LABEL_SCORE_MIN, LABEL_SCORE_MAX] =
    [0.80, 1.00]; a type-D row whose metrics are not a mix of financial and business;
  - with `require_labels=True`, a row without `output`.
Warnings (worth a look, not fatal): seed per-type counts (A analyses 1-3 metrics, B at most 2, C at least
1), an empty `analysis` beside labelled metrics, a paragraph over 2,000 characters (long prompts cost
throughput and may not fit the engine's context), a set where only some rows carry labels.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .check import _VALIDATOR, answer_problems  # noqa: F401  (tests reach the first here)
from .io import (
    DataError,
    data_kind,
    generated_id,
    jsonl_files,
    parquet_files,
    relative_name,
    require_utf8,
    wide_encoding,
    wide_encoding_message,
)
from .schema import (
    CHAPTER_TITLE,
    GOLD_ANALYSIS,
    GOLD_METRICS,
    ID,
    LABEL_SCORE_MAX,
    LABEL_SCORE_MIN,
    MAX_METRICS,
    PARAGRAPH,
    SCENARIO,
)

ERROR = "error"
WARNING = "warning"

LONG_PARAGRAPH_CHARS = 2000

# The seed's scenarios and what its README says each one holds; used for warnings only, because a
# user's own data may label the same scenario differently.
SEED_COUNT_RULES: dict[str, tuple[int, int, str]] = {
    "A": (1, 3, "type A (standard positives) analyses 1-3 metrics"),
    "B": (0, 2, "type B (boundary negatives) has few core metrics, at most 2"),
    "C": (1, MAX_METRICS, "type C (count variation) has 1-4 metrics"),
}

@dataclass(frozen=True)
class Issue:
    """One problem. `line` (JSONL, 1-based) or `row` (Parquet, 1-based) locates it inside `file`."""

    file: str
    line: int | None
    id: str | None
    field: str | None
    message: str
    severity: str = ERROR
    row: int | None = None

    @property
    def location(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        if self.row is not None:
            return f"{self.file}[row {self.row}" + (f", id={self.id!r}]" if self.id is not None else "]")
        return self.file

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.location}: {self.severity}: {where}{self.message}"


class ValidationFailed(DataError):
    """Raised by `ValidationReport.raise_for_errors`; `.report` holds every issue."""

    def __init__(self, report: "ValidationReport", shown: int = 20):
        self.report = report
        errs = report.errors
        lines = [str(i) for i in errs[:shown]]
        if len(errs) > shown:
            lines.append(f"... and {len(errs) - shown} more error(s)")
        super().__init__(f"{len(errs)} validation error(s) in {report.path}:\n" + "\n".join(lines))


@dataclass
class ValidationReport:
    path: str
    issues: list[Issue] = field(default_factory=list)
    rows: int = 0
    labelled: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        if self.errors:
            raise ValidationFailed(self)

    def counts_by_field(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for i in self.issues:
            key = _field_family(i.field)
            out.setdefault(i.severity, {}).setdefault(key, 0)
            out[i.severity][key] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "rows": self.rows,
            "labelled": self.labelled,
            "files": self.files,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "by_field": self.counts_by_field(),
            "issues": [asdict(i) for i in self.issues],
        }


def _field_family(f: str | None) -> str:
    """`output.metrics[2].score` -> `output.metrics[].score`, for summaries."""
    if not f:
        return "(row)"
    return re.sub(r"\[\d+\]", "[]", f)


# ----------------------------------------------------------------------------------------------------------
# Row rules, shared by JSONL and Parquet. They return (field, message, severity) triples; the caller adds
# the location.

Found = tuple[str | None, str, str]


def _json_path(parts: Iterable[Any]) -> str:
    s = "output"
    for p in parts:
        s += f"[{p}]" if isinstance(p, int) else f".{p}"
    return s


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def check_input(title: Any, paragraph: Any) -> list[Found]:
    out: list[Found] = []
    for name, v in ((CHAPTER_TITLE, title), (PARAGRAPH, paragraph)):
        if v is None:
            out.append((name, "missing", ERROR))
        elif not isinstance(v, str):
            out.append((name, f"must be a string, got {type(v).__name__}", ERROR))
        elif not v.strip():
            out.append((name, "empty", ERROR))
    if isinstance(paragraph, str) and len(paragraph) > LONG_PARAGRAPH_CHARS:
        out.append(
            (PARAGRAPH, f"{len(paragraph)} characters (over {LONG_PARAGRAPH_CHARS}); split it or check the engine's context length", WARNING)
        )
    return out


def check_output(output: Any, scenario: Any, seed_rules: bool = True) -> list[Found]:
    """Problems of one gold answer (`output` object of a seed row, or the gold columns of a shard row)."""
    if not isinstance(output, dict):
        return [("output", f"must be an object with analysis and metrics, got {type(output).__name__}", ERROR)]
    out: list[Found] = [(_json_path(p.path), p.message, ERROR) for p in answer_problems(output)]
    metrics = output.get("metrics")
    if not isinstance(metrics, list):
        return out
    good = [m for m in metrics if isinstance(m, dict)]
    if metrics and isinstance(output.get("analysis"), str) and not output["analysis"].strip():
        out.append(("output.analysis", "empty beside labelled metrics; the model learns to explain nothing", WARNING))
    if not seed_rules:
        return out
    for i, m in enumerate(good):
        s = m.get("score")
        if isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1 and not (LABEL_SCORE_MIN <= s <= LABEL_SCORE_MAX):
            out.append(
                (f"output.metrics[{i}].score", f"{s} is outside the labelled range [{LABEL_SCORE_MIN:.2f}, {LABEL_SCORE_MAX:.2f}]", ERROR)
            )
    sc = scenario.strip().upper() if isinstance(scenario, str) else None
    n = len(metrics)
    if sc == "D":
        types = {m.get("metric_type") for m in good}
        if not {"financial", "business"} <= types:
            have = "/".join(sorted(t for t in types if isinstance(t, str))) or "no metrics"
            out.append(("output.metrics", f"type D rows mix financial and business metrics; this one has {have}", ERROR))
    elif sc in SEED_COUNT_RULES and n <= MAX_METRICS:
        lo, hi, why = SEED_COUNT_RULES[sc]
        if not lo <= n <= hi:
            out.append(("output.metrics", f"{n} metrics; {why}", WARNING))
    return out


# ----------------------------------------------------------------------------------------------------------
# JSONL


def _iter_jsonl_lines(root: Path) -> Iterator[tuple[Path, str, int, str | None, str | None]]:
    """(file, relative name, line number, text, decode error) for every line; decoded line by line so a
    bad byte is reported on its own line and the rest of the file is still read. A UTF-16/32 file gives
    one entry with line number 0 instead."""
    for f in jsonl_files(root):
        rel = relative_name(root, f)
        with open(f, "rb") as fh:
            enc = wide_encoding(fh.read(512))
        if enc:  # one problem of the file, not one per line
            yield f, rel, 0, None, wide_encoding_message(f, enc).split(": ", 1)[1]
            continue
        with open(f, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    yield f, rel, n, None, f"not UTF-8 text: byte {raw[e.start:e.start + 1]!r} at column {e.start + 1}"
                    continue
                yield f, rel, n, text, None


class _Collector:
    def __init__(self, report: ValidationReport, seed_rules: bool, require_labels: bool):
        self.report = report
        self.seed_rules = seed_rules
        self.require_labels = require_labels
        self.seen_ids: dict[str, str] = {}
        self.unreadable = 0  # rows that are not a JSON object: neither labelled nor unlabelled

    def add(self, file: str, found: Iterable[Found], *, line: int | None = None, row: int | None = None, id: str | None = None) -> None:
        for fld, msg, sev in found:
            self.report.issues.append(Issue(file, line, id, fld, msg, sev, row))

    def check_id(self, file: str, id_: str, where: str, *, line: int | None = None, row: int | None = None) -> None:
        first = self.seen_ids.get(id_)
        if first is not None:
            self.add(file, [(ID, f"duplicate id {id_!r} (first at {first})", ERROR)], line=line, row=row, id=id_)
        else:
            self.seen_ids[id_] = where

    def finish(self) -> None:
        """Label-coverage warning, then issues in reading order (file, line or row), set-level ones first."""
        self.finish_labels()
        order = {f: i for i, f in enumerate(self.report.files)}
        self.report.issues.sort(key=lambda i: (order.get(i.file, -1), i.line or i.row or 0))

    def finish_labels(self) -> None:
        r = self.report
        unl = r.rows - self.unreadable - r.labelled
        if self.require_labels or not (r.labelled and unl):
            return
        r.issues.append(
            Issue(r.path, None, None, "output", f"{unl} of {r.rows - self.unreadable} rows have no output (unlabelled) beside {r.labelled} labelled ones", WARNING)
        )


def _validate_jsonl(root: Path, col: _Collector, progress: bool) -> None:
    from tqdm import tqdm

    files = jsonl_files(root)
    col.report.files.extend(str(f) for f in files)
    for f, rel, n, line, bad in tqdm(_iter_jsonl_lines(root), desc="validate", unit=" lines", disable=not progress):
        fname = str(f)
        if line is None and n == 0:  # the whole file is unreadable as UTF-8 (UTF-16): its rows are not counted
            col.add(fname, [(None, bad or "unreadable", ERROR)])
            continue
        if line is None:
            col.report.rows += 1
            col.add(fname, [(None, bad or "unreadable", ERROR)], line=n)
            col.unreadable += 1
            continue
        if not line.strip():
            continue
        col.report.rows += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            col.add(fname, [(None, f"invalid JSON: {e.msg} (column {e.colno})", ERROR)], line=n)
            col.unreadable += 1
            continue
        if not isinstance(obj, dict):
            col.add(fname, [(None, f"expected a JSON object, got {type(obj).__name__}", ERROR)], line=n)
            col.unreadable += 1
            continue
        raw_id = obj.get(ID)
        id_ = str(raw_id) if raw_id is not None else generated_id(rel, n)
        if raw_id is not None and (not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or not str(raw_id).strip()):
            col.add(fname, [(ID, f"must be a non-empty string, got {_short(raw_id)}", ERROR)], line=n, id=id_)
        col.check_id(fname, id_, f"{fname}:{n}", line=n)
        if "input" in obj and not isinstance(obj["input"], dict):
            col.add(fname, [("input", f"must be an object with chapter_title and paragraph, got {type(obj['input']).__name__}", ERROR)], line=n, id=id_)
        else:
            inp = obj["input"] if isinstance(obj.get("input"), dict) else obj  # flat rows are accepted too
            prefix = "input." if inp is not obj else ""
            col.add(fname, [(prefix + (k or ""), m, s) for k, m, s in check_input(inp.get(CHAPTER_TITLE), inp.get(PARAGRAPH))], line=n, id=id_)
        scen = obj.get(SCENARIO)
        if scen is not None and not isinstance(scen, str):
            col.add(fname, [(SCENARIO, f"must be a string such as 'A', got {_short(scen)}", ERROR)], line=n, id=id_)
        if "output" in obj and obj["output"] is not None:
            col.report.labelled += 1
            col.add(fname, check_output(obj["output"], scen, col.seed_rules), line=n, id=id_)
        elif col.require_labels:
            col.add(fname, [("output", "missing; training data needs a gold answer on every row", ERROR)], line=n, id=id_)


# ----------------------------------------------------------------------------------------------------------
# Parquet / Arrow


def _validate_arrow(table: pa.Table, fname: str, col: _Collector) -> None:
    names = table.schema.names
    missing = [c for c in (ID, CHAPTER_TITLE, PARAGRAPH) if c not in names]
    if missing:
        col.add(fname, [(None, f"missing column(s) {missing}; shards need id, chapter_title, paragraph", ERROR)])
        return
    col.report.rows += table.num_rows
    # Input columns are checked vectorised first: nightly corpus shards hold millions of rows, and almost
    # all of them are fine, so Python only touches the rows that fail.
    ids = table.column(ID)
    if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
        col.add(fname, [(ID, f"column must be string, is {ids.type}", ERROR)])
        ids = pc.cast(ids, pa.string())
    bad = pc.or_kleene(pc.is_null(ids), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0))
    bad = pc.fill_null(bad, True)
    for r in pc.indices_nonzero(bad).to_pylist():
        col.add(fname, [(ID, "missing or empty", ERROR)], row=r + 1)
    id_list = ids.to_pylist()
    for r, v in enumerate(id_list):
        if v:
            col.check_id(fname, v, f"{fname}[row {r + 1}]", row=r + 1)
    for c in (CHAPTER_TITLE, PARAGRAPH):
        arr = table.column(c)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            col.add(fname, [(c, f"column must be string, is {arr.type}", ERROR)])
            continue
        lens = pc.utf8_length(pc.utf8_trim_whitespace(arr))
        bad = pc.fill_null(pc.equal(lens, 0), True)
        for r in pc.indices_nonzero(bad).to_pylist():
            col.add(fname, [(c, "missing" if arr[r].as_py() is None else "empty", ERROR)], row=r + 1, id=id_list[r])
        if c == PARAGRAPH:
            long_ = pc.fill_null(pc.greater(pc.utf8_length(arr), LONG_PARAGRAPH_CHARS), False)
            for r in pc.indices_nonzero(long_).to_pylist():
                col.add(fname, [(c, f"{len(arr[r].as_py())} characters (over {LONG_PARAGRAPH_CHARS}); split it or check the engine's context length", WARNING)], row=r + 1, id=id_list[r])
    if GOLD_METRICS not in names:
        if col.require_labels:
            col.add(fname, [(GOLD_METRICS, "column missing; training data needs gold labels", ERROR)])
        return
    metrics = table.column(GOLD_METRICS).to_pylist()
    analyses = table.column(GOLD_ANALYSIS).to_pylist() if GOLD_ANALYSIS in names else [None] * table.num_rows
    scen = table.column(SCENARIO).to_pylist() if SCENARIO in names else [None] * table.num_rows
    for r, (m, a, s) in enumerate(zip(metrics, analyses, scen)):
        if m is None and a is None:
            if col.require_labels:
                col.add(fname, [(GOLD_METRICS, "missing; training data needs a gold answer on every row", ERROR)], row=r + 1, id=id_list[r])
            continue
        col.report.labelled += 1
        output = {"analysis": a, "metrics": m}
        if a is None:
            output.pop("analysis")
        if m is None:
            output.pop("metrics")
        found = check_output(output, s, col.seed_rules)
        # Parquet names the columns, not the seed's nested object.
        found = [
            ((f or "").replace("output.metrics", GOLD_METRICS).replace("output.analysis", GOLD_ANALYSIS) or None, msg, sev)
            for f, msg, sev in found
        ]
        col.add(fname, found, row=r + 1, id=id_list[r])


def validate_table(table: pa.Table, name: str = "<table>", *, seed_rules: bool = True, require_labels: bool = False) -> ValidationReport:
    """Check an Arrow table with the shard columns (and gold columns, where present)."""
    report = ValidationReport(path=name, files=[name])
    col = _Collector(report, seed_rules, require_labels)
    _validate_arrow(table, name, col)
    col.finish()
    return report


def validate_path(
    path: str | os.PathLike, *, seed_rules: bool = True, require_labels: bool = False, progress: bool = False
) -> ValidationReport:
    """Validate a JSONL file, a Parquet file, or a folder of either (ids must be unique across all of it;
    a folder holding both kinds is a DataError: data.io.data_kind).

    Raises DataError when nothing can be read at all (no such path, no data files) and when a Parquet
    string value is not UTF-8 (data.io.require_utf8: its row cannot be read, so no rule can be checked);
    everything else wrong inside the data is an Issue in the report.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    report = ValidationReport(path=str(root))
    col = _Collector(report, seed_rules, require_labels)
    if data_kind(root) == "parquet":
        pfiles = parquet_files(root)
    else:
        pfiles = []
        _validate_jsonl(root, col, progress)
    for f in pfiles:
        report.files.append(str(f))
        try:
            table = pq.read_table(f)
        except Exception as e:  # pyarrow raises several types for a damaged file
            col.add(str(f), [(None, f"cannot read Parquet: {e}", ERROR)])
            continue
        require_utf8(table, str(f))  # text that is not UTF-8 cannot be checked row by row: a data error (exit 3)
        _validate_arrow(table, str(f), col)
    col.finish()
    return report
