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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reportminer.data.errors import ManifestError, OutputLocked, RunFailed
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
# Names start with "_" so that pyarrow/pandas/Spark readers of the whole --out folder skip them.

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
    }


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


class OutLock:
    """An exclusive lock on --out for the life of a run (overlapping nightly runs would race on shards).

    flock is released by the kernel when the process dies, so a killed run never leaves a stale lock.
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
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            os.close(self.fd)
            self.fd = None
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(
                    f"{self.path.parent}: another engine run is writing here (pid {holder or '?'}); wait for it to finish"
                ) from None
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lease is not None:
            self.lease.__exit__(*exc)
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
