"""Merged-adapter mode: fold one LoRA into the base weights once, cache the result, serve it without LoRA.

vLLM's CPU LoRA path computes every LoRA layer as extra small matmuls per step (issue 7 measured it 3.3x
slower than the bare model); a merged model costs exactly what the base model costs. For a run with a
single adapter the merged weights give the same answers up to rounding (the merge is computed in float32
and stored in the base dtype, while vLLM's LoRA path adds the low-rank product in the activation dtype).

The merge is pure torch + safetensors (no peft): for every target module `M` of the adapter
(`base_model.model.M.lora_A.weight`, `...lora_B.weight`, peft's layout),
`M.weight += scale * B @ A` with `scale = lora_alpha / r`, or `lora_alpha / sqrt(r)` with `use_rslora`
(per-module `rank_pattern` / `alpha_pattern` honoured). Adapters that are more than plain LoRA on linear
layers (DoRA, LoRA biases, modules_to_save, embedding LoRA) are refused rather than merged wrongly.

Merged folders live in `<cache>/merged/<key>/` (cache: data.models.demo.cache_root, i.e.
$REPORTMINER_CACHE), where the key hashes the adapter's content hash and the base model's identity
(config/tokenizer hashes, weight file names, sizes and mtimes). A folder is written under a temporary
name and renamed when whole, so a killed merge never leaves a half folder that a later run would reuse.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reportminer.data.models.demo import cache_root

from .config import ConfigError

if TYPE_CHECKING:
    from .adapters import Adapter
    from .config import EngineConfig

log = logging.getLogger("engine")

MERGE_FORMAT = 1  # bump when the merge arithmetic or folder layout changes: old cache entries are not reused
INFO_NAME = "reportminer_merged.json"
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def merged_root() -> Path:
    return cache_root() / "merged"


def _base_identity(model_dir: Path) -> dict[str, Any]:
    from .run_manifest import model_identity

    ident = model_identity(model_dir)
    ident["weight_mtimes"] = sorted(
        [p.name, p.stat().st_mtime_ns] for p in model_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES
    )
    return ident


def merge_key(model_dir: Path, adapter: "Adapter", dtype: str = "auto") -> str:
    blob = json.dumps({"format": MERGE_FORMAT, "adapter": adapter.sha256, "base": _base_identity(model_dir),
                       **({"dtype": dtype} if dtype == "float32" else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _pattern_value(module: str, patterns: dict[str, Any], default: Any) -> Any:
    """peft's rank_pattern / alpha_pattern lookup: a key matches the module name or a dotted suffix of it."""
    for key, value in (patterns or {}).items():
        if module == key or module.endswith("." + key) or re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def _load_adapter_weights(adapter_dir: Path) -> dict[str, Any]:
    st = adapter_dir / "adapter_model.safetensors"
    if st.exists():
        from safetensors.torch import load_file

        return load_file(str(st))
    pt = adapter_dir / "adapter_model.bin"
    if pt.exists():
        import torch

        return torch.load(str(pt), map_location="cpu", weights_only=True)
    raise ConfigError(f"{adapter_dir}: no adapter_model.safetensors or adapter_model.bin to merge")


def lora_deltas(adapter_dir: Path) -> dict[str, tuple[Any, Any, float, bool]]:
    """module name -> (A, B, scale, fan_in_fan_out) for every LoRA pair; raises ConfigError on anything else."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ConfigError(f"{adapter_dir}: peft_type {cfg.get('peft_type')!r}; only LoRA can be merged")
    unsupported = [k for k in ("use_dora", "lora_bias") if cfg.get(k)]
    if cfg.get("bias") not in (None, "none"):
        unsupported.append(f"bias={cfg['bias']}")
    if cfg.get("modules_to_save"):
        unsupported.append("modules_to_save")
    if unsupported:
        raise ConfigError(f"{adapter_dir}: cannot merge an adapter with {', '.join(unsupported)}; run it as LoRA")
    weights = _load_adapter_weights(adapter_dir)
    pairs: dict[str, dict[str, Any]] = {}
    for key, t in weights.items():
        m = _LORA_KEY.match(key)
        if not m:
            raise ConfigError(f"{adapter_dir}: weight {key!r} is not a LoRA A/B matrix of a linear layer; cannot merge")
        pairs.setdefault(m.group("module"), {})[m.group("ab")] = t
    r0, alpha0 = int(cfg.get("r") or 8), float(cfg.get("lora_alpha") or cfg.get("r") or 8)
    out = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ConfigError(f"{adapter_dir}: module {module} has lora_{''.join(ab)} only")
        r = int(_pattern_value(module, cfg.get("rank_pattern") or {}, r0))
        alpha = float(_pattern_value(module, cfg.get("alpha_pattern") or {}, alpha0))
        if ab["A"].shape[0] != r:
            raise ConfigError(f"{adapter_dir}: {module} lora_A has rank {ab['A'].shape[0]}, config says {r}")
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        out[module] = (ab["A"], ab["B"], scale, bool(cfg.get("fan_in_fan_out")))
    if not out:
        raise ConfigError(f"{adapter_dir}: no LoRA weights found")
    return out


def _weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir}: merged-adapter mode needs safetensors weights (found none)")
    return files


def merge_into(model_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "auto") -> dict[str, Any]:
    """Write base + LoRA into out_dir (same files, same safetensors sharding); return what was merged.

    Merged weights keep the base weight's dtype, except with dtype "float32" (an engine running in float32
    would otherwise serve the merge rounded to the base's bf16).
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    deltas = lora_deltas(adapter_dir)
    todo = {f"{module}.weight": d for module, d in deltas.items()}
    for p in model_dir.iterdir():  # config, tokenizer, chat template, generation config, index, ...
        if p.is_file() and p.suffix not in _WEIGHT_SUFFIXES:
            shutil.copy2(p, out_dir / p.name)
    merged = 0
    for f in _weight_files(model_dir):
        tensors = {}
        with safe_open(str(f), framework="pt") as fh:
            meta = fh.metadata() or {}
            for key in fh.keys():
                t = fh.get_tensor(key)
                d = todo.pop(key, None)
                if d is not None:
                    a, b, scale, fan_in_fan_out = d
                    delta = (b.float() @ a.float()) * scale
                    if fan_in_fan_out:
                        delta = delta.T
                    if delta.shape != t.shape:
                        raise ConfigError(f"{adapter_dir}: {key}: LoRA delta {tuple(delta.shape)} does not fit "
                                          f"the base weight {tuple(t.shape)}")
                    t = (t.float() + delta).to(torch.float32 if dtype == "float32" else t.dtype)
                    merged += 1
                tensors[key] = t.contiguous()
        save_file(tensors, str(out_dir / f.name), metadata={"format": "pt", **meta})
    if todo:
        raise ConfigError(f"{adapter_dir}: LoRA targets with no base weight in {model_dir}: {sorted(todo)[:3]}")
    return {"modules": merged}


def merged_model(model_dir: str | os.PathLike, adapter: "Adapter", dtype: str = "auto") -> tuple[Path, bool]:
    """The cached merged folder for (base model, adapter[, float32]): (path, built now)."""
    model_dir = Path(model_dir)
    target = merged_root() / merge_key(model_dir, adapter, dtype)
    if (target / INFO_NAME).exists():
        log.info("merged model (cached): %s", target)
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        info = merge_into(model_dir, adapter.path, tmp, dtype)
        info.update(format=MERGE_FORMAT, base_model=str(model_dir), adapter=adapter.describe(), dtype=dtype)
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2, ensure_ascii=False))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp made it 0700; the cache is shared like the models beside it
        for p in tmp.iterdir():
            os.chmod(p, 0o666 & ~mask)
        try:
            os.rename(tmp, target)
        except OSError:  # another run finished the same merge first: use theirs
            if not (target / INFO_NAME).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return target, False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("merged %s into %s: %s (%d modules)", adapter.name, model_dir.name, target, info["modules"])
    return target, True


def serving_config(config: "EngineConfig", merged: Path | None) -> "EngineConfig":
    """The config the vLLM engine starts with: the merged folder and no LoRA, or `config` unchanged."""
    if merged is None:
        return config
    return dataclasses.replace(config, model=str(merged), adapters={}, max_loras=None, max_lora_rank=None,
                               merge_adapter=False)
