"""evalkit's one JSONL decoder: a byte range of a gold or predictions file into compact columns, in this
process or in a worker process (`pardecode` runs this file by its path).

This module imports only the standard library and msgspec (a worker starts in ~0.04 s; the contract's
numbers come from the main process, `contract_of_schema`, and `reportminer.data.parse` is imported only
for an answer that needs it). A range is decoded a batch at a time (`BATCH_BYTES`):

- when every line of the batch is one `{...}` object (`line_count`), in one msgspec call into typed
  structs that skip what scoring does not read (the common case);
- else line by line (CRLF, blank lines, a BOM, an object msgspec's types do not take), each line by
  msgspec or `json.loads`, the same fields taken by the same rules; the batch says which line each row
  came from (`at`).

A range holding a line that is an error (not JSON, not an object, not UTF-8, gold without
`output.metrics`, a prediction without `output`) gives None: the caller then reads the input line by line
only to name that error with the message it always had (`loaders`). Answers:

- predictions whose answer meets the contract, or breaks it only by missing fields (`analysis`,
  `metric_type`, `score`, `reason`: other tools' output, older runs), by the metric count or by blank or
  repeated names, are read in the one call; `breach` says what `data.parse` says of such an answer,
  without jsonschema (the tests hold it to `parse_output`); any other answer (raw text, a value out of
  range, an unknown key) goes through `data.parse` on its own.

A range's answer is a dict of columns: names and types flattened with a count a row, strings joined into
one buffer (`strings`), so a worker's answer is one msgpack message of a few byte strings.

Measured at 200,000 rows on the 2-core sandbox (CPU s, user + system, one process, the whole file in one
range): gold (320 MB) 0.46, predictions (228 MB, 1,843 rows breaking the contract) 0.82, decoded in 512 KB
batches; 0.73 and 1.16 in one piece, the rows kept to the end; before that, with the same msgspec structs
but a line check of three `bytes.count` calls (0.73 s on the gold alone), rows built one append at a time
and the breaking rows through jsonschema: 1.8 and 2.3.
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
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

BOM = b"\xef\xbb\xbf"
UNSET = msgspec.UNSET


def contract_of_schema() -> dict[str, Any]:
    """The output contract's numbers, from `data.schema` (the main process passes them to its workers,
    which so never import `reportminer.data` and jsonschema unless an answer needs `data.parse`).
    `fast`: answers are read by the structs below only while data.check's quick check knows every keyword
    of the schema (`check.QUICK_CHECK`) and the metric types are the two the structs spell out; else
    every answer goes through `data.parse`."""
    from reportminer.data import check
    from reportminer.data.schema import (
        MAX_ANALYSIS_CHARS,
        MAX_METRICS,
        MAX_NAME_CHARS,
        MAX_REASON_CHARS,
        METRIC_TYPES,
        OUTPUT_JSON_SCHEMA,
    )

    item = OUTPUT_JSON_SCHEMA["properties"]["metrics"]["items"]
    return {"fast": bool(check.QUICK_CHECK and tuple(METRIC_TYPES) == ("financial", "business")
                         and item["required"] == ["metric_name", "metric_type", "score", "reason"]),
            "max_metrics": MAX_METRICS, "max_name": MAX_NAME_CHARS, "max_reason": MAX_REASON_CHARS,
            "max_analysis": MAX_ANALYSIS_CHARS, "score_min": item["properties"]["score"]["minimum"],
            "score_max": item["properties"]["score"]["maximum"]}


# ---------------------------------------------------------------------------------------- structs
# Gold, tight (every field a string or absent: one call, 0.30 s for 200k seed rows) and loose (any JSON
# value where the line-by-line rules take any: 0.39 s). Neither declares `input`: paragraphs are skipped.


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


class _GoldMetricText(msgspec.Struct, gc=False):
    metric_name: str
    metric_type: Any = None
    reason: Any = None


class _GoldOutputText(msgspec.Struct, gc=False):
    metrics: list[_GoldMetricText] | None


class _GoldRowText(msgspec.Struct, gc=False):
    """Gold with its text, for grounding (`evalkit score --grounding`): the paragraph and the reasons."""

    output: _GoldOutputText
    input: Any = None
    paragraph: Any = None
    id: Any = None
    scenario: Any = None
    type: Any = None


_GOLD = msgspec.json.Decoder(_GoldRow)
_GOLD_ANY = msgspec.json.Decoder(_GoldRowAny)
_GOLD_TEXT = msgspec.json.Decoder(_GoldRowText)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


class _PredLine(msgspec.Struct, gc=False):
    output: msgspec.Raw  # any JSON value, kept as its bytes: an answer read on its own
    id: Any = None
    scenario: Any = None
    type: Any = None


_PRED_LINE = msgspec.json.Decoder(_PredLine)

# The fields a metric must have besides its name, in the schema's `required` order (the order of
# jsonschema's messages), and the bit each has in a row's missing-field masks.
OPTIONAL_METRIC_FIELDS = ("metric_type", "score", "reason")


class Contract:
    """The prediction decoders for one contract (`contract_of_schema`'s numbers).

    `bulk`: every metric with its four fields, each within the contract, the analysis present (the
    common answer: one call a batch, nothing checked per row but the count and the names). `loose`: the
    same values, where `analysis`, `metric_type`, `score` and `reason` may be absent; a batch `bulk`
    refuses is tried with it, and the rows with a missing field get `breach`'s message."""

    def __init__(self, c: dict[str, Any]):
        self.fast: bool = c["fast"]
        self.max_metrics: int = c["max_metrics"]
        Name = Annotated[str, msgspec.Meta(min_length=1, max_length=c["max_name"])]
        Type = Literal["financial", "business"]
        Score = Annotated[float, msgspec.Meta(ge=c["score_min"], le=c["score_max"])]
        Reason = Annotated[str, msgspec.Meta(max_length=c["max_reason"])]
        Analysis = Annotated[str, msgspec.Meta(max_length=c["max_analysis"])]

        class Metric(msgspec.Struct, forbid_unknown_fields=True, gc=False):
            metric_name: Name
            metric_type: Type
            score: Score
            reason: Reason

        class Output(msgspec.Struct, forbid_unknown_fields=True, gc=False):
            analysis: Analysis
            metrics: list[Metric]

        class Row(msgspec.Struct, gc=False):
            output: Output
            id: Any = None
            scenario: Any = None
            type: Any = None

        class LooseMetric(msgspec.Struct, forbid_unknown_fields=True, gc=False):
            metric_name: Name
            metric_type: Type | msgspec.UnsetType = UNSET
            score: Score | msgspec.UnsetType = UNSET
            reason: Reason | msgspec.UnsetType = UNSET

        class LooseOutput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
            metrics: list[LooseMetric]
            analysis: Analysis | msgspec.UnsetType = UNSET

        class LooseRow(msgspec.Struct, gc=False):
            output: LooseOutput
            id: Any = None
            scenario: Any = None
            type: Any = None

        self.bulk = msgspec.json.Decoder(Row)
        self.loose = msgspec.json.Decoder(LooseRow)
        self.loose_output = msgspec.json.Decoder(LooseOutput)


_CONTRACT: Contract | None = None


def use(c: dict[str, Any]) -> None:
    """Decode predictions under contract `c` (a worker gets it in its first message)."""
    global _CONTRACT
    _CONTRACT = Contract(c)


def contract() -> Contract:
    """The decoders in use; in the main process built from `data.schema` on first use (not at import)."""
    if _CONTRACT is None:
        use(contract_of_schema())
    assert _CONTRACT is not None
    return _CONTRACT


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


class _Refused(Exception):
    """A line that is an error: the range gives None and the caller names it (`loaders`)."""


def _lines(buf: Any, start: int, end: int) -> tuple[list[tuple[int, bytes]], int]:
    """(0-based line, bytes) of the non-blank lines of buf[start:end] and the number of lines, counted as
    `data.io.iter_jsonl` counts them (text mode: lines end at \\n, \\r or \\r\\n; blank means blank once
    decoded, `str.strip`)."""
    lines = bytes(buf[start:end]).splitlines()
    out = []
    for k, line in enumerate(lines):
        try:
            if not line.decode("utf-8").strip():
                continue
        except UnicodeDecodeError:
            raise _Refused from None
        out.append((k, line))
    return out, len(lines)


def _loads(line: bytes) -> dict[str, Any]:
    """A line as `json.loads` reads it (any JSON msgspec refused), which must be an object."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise _Refused from None
    if not isinstance(obj, dict):
        raise _Refused
    return obj


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


def _chunk(batch: Any, buf: Any, start: int, end: int) -> dict[str, Any] | None:
    parts = []
    for a, b in batches(buf, start, end):
        try:
            parts.append(batch(buf, a, b))
        except _Refused:
            return None
    return merge(parts)


# ------------------------------------------------------------------------------------------- gold


def gold_chunk(buf: Any, start: int, end: int, text: bool = False) -> dict[str, Any] | None:
    """Columns of the gold rows in buf[start:end]: `n` rows, `lines` (lines in the range), `at` (each
    row's 0-based line, when not row k = line k), `ids` (str, or None: the caller makes the id from the
    line), `scenario`, `names` and `types` flattened, `counts` (metrics a row); with `text`, also
    `paragraph` a row and `reasons` a metric. None when a line is an error (the caller names it)."""
    if text:
        return _chunk(_gold_text_batch, buf, start, end)
    return _chunk(_gold_batch, buf, start, end)


def _text_of(v: Any) -> str | None:
    return v if v is None or type(v) is str else str(v)


def _gold_text_row(r: Any) -> tuple[Any, str | None, list[tuple[str, Any]], str | None, list[str]]:
    inp = r.input if isinstance(r.input, dict) else {"paragraph": r.paragraph}  # flat rows: the fields at the top
    ms = r.output.metrics or ()
    return (r.id, group(r.scenario, r.type), [(m.metric_name, m.metric_type) for m in ms], _text_of(inp.get("paragraph")),
            [m.reason if type(m.reason) is str else "" for m in ms])


def _gold_text_batch(buf: Any, start: int, end: int) -> dict[str, Any]:
    n_lines = line_count(buf, start, end)
    rows = None if n_lines is None else _decode(_GOLD_TEXT, buf, start, end, n_lines)
    if rows is not None:
        assert n_lines is not None
        got, at = [_gold_text_row(r) for r in rows], None
    else:
        lines, n_lines = _lines(buf, start, end)
        at = [k for k, _ in lines]
        got = []
        for _, line in lines:
            try:
                got.append(_gold_text_row(_GOLD_TEXT.decode(line)))
            except _DECODE_ERRORS:
                obj = _loads(line)
                inp = obj["input"] if isinstance(obj.get("input"), dict) else obj
                rid, grp, pairs = _gold_obj(obj)
                ms = _gold_output(obj)["metrics"] or ()
                got.append((rid, grp, pairs, _text_of(inp.get("paragraph")),
                            [m.get("reason") if isinstance(m.get("reason"), str) else "" for m in ms]))
    cols = _gold_rows([g[:3] for g in got], n_lines, at)
    cols["paragraph"] = strings([g[3] for g in got])
    cols["reasons"] = strings([x for g in got for x in g[4]])
    return cols


def _gold_batch(buf: Any, start: int, end: int) -> dict[str, Any]:
    n_lines = line_count(buf, start, end)
    rows = None if n_lines is None else _decode(_GOLD, buf, start, end, n_lines)
    if rows is not None:
        assert n_lines is not None
        ids = [r.id for r in rows]
        scen = [r.scenario if r.scenario is not None else r.type for r in rows]
        mss = [r.output.metrics or () for r in rows]
        names = [m.metric_name for ms in mss for m in ms]
        types = [m.metric_type for ms in mss for m in ms]
        if None in types:  # `str(m.get("metric_type") or "")`, the rule for any value
            types = [t or "" for t in types]
        return _gold_columns(ids, scen, names, types, [len(ms) for ms in mss], n_lines, None)
    anys = None if n_lines is None else _decode(_GOLD_ANY, buf, start, end, n_lines)
    if anys is not None:
        assert n_lines is not None
        got = [(r.id, group(r.scenario, r.type), [(m.metric_name, m.metric_type) for m in r.output.metrics or ()])
               for r in anys]
        return _gold_rows(got, n_lines, None)
    lines, n_lines = _lines(buf, start, end)
    got = []
    for _, line in lines:
        try:
            r = _GOLD_ANY.decode(line)
            got.append((r.id, group(r.scenario, r.type), [(m.metric_name, m.metric_type) for m in r.output.metrics or ()]))
        except _DECODE_ERRORS:
            got.append(_gold_obj(_loads(line)))
    return _gold_rows(got, n_lines, [k for k, _ in lines])


def _gold_output(obj: dict[str, Any]) -> dict[str, Any]:
    """A gold object's `output`: an object, or its JSON text, holding `metrics`."""
    out = obj.get("output")
    if isinstance(out, str):  # a gold answer kept as its JSON text
        try:
            out = json.loads(out)
        except ValueError:
            raise _Refused from None
    if not isinstance(out, dict) or "metrics" not in out:
        raise _Refused
    return out


def _gold_obj(obj: dict[str, Any]) -> tuple[Any, str | None, list[tuple[str, Any]]]:
    """(id, group, [(name, type)]) of a gold object by the rules of any value: `output` an object, or
    its JSON text, holding `metrics` (null or a list of objects with a string `metric_name`)."""
    ms = _gold_output(obj)["metrics"]
    if ms is not None and not isinstance(ms, list):
        raise _Refused
    pairs = []
    for m in ms or ():
        if not isinstance(m, dict) or not isinstance(m.get("metric_name"), str):
            raise _Refused
        pairs.append((m["metric_name"], m.get("metric_type")))
    return obj.get("id"), group(obj.get("scenario"), obj.get("type")), pairs


def _gold_rows(got: list[tuple[Any, str | None, list[tuple[str, Any]]]], n_lines: int, at: list[int] | None) -> dict[str, Any]:
    ids = [i if i is None or type(i) is str else str(i) for i, _, _ in got]
    names = [nm for _, _, ps in got for nm, _ in ps]
    types = [t if type(t) is str else str(t or "") for _, _, ps in got for _, t in ps]
    return _gold_columns(ids, [g for _, g, _ in got], names, types, [len(ps) for _, _, ps in got], n_lines, at)


def _gold_columns(ids: list[Any], scen: list[Any], names: list[str], types: list[str], counts: list[int],
                  n_lines: int, at: list[int] | None) -> dict[str, Any]:
    return {"n": len(counts), "lines": n_lines, "at": None if at is None else int64s(at), "ids": strings(ids),
            "scenario": strings(scen), "names": strings(names), "types": strings(types), "counts": int64s(counts)}


# ------------------------------------------------------------------------------------ predictions


def group(obj_scenario: Any, obj_type: Any) -> str | None:
    """A row's group: its scenario when set, else its type, as text."""
    if obj_scenario is not None:
        return obj_scenario if type(obj_scenario) is str else str(obj_scenario)
    if obj_type is None:
        return None
    return obj_type if type(obj_type) is str else str(obj_type)


class Answer(NamedTuple):
    """What scoring reads of one answer: its metrics' names and types (blank names dropped), whether it
    was JSON, the contract error (None when it meets the contract) and the metrics' reasons."""

    names: list[str]
    types: list[str]
    json_valid: bool
    error: str | None
    reasons: list[str]


def parsed_row(text: Any) -> Answer:
    """The `Answer` of one raw prediction (str, dict or None), through `data.parse`."""
    from reportminer.data.parse import parse_output

    if isinstance(text, (dict, list)):
        text = json.dumps(text, ensure_ascii=False)
    elif text is not None and not isinstance(text, str):
        text = str(text)
    parsed = parse_output(text)
    if parsed.extraction is None:
        return Answer([], [], parsed.json_valid, parsed.error, [])
    ms = parsed.extraction.metrics
    return Answer([m.metric_name for m in ms], [m.metric_type for m in ms], parsed.json_valid, parsed.error,
                  [m.reason for m in ms])


def breach(names: list[str], types: list[str], missing: list[tuple[str, ...]] | None = None,
           no_analysis: bool = False) -> tuple[list[str], list[str], bool, str | None]:
    """`parsed_row` of an answer whose present values all meet the contract, with no unknown key (what
    `Contract.loose` takes): its schema errors can only be a missing `analysis`, more than MAX_METRICS
    metrics and missing metric fields (`missing[i]`: metric i's, in `OPTIONAL_METRIC_FIELDS` order), its
    check error only repeated names, and blank names are dropped. The messages are jsonschema's through
    `data.check`, in its order (by path as text: `metrics/10` before `metrics/2`). Through `data.parse`
    these answers cost 0.25 ms each in jsonschema and the import of `reportminer.data` in every worker;
    the tests hold this to `parse_output`."""
    errs = []
    if no_analysis:
        errs.append("(root): 'analysis' is missing")
    if len(names) > contract().max_metrics:
        errs.append(f"metrics: {len(names)} metrics; the contract allows 0-{contract().max_metrics}")
    if missing:
        for i in sorted((i for i, m in enumerate(missing) if m), key=str):
            errs.extend(f"metrics/{i}: {f!r} is missing" for f in missing[i])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        errs.append(f"metrics: duplicate metric_name, repeated in one row: {', '.join(dup)}")
    keep = [i for i, n in enumerate(names) if n.strip()]
    return [names[i] for i in keep], [types[i] for i in keep], True, "; ".join(errs) or None


def _mask(m: Any) -> int:
    """The fields of OPTIONAL_METRIC_FIELDS a decoded metric lacks, as bits (index into `_FIELDS`)."""
    return (m.metric_type is UNSET) | (m.score is UNSET) << 1 | (m.reason is UNSET) << 2


_FIELDS = [tuple(f for i, f in enumerate(OPTIONAL_METRIC_FIELDS) if mask >> i & 1) for mask in range(8)]


def answer(out: Any) -> Answer:
    """`parsed_row` of an answer `Contract.loose_output` decoded (`breach` when it needs a message)."""
    ms = out.metrics
    names = [m.metric_name for m in ms]
    types = [m.metric_type for m in ms]
    reasons = [m.reason if m.reason is not UNSET else "" for m in ms]
    missing = [_FIELDS[_mask(m)] for m in ms]
    no_analysis = out.analysis is UNSET
    if no_analysis or any(missing) or len(names) > contract().max_metrics or not _plain(names):
        nm, tp, ok, err = breach(names, [t if t is not UNSET else "" for t in types], missing, no_analysis)
        return Answer(nm, tp, ok, err, [r for n, r in zip(names, reasons) if n.strip()])
    return Answer(names, types, True, None, reasons)


def _plain(names: list[str]) -> bool:
    """No repeated and no blank name (a repeat is a contract error; a blank one `parse_output` drops)."""
    return len(set(names)) == len(names) and all(nm.strip() for nm in names)


def output_row(raw: bytes) -> Answer:
    """`parsed_row` of one answer given as its JSON bytes: by the loose struct when it takes it, else
    through `data.parse`."""
    c = contract()
    if c.fast:
        try:
            return answer(c.loose_output.decode(raw))
        except _DECODE_ERRORS:
            pass
    try:
        return parsed_row(json.loads(bytes(raw)))
    except ValueError:
        raise _Refused from None


def is_batch_row(obj: dict[str, Any]) -> bool:
    """An OpenAI batch output row (`vllm run-batch` writes them): `custom_id` (the request's, our case id)
    and `response` (null when the request failed, with `error` set)."""
    return isinstance(obj.get("custom_id"), str) and "response" in obj


def batch_answer(obj: dict[str, Any]) -> Answer:
    """The `Answer` of a batch output row: the text of `response.body.choices[0]` (`message.content` of a
    chat completion, `text` of a completion) through `data.parse`; a failed request is an invalid answer
    whose error names the request's error."""
    resp = obj.get("response") or {}
    body = resp.get("body") if isinstance(resp, dict) else None
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None or (isinstance(resp, dict) and resp.get("status_code") not in (None, 200)):
        err = obj.get("error") or (resp.get("status_code") if isinstance(resp, dict) else None) or "no choices"
        if isinstance(err, dict):
            err = err.get("message") or err.get("code") or json.dumps(err, ensure_ascii=False)
        return Answer([], [], False, f"batch request failed: {err}", [])
    msg = choice.get("message")
    return parsed_row(msg.get("content") if isinstance(msg, dict) else choice.get("text"))


def pred_chunk(buf: Any, start: int, end: int, text: bool = False) -> dict[str, Any] | None:
    """Columns of the prediction rows in buf[start:end]: `n`, `lines`, `at` (as for `gold_chunk`), `ids`
    (as decoded: any JSON value, None when absent), `group`, `names`/`types` flattened with `counts`,
    `valid` and `error` a row; with `text`, `reasons` a metric (answers read one by one). None when a
    line is an error (the caller names it)."""
    return _chunk(lambda b, s, e: _pred_batch(b, s, e, text=text), buf, start, end)


def _pred_batch(buf: Any, start: int, end: int, text: bool = False) -> dict[str, Any]:
    n_lines = line_count(buf, start, end)
    c = contract()
    if n_lines is not None and c.fast and not text:
        for decoder in (c.bulk, c.loose):
            rows = _decode(decoder, buf, start, end, n_lines)
            if rows is not None:
                return _pred_bulk(rows, decoder is c.loose, n_lines)
    # Some answer is raw text or breaks the contract otherwise, or the lines are not one object each: row
    # by row, each answer on its own.
    if n_lines is not None and (lines := _decode(_PRED_LINE, buf, start, end, n_lines)) is not None:
        at = None
        got = [(r.id, group(r.scenario, r.type), output_row(r.output)) for r in lines]
    else:
        numbered, n_lines = _lines(buf, start, end)
        at = [k for k, _ in numbered]
        got = []
        for _, line in numbered:
            try:
                r = _PRED_LINE.decode(line)
                got.append((r.id, group(r.scenario, r.type), output_row(r.output)))
            except _DECODE_ERRORS:
                obj = _loads(line)
                if "output" in obj:
                    got.append((obj.get("id"), group(obj.get("scenario"), obj.get("type")), parsed_row(obj["output"])))
                elif is_batch_row(obj):
                    got.append((obj["custom_id"], None, batch_answer(obj)))
                else:
                    raise _Refused from None
    cols = _pred_columns(
        [i for i, _, _ in got], [g for _, g, _ in got], [x for _, _, a in got for x in a.names],
        [x for _, _, a in got for x in a.types], [len(a.names) for _, _, a in got], [a.json_valid for _, _, a in got],
        [a.error for _, _, a in got], n_lines, at)
    if text:
        cols["reasons"] = strings([x for _, _, a in got for x in a.reasons])
    return cols


def _pred_bulk(rows: list[Any], loose: bool, n_lines: int) -> dict[str, Any]:
    """The columns of a batch decoded in one call (`_pred_columns`), built flat; rows with more than MAX_METRICS metrics, a blank or repeated name or (`loose`) a missing
    field get what data.parse would say of them (`breach`), spliced in."""
    max_metrics = contract().max_metrics
    outs = [r.output for r in rows]
    ms_rows = [o.metrics for o in outs]
    counts = list(map(len, ms_rows))
    names = [m.metric_name for ms in ms_rows for m in ms]
    types = [m.metric_type for ms in ms_rows for m in ms]
    offs = list(itertools.accumulate(counts, initial=0))
    bad = {k for k, c in enumerate(counts) if c > 1 and (c > max_metrics or len(set(names[offs[k] : offs[k + 1]])) != c)}
    if not all(map(str.strip, names)):
        bad.update(bisect.bisect_right(offs, i) - 1 for i, x in enumerate(names) if not x.strip())
    missing: dict[int, tuple[int, ...]] = {}  # row -> its metrics' missing-field masks (`_mask`)
    no_analysis: set[int] = set()
    if loose:
        for k, ms in enumerate(ms_rows):
            for m in ms:
                if m.metric_type is UNSET or m.score is UNSET or m.reason is UNSET:
                    missing[k] = tuple(map(_mask, ms))
                    break
        no_analysis = {k for k, o in enumerate(outs) if o.analysis is UNSET}
        if missing:
            types = [t if t is not UNSET else "" for t in types]
        bad.update(missing, no_analysis)
    valid: list[bool] = [True] * len(rows)
    errors: list[str | None] = [None] * len(rows)
    if bad:
        flat_n: list[str] = []
        flat_t: list[str] = []
        at = 0
        cache: dict[tuple[Any, ...], tuple[list[str], list[str], bool, str | None]] = {}
        for k in sorted(bad):
            lo, hi = offs[k], offs[k + 1]
            flat_n.extend(names[at:lo])
            flat_t.extend(types[at:lo])
            nm, tp = names[lo:hi], types[lo:hi]
            masks = missing.get(k, ())
            if (masks or k in no_analysis) and hi - lo <= max_metrics and _plain(nm):
                # Only fields missing: the message depends on which, not on the names (one a pattern).
                key = (k in no_analysis, *masks)
                got = cache.get(key)
                if got is None:
                    got = cache[key] = breach(nm, tp, [_FIELDS[x] for x in masks], k in no_analysis)
                got = (nm, tp, got[2], got[3])
            else:
                got = breach(nm, tp, [_FIELDS[x] for x in masks], k in no_analysis)
            nm, tp, valid[k], errors[k] = got
            flat_n.extend(nm)
            flat_t.extend(tp)
            counts[k] = len(nm)
            at = hi
        names, types = flat_n + names[at:], flat_t + types[at:]
    ids = [r.id for r in rows]
    scen = [r.scenario for r in rows]
    typ = [r.type for r in rows]
    groups = [group(a, b) for a, b in zip(scen, typ)] if scen.count(None) != len(scen) or typ.count(None) != len(typ) else scen
    return _pred_columns(ids, groups, names, types, counts, valid, errors, n_lines, None)


def _pred_columns(ids: list[Any], groups: list[str | None], names: list[str], types: list[str], counts: list[int],
                  valid: list[bool], errors: list[str | None], n_lines: int, at: list[int] | None) -> dict[str, Any]:
    kinds = set(map(type, ids))
    if not kinds <= {str, type(None)}:
        ids = [i if i is None or type(i) is str else str(i) for i in ids]
    return {"n": len(counts), "lines": n_lines, "at": None if at is None else int64s(at), "ids": strings(ids),
            "has_ids": len(ids) - ids.count(None),
            "group": strings(groups), "names": strings(names), "types": strings(types), "counts": int64s(counts),
            "valid": bytes(valid), "error": strings(errors)}


# ------------------------------------------------------------------------------------------- jobs


def strings(col: list[Any]) -> dict[str, Any]:
    """A string column for the pipe: its values joined by NUL into one UTF-8 `text` (the caller splits
    it in polars: `fastload.arrow_strings`), or, when a value holds a NUL itself, Arrow's buffers (`data`
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


STRING_COLUMNS = frozenset({"ids", "scenario", "names", "types", "group", "error", "paragraph", "reasons"})


def merge(ps: list[dict[str, Any]]) -> dict[str, Any]:
    """One answer of the batch answers `ps` of a range, in order: string columns joined, byte columns
    (counts, valid) concatenated, counts (`n`, `lines`, `has_ids`) summed, each row's line (`at`) counted
    from the range's start."""
    if len(ps) == 1:
        return ps[0]
    out: dict[str, Any] = {}
    for k in ps[0]:
        if k in STRING_COLUMNS:
            out[k] = join_strings([p[k] for p in ps])
        elif k == "at":
            if all(p["at"] is None for p in ps):
                out[k] = None
                continue
            at: list[int] = []
            line0 = 0
            for p in ps:
                at.extend(line0 + x for x in (array.array("q", p["at"]) if p["at"] is not None else range(p["n"])))
                line0 += p["lines"]
            out[k] = int64s(at)
        elif isinstance(ps[0][k], bytes):
            out[k] = b"".join(p[k] for p in ps)
        else:
            out[k] = sum(p[k] for p in ps)
    return out


def int64s(values: Any) -> bytes:
    return array.array("q", values).tobytes()


KINDS: dict[str, Any] = {
    "gold": gold_chunk, "pred": pred_chunk,  # what scoring reads
    "gold+text": lambda b, s, e: gold_chunk(b, s, e, text=True),  # grounding: the text too
    "pred+text": lambda b, s, e: pred_chunk(b, s, e, text=True),
}


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
                return None  # e.g. a lone surrogate escape, a line nested too deep: the caller names it


def _worker() -> None:
    """Worker loop: read one msgpack [contract, list of (kind, path, start, end) jobs] on stdin; answer each job as
    soon as it is done (gold first: the caller builds the gold frame while predictions decode), as an
    8-byte little-endian length and a msgpack message (None where a range holds an error)."""
    gc.disable()  # nothing here forms a cycle; the collector's passes over ~1M new containers cost ~40 %
    c, jobs = msgspec.msgpack.decode(sys.stdin.buffer.read())
    use(c)
    out = sys.stdout.buffer
    for job in jobs:
        msg = msgspec.msgpack.encode(run_job(*job))
        out.write(len(msg).to_bytes(8, "little"))
        out.write(msg)
        out.flush()
    os._exit(0)  # every answer is written and flushed; nothing to tear down


if __name__ == "__main__":  # a worker (`pardecode` runs this file by its path: no package import)
    _worker()
