"""LoRA adapters as the engine sees them: a name, a folder, a rank, a content hash, a manifest check.

The hash goes into the run manifest so that retraining an adapter in place (same folder, new weights)
counts as a different configuration and is never mixed with rows produced by the old weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from reportminer.data.errors import ConfigError
from reportminer.data.manifest import AdapterMismatch, check_adapter

log = logging.getLogger("engine")

__all__ = ["Adapter", "AdapterMismatch", "load_adapters", "lora_rank"]


def lora_rank(adapter_dir: Path) -> int:
    """The largest LoRA rank in adapter_config.json (`r`, or any per-module `rank_pattern` entry)."""
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        ranks = [int(cfg.get("r") or 8)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    except (OSError, ValueError, TypeError, AttributeError) as e:  # bad JSON, `r: "x"`, a list instead of an object
        raise ConfigError(f"{adapter_dir}/adapter_config.json: cannot read: {e}") from None
    return max(ranks)


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
    name: str
    path: Path
    rank: int
    sha256: str

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "path": str(self.path), "rank": self.rank, "sha256": self.sha256}


def load_adapters(adapters: dict[str, str], model_dir: str | Path) -> tuple[list[Adapter], list[str]]:
    """Check every adapter against the model before any row runs; return them and the warnings.

    Raises AdapterMismatch (from data.manifest) when an adapter's manifest names another base model,
    schema or prompt; an adapter without a manifest only warns, since users also bring adapters trained
    elsewhere.
    """
    out, warnings = [], []
    for name, path in adapters.items():
        p = Path(path)
        warnings += check_adapter(p, model_dir)
        out.append(Adapter(name=name, path=p, rank=lora_rank(p), sha256=adapter_hash(p)))
    return out, warnings
