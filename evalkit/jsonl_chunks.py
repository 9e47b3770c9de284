"""Decoding a byte range of a gold or predictions JSONL file into compact columns, in this process or in a
worker process (`pardecode` runs this file by its path).

This module imports only the standard library and msgspec (a worker starts in ~0.04 s; the contract's
numbers come from the main process, `contract_of_schema`, and `reportminer.data.parse` is imported only
for a row that needs it). A range is decoded only when every line in it is one `{...}` object
(`line_count`), in one msgspec call into typed structs that skip what scoring does not read; anything
else gives None and the caller reads the whole input the old way, line by line, with its exact messages.
A range's answer is a dict of columns: names and types flattened with a count a row, strings joined into
one buffer (`strings`), so a worker's answer is one msgpack message of a few byte strings.

Exactness is by construction (the tests compare every path frame for frame):
- gold: `output` an object holding `metrics` (null or a list of objects with a string `metric_name`);
- predictions: in one call when every answer has exact keys and its analysis and each metric meet the
  contract (the count, blank and repeated names may not: `breach` says what `data.parse` says of them);
  else each `output` on its own, one that plainly meets the contract by msgspec, any other through
  `data.parse` as before.

Measured at 200,000 rows on the 2-core sandbox (CPU s, user + system, one process, the whole file in one
range): gold (320 MB) 0.46, predictions (228 MB, 1,843 rows breaking the contract) 0.82, decoded in 512 KB
batches (`BATCH_BYTES`); 0.73 and 1.16 in one piece, the rows kept to the end; before that, with the same
msgspec structs but a line check of three `bytes.count` calls (0.73 s on the gold alone), rows built one
append at a time and the breaking rows through jsonschema: 1.8 and 2.3.
"""

import array
import bisect
import gc
import itertools
import json
import mmap
import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec

BOM = b"\xef\xbb\xbf"


def contract_of_schema() -> dict[str, Any]:
    """The output contract's numbers, from `data.schema` (the main process passes them to its workers,
    which so never import `reportminer.data` and jsonschema unless a row needs `data.parse`).
    `fast`: the prediction fast path is on only while data.check's quick check knows every keyword of
    the schema and the metric types are the two the structs below spell out."""
    from reportminer.data import check
    from reportminer.data.schema import (
        MAX_ANALYSIS_CHARS,
        MAX_METRICS,
        MAX_NAME_CHARS,
        MAX_REASON_CHARS,
        METRIC_TYPES,
        OUTPUT_JSON_SCHEMA,
    )

    score = OUTPUT_JSON_SCHEMA["properties"]["metrics"]["items"]["properties"]["score"]
    return {"fast": bool(check._FAST_PATH and tuple(METRIC_TYPES) == ("financial", "business")),
            "max_metrics": MAX_METRICS, "max_name": MAX_NAME_CHARS, "max_reason": MAX_REASON_CHARS,
            "max_analysis": MAX_ANALYSIS_CHARS, "score_min": score["minimum"], "score_max": score["maximum"]}


# ---------------------------------------------------------------------------------------- structs
# Gold, tight (every field a string or absent: one call, 0.30 s for 200k seed rows) and loose (any JSON
# value where the slow path takes any: 0.39 s). Neither declares `input`: paragraphs are skipped.


class _GoldMetric(msgspec.Struct, gc=False):
    metric_name: str
    metric_type: str | None = None


class _GoldOutput(msgspec.Struct, gc=False):
    metrics: list[_GoldMetric] | None


class _GoldRow(msgspec.Struct, gc=False):
    output: _GoldOutput
    id: str | None = None
    scenario: str | None = None
    type: str | None = None


class _GoldMetricAny(msgspec.Struct, gc=False):
    metric_name: str
    metric_type: Any = None


class _GoldOutputAny(msgspec.Struct, gc=False):
    metrics: list[_GoldMetricAny] | None


class _GoldRowAny(msgspec.Struct, gc=False):
    output: _GoldOutputAny
    id: Any = None
    scenario: Any = None
    type: Any = None


_GOLD = msgspec.json.Decoder(_GoldRow)
_GOLD_ANY = msgspec.json.Decoder(_GoldRowAny)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


class _PredLine(msgspec.Struct, gc=False):
    output: msgspec.Raw  # any JSON value, kept as its bytes: decoded strictly (or the slow way) per row
    id: Any = None
    scenario: Any = None
    type: Any = None


_PRED_LINE = msgspec.json.Decoder(_PredLine)
# Set by `use` (the contract's numbers): the prediction decoders and MAX_METRICS.
PRED_FAST_PATH = False
MAX_METRICS = 0
_PRED_BULK: msgspec.json.Decoder = _PRED_LINE
_PRED: msgspec.json.Decoder = _PRED_LINE
_PRED_OUTPUT: msgspec.json.Decoder = _PRED_LINE


def use(c: dict[str, Any]) -> None:
    """Build the prediction structs for contract `c` (`contract_of_schema`)."""
    global PRED_FAST_PATH, MAX_METRICS, _PRED_BULK, _PRED, _PRED_OUTPUT

    # The contract per metric and for the analysis. In the bulk type the metric count, blank and repeated
    # names are checked per row after the one call (a row breaking them is common in model output and
    # must not send its whole range the slow way); the per-line type checks the count too.
    class _PredMetric(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        metric_name: Annotated[str, msgspec.Meta(min_length=1, max_length=c["max_name"])]
        metric_type: Literal["financial", "business"]
        score: Annotated[float, msgspec.Meta(ge=c["score_min"], le=c["score_max"])]
        reason: Annotated[str, msgspec.Meta(max_length=c["max_reason"])]

    class _PredOutputAnyCount(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        analysis: Annotated[str, msgspec.Meta(max_length=c["max_analysis"])]
        metrics: list[_PredMetric]

    class _PredRowAnyCount(msgspec.Struct, gc=False):
        output: _PredOutputAnyCount
        id: Any = None
        scenario: Any = None
        type: Any = None

    class _PredOutput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        analysis: Annotated[str, msgspec.Meta(max_length=c["max_analysis"])]
        metrics: Annotated[list[_PredMetric], msgspec.Meta(max_length=c["max_metrics"])]

    class _PredRow(msgspec.Struct, gc=False):
        output: _PredOutput
        id: Any = None
        scenario: Any = None
        type: Any = None

    PRED_FAST_PATH, MAX_METRICS = c["fast"], c["max_metrics"]
    _PRED_BULK = msgspec.json.Decoder(_PredRowAnyCount)
    _PRED = msgspec.json.Decoder(_PredRow)
    _PRED_OUTPUT = msgspec.json.Decoder(_PredOutput)


# ---------------------------------------------------------------------------------- line structure


def line_count(buf: Any, start: int, end: int) -> int | None:
    """The number of lines in buf[start:end] when each is one `{...}`: it starts with `{`, ends with `}`
    right before its `\\n` (or the end), no blank line, no `\\r` anywhere; else None.

    Then msgspec's `decode_lines` (which would read an object across a newline, or two on one line) gives
    object k = line k when the counts agree: a newline cannot sit inside a string (msgspec refuses raw
    control characters), and after a closing `}` an object continues with `,` or `}`, never `{`. A `\\r`
    is whitespace to msgspec but ends the line for `json.loads` on text-mode lines, hence refused.
    One `find` a line (memchr): 0.12 s for 200k gold lines, where three `bytes.count` took 0.73 s."""
    if start >= end:
        return 0
    if buf[start] != 0x7B or buf.find(b"\r", start, end) >= 0:
        return None
    n = 0
    find = buf.find
    i = find(b"\n", start, end)
    last = end - 1
    while i >= 0:
        n += 1
        if buf[i - 1] != 0x7D or (i < last and buf[i + 1] != 0x7B):
            return None
        i = find(b"\n", i + 1, end)
    if buf[last] != 0x0A:
        if buf[last] != 0x7D:
            return None
        n += 1
    return n


def _decode(decoder: msgspec.json.Decoder, buf: Any, start: int, end: int, n_lines: int) -> list[Any] | None:
    try:
        rows = decoder.decode_lines(memoryview(buf)[start:end])
    except _DECODE_ERRORS:
        return None
    return rows if len(rows) == n_lines else None


# A range is decoded BATCH_BYTES at a time (cut after a newline), each batch's structs and strings dropped
# once its columns are joined (`strings`, `merge`): the next batch reuses their memory instead of faulting
# in fresh pages. Whole ranges at once (the rows kept to the end) faulted ~150k pages for the 200k-case
# pair. CPU s (user + sys) of one process decoding each whole file, 2-core sandbox, mean of 3-4 runs:
# gold 0.73 / predictions 1.16 at once; 0.47 / 1.00 in 8 MB batches, 0.47 / 0.90 in 2 MB, 0.46 / 0.82 in
# 512 KB, 0.47 / 0.81 in 256 KB.
BATCH_BYTES = 1 << 19


def batches(buf: Any, start: int, end: int, size: int | None = None) -> Iterator[tuple[int, int]]:
    """Sub-ranges of buf[start:end] of about `size` bytes, each ending right after a newline (or at `end`);
    an empty range is one empty batch."""
    if start >= end:
        yield start, end
        return
    size = size or BATCH_BYTES
    a = start
    while a < end:
        nl = buf.find(b"\n", min(a + size, end - 1), end)
        b = end if nl < 0 else nl + 1
        yield a, b
        a = b


# ------------------------------------------------------------------------------------------- gold


def gold_chunk(buf: Any, start: int, end: int) -> dict[str, Any] | None:
    """Columns of the gold rows in buf[start:end]: `n` rows, `ids` (str, or None: the caller makes the
    id from the line), `scenario`, `names` and `types` flattened, `counts` (metrics a row). None when
    the range is not the common shape (the caller reads the file line by line)."""
    parts = []
    for a, b in batches(buf, start, end):
        part = _gold_batch(buf, a, b)
        if part is None:
            return None
        parts.append(part)
    return merge(parts)


def _gold_batch(buf: Any, start: int, end: int) -> dict[str, Any] | None:
    n_lines = line_count(buf, start, end)
    if n_lines is None:
        return None
    rows = _decode(_GOLD, buf, start, end, n_lines)
    tight = rows is not None
    if rows is None:
        rows = _decode(_GOLD_ANY, buf, start, end, n_lines)
        if rows is None:
            return None
    ids = [r.id for r in rows]
    scen = [r.scenario if r.scenario is not None else r.type for r in rows]
    mss = [r.output.metrics or () for r in rows]
    names = [m.metric_name for ms in mss for m in ms]
    types = [m.metric_type for ms in mss for m in ms]
    if tight:
        if None in types:  # `str(m.get("metric_type") or "")`, the slow path's rule
            types = [t or "" for t in types]
    else:
        ids = [i if i is None or type(i) is str else str(i) for i in ids]
        scen = [s if s is None or type(s) is str else str(s) for s in scen]
        types = [t if type(t) is str else str(t or "") for t in types]
    return {"n": len(rows), "ids": strings(ids), "scenario": strings(scen), "names": strings(names),
            "types": strings(types), "counts": int64s([len(ms) for ms in mss])}


# ------------------------------------------------------------------------------------ predictions


def group(obj_scenario: Any, obj_type: Any) -> str | None:
    """`loaders._group` on decoded fields: the scenario when set, else the type, as text."""
    if obj_scenario is not None:
        return str(obj_scenario)
    return None if obj_type is None else str(obj_type)


def parsed_row(text: Any) -> tuple[list[str], list[str], bool, str | None]:
    """Names, types, json_valid, error of one raw prediction (str, dict or None), through `data.parse`."""
    from reportminer.data.parse import parse_output

    if isinstance(text, (dict, list)):
        text = json.dumps(text, ensure_ascii=False)
    elif text is not None and not isinstance(text, str):
        text = str(text)
    parsed = parse_output(text)
    if parsed.extraction is None:
        return [], [], parsed.json_valid, parsed.error
    ms = parsed.extraction.metrics
    return [m.metric_name for m in ms], [m.metric_type for m in ms], parsed.json_valid, parsed.error


def _plain(names: list[str]) -> bool:
    """No repeated and no blank name (a repeat is a contract error; a blank one `parse_output` drops)."""
    return len(set(names)) == len(names) and all(nm.strip() for nm in names)


def breach(names: list[str], types: list[str]) -> tuple[list[str], list[str], bool, str | None]:
    """`parsed_row` of an answer whose analysis and every metric meet the contract, with exact keys (the
    bulk types below), whatever its metric count and names: then the schema's one possible complaint is
    maxItems (more than MAX_METRICS metrics), the check's the repeated names, and blank names are
    dropped. Through `data.parse` these rows cost 0.25 ms each in jsonschema (839 of the 200k benchmark)
    and the import of `reportminer.data` in every worker; the tests hold this to `parse_output`."""
    errs = []
    if len(names) > MAX_METRICS:
        errs.append(f"metrics: {len(names)} metrics; the contract allows 0-{MAX_METRICS}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        errs.append(f"metrics: duplicate metric_name, repeated in one row: {', '.join(dup)}")
    keep = [i for i, n in enumerate(names) if n.strip()]
    return [names[i] for i in keep], [types[i] for i in keep], True, "; ".join(errs) or None


def pred_output(raw: bytes | msgspec.Raw) -> tuple[list[str], list[str]] | None:
    """(names, types) of an `output` that plainly meets the contract (see the module docstring), else None."""
    if not PRED_FAST_PATH:
        return None
    try:
        out = _PRED_OUTPUT.decode(raw)
    except _DECODE_ERRORS:
        return None
    ms = out.metrics
    names = [m.metric_name for m in ms]
    if not _plain(names):
        return None
    return names, [m.metric_type for m in ms]


def pred_row(line: bytes) -> tuple[Any, Any, Any, list[str], list[str]] | None:
    """(id, scenario, type, names, types) of a prediction line whose `output` plainly meets the contract,
    else None (the caller reads the line the slow way)."""
    if not PRED_FAST_PATH:
        return None
    try:
        row = _PRED.decode(line)
    except _DECODE_ERRORS:
        return None
    ms = row.output.metrics
    names = [m.metric_name for m in ms]
    if not _plain(names):
        return None
    return row.id, row.scenario, row.type, names, [m.metric_type for m in ms]


def pred_chunk(buf: Any, start: int, end: int) -> dict[str, Any] | None:
    """Columns of the prediction rows in buf[start:end]: `n`, `ids` (as decoded: any JSON value, None
    when absent), `group`, `names`/`types` flattened with `counts`, `valid` and `error` a row. None when
    the range is not one object a line, each with an `output` (the caller reads line by line)."""
    parts = []
    for a, b in batches(buf, start, end):
        got = _pred_batch(buf, a, b)
        if got is None:
            return None
        parts.append(_pred_columns(*got))
    return merge(parts)


def _pred_batch(buf: Any, start: int, end: int) -> tuple[Any, ...] | None:
    """(ids, groups, names, types, counts, valid, errors) of the prediction rows in buf[start:end] (one
    batch), or None."""
    n_lines = line_count(buf, start, end)
    if n_lines is None:
        return None
    rows = _decode(_PRED_BULK, buf, start, end, n_lines) if PRED_FAST_PATH else None
    if rows is not None:
        # One call for the batch, the columns built flat; rows with more than MAX_METRICS metrics or a
        # blank or repeated name get what data.parse would say of them (`breach`), spliced in.
        ms_rows = [r.output.metrics for r in rows]
        counts = list(map(len, ms_rows))
        names = [m.metric_name for ms in ms_rows for m in ms]
        types = [m.metric_type for ms in ms_rows for m in ms]
        offs = list(itertools.accumulate(counts, initial=0))
        bad = {k for k, c in enumerate(counts) if c > 1 and (c > MAX_METRICS or len(set(names[offs[k] : offs[k + 1]])) != c)}
        if not all(map(str.strip, names)):
            bad.update(bisect.bisect_right(offs, i) - 1 for i, x in enumerate(names) if not x.strip())
        valid: list[bool] = [True] * len(rows)
        errors: list[str | None] = [None] * len(rows)
        if bad:
            flat_n: list[str] = []
            flat_t: list[str] = []
            at = 0
            for k in sorted(bad):
                lo, hi = offs[k], offs[k + 1]
                flat_n.extend(names[at:lo])
                flat_t.extend(types[at:lo])
                nm, tp, valid[k], errors[k] = breach(names[lo:hi], types[lo:hi])
                flat_n.extend(nm)
                flat_t.extend(tp)
                counts[k] = len(nm)
                at = hi
            names, types = flat_n + names[at:], flat_t + types[at:]
        ids = [r.id for r in rows]
        scen = [r.scenario for r in rows]
        typ = [r.type for r in rows]
        groups = [group(a, b) for a, b in zip(scen, typ)] if scen.count(None) != len(scen) or typ.count(None) != len(typ) else scen
        return ids, groups, names, types, counts, valid, errors
    # Some output is raw text, or breaks the contract per metric: each row's output on its own.
    lines = _decode(_PRED_LINE, buf, start, end, n_lines)
    if lines is None:
        return None
    name_rows, type_rows, valid, errors, ids, groups = [], [], [], [], [], []
    for row in lines:
        fast = pred_output(row.output)
        if fast is not None:
            nm, tp, ok, err = fast[0], fast[1], True, None
        else:
            nm, tp, ok, err = parsed_row(json.loads(bytes(row.output)))
        name_rows.append(nm)
        type_rows.append(tp)
        valid.append(ok)
        errors.append(err)
        ids.append(row.id)
        groups.append(group(row.scenario, row.type))
    return (ids, groups, list(itertools.chain.from_iterable(name_rows)), list(itertools.chain.from_iterable(type_rows)),
            [len(x) for x in name_rows], valid, errors)


def _pred_columns(ids: list[Any], groups: list[str | None], names: list[str], types: list[str], counts: list[int],
                  valid: list[bool], errors: list[str | None]) -> dict[str, Any]:
    kinds = set(map(type, ids))
    if not kinds <= {str, type(None)}:
        ids = [i if i is None or type(i) is str else str(i) for i in ids]
    return {"n": len(counts), "ids": strings(ids), "has_ids": len(ids) - ids.count(None), "group": strings(groups),
            "names": strings(names), "types": strings(types), "counts": int64s(counts), "valid": bytes(valid),
            "error": strings(errors)}


# ------------------------------------------------------------------------------------------- jobs


def strings(col: list[Any]) -> dict[str, Any]:
    """A string column for the pipe: its values joined by NUL into one UTF-8 `text` (the caller splits
    it in polars: `fastload.split_strings`), or, when a value holds a NUL itself, Arrow's buffers (`data`
    and int64 `offsets`); `valid` is a byte a row, None when no value is null. No Python object a value
    crosses the pipe or gets built again (msgpack lists of 1.3M strings took 0.22 s to decode in the
    main process; encoding each value for Arrow offsets 0.3 s in each worker; one join 0.02 s)."""
    valid = None
    n = len(col)
    nulls = col.count(None)
    if nulls == n:
        return {"nulls": True, "valid": None, "len": n}
    if nulls:
        valid = bytes(x is not None for x in col)
        col = ["" if x is None else x for x in col]
    text = "\x00".join(col)
    if text.count("\x00") == n - 1:
        return {"text": text.encode(), "valid": valid, "len": n}
    enc = list(map(str.encode, col))
    return {"data": b"".join(enc), "offsets": int64s(itertools.accumulate(map(len, enc), initial=0)), "valid": valid,
            "len": n}


def join_strings(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """`strings` of the concatenated columns of `parts` (each a `strings` answer), built from their
    buffers (a batch's str objects are freed as soon as its answer is made)."""
    parts = [p for p in parts if p["len"]]
    if len(parts) <= 1:
        return parts[0] if parts else strings([])
    n = sum(p["len"] for p in parts)
    if all("nulls" in p for p in parts):
        return {"nulls": True, "valid": None, "len": n}
    valid = None
    if any("nulls" in p or p["valid"] is not None for p in parts):
        valid = b"".join(bytes(p["len"]) if "nulls" in p else p["valid"] or b"\x01" * p["len"] for p in parts)
    if not any("data" in p for p in parts):  # k values are k - 1 NULs apart, an all-null part k empty values
        text = b"\x00".join(b"\x00" * (p["len"] - 1) if "nulls" in p else p["text"] for p in parts)
        return {"text": text, "valid": valid, "len": n}
    # Some value holds a NUL itself: Arrow buffers for all.
    datas: list[bytes] = []
    lens: list[int] = []
    for p in parts:
        if "nulls" in p:
            lens += [0] * p["len"]
        elif "text" in p:
            vals = p["text"].split(b"\x00")
            datas += vals
            lens += map(len, vals)
        else:
            offs = array.array("q", p["offsets"])
            datas.append(p["data"])
            lens += (b - a for a, b in zip(offs, offs[1:]))
    return {"data": b"".join(datas), "offsets": int64s(itertools.accumulate(lens, initial=0)), "valid": valid, "len": n}


STRING_COLUMNS = frozenset({"ids", "scenario", "names", "types", "group", "error"})


def merge(ps: list[dict[str, Any]]) -> dict[str, Any]:
    """One answer of the batch answers `ps` of a range, in order: string columns joined, byte columns
    (counts, valid) concatenated, counts (`n`, `has_ids`) summed."""
    if len(ps) == 1:
        return ps[0]
    out: dict[str, Any] = {}
    for k in ps[0]:
        if k in STRING_COLUMNS:
            out[k] = join_strings([p[k] for p in ps])
        elif isinstance(ps[0][k], bytes):
            out[k] = b"".join(p[k] for p in ps)
        else:
            out[k] = sum(p[k] for p in ps)
    return out


def int64s(values: Any) -> bytes:
    return array.array("q", values).tobytes()


KINDS = {"gold": gold_chunk, "pred": pred_chunk}


def run_job(kind: str, path: str, start: int, end: int) -> dict[str, Any] | None:
    """One range of one file, read through mmap (no copy of the file into this process)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return KINDS[kind](b"", 0, 0)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return KINDS[kind](buf, start, end)
            except (UnicodeError, ValueError, TypeError, RecursionError):
                return None  # e.g. `json.loads` refusing what msgspec took: the file goes the slow way


def _worker() -> None:
    """Worker loop: read one msgpack [contract, list of (kind, path, start, end) jobs] on stdin; answer each job as
    soon as it is done (gold first: the caller builds the gold frame while predictions decode), as an
    8-byte little-endian length and a msgpack message (None where a range needs the slow path)."""
    gc.disable()  # nothing here forms a cycle; the collector's passes over ~1M new containers cost ~40 %
    contract, jobs = msgspec.msgpack.decode(sys.stdin.buffer.read())
    use(contract)
    out = sys.stdout.buffer
    for job in jobs:
        msg = msgspec.msgpack.encode(run_job(*job))
        out.write(len(msg).to_bytes(8, "little"))
        out.write(msg)
        out.flush()
    os._exit(0)  # every answer is written and flushed; nothing to tear down


if __name__ == "__main__":  # a worker (`pardecode` runs this file by its path: no package import)
    _worker()
else:
    use(contract_of_schema())
