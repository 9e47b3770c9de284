"""The adapter manifest: what an adapter was trained on, so the engine can refuse to run it wrongly.

The trainer writes `reportminer_adapter.json` next to every adapter it saves; the engine reads it before
any row runs. A LoRA trained against another base model, schema or prompt still loads and runs in vLLM
and quietly produces worse answers, which is why the mismatch is an error here rather than a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import AdapterMismatch
from .io import write_json_atomic
from .prompt import prompt_fingerprint
from .schema import schema_fingerprint

MANIFEST_NAME = "reportminer_adapter.json"

# Config keys that decide whether LoRA weights fit a base model; paths and dtype do not.
_ARCH_KEYS = (
    "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
)


def base_model_fingerprint(model_dir: str | os.PathLike) -> dict[str, str]:
    """Name and architecture hash of a model folder (its config.json)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    arch = {k: cfg.get(k) for k in _ARCH_KEYS}
    name = cfg.get("_name_or_path") or cfg.get("_model_name_or_path") or Path(model_dir).name
    source = Path(model_dir) / "SOURCE.json"
    if source.exists():
        name = json.loads(source.read_text()).get("model", name)
    digest = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]
    return {"name": str(name), "config_hash": digest}


def library_versions(dists: tuple[str, ...]) -> dict[str, str]:
    """Python and the installed versions of `dists` (missing ones left out), for manifests and summaries."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class AdapterManifest:
    base_model: dict[str, str]
    schema_version: str = field(default_factory=schema_fingerprint)
    prompt_version: str = field(default_factory=prompt_fingerprint)
    data_files: list[dict[str, Any]] = field(default_factory=list)  # {path, sha256, rows}
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    train_loss: float | None = None
    eval_loss: float | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    created_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Decoding defaults the engine applies to this adapter unless its config says otherwise, e.g.
    # {"score_threshold": 0.85, "samples": 1, "calibrated_on": "dev.jsonl", ...} (evalkit calibrate: evalkit/calibrate.py).
    # `samples` is the sample count the threshold was calibrated with: with 1 it bounds `score`, with more
    # it bounds `agreement`, so the engine applies it only to runs with the same count.
    decoding: dict[str, Any] | None = None

    def write(self, adapter_dir: str | os.PathLike) -> Path:
        return write_json_atomic(Path(adapter_dir) / MANIFEST_NAME, asdict(self))

    @classmethod
    def read(cls, adapter_dir: str | os.PathLike) -> "AdapterManifest | None":
        p = Path(adapter_dir) / MANIFEST_NAME
        if not p.exists():
            return None
        d = json.loads(p.read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_adapter(adapter_dir: str | os.PathLike, model_dir: str | os.PathLike) -> list[str]:
    """Raise AdapterMismatch on a base-model, schema or prompt mismatch; return warnings otherwise."""
    return check_adapter_manifest(AdapterManifest.read(adapter_dir), adapter_dir, model_dir)


def check_adapter_manifest(man: AdapterManifest | None, adapter_dir: str | os.PathLike,
                           model_dir: str | os.PathLike) -> list[str]:
    """`check_adapter` for a manifest already read (None: the adapter has none, which only warns)."""
    if man is None:
        return [f"{adapter_dir}: no {MANIFEST_NAME}; cannot check it was trained for this model, schema and prompt"]
    problems = []
    base = base_model_fingerprint(model_dir)
    if man.base_model.get("config_hash") != base["config_hash"]:
        problems.append(
            f"base model: adapter trained on {man.base_model.get('name')!r} "
            f"(config {man.base_model.get('config_hash')}), engine model is {base['name']!r} (config {base['config_hash']})"
        )
    if man.schema_version != schema_fingerprint():
        problems.append(f"schema: adapter {man.schema_version}, engine {schema_fingerprint()}")
    if man.prompt_version != prompt_fingerprint():
        problems.append(f"prompt: adapter {man.prompt_version}, engine {prompt_fingerprint()}")
    if problems:
        raise AdapterMismatch(f"{adapter_dir}: adapter does not fit this engine: " + "; ".join(problems))
    return []
