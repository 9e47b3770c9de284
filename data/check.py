"""The one check of an answer against the output contract: JSON schema plus the duplicate-name rule.

data.parse (model text in the engine and evalkit) and data.validate (gold labels, with the seed's rules
layered on top) both call `answer_problems`, so "breaks the contract" means one thing everywhere.
jsonschema costs ~0.8 ms an answer, so a quick check written from the same constants passes the answers
the schema certainly accepts first (`plainly_valid`), and only the others go through jsonschema.
`QUICK_CHECK` says whether that quick check is on (evalkit's decoders, written from the same constants,
follow it).
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from .schema import (
    MAX_ANALYSIS_CHARS,
    MAX_METRICS,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    METRIC_TYPES,
    OUTPUT_JSON_SCHEMA,
)


@functools.cache
def _validator() -> Any:
    """The schema's validator, built on first use: importing jsonschema took 50-65 ms of every start of
    a CLI (evalkit score, whose answers mostly pass `plainly_valid`, and its decode workers)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(OUTPUT_JSON_SCHEMA)


def __getattr__(name: str) -> Any:  # `_VALIDATOR`, as data.validate and the tests still name it
    if name == "_VALIDATOR":
        return _validator()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Problem:
    """Where inside the answer (`("metrics", 1, "score")`, `()` for the answer itself) and what is wrong."""

    path: tuple[str | int, ...]
    message: str


def answer_problems(output: Any) -> list[Problem]:
    """Every way `output` (a parsed answer) breaks the output contract, in document order."""
    out: list[Problem] = []
    if not (isinstance(output, dict) and plainly_valid(output)):
        for e in sorted(_validator().iter_errors(output), key=lambda e: [str(p) for p in e.absolute_path]):
            out.append(Problem(tuple(e.absolute_path), _schema_message(e)))
    metrics = output.get("metrics") if isinstance(output, dict) else None
    if isinstance(metrics, list):
        names: list[str] = [m["metric_name"] for m in metrics if isinstance(m, dict) and isinstance(m.get("metric_name"), str)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            out.append(Problem(("metrics",), f"{REPEATED_NAME}: {', '.join(dup)}"))
    return out


REPEATED_NAME = "duplicate metric_name, repeated in one row"  # answer_problems' message for the one rule a schema cannot state


def only_repeated_names(problems: list[Problem]) -> bool:
    """Whether every problem is a repeated metric_name (and there is one): the breach `first_of_each_name` repairs."""
    return bool(problems) and all(p.message.startswith(REPEATED_NAME) for p in problems)


def first_of_each_name(output: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """(`output` with each metric whose name came earlier removed, the removed metrics in order).

    Why: a repeated metric_name is the one rule of the contract that a JSON schema, and so the guided grammar,
    cannot state; guided answers still break it now and then (round 8's H100 serves: 0, 1 and 2 rows of 1,400;
    the ninth session's bench: 1 of 2,048). The first occurrence is where the model ranked that metric, so the
    engine keeps it and records the repeats (engine/rows.py) rather than losing the whole row."""
    seen: set[str] = set()
    kept: list[Any] = []
    repeats: list[Any] = []
    for m in output.get("metrics") or []:
        name = m.get("metric_name") if isinstance(m, dict) else None
        if isinstance(name, str) and name in seen:
            repeats.append(m)
            continue
        if isinstance(name, str):
            seen.add(name)
        kept.append(m)
    return {**output, "metrics": kept}, repeats


def _schema_message(e: Any) -> str:
    kw = e.validator
    if kw == "maxItems":
        return f"{len(e.instance)} metrics; the contract allows 0-{MAX_METRICS}"
    if kw == "enum":
        return f"{e.instance!r} is not one of {'/'.join(e.validator_value)}"
    if kw == "required":
        return e.message.replace("is a required property", "is missing")
    if kw == "additionalProperties":
        return f"unexpected field(s): {e.message.split('(')[-1].rstrip(')')}" if "(" in e.message else e.message
    if kw == "maxLength":
        return f"{len(e.instance)} characters; the schema allows at most {e.validator_value}"
    if kw == "minLength":
        return "empty; the schema needs at least one character"
    if kw in ("minimum", "maximum"):
        return f"{e.instance!r} is outside [0, 1]"
    if kw == "type":
        return f"{_short(e.instance)} is not of type {e.validator_value}"
    return e.message[:200]


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


_OUTPUT_KEYS = frozenset(OUTPUT_JSON_SCHEMA["properties"])
_METRIC_KEYS = frozenset(OUTPUT_JSON_SCHEMA["properties"]["metrics"]["items"]["properties"])


def _keywords(schema: Any, path: str = "") -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    if isinstance(schema, dict):
        for k, v in schema.items():
            out.add((path, k))
            if k == "properties":
                for name, sub in v.items():
                    out |= _keywords(sub, f"{path}/{name}")
            elif k == "items":
                out |= _keywords(v, f"{path}[]")
    return out


# The schema keywords `plainly_valid` knows. Should the contract gain one (a minLength on analysis, a
# pattern), the quick check is switched off rather than let through what the schema now refuses.
_QUICK_CHECK_KEYWORDS = {
    ("", "type"), ("", "properties"), ("", "required"), ("", "additionalProperties"),
    ("/analysis", "type"), ("/analysis", "maxLength"),
    ("/metrics", "type"), ("/metrics", "items"), ("/metrics", "minItems"), ("/metrics", "maxItems"),
    ("/metrics[]", "type"), ("/metrics[]", "properties"), ("/metrics[]", "required"), ("/metrics[]", "additionalProperties"),
    ("/metrics[]/metric_name", "type"), ("/metrics[]/metric_name", "minLength"), ("/metrics[]/metric_name", "maxLength"),
    ("/metrics[]/metric_type", "type"), ("/metrics[]/metric_type", "enum"),
    ("/metrics[]/score", "type"), ("/metrics[]/score", "minimum"), ("/metrics[]/score", "maximum"),
    ("/metrics[]/reason", "type"), ("/metrics[]/reason", "maxLength"),
}
_SCORE = OUTPUT_JSON_SCHEMA["properties"]["metrics"]["items"]["properties"]["score"]
# Whether the quick check is on: the schema has exactly the keywords above (public: evalkit's decoders, written
# from the same constants, are on only while this is).
QUICK_CHECK: bool = _keywords(OUTPUT_JSON_SCHEMA) == _QUICK_CHECK_KEYWORDS and OUTPUT_JSON_SCHEMA["properties"]["metrics"].get("minItems", 0) == 0


def plainly_valid(output: dict[str, Any]) -> bool:
    """A quick check that only passes answers the schema certainly accepts (written from the same
    constants). jsonschema costs ~0.8 ms a row, 90 % of validation time; every row this does not pass,
    including any valid shape it does not know, still goes through jsonschema."""
    if not QUICK_CHECK or output.keys() != _OUTPUT_KEYS:
        return False
    a, ms = output["analysis"], output["metrics"]
    if not (type(a) is str and len(a) <= MAX_ANALYSIS_CHARS and type(ms) is list and len(ms) <= MAX_METRICS):
        return False
    for m in ms:
        if type(m) is not dict or m.keys() != _METRIC_KEYS:
            return False
        n, t, sc, r = m["metric_name"], m["metric_type"], m["score"], m["reason"]
        if not (
            type(n) is str and 1 <= len(n) <= MAX_NAME_CHARS and t in METRIC_TYPES and type(t) is str
            and type(sc) in (int, float) and _SCORE["minimum"] <= sc <= _SCORE["maximum"] and type(r) is str and len(r) <= MAX_REASON_CHARS
        ):
            return False
    return True


def _string_caps(schema: dict[str, Any]) -> dict[str, tuple[int, int | None]]:
    """{property name: (minLength, maxLength)} of every capped string property in the schema (metric items too)."""
    out: dict[str, tuple[int, int | None]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and sub.get("type") == "string" and ("maxLength" in sub or "minLength" in sub):
                    out[name] = (int(sub.get("minLength", 0)), sub.get("maxLength"))
                walk(sub)
            walk(node.get("items"))

    walk(schema)
    return out


_CAPS = _string_caps(OUTPUT_JSON_SCHEMA)
# A capped string in the compact JSON guided decoding writes (no whitespace between tokens): its key, then its
# body up to the closing quote or the end of a cut answer. Inside a string every quote is escaped, so the key
# pattern cannot match there.
_CAPPED_STRING = re.compile(r'"(' + "|".join(map(re.escape, _CAPS)) + r')":"((?:[^"\\]|\\.)*)(\\?)')


def breaks_length_cap(text: str | None) -> bool:
    """Whether any capped string of an answer (finished or cut at max_tokens) is over its maxLength, or is a
    closed string under its minLength: what the grammar without the caps (data.schema.decode_json_schema) lets
    through and the capped grammar would not have. An answer for which this is false took at each step a token
    the capped grammar also allows, so decoding it under the caps gives the same answer (engine: the capped retry)."""
    for m in _CAPPED_STRING.finditer(text or ""):
        lo, hi = _CAPS[m.group(1)]
        body = m.group(2)
        closed = m.end() < len(text or "") and not m.group(3)  # a quote follows (not a cut mid-escape or at the end)
        if hi is not None and len(body) > hi:  # the escaped body is at least as long as the string it encodes
            try:
                n = len(json.loads(f'"{body}"'))
            except ValueError:
                n = len(body)
            if n > hi:
                return True
        if closed and len(body) < lo:  # an empty body encodes an empty string
            return True
    return False
