"""`evalkit score` starts its JSONL decode workers before the CLI imports polars, pyarrow and the rest.

Those imports take ~0.3 s on the 2-core sandbox, one core busy and the other idle; started first, the
workers (`pardecode.Prefetch`) decode in that time. This module reads the command line the way click
will, only far enough to find `--gold` and the predictions, and only when both are `.jsonl` files; it
imports nothing heavy. A misreading costs time, never a result: `score_paths` takes the prefetch only
for the paths click parsed (`Prefetch.get` is keyed by kind and path) and decodes anything else itself.
The tests keep `VALUE_OPTIONS` equal to the options of `evalkit score` that take a value.
"""
from __future__ import annotations

import atexit
from pathlib import Path

from .pardecode import Prefetch

VALUE_OPTIONS = frozenset({"--pred", "--gold", "--matcher", "--threshold", "--model", "--embed-cache", "--adapter",
                           "--name", "--json", "--cases", "--show-fails"})


def score_paths_of(args: list[str]) -> tuple[str, str] | None:
    """(gold, predictions) of an `evalkit score` command line (without the program name), else None."""
    if not args or args[0] != "score":
        return None
    opts: dict[str, str] = {}
    positional: list[str] = []
    rest = args[1:]
    k = 0
    while k < len(rest):
        a = rest[k]
        if a == "--":
            positional.extend(rest[k + 1 :])
            break
        if a.startswith("--") and "=" in a:
            name, value = a.split("=", 1)
            opts[name] = value
        elif a in VALUE_OPTIONS:
            if k + 1 >= len(rest):
                return None
            opts[a] = rest[k + 1]
            k += 1
        elif a.startswith("-") and a != "-":
            pass  # a flag (-q, --quiet, -h)
        else:
            positional.append(a)
        k += 1
    preds = [*positional, *([opts["--pred"]] if "--pred" in opts else [])]
    if "--gold" not in opts or len(preds) != 1:
        return None
    return opts["--gold"], preds[0]


def start(args: list[str]) -> Prefetch | None:
    """The workers for `evalkit score ARGS` when gold and predictions are both `.jsonl` files, else None."""
    paths = score_paths_of(args)
    if paths is None or not all(Path(p).suffix == ".jsonl" and Path(p).is_file() for p in paths):
        return None
    pre = Prefetch([("gold", paths[0]), ("pred", paths[1])])
    atexit.register(pre.close)  # a usage error before `score` runs: the workers do not outlive the command
    return pre
