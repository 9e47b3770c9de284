"""The run manifest in --out: what produced these outputs, and which input shards are finished.

A rerun reads it to skip finished shards, pick up new ones and refuse to mix outputs of another
configuration. It is rewritten atomically after every finished shard, so after a crash it lists exactly
the shards whose output files are whole.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reportminer.data.errors import ConfigError, ManifestError, OutputLocked, RunFailed
from reportminer.data.manifest import base_model_fingerprint
from reportminer.data.prompt import prompt_fingerprint
from reportminer.data.schema import schema_fingerprint

from .adapters import Adapter
from .config import EngineConfig
from .decoding import decoding_identity
from .storage import Lease, ObjectPath, write_json

MANIFEST_NAME = "_engine_manifest.json"
SUMMARY_NAME = "_engine_summary.json"
HISTORY_NAME = "_engine_runs.jsonl"
LOCK_NAME = ".engine.lock"
FORMAT = 1
# The shape of the result rows, in the run identity so that one --out never holds two shapes (pyarrow reads
# a folder with the first file's schema and drops the newer fields, polars refuses it). 2: metrics carry
# `spans` and `grounded` (issue 19). Not in the row-cache scope: cached answers are the same, and the
# grounding is computed when a row is written, so `--overwrite` of an older --out costs no model call.
RESULT_FORMAT = 2
# Names start with "_" or "." so that pyarrow/pandas/Spark readers of the whole --out folder skip them
# (polars does not: see BOOKKEEPING below).

# Small model files whose bytes decide prompts and outputs; weight files are identified by name + size
# (hashing tens of GB of weights on every nightly run would cost minutes for nothing).
_HASHED_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "chat_template.jinja",
                       "tokenizer.json", "special_tokens_map.json")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_identity(model_dir: str | Path) -> dict[str, Any]:
    d = Path(model_dir)
    ident: dict[str, Any] = dict(base_model_fingerprint(d))
    h = hashlib.sha256()
    for name in _HASHED_MODEL_FILES:
        p = d / name
        if p.exists():
            h.update(name.encode() + b"\0" + p.read_bytes())
    ident["files_sha256"] = h.hexdigest()[:16]
    ident["weights"] = sorted(
        [p.name, p.stat().st_size] for p in d.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")
    )
    return ident


def run_identity(config: EngineConfig, adapters: list[Adapter]) -> dict[str, Any]:
    """Everything that decides a row's output; two runs with equal identities produce interchangeable rows."""
    settings = config.result_settings()
    settings.pop("adapters")
    return {
        "model": model_identity(config.model),  # type: ignore[arg-type]
        "adapters": [{"name": a.name, "sha256": a.sha256, "rank": a.rank} for a in adapters],
        "schema": schema_fingerprint(),
        "prompt": prompt_fingerprint(),
        **settings,
        "decoding": decoding_identity(config, adapters),  # samples, thresholds, merged weights (engine/decoding.py)
        # Eager and compiled vLLM round differently (issue 19: 12 of 360 rows changed when a resumed run switched
        # to eager): in the identity and so in the row-cache scope. None: not ours to choose (a server's).
        "enforce_eager": config.enforce_eager,
        "result_format": RESULT_FORMAT,
    }


def settle_eager(config: EngineConfig, out_dir: Path | ObjectPath, output_rows: int) -> EngineConfig:
    """`enforce_eager` for a run that starts vLLM and leaves it open (None), decided once per --out.

    An --out whose manifest already names a choice keeps it, so a resumed or incremental run computes its
    rows the way the first run did whatever is left to do (issue 19: a resume with fewer than 256 rows left
    switched to eager and changed rows). A new --out decides by the whole input's size (`output_rows`: all
    input rows x adapters, not the rows left): eager on CPU below EAGER_BELOW_ROWS, where compiling would
    cost more than it saves. An explicit setting is never changed; a different one than the --out's is
    refused by the identity check as another configuration.
    """
    import dataclasses

    from .config import eager_for

    if config.enforce_eager is not None:
        return config
    try:
        manifest = RunManifest.read(out_dir)
    except ManifestError:
        manifest = None  # prepare_out reports it
    recorded = (manifest.identity or {}).get("enforce_eager") if manifest is not None else None
    if isinstance(recorded, bool):
        return dataclasses.replace(config, enforce_eager=recorded)
    return eager_for(config, output_rows)


def write_json_or_fail(path: Path | ObjectPath, obj: Any) -> Path | ObjectPath:
    """storage.write_json, with a full disk (or any OSError) as RunFailed naming the file (exit 4, no temp file)."""
    from .preflight import os_reason

    try:
        return write_json(path, obj)
    except OSError as e:
        raise RunFailed(f"{path}: cannot write: {os_reason(e)}; the run stopped (finished shards are kept)") from None


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


@dataclass
class RunManifest:
    identity: dict[str, Any]
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)  # input rel path -> finished shard
    model_path: str | None = None
    adapter_paths: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    format: int = FORMAT

    @classmethod
    def read(cls, out_dir: Path | ObjectPath) -> "RunManifest | None":
        p = out_dir / MANIFEST_NAME
        if not p.exists():
            return None
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ManifestError(f"{p}: cannot read the run manifest: {e}; move it away or rerun with --overwrite") from None

    def write(self, out_dir: Path | ObjectPath) -> Path | ObjectPath:
        self.updated_at = now()
        return write_json_or_fail(out_dir / MANIFEST_NAME, asdict(self))

    def totals(self) -> dict[str, int]:
        t = {"shards": len(self.shards), "rows": 0, "output_rows": 0, "ok": 0, "error": 0}
        for s in self.shards.values():
            for k in ("rows", "output_rows", "ok", "error"):
                t[k] += int(s.get(k, 0))
        return t


# The files the engine keeps in --out besides the results. Each must be a regular file (or absent): a run
# refuses a symlink in their place, which would make it write through the link outside --out (issue 19:
# `_engine_runs.jsonl -> ~/.bashrc` was appended to), and a folder, which used to end the run in a traceback
# after its work was done. Readers: pyarrow's `pq.read_table(out)` / `pyarrow.dataset` skip names starting
# with "." or "_"; polars 2.1 `read_parquet(out)` skips no name at all (measured: it refuses a folder whose
# files have more than one extension, hidden ones included), so polars users read `f"{out}/**/*.parquet"`.
BOOKKEEPING = (LOCK_NAME, MANIFEST_NAME, SUMMARY_NAME, HISTORY_NAME)


def check_bookkeeping(out_dir: Path) -> None:
    """Each bookkeeping name in --out is absent or a regular file; else ConfigError (exit 2), one line."""
    for name in BOOKKEEPING:
        p = out_dir / name
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigError(f"{p}: cannot inspect: {e.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(f"{p}: is a symlink (to {os.readlink(p)}); the engine never writes through a link in "
                              "--out, which could write outside it: remove the link")
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{p}: is a folder; the engine keeps a file of that name in --out: move the folder away")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{p}: is not a regular file; the engine keeps a file of that name in --out: remove it")


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a symlink at `path` (O_NOFOLLOW) as ConfigError: the check above, without a race."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{path}: is a symlink; the engine never writes through a link in --out: remove it") from None
        if e.errno == errno.EISDIR:
            raise ConfigError(f"{path}: is a folder; the engine keeps a file of that name in --out: move it away") from None
        raise


def _holders(path: Path) -> list[str]:
    """Processes other than this one that have `path` open (Linux /proc; what `fuser` would say), as "pid (name)".

    The flock belongs to an open file, not to a pid: a child that inherited the descriptor (a forked vLLM
    engine core of a killed run) keeps the lock after the pid written in the file has exited (issue 19).
    """
    try:
        want = os.stat(path)
    except OSError:
        return []
    out = []
    for pid in (d for d in os.listdir("/proc") if d.isdigit()) if os.path.isdir("/proc") else []:
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    name = "?"
                out.append(f"{pid} ({name})")
                break
    return out


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutLock:
    """An exclusive lock on --out for the life of a run (overlapping nightly runs would race on shards).

    flock is released by the kernel when the last descriptor of the lock file closes, so a killed run never
    leaves a stale lock. The file holds its holder as JSON (pid, host, start time), which the refusal
    names; where that pid is gone, the processes that still hold the file open are named instead. The
    file is opened with O_NOFOLLOW and without O_TRUNC until the lock is ours, and the bookkeeping names
    are checked first (`check_bookkeeping`), so a symlink or a folder in their place is refused (exit 2)
    before anything is written.

    Not filelock: filelock 3.x (what many environments resolve) opens the lock file with O_TRUNC and follows
    symlinks, the very bug fixed here; 4.x refuses links but the behaviour would depend on which version
    pip resolved, and neither records who holds the lock. flock + O_NOFOLLOW is the few lines below.
    An s3:// or gs:// --out has no flock: there the lock is a lease object (engine/storage.py: Lease).
    """

    def __init__(self, out_dir: Path | ObjectPath):
        self.lease = Lease(out_dir, LOCK_NAME) if isinstance(out_dir, ObjectPath) else None
        self.path: Path = out_dir / LOCK_NAME  # type: ignore[assignment]  # used only without a lease
        self.fd: int | None = None

    def __enter__(self) -> "OutLock":
        if self.lease is not None:
            self.lease.__enter__()
            return self
        check_bookkeeping(self.path.parent)
        self.fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            text = os.pread(self.fd, 4096, 0).decode(errors="replace").strip()
            os.close(self.fd)
            self.fd = None
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(f"{self.path.parent}: another engine run is writing here ({self._who(text)}); "
                                   "wait for it to finish") from None
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now()}
        data = json.dumps(holder).encode()
        os.pwrite(self.fd, data, 0)  # then cut: a reader never sees the file empty
        os.ftruncate(self.fd, len(data))
        return self

    def _who(self, text: str) -> str:
        """The holder as recorded (pid, host, start), checked against the processes that hold the file."""
        try:
            held = json.loads(text) if text.startswith("{") else {"pid": int(text)}  # older runs wrote the bare pid
        except ValueError:
            held = {}
        pid, host, started = held.get("pid"), held.get("host"), held.get("started_at")
        who = f"pid {pid or '?'}" + (f" on host {host}" if host else "") + (f", started {started}" if started else "")
        if host in (None, socket.gethostname()) and not _alive(pid):
            open_by = _holders(self.path)
            who += (f"; that process has exited, the lock is held by {', '.join(open_by)} (a process it started?)"
                    if open_by else "; that process has exited (a process it started may hold the lock: "
                    f"`fuser -v {self.path}`)")
        return who

    def __exit__(self, *exc: object) -> None:
        if self.lease is not None:
            self.lease.__exit__(*exc)
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
