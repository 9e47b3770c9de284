"""Turning model text into an Extraction, with the reason when it cannot be done.

The engine (guided decoding on or off) and evalkit (scoring raw predictions) both read model text; doing
it in one place keeps "valid" meaning the same thing in a run summary and in a score.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .check import Problem, answer_problems, first_of_each_name, only_repeated_names
from .schema import Extraction

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


@dataclass(frozen=True)
class Parsed:
    """`json_valid`: the text holds a JSON object. `schema_errors`: where it breaks the contract.

    `extraction` is built leniently whenever JSON parsed (names of well-formed metric objects are kept),
    because a scorer should credit a correct name inside an answer whose reason ran too long; the engine
    is strict and treats any schema error as a row error.
    """

    json_valid: bool
    extraction: Extraction | None
    schema_errors: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.json_valid and not self.schema_errors


def _loads_object(text: str) -> tuple[Any, str | None]:
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1)
    try:
        return json.loads(s), None
    except json.JSONDecodeError as e:
        # Models without guided decoding sometimes wrap the object in prose: take the outermost braces.
        start, end = s.find("{"), s.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(s[start : end + 1]), None
            except json.JSONDecodeError:
                pass
        return None, f"invalid JSON: {e.msg} at char {e.pos}"


def schema_errors(obj: Any) -> list[str]:
    """`path/in/answer: problem` for each way `obj` breaks the contract (data.check, shared with validate)."""
    return _messages(answer_problems(obj))


def _messages(problems: list[Problem]) -> list[str]:
    return [f"{'/'.join(str(p) for p in pr.path) or '(root)'}: {pr.message}" for pr in problems]


def parse_output(text: str | None) -> Parsed:
    obj, failed = _object(text)
    return failed or _parsed(obj)


def parse_keeping_first(text: str | None) -> tuple[Parsed, list[dict[str, Any]]]:
    """parse_output, except that an answer whose only breach is a repeated metric_name comes back ok with each
    name's first metric (data.check.first_of_each_name); the second value holds the metrics removed, as dicts
    (empty otherwise). The engine reads model text this way; evalkit scores with parse_output's lenient
    extraction, which keeps every name anyway."""
    obj, failed = _object(text)
    if failed:
        return failed, []
    problems = answer_problems(obj)
    if only_repeated_names(problems):  # every metric is valid, so removing the repeats leaves a valid answer
        fixed, repeats = first_of_each_name(obj)
        removed = Extraction.from_dict({"analysis": "", "metrics": repeats}).to_dict()["metrics"]
        return _parsed(fixed, []), removed
    return _parsed(obj, problems), []


def _object(text: str | None) -> tuple[Any, Parsed | None]:
    if text is None or not str(text).strip():
        return None, Parsed(False, None, error="empty output")
    obj, err = _loads_object(str(text))
    if err is not None:
        return None, Parsed(False, None, error=err)
    if not isinstance(obj, dict):
        return None, Parsed(False, None, error=f"JSON is a {type(obj).__name__}, not an object")
    return obj, None


def _parsed(obj: dict[str, Any], problems: list[Problem] | None = None) -> Parsed:
    errs = schema_errors(obj) if problems is None else _messages(problems)
    metrics = obj.get("metrics")
    extraction = Extraction.from_dict(
        {
            "analysis": obj.get("analysis") if isinstance(obj.get("analysis"), str) else "",
            "metrics": [
                m
                for m in (metrics if isinstance(metrics, list) else [])
                if isinstance(m, dict) and isinstance(m.get("metric_name"), str) and m["metric_name"].strip()
            ],
        }
    )
    return Parsed(True, extraction, tuple(errs), error=("; ".join(errs) if errs else None))
