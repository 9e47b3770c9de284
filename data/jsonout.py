"""`--json PATH` on all four CLIs: the machine-readable result written to PATH, `-` (or `--json` alone) for stdout.

Before this, `--json` was a file in datakit and evalkit and a stdout flag in `engine run` (issue 9). One
option and one writer keep them the same. When the JSON goes to stdout, a command's human-readable output
(tables, issue lists, progress) goes to stderr, so `cmd --json - | jq` always reads one JSON document.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

STDOUT = "-"
F = TypeVar("F", bound=Callable[..., Any])


def json_option(what: str) -> Callable[[F], F]:
    """The `--json PATH` option (parameter `json_out`: None, a path, or "-"); `--json` alone means stdout."""
    return click.option(
        "--json", "json_out", default=None, is_flag=False, flag_value=STDOUT, metavar="PATH",
        help=f"Write {what} as JSON to PATH; '-' (or --json alone) prints it on stdout, other output then goes to stderr.",
    )


def to_stdout(json_out: str | None) -> bool:
    return json_out == STDOUT


def write_json_out(obj: Any, json_out: str, text: str | None = None) -> None:
    """`obj` (or its ready-made JSON `text`) to the file `json_out`, written atomically, or to stdout for "-"."""
    if text is None:
        text = json.dumps(obj, indent=2, ensure_ascii=False)
    if to_stdout(json_out):
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()
    elif obj is None:
        from .io import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    else:
        from .io import write_json_atomic  # (data.io imports pyarrow: ~0.25 s of a CLI's start)

        write_json_atomic(json_out, obj)
