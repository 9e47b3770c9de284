"""Training configuration: one typed dataclass, filled from a recipe YAML and then from flags.

A recipe is the whole set of decisions behind an adapter (quantisation, LoRA shape, schedule, split), so
it lives in a file that can be reviewed and versioned, and every key can still be changed for one run
from the command line (`--set key=value`) without editing the file. Unknown keys are errors: a typo in a
recipe that silently falls back to a default would train a different adapter than the one you asked for.

This module imports no torch, so `trainer --help` and recipe checks stay fast.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

QUANTIZATIONS = ("8bit", "4bit", "none")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEFAULT_RECIPE = "qwen3-14b-qlora"
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(ValueError):
    """A recipe or flag that cannot be used; the message names the key and where it came from."""


@dataclass
class TrainConfig:
    """Everything one training run needs. Defaults are the seed's recipe (`qwen3-14b-qlora.yaml`)."""

    # What to train on, and where to write.
    model: str | None = None  # base model folder (HF layout: config.json, safetensors, tokenizer)
    data: str | None = None  # seed-format JSONL file, folder of *.jsonl, or Parquet shards with gold columns
    output: str | None = None  # run folder: checkpoints/, best/, final/, metrics.json, train.log
    dev_data: str | None = None  # a separate dev file; when set, dev_fraction is ignored
    dev_fraction: float = 0.05  # held out from `data`, stratified by scenario (`type`); 0 = no dev split
    seed_rules: bool = True  # also apply the seed's label rules (scores in [0.8, 1], type D mixes types)
    # Training mix (trainer/mix.py): oversample rows by label count and by scenario (`type`); dev is not mixed.
    count_weights: dict[int, float] = field(default_factory=dict)  # metric count -> weight, e.g. {0: 2, 1: 2, 3: 0.5}
    type_weights: dict[str, float] = field(default_factory=dict)  # scenario -> weight, e.g. {B: 1.5}

    # Base model loading.
    quantization: str = "8bit"  # 8bit | 4bit | none
    llm_int8_threshold: float = 6.0
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    precision: str = "auto"  # auto = bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tf32: bool = False  # fp32 training on a CUDA GPU: allow TF32 matmuls (much faster, fp32 accumulation)

    # LoRA.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))

    # Optimisation.
    micro_batch_size: int = 2
    gradient_accumulation_steps: int = 8
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    max_grad_norm: float = 0.3
    weight_decay: float = 0.0
    optimizer: str = "paged_adamw_8bit"  # any transformers `optim` name; paged/8-bit ones fall back on CPU
    gradient_checkpointing: bool = True
    loss_impl: str = "auto"  # auto = trl's fused chunked loss on GPU, the model's plain cross-entropy on CPU | fused | plain
    max_nonfinite_steps: int = 3  # optimiser steps skipped for NaN/inf gradients before the run is stopped as diverged
    max_length: int = 2048  # longer examples are skipped (a cut answer teaches unclosed JSON), and listed
    epochs: float = 5
    max_steps: int = -1  # > 0 stops after this many optimiser steps (smoke runs); overrides epochs
    seed: int = 42

    adapter_dtype: str = "auto"  # saved LoRA weights: auto = the training precision (bf16 on most GPUs) | bf16 | fp16 | fp32

    # Checkpoints and logs.
    save_total_limit: int = 3  # epoch checkpoints kept for --resume
    logging_steps: int = 5
    progress: bool = True

    # Bookkeeping (not hyperparameters).
    recipe: str | None = None  # name or path of the recipe this config came from
    description: str = ""

    # ----------------------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ConfigError on values that would fail (or silently misbehave) deep inside a run."""
        problems = []
        if self.quantization not in QUANTIZATIONS:
            problems.append(f"quantization: {self.quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.loss_impl not in ("auto", "fused", "plain"):
            problems.append(f"loss_impl: {self.loss_impl!r} is not one of auto, fused, plain")
        if self.adapter_dtype not in PRECISIONS:
            problems.append(f"adapter_dtype: {self.adapter_dtype!r} is not one of {', '.join(PRECISIONS)}")
        if not 0 <= self.dev_fraction < 1:
            problems.append(f"dev_fraction: {self.dev_fraction} must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio: {self.warmup_ratio} must be in [0, 1)")
        for k in ("lora_r", "lora_alpha", "micro_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps"):
            if getattr(self, k) < 1:
                problems.append(f"{k}: must be >= 1, got {getattr(self, k)}")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("epochs: must be > 0 (or set max_steps)")
        if not self.target_modules:
            problems.append("target_modules: empty; LoRA needs at least one projection")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate: must be > 0, got {self.learning_rate}")
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def require_paths(self) -> None:
        missing = [k for k in ("model", "data", "output") if not getattr(self, k)]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}: give --model, --data and --output (or set them in the recipe)")

    @property
    def effective_batch_size(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps

    def hyperparameters(self) -> dict[str, Any]:
        """What decides the adapter's weights: everything except paths, logging and bookkeeping."""
        skip = {"model", "data", "output", "dev_data", "progress", "logging_steps", "recipe", "description", "device",
                "max_nonfinite_steps"}
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------------
# Recipes


def recipes_dir() -> Path:
    return Path(str(resources.files("reportminer.trainer.recipes")))


def list_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(recipes_dir().glob("*.yaml"))}


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """A path to a YAML file, or the name of a bundled recipe (`tiny-cpu`, `qwen2.5-0.5b-lora`, ...)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = list_recipes()
    stem = p.name[: -len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    if stem in bundled and p.parent == Path("."):
        return bundled[stem]
    raise ConfigError(f"recipe {str(name_or_path)!r}: no such file, and not one of the bundled recipes: {', '.join(bundled)}")


def _field_types() -> dict[str, Any]:
    return get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, where: str) -> Any:
    """Bring a YAML or flag value to the field's type, with an error that names the key and source."""
    types = _field_types()
    if key not in types:
        known = ", ".join(f.name for f in fields(TrainConfig))
        raise ConfigError(f"{where}: unknown key {key!r}; known keys: {known}")
    t = types[key]
    text = str(t)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{where}: {key} cannot be empty")
    try:
        if t is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("true", "yes", "1", "on"):
                return True
            if s in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if t is int:
            if isinstance(value, bool):
                raise ValueError(value)
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if t is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if text.startswith("dict["):  # count_weights {int: float}, type_weights {str: float}
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            kt = int if text.startswith("dict[int") else str
            return {kt(k): float(v) for k, v in value.items()}
        if "list" in text:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
            return list(value)
        # str | None and str
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key}={value!r} is not a valid {text.replace('typing.', '')}") from None


def load_recipe(name_or_path: str | os.PathLike | None = None) -> TrainConfig:
    """The config a recipe describes (the seed's recipe when none is named)."""
    path = resolve_recipe(name_or_path or DEFAULT_RECIPE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of key: value, got {type(raw).__name__}")
    values = {k: _coerce(k, v, str(path)) for k, v in raw.items()}
    cfg = TrainConfig(**values)
    if cfg.recipe is None:
        cfg.recipe = path.stem if path.parent == recipes_dir() else str(path)
    return cfg


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` strings (values read as YAML scalars or lists: `target_modules=[q_proj,v_proj]`)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, _, text = item.partition("=")
        key = key.strip().replace("-", "_")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out[key] = value
    return out


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], where: str = "--set") -> TrainConfig:
    """A copy of `cfg` with each key replaced (type-checked); None values are ignored (flag not given)."""
    changes = {k: _coerce(k, v, f"{where} {k}") for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **changes)


def build_config(recipe: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    cfg = load_recipe(recipe)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg.validate()
