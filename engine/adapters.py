"""LoRA adapters as the engine sees them: each folder read once into one typed `Adapter`.

`read_adapter` opens a folder once and checks it whole before anything starts (adapter_config.json and its
rank, the weights' safetensors header, the trainer's manifest, the type prior), each problem one line
(ConfigError, exit 2). `load_adapters` adds what needs the model: the manifest checked against the base
model, schema and prompt (data.manifest), and the content hash. Everything later in a run (the settings'
max_lora_rank, the run identity, the manifest's score_threshold, the type prior, the row cache's scopes)
reads the object, not the folder: before, a run opened each folder four or more times.

The hash goes into the run manifest so that retraining an adapter in place (same folder, new weights)
counts as a different configuration and is never mixed with rows produced by the old weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

from reportminer.data.errors import ConfigError, DataError
from reportminer.data.manifest import MANIFEST_NAME as ADAPTER_MANIFEST
from reportminer.data.manifest import AdapterManifest, AdapterMismatch, check_adapter_manifest
from reportminer.data.type_prior import TypePrior

log = logging.getLogger("engine")

__all__ = ["Adapter", "AdapterMismatch", "adapter_hash", "adapter_manifest_problem", "load_adapters", "lora_rank", "read_adapter",
           "read_adapters", "safetensors_problem"]


def lora_rank(adapter_dir: Path) -> int:
    """The largest LoRA rank in adapter_config.json (`r`, or any per-module `rank_pattern` entry)."""
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        return _rank(cfg)
    except (OSError, ValueError, TypeError, AttributeError) as e:  # bad JSON, `r: "x"`, a list instead of an object
        raise ConfigError(f"{adapter_dir}/adapter_config.json: cannot read: {e}") from None


def _rank(cfg: dict) -> int:
    return max([int(cfg.get("r") or 8)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()])


def adapter_hash(adapter_dir: Path) -> str:
    """sha256 over adapter_config.json and the weight files (names and bytes), 16 hex digits."""
    h = hashlib.sha256()
    files = [adapter_dir / "adapter_config.json"] + sorted(
        p for p in adapter_dir.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()
    )
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Adapter:
    """One adapter: name, folder, rank, content hash, and what its folder says about decoding.

    Built by `read_adapter` / `load_adapters`, it carries the manifest and the type prior as read then
    (`read` true). One built by hand (`Adapter(name, path, rank, sha256)`) reads them from `path` on use.
    """

    name: str
    path: Path
    rank: int
    sha256: str
    manifest: AdapterManifest | None = field(default=None, compare=False, repr=False)
    prior: TypePrior | None = field(default=None, compare=False, repr=False)
    read: bool = field(default=False, compare=False, repr=False)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "path": str(self.path), "rank": self.rank, "sha256": self.sha256}

    def the_manifest(self) -> AdapterManifest | None:
        """The trainer's manifest (reportminer_adapter.json), or None for an adapter trained elsewhere."""
        return self.manifest if self.read else AdapterManifest.read(self.path)

    def the_prior(self) -> TypePrior | None:
        """The learned metric-type prior (type_prior.json), or None for adapters trained before it existed."""
        return self.prior if self.read else TypePrior.read(self.path)

    def threshold(self, samples: int) -> tuple[float | None, str | None]:
        """The manifest's decoding.score_threshold when it was calibrated for `samples`; else (None, why not)."""
        return manifest_threshold_of(self.the_manifest(), samples, self.path)


def manifest_threshold_of(man: AdapterManifest | None, samples: int,
                          adapter_dir: str | Path) -> tuple[float | None, str | None]:
    dec = (man.decoding if man else None) or {}
    t = dec.get("score_threshold")
    if t is None:
        return None, None
    calibrated = int(dec.get("samples") or 1)
    if calibrated != samples:
        return None, (f"manifest score_threshold {t} was calibrated with samples={calibrated}, this run uses "
                      f"samples={samples}; not applied (set score_threshold to choose one)")
    t = float(t)
    if not 0 <= t <= 1:
        raise ConfigError(f"{adapter_dir}: manifest decoding.score_threshold {t} is not in [0, 1]")
    return t, None


# ---- reading a folder, once -----------------------------------------------------------------------------

_MAX_HEADER = 100 * 1024 * 1024  # safetensors refuses headers above 100 MB itself


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be whole, or None: header parsed, data length matches the file.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's byte range,
    then the data; a truncated copy has a valid header and a short file, which only this length check
    catches before vLLM reads the weights.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes: too short for a safetensors file"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                return f"header length {n} does not fit the file's {size} bytes: truncated or not safetensors"
            header = json.loads(fh.read(n))
    except OSError as e:
        return f"cannot read: {e.strerror}"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"header is not JSON ({e}): damaged or not safetensors"
    if not isinstance(header, dict):
        return "header is not a JSON object: damaged or not safetensors"
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        return f"the file has {size} bytes, its header describes {expected}: truncated or damaged"
    return None


def adapter_manifest_problem(path: Path) -> str | None:
    """Why `reportminer_adapter.json` is valid JSON of the wrong shape, or None (issue 19: `[1, 2]` was an
    AttributeError traceback from `check_adapter`). Field types follow `data.manifest.AdapterManifest`."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"cannot parse the adapter manifest: {e}"
    if not isinstance(obj, dict):
        return f"not an adapter manifest: expected a JSON object, got {type(obj).__name__}"
    if "base_model" not in obj:
        return "not an adapter manifest: no base_model"
    want: dict[str, type | tuple[type, ...]] = {"base_model": dict, "hyperparameters": dict, "library_versions": dict, "extra": dict, "data_files": list,
            "schema_version": str, "prompt_version": str, "decoding": (dict, type(None))}
    wrong = [f"{k} is {type(obj[k]).__name__}" for k, t in want.items() if k in obj and not isinstance(obj[k], t)]
    if wrong:
        return f"not an adapter manifest: {', '.join(wrong)}"
    return None


def read_adapter(name: str, raw: str, max_lora_rank: int | None = None) -> Adapter:
    """The folder `raw` read once and checked whole (ConfigError, exit 2, one line naming the file).

    `max_lora_rank` is the value the user set (None: it is derived from the adapters, so cannot be
    exceeded); vLLM would otherwise fail with a long traceback only after loading the model. The content
    hash is left to `load_adapters` (it reads every weight byte; a run refused for its model should not).
    """
    d = Path(raw).expanduser()
    where = f"adapter {name}={raw}"
    if not d.is_dir():
        raise ConfigError(f"{where}: no such folder")
    cfg_path = d / "adapter_config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{where}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{where}: {cfg_path}: cannot parse: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: {cfg_path}: cannot parse: expected a JSON object, got {type(cfg).__name__}")
    try:
        rank = _rank(cfg)
    except (ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{where}: {d}/adapter_config.json: cannot read: {e}") from None
    weights = d / "adapter_model.safetensors"
    if weights.is_file():
        problem = safetensors_problem(weights)
        if problem:
            raise ConfigError(f"{where}: {weights}: {problem}")
    elif not (d / "adapter_model.bin").is_file():
        raise ConfigError(f"{where}: no weights (adapter_model.safetensors missing)")
    manifest = None
    if (d / ADAPTER_MANIFEST).exists():
        shape = adapter_manifest_problem(d / ADAPTER_MANIFEST)
        if shape:
            raise ConfigError(f"{where}: {d / ADAPTER_MANIFEST}: {shape}")
        try:
            manifest = AdapterManifest.read(d)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"{where}: {d / ADAPTER_MANIFEST}: cannot parse the adapter manifest: {e}") from None
    try:
        prior = TypePrior.read(d)
    except DataError as e:
        raise ConfigError(f"{where}: {e}") from None
    if max_lora_rank is not None and rank > max_lora_rank:
        raise ConfigError(
            f"{where}: LoRA rank {rank} exceeds max_lora_rank {max_lora_rank}; raise --max-lora-rank "
            f"(or leave it unset to follow the adapters)"
        )
    return Adapter(name=name, path=d.resolve(), rank=rank, sha256="", manifest=manifest, prior=prior, read=True)


def read_adapters(adapters: dict[str, str], max_lora_rank: int | None = None) -> list[Adapter]:
    """Every adapter of a run read and checked, in the settings' order (see `read_adapter`)."""
    return [read_adapter(name, raw, max_lora_rank) for name, raw in adapters.items()]


def load_adapters(adapters: dict[str, str] | list[Adapter], model_dir: str | Path) -> tuple[list[Adapter], list[str]]:
    """Check every adapter against the model before any row runs; return them (hashed) and the warnings.

    `adapters`: the settings' name -> folder (read here), or what `read_adapters` returned (not read again).
    Raises AdapterMismatch (from data.manifest) when an adapter's manifest names another base model,
    schema or prompt; an adapter without a manifest only warns, since users also bring adapters trained
    elsewhere.
    """
    read = read_adapters(adapters) if isinstance(adapters, dict) else adapters
    out, warnings = [], []
    for a in read:
        warnings += check_adapter_manifest(a.the_manifest(), a.path, model_dir)
        out.append(dataclasses.replace(a, sha256=a.sha256 or adapter_hash(a.path)))
    return out, warnings
