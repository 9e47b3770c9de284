"""Training configuration: one typed dataclass, filled from a recipe YAML and then from flags.

A recipe is the whole set of decisions behind an adapter (quantisation, LoRA shape, schedule, split), so
it lives in a file that can be reviewed and versioned, and every key can still be changed for one run
from the command line (`--set key=value`) without editing the file. Unknown keys are errors: a typo in a
recipe that silently falls back to a default would train a different adapter than the one you asked for.

This module imports no torch, so `trainer --help` and recipe checks stay fast.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from reportminer.data.config import apply_overrides as _apply_overrides
from reportminer.data.config import (
    bundled_configs,
    check_types,
    h,
    parse_set,
    read_yaml_mapping,
    resolve_named,
    to_yaml,
    values_from,
)
from reportminer.data.errors import ConfigError

QUANTIZATIONS = ("8bit", "4bit", "none")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEFAULT_RECIPE = "qwen3-14b-qlora"
# The clause trainer/graft.py appends to a grafted row's analysis ({figures}: the grafted sentence's figures).
DEFAULT_GRAFT_NOTE = "此外，{figures}等数字为背景信息，不构成核心指标。"
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

Precision = Literal["auto", "bf16", "fp16", "fp32"]
ReportTo = Literal["none", "tensorboard", "wandb", "mlflow"]


@dataclass
class TrainConfig:
    """Everything one training run needs. Defaults are the seed's recipe (`qwen3-14b-qlora.yaml`).

    A key with `flag=` in its declaration is also a `trainer train` / `trainer config` option
    (data.config.field_options: type, choices, path checks and help from the field); every key is
    `--set key=value`.
    """

    # What to train on, and where to write.
    model: str | None = h("Base model folder (HF layout: config.json, safetensors, tokenizer).", default=None,
                          flag=True, path={"exists": True, "file_okay": False})
    data: str | None = h("Seed-format JSONL file, folder of *.jsonl, or Parquet shards with gold columns.",
                         default=None, flag=True, path={"exists": True})
    output: str | None = h("Run folder: checkpoints/, best/, final/, metrics.json, train.log.", default=None,
                           flag=True, path={"file_okay": False})
    dev_data: str | None = h("A separate dev file; when set, dev_fraction is ignored.", default=None,
                             flag="--dev", path={"exists": True})
    dev_fraction: float = h("Held out from `data`, stratified by scenario (`type`); 0 = no dev split.", default=0.05,
                            flag=True)
    seed_rules: bool = h("Also apply the seed's label rules (scores in [0.8, 1], type D mixes types).", default=True)
    # Training mix (trainer/mix.py): oversample rows by label count and by scenario (`type`); dev is not mixed.
    count_weights: dict[int, float] = h("Metric count -> weight, e.g. {0: 2, 1: 2, 3: 0.5}; counts above the "
                                        "largest key take its weight.", default_factory=dict)
    type_weights: dict[str, float] = h("Scenario (`type`) -> weight, e.g. {B: 1.5}.", default_factory=dict)
    extra_data: list[str] = h(
        "More seed-format JSONL files or folders (e.g. the team's rows, benchmarks/restraint-train/rows.jsonl), "
        "validated like `data` and added to the training split only, never to the dev split; the manifest "
        "records each file's sha256 with role train-extra.", default_factory=list)
    # Augmentation (trainer/graft.py): background sentences grafted into labelled rows, labels unchanged.
    graft_share: float = h(
        "Share of training rows (after the mix) that get one background sentence with figures, taken from the "
        "training split's 0-metric rows and inserted at a sentence boundary; their analysis gets graft_note. "
        "0 = off. Deterministic by seed.", default=0.0)
    graft_note: str = h("Clause appended to a grafted row's analysis; {figures} = up to three grafted figures.",
                        default=DEFAULT_GRAFT_NOTE)

    # Base model loading.
    quantization: Literal["8bit", "4bit", "none"] = h("Base model quantisation (bitsandbytes).", default="8bit",
                                                      flag=True)
    llm_int8_threshold: float = h("LLM.int8 outlier threshold (quantization 8bit).", default=6.0)
    bnb_4bit_quant_type: str = h("4-bit quantisation type, nf4 or fp4 (quantization 4bit).", default="nf4")
    bnb_4bit_use_double_quant: bool = h("Quantise the 4-bit quantisation constants too.", default=True)
    precision: Precision = h("auto = bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU.", default="auto",
                             flag=True)
    device: str = h("auto | cpu | cuda | cuda:N", default="auto", flag=True)
    tf32: bool = h("fp32 training on a CUDA GPU: allow TF32 matmuls (much faster, fp32 accumulation).", default=False)

    # LoRA.
    lora_r: int = h("LoRA rank.", default=16, flag=True)
    lora_alpha: int = h("LoRA scaling numerator (scale = alpha / r).", default=32)
    lora_dropout: float = h("Dropout on the LoRA input.", default=0.05)
    target_modules: list[str] = h("Projections that get LoRA weights.", default_factory=lambda: list(ALL_PROJECTIONS))

    # Optimisation.
    micro_batch_size: int = h("Examples per forward pass.", default=2, flag=True)
    gradient_accumulation_steps: int = h("Micro-batches per optimiser step.", default=8,
                                         flag="--gradient-accumulation-steps --grad-accum")
    learning_rate: float = h("Peak learning rate.", default=2e-4, flag="--learning-rate --lr")
    lr_scheduler: str = h("Any transformers lr_scheduler_type (cosine, linear, constant, ...).", default="cosine")
    warmup_ratio: float = h("Share of the planned steps spent warming up, in [0, 1).", default=0.05)
    max_grad_norm: float = h("Gradient clipping norm.", default=0.3)
    weight_decay: float = h("AdamW weight decay.", default=0.0)
    optimizer: str = h("Any transformers `optim` name; paged/8-bit ones fall back on CPU.", default="paged_adamw_8bit")
    gradient_checkpointing: bool = h("Recompute activations in the backward pass (less memory, slower).", default=True)
    loss_impl: Literal["auto", "fused", "plain"] = h(
        "auto = trl's fused chunked loss on GPU, the model's plain cross-entropy on CPU.", default="auto")
    max_nonfinite_steps: int = h("Optimiser steps skipped for NaN/inf gradients before the run is stopped as diverged.",
                                 default=3)
    max_length: int = h("Longer examples are skipped (a cut answer teaches unclosed JSON), and listed.", default=2048,
                        flag=True)
    epochs: float = h("Passes over the training rows.", default=5, flag=True)
    max_steps: int = h("> 0 stops after this many optimiser steps (smoke runs); overrides epochs.", default=-1,
                       flag=True)
    seed: int = h("Seed of the dev split, data order and LoRA init.", default=42, flag=True)
    early_stop_patience: int = h(
        "Stop once this many epochs in a row end without a lower dev loss (0 = off; needs dev rows). The schedule "
        "stays planned for `epochs`, so best/ is the adapter the full run would keep whenever its best epoch comes "
        "before the stop; final/ is the last epoch trained.", default=0, flag=True)

    adapter_dtype: Precision = h("Saved LoRA weights: auto = the training precision (bf16 on most GPUs).",
                                 default="auto")

    # Checkpoints and logs.
    save_total_limit: int = h("Epoch checkpoints kept for --resume.", default=3)
    logging_steps: int = h("Optimiser steps between log records.", default=5)
    progress: bool = h("Show progress bars.", default=True)
    report_to: ReportTo = h(
        "Where the HF Trainer also sends its loss and eval logs: none; tensorboard (event files under "
        "OUTPUT/checkpoints/runs, needs the tensorboard package); wandb or mlflow (configured by their own "
        "environment variables, e.g. WANDB_PROJECT, MLFLOW_TRACKING_URI; the package must be installed). "
        "train.log and log.jsonl are written in every case.", default="none")

    # Bookkeeping (not hyperparameters).
    recipe: str | None = h("Name or path of the recipe this config came from.", default=None)
    description: str = h("What the recipe is for.", default="")

    # ----------------------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise ConfigError on values that would fail (or silently misbehave) deep inside a run."""
        check_types(self, self.recipe or "config")
        problems = []
        if self.quantization not in QUANTIZATIONS:
            problems.append(f"quantization: {self.quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.loss_impl not in ("auto", "fused", "plain"):
            problems.append(f"loss_impl: {self.loss_impl!r} is not one of auto, fused, plain")
        if self.report_to not in get_args(ReportTo):
            problems.append(f"report_to: {self.report_to!r} is not one of {', '.join(get_args(ReportTo))}")
        if self.adapter_dtype not in PRECISIONS:
            problems.append(f"adapter_dtype: {self.adapter_dtype!r} is not one of {', '.join(PRECISIONS)}")
        if not 0 <= self.dev_fraction < 1:
            problems.append(f"dev_fraction: {self.dev_fraction} must be in [0, 1)")
        if not 0 <= self.graft_share <= 1:
            problems.append(f"graft_share: {self.graft_share} must be in [0, 1]")
        if "{figures}" not in self.graft_note:
            problems.append("graft_note: must contain {figures} (where the grafted figures are named)")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio: {self.warmup_ratio} must be in [0, 1)")
        for k in ("lora_r", "lora_alpha", "micro_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps"):
            if getattr(self, k) < 1:
                problems.append(f"{k}: must be >= 1, got {getattr(self, k)}")
        if self.early_stop_patience < 0:
            problems.append(f"early_stop_patience: must be >= 0 (0 = off), got {self.early_stop_patience}")
        elif self.early_stop_patience and not self.dev_data and self.dev_fraction <= 0:
            problems.append("early_stop_patience: needs dev rows to watch (dev_data, or dev_fraction > 0)")
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
        skip = {"model", "data", "output", "dev_data", "extra_data", "progress", "logging_steps", "recipe", "description", "device",
                "max_nonfinite_steps", "report_to",
                # when to stop, not what an epoch's weights are: a resumed run may change it
                "early_stop_patience"}
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def to_yaml(self) -> str:
        return to_yaml(self)


# --------------------------------------------------------------------------------------------------
# Recipes


def recipes_dir() -> Path:
    return Path(str(resources.files("reportminer.trainer.recipes")))


def list_recipes() -> dict[str, Path]:
    return bundled_configs(recipes_dir())


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """A path to a YAML file, or the name of a bundled recipe (`tiny-cpu`, `qwen2.5-0.5b-lora`, ...)."""
    return resolve_named(name_or_path, list_recipes(), "recipe")


def load_recipe(name_or_path: str | os.PathLike | None = None) -> TrainConfig:
    """The config a recipe describes (the seed's recipe when none is named); every value type-checked."""
    path = resolve_recipe(name_or_path or DEFAULT_RECIPE)
    cfg = TrainConfig(**values_from(TrainConfig, read_yaml_mapping(path, "recipe"), str(path)))
    if cfg.recipe is None:
        cfg.recipe = path.stem if path.parent == recipes_dir() else str(path)
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], where: str = "--set") -> TrainConfig:
    """A copy of `cfg` with each key replaced (type-checked); None values are ignored (flag not given)."""
    return _apply_overrides(cfg, overrides, where)


def build_config(recipe: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    cfg = load_recipe(recipe)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg.validate()


__all__ = [
    "ALL_PROJECTIONS", "DEFAULT_RECIPE", "PRECISIONS", "QUANTIZATIONS", "ConfigError", "TrainConfig", "apply_overrides",
    "build_config", "list_recipes", "load_recipe", "parse_set", "recipes_dir", "resolve_recipe",
]
