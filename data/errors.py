"""One error type for the whole project, and the one exit-code table of the four CLIs.

Every error a user can cause (bad settings, bad data, an adapter trained for another model, an output
folder in use ...) is a `ReportminerError`; its class says which exit code it ends a command with, so
`datakit`, `engine`, `trainer` and `evalkit` agree and each CLI turns it into one line on stderr the same
way (`exit_on_error`). Anything else is a bug and keeps its traceback.

Exit codes (all four CLIs; README and docs/*.md point here):

    0    success
    1    finished, with findings: the work is done and its result lists problems the caller asked about
         (engine: some rows are errors; datakit validate: validation errors, or warnings with --strict;
         datakit stats --fail-on-alarm: an alarm; engine extract: the row failed)
    2    refused, nothing ran: the command line or the settings are wrong (click usage errors,
         ConfigError), or the state of the output forbids the run (AdapterMismatch, ConfigMismatch,
         OutputLocked, ManifestError, RunExists)
    3    data error: an input cannot be read or breaks the contract, named by file and line
         (DataError, ValidationFailed); engine run: some input shard could not be read (the others
         were written)
    4    the work started and failed (RunFailed): training diverged (TrainingDiverged), the demo model
         could not be prepared
    130  interrupted (Ctrl-C, SIGTERM); finished work is kept, rerun (trainer: --resume) to continue
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_REFUSED = 2
EXIT_DATA = 3
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FINDINGS: "finished, with findings (row errors, validation errors, alarms)",
    EXIT_REFUSED: "refused, nothing ran (command line, settings, or the state of the output)",
    EXIT_DATA: "data error (an input cannot be read or breaks the contract)",
    EXIT_FAILED: "the work started and failed (training diverged, demo model not prepared)",
    EXIT_INTERRUPTED: "interrupted; finished work is kept",
}

_HEADLINES = {EXIT_REFUSED: "refused, nothing ran", EXIT_DATA: "data error", EXIT_FAILED: "failed"}


class ReportminerError(Exception):
    """Base of every error a user can cause; `exit_code` is what a CLI exits with (table above)."""

    exit_code: int = EXIT_REFUSED


class ConfigError(ReportminerError, ValueError):
    """A setting is wrong; the message names the key and where it came from."""

    exit_code = EXIT_REFUSED


class DataError(ReportminerError, ValueError):
    """A problem with user data; the message names the file and line (or row id)."""

    exit_code = EXIT_DATA


class AdapterMismatch(ReportminerError, ValueError):
    """The adapter was trained for another base model, schema or prompt."""

    exit_code = EXIT_REFUSED


class ManifestError(ReportminerError, ValueError):
    """The engine's run manifest in --out cannot be read."""

    exit_code = EXIT_REFUSED


class ConfigMismatch(ReportminerError, ValueError):
    """--out holds results of another configuration; rerun with overwrite to replace them."""

    exit_code = EXIT_REFUSED


class OutputLocked(ReportminerError, RuntimeError):
    """Another engine run is writing to the same --out."""

    exit_code = EXIT_REFUSED


class RunExists(ConfigError):
    """The output folder already holds a training run and neither --resume nor --overwrite was given."""


class RunFailed(ReportminerError, RuntimeError):
    """The work started and could not finish (the demo model could not be prepared, training diverged)."""

    exit_code = EXIT_FAILED


class TrainingDiverged(RunFailed):
    """Gradients went NaN/inf on too many optimiser steps; no final adapter is written."""


def error_line(prog: str, e: ReportminerError) -> str:
    """`engine: refused, nothing ran: AdapterMismatch: ...` - how every CLI states an error."""
    headline = _HEADLINES.get(e.exit_code, "error")
    return f"{prog}: {headline}: {type(e).__name__}: {e}"


def fail(prog: str, e: ReportminerError) -> NoReturn:
    """Print the error line on stderr and exit with the error's code."""
    print(error_line(prog, e), file=sys.stderr, flush=True)
    sys.exit(e.exit_code)


F = TypeVar("F", bound=Callable[..., Any])


def exit_on_error(prog: str) -> Callable[[F], F]:
    """Decorator for a CLI command: a ReportminerError becomes one line on stderr and its exit code; a
    KeyboardInterrupt that the command did not handle itself becomes `PROG: interrupted` and exit 130."""

    def wrap(f: F) -> F:
        @functools.wraps(f)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except ReportminerError as e:
                fail(prog, e)
            except KeyboardInterrupt as e:  # Ctrl-C (or SIGTERM turned into it): exit 130, not a traceback
                print(f"{prog}: interrupted" + (f"; {e}" if str(e) else ""), file=sys.stderr, flush=True)
                sys.exit(EXIT_INTERRUPTED)

        return inner  # type: ignore[return-value]

    return wrap


__all__ = [
    "EXIT_CODES", "EXIT_DATA", "EXIT_FAILED", "EXIT_FINDINGS", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REFUSED",
    "AdapterMismatch", "ConfigError", "ConfigMismatch", "DataError", "ManifestError", "OutputLocked",
    "ReportminerError", "RunExists", "RunFailed", "TrainingDiverged", "error_line", "exit_on_error", "fail",
]
