"""`train(config) -> TrainResult`: one LoRA SFT run from validated rows to adapters the engine can trust.

Run folder layout (`config.output`):

    train.log, log.jsonl      human log and every Trainer log record (kept across --resume)
    run.json                  the config and data fingerprints of the run (checked on --resume)
    metrics.json              per-epoch losses and times, written as the run goes
    checkpoints/checkpoint-N  one per epoch (the last `save_total_limit` kept): what --resume reads
    best/                     adapter with the lowest dev loss so far + manifest + loss_curves.png
    final/                    adapter after the last epoch + manifest + loss_curves.png

The engine reads `reportminer_adapter.json` in best/ or final/ and refuses an adapter trained for another
base model, schema or prompt (data.manifest.check_adapter).

`train` runs the steps of `LoraRecipe` (setup_data, setup_model, setup_trainer, train, save), whose
attributes hold the run's state.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reportminer.data.errors import ConfigError, DataError, RunExists, TrainingDiverged
from reportminer.data.io import write_json_atomic as write_json
from reportminer.data.type_prior import build_type_prior, label_pairs

from .artifacts import (
    EpochStats,
    build_manifest,
    epoch_stats,
    plot_loss_curves,
    read_manifest_loss,
    save_adapter_dir,
)
from .config import TrainConfig
from .graft import background_pool, graft_rows
from .mix import describe as describe_mix
from .mix import mix_rows
from .rows import load_training_data

log = logging.getLogger("trainer")

CHECKPOINTS = "checkpoints"
BEST = "best"
FINAL = "final"


def _nonfinite_guard(limit: int):
    """A callback that drops the update of any optimiser step whose (clipped) gradients are not finite.

    One NaN gradient, once applied, turns every LoRA weight into NaN and the rest of the run trains
    nothing while the logged loss reads 0 (transformers filters NaN from its logs). So a bad step is
    skipped and logged, and after `limit` such steps the run stops with an error instead of writing a
    NaN adapter. Seen on the first H200 run (docs/gpu-training-run.md).
    """
    import torch
    from transformers import TrainerCallback

    class NonFiniteGuard(TrainerCallback):
        skipped: list[int] = []

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if model is None:
                return
            grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
            if not grads:
                return
            total = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
            if torch.isfinite(total):
                return
            for p in model.parameters():
                if p.requires_grad:
                    p.grad = None  # AdamW leaves parameters without gradients untouched
            self.skipped.append(state.global_step + 1)
            log.warning("step %d: non-finite gradients, update skipped (%d so far)", state.global_step + 1, len(self.skipped))
            if len(self.skipped) > limit:
                control.should_training_stop = True

    guard = NonFiniteGuard()
    guard.skipped = []
    return guard


@dataclass
class TrainResult:
    output_dir: Path
    final_adapter: Path
    best_adapter: Path | None
    epochs: list[EpochStats]
    global_step: int
    first_loss: float | None  # the first logged training loss of the run (before any resume)
    train_loss: float | None  # mean training loss of the last epoch
    eval_loss: float | None  # dev loss after the last epoch
    best_eval_loss: float | None
    train_rows: int
    dev_rows: int
    skipped_rows: list[str]
    seconds: float
    resumed_from: str | None
    plan: dict[str, Any] = field(default_factory=dict)
    stopped_early_after: int | None = None  # the epoch early_stop_patience ended the run after

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("output_dir", "final_adapter", "best_adapter"):
            d[k] = None if d[k] is None else str(d[k])
        return d


# --------------------------------------------------------------------------------------------------
# Logging


def _setup_logging(output: Path) -> logging.Handler:
    output.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_trainer", False) for h in log.handlers):
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("[trainer] %(message)s"))
        sh._trainer = True  # type: ignore[attr-defined]
        log.addHandler(sh)
    log.propagate = False
    return handler


# --------------------------------------------------------------------------------------------------
# Run folder checks


def _run_identity(cfg: TrainConfig, files: list[dict[str, Any]]) -> dict[str, Any]:
    hp = cfg.hyperparameters()
    hp.pop("save_total_limit", None)
    return {"hyperparameters": hp, "data": [{"path": f["path"], "sha256": f["sha256"]} for f in files],
            "model": os.path.abspath(cfg.model or "")}


def _check_output(cfg: TrainConfig, resume: bool, overwrite: bool) -> Path:
    out = Path(cfg.output or "")
    has_run = (out / CHECKPOINTS).exists() or (out / FINAL).exists() or (out / "run.json").exists()
    if has_run and overwrite:
        for name in (CHECKPOINTS, BEST, FINAL, "run.json", "metrics.json", "log.jsonl", "train.log"):
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    elif has_run and not resume:
        raise RunExists(f"{out}: already holds a training run; pass --resume to continue it or --overwrite to start over")
    return out


def _check_resume_identity(out: Path, identity: dict[str, Any]) -> None:
    p = out / "run.json"
    if not p.exists():
        return
    before = json.loads(p.read_text()).get("identity", {})
    diffs = []
    for k, v in identity["hyperparameters"].items():
        if before.get("hyperparameters", {}).get(k, v) != v:
            diffs.append(f"{k}: {before['hyperparameters'][k]!r} -> {v!r}")
    if before.get("data") and before["data"] != identity["data"]:
        diffs.append("data files (paths or sha256) differ")
    if before.get("model") and before["model"] != identity["model"]:
        diffs.append(f"model: {before['model']} -> {identity['model']}")
    if diffs:
        raise ConfigError(f"{out}: cannot resume, the run was started with other settings: " + "; ".join(diffs)
                          + " (use --overwrite to start a new run there)")


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ck = out / CHECKPOINTS
    return get_last_checkpoint(str(ck)) if ck.is_dir() else None


# --------------------------------------------------------------------------------------------------
# The run


def _sft_config(cfg: TrainConfig, plan, out: Path, has_dev: bool, n_train: int):
    from trl import SFTConfig

    # Whole warmup steps computed here: transformers 5 dropped `warmup_ratio`, and how a float
    # `warmup_steps` is read has changed between releases.
    warmup_steps = math.ceil(cfg.warmup_ratio * _planned_steps(cfg, n_train)) if cfg.warmup_ratio > 0 else 0

    kwargs: dict[str, Any] = dict(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=float(cfg.epochs),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay,
        optim=plan.optimizer,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        # TF32 matmuls for fp32 training on Ampere or newer: fp32 master weights and accumulation, about
        # 8x the plain-fp32 matrix rate; the demo recipe trains in fp32 because bf16 gave NaN on the H200.
        tf32=True if (cfg.tf32 and plan.precision == "fp32" and plan.device.startswith("cuda")) else None,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        max_length=cfg.max_length,
        completion_only_loss=True,
        packing=False,
        eval_strategy="epoch" if has_dev else "no",
        save_strategy="epoch",
        save_total_limit=cfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=cfg.report_to,  # TrainConfig.report_to: none | tensorboard | wandb | mlflow
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not plan.is_cuda,
        dataloader_num_workers=0,
        disable_tqdm=not cfg.progress,
        remove_unused_columns=True,
        logging_nan_inf_filter=False,  # a NaN loss must show as NaN, not as the previous mean
    )
    return SFTConfig(**kwargs)


def _trainer_class():
    from transformers import Trainer
    from trl import SFTTrainer

    class ReportminerSFTTrainer(SFTTrainer):
        """trl's SFTTrainer; on a CPU the loss comes from the model's own cross-entropy.

        trl computes the loss with a chunked "fused LM head" that never builds the full logits: on a GPU
        that saves gigabytes at a 151k vocabulary, on a CPU it measured about 5x slower per step than the
        plain loss (tiny Qwen3, 2 x 600 tokens). Same quantity either way: mean NLL over answer tokens,
        normalised by the answer tokens of the whole accumulated batch.
        """

        plain_loss = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.plain_loss:
                return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    return ReportminerSFTTrainer


def build_trainer(cfg: TrainConfig, plan, model, tokenizer, train_set, dev_set, out: Path, callbacks: list[Any]):
    """The trl SFTTrainer over pre-tokenised examples, LoRA per recipe (tests inspect its datasets)."""
    from .modeling import lora_config

    has_dev = bool(dev_set is not None and dev_set.examples)
    cls = _trainer_class()
    cls.plain_loss = cfg.loss_impl == "plain" or (cfg.loss_impl == "auto" and not plan.is_cuda)
    return cls(
        model=model,
        args=_sft_config(cfg, plan, out, has_dev, len(train_set.examples)),
        train_dataset=train_set.to_dataset(),
        eval_dataset=dev_set.to_dataset() if has_dev else None,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=callbacks,
    )


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, callbacks: list[Any] | None = None) -> TrainResult:
    """Validate the data, train LoRA per `cfg`, write best/ and final/ adapters with manifests.

    `resume=True` continues from the last epoch checkpoint in `cfg.output/checkpoints` (the run's
    settings and data must match the interrupted run's). `callbacks` are extra transformers
    TrainerCallbacks (tests use one to interrupt a run).
    """
    t0 = time.time()
    cfg.require_paths()
    cfg.validate()
    out = _check_output(cfg, resume, overwrite)
    handler = _setup_logging(out)
    try:
        recipe = LoraRecipe(cfg, out, resume=resume, callbacks=callbacks, t0=t0)
        recipe.setup_data()
        recipe.setup_model()
        recipe.setup_trainer()
        recipe.train()
        return recipe.save()
    except KeyboardInterrupt:
        log.error("interrupted; the last epoch checkpoint is in %s: run again with --resume to continue",
                  out / CHECKPOINTS)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


class LoraRecipe:
    """One LoRA SFT run as named steps, in the torchtune manner: the state lives on the recipe.

        recipe = LoraRecipe(cfg, out, resume=False)
        recipe.setup_data()      # validate, split, fingerprint; run.json; resume checks (no model yet)
        recipe.setup_model()     # device/precision plan, tokenizer, tokenised examples, base model
        recipe.setup_trainer()   # the trl trainer with LoRA, the non-finite guard and the run recorder
        recipe.train()           # SFT; best/ saved on every dev-loss improvement
        result = recipe.save()   # final/, curves, metrics.json

    `train(cfg)` runs exactly these steps; tests and notebooks can stop between them.
    """

    def __init__(self, cfg: TrainConfig, out: Path, *, resume: bool = False, callbacks: list[Any] | None = None,
                 t0: float | None = None) -> None:
        self.cfg = cfg
        self.out = out
        self.resume = resume
        self.extra_callbacks = list(callbacks or [])
        self.t0 = time.time() if t0 is None else t0
        self.metrics_path = out / "metrics.json"
        self.checkpoint: str | None = None  # what --resume continues from
        self.seconds: dict[int, dict[str, float]] = {}  # epoch -> {"train", "eval", "step"}
        self.best_loss: float | None = None  # lowest dev loss so far (best/ holds its adapter)
        self.best_epoch: float | None = None
        self.stale_epochs = 0  # epochs in a row without a lower dev loss (early_stop_patience)
        self.stopped_early_after: int | None = None  # the epoch after which early stopping ended the run
        self.t_epoch = 0.0
        self.t_eval = 0.0

    # ---- setup ----------------------------------------------------------------------------------------

    def setup_data(self) -> None:
        """Validated and split before any model is loaded; the run's identity is written to run.json."""
        cfg, out = self.cfg, self.out
        log.info("recipe %s; model %s; data %s; output %s", cfg.recipe or "(none)", cfg.model, cfg.data, out)
        if not Path(cfg.model, "config.json").exists():  # type: ignore[arg-type]
            raise ConfigError(f"{cfg.model}: not a model folder (no config.json)")
        self.loaded = load_training_data(cfg.data, cfg.dev_data, cfg.dev_fraction, cfg.seed, cfg.seed_rules,  # type: ignore[arg-type]
                                         cfg.progress, extra_data=cfg.extra_data)
        for w in self.loaded.warnings[:20]:
            log.warning("data: %s", w)
        if len(self.loaded.warnings) > 20:
            log.warning("data: ... and %d more warnings", len(self.loaded.warnings) - 20)
        self.files = [f.to_dict() for f in self.loaded.files]
        # How the training split's labels type each name ending, before the mix re-weights rows: written
        # beside every saved adapter, applied by the engine (data/type_prior.py says why).
        self.type_prior = build_type_prior(label_pairs(r.output for r in self.loaded.train))
        if cfg.count_weights or cfg.type_weights:  # the training mix (trainer/mix.py); dev keeps its own
            before = describe_mix(self.loaded.train)
            self.loaded.train = mix_rows(self.loaded.train, cfg.count_weights, cfg.type_weights, cfg.seed)
            log.info("training mix: %s -> %s", before, describe_mix(self.loaded.train))
        # Background sentences grafted into a share of the (mixed) training rows (trainer/graft.py); dev untouched.
        self.loaded.train, graft = graft_rows(self.loaded.train, background_pool(self.loaded.train), cfg.graft_share,
                                              cfg.seed, cfg.graft_note)
        self.graft = graft.to_dict()
        if cfg.graft_share:
            log.info("graft: %s", self.graft)
        identity = _run_identity(cfg, self.files)
        if self.resume:
            _check_resume_identity(out, identity)
            self.checkpoint = _last_checkpoint(out)
            if self.checkpoint is None:
                log.warning("--resume: no checkpoint in %s yet; starting from the beginning", out / CHECKPOINTS)
            else:
                log.info("resuming from %s", self.checkpoint)
        write_json(out / "run.json", {"identity": identity, "config": asdict(cfg)})

    def setup_model(self) -> None:
        """The device/precision plan, the tokenizer, the tokenised examples and the base model."""
        from .examples import tokenize_rows
        from .modeling import load_base_model, load_tokenizer, plan_for

        cfg = self.cfg
        self.plan = plan_for(cfg)
        self.tokenizer = load_tokenizer(cfg.model)  # type: ignore[arg-type]
        self.train_set = tokenize_rows(self.tokenizer, self.loaded.train, cfg.max_length, "train")
        self.dev_set = tokenize_rows(self.tokenizer, self.loaded.dev, cfg.max_length, "dev")
        if not self.train_set.examples:
            raise DataError(f"{cfg.data}: no training example fits max_length {cfg.max_length}")
        log.info("train %d examples (%d tokens, %d answer tokens), dev %d examples, skipped %d over max_length",
                 len(self.train_set.examples), self.train_set.tokens, self.train_set.answer_tokens,
                 len(self.dev_set.examples), len(self.train_set.skipped) + len(self.dev_set.skipped))
        self.model = load_base_model(cfg, self.plan)

    def setup_trainer(self) -> None:
        """The trl trainer with LoRA per recipe, the non-finite guard and the run recorder."""
        from .modeling import library_versions

        cfg, out = self.cfg, self.out
        self.versions = library_versions()
        self.skipped = self.train_set.skipped + self.dev_set.skipped
        prior = json.loads(self.metrics_path.read_text()) if (self.resume and self.metrics_path.exists()) else {}
        self.seconds = {int(k): v for k, v in prior.get("seconds", {}).items()}
        self.best_loss = read_manifest_loss(out / BEST) if self.resume else None
        self.adapter_dtype = self.plan.precision if cfg.adapter_dtype == "auto" else cfg.adapter_dtype
        self.title = (f"{Path(cfg.model).name} · {cfg.recipe or 'custom'} · "  # type: ignore[arg-type]
                      f"{len(self.train_set.examples)} train / {len(self.dev_set.examples)} dev")
        self.guard = _nonfinite_guard(cfg.max_nonfinite_steps)
        callbacks = [self.guard, _run_recorder(self), *self.extra_callbacks]
        self.trainer = build_trainer(cfg, self.plan, self.model, self.tokenizer, self.train_set, self.dev_set, out,
                                     callbacks)
        n_trainable = sum(p.numel() for p in self.trainer.model.parameters() if p.requires_grad)
        log.info("LoRA r%d alpha %d on %s: %.2fM trainable parameters; %d optimiser steps planned",
                 cfg.lora_r, cfg.lora_alpha, ",".join(cfg.target_modules), n_trainable / 1e6,
                 self.trainer.state.max_steps or _planned_steps(cfg, len(self.train_set.examples)))

    # ---- train ----------------------------------------------------------------------------------------

    def train(self) -> None:
        """SFT; raises TrainingDiverged after too many non-finite optimiser steps."""
        self.trainer.train(resume_from_checkpoint=self.checkpoint)
        skipped = self.guard.skipped
        if len(skipped) > self.cfg.max_nonfinite_steps:
            raise TrainingDiverged(
                f"non-finite gradients on steps {skipped}: training stopped at step {self.trainer.state.global_step}; "
                f"try precision fp32, loss_impl plain or a lower learning_rate (last checkpoint in {self.out / CHECKPOINTS})")
        if skipped:
            log.warning("%d optimiser step(s) skipped for non-finite gradients: %s", len(skipped), skipped)

    # Called by the run recorder (a transformers TrainerCallback) during `train`.

    def epoch_began(self) -> None:
        self.t_epoch = time.time()

    def epoch_ended(self, state: Any) -> None:
        e = _epoch_number(state.epoch)
        self.seconds.setdefault(e, {})["train"] = round(time.time() - self.t_epoch, 2)
        self.seconds[e]["step"] = state.global_step
        self.t_eval = time.time()

    def log_record(self, state: Any, logs: dict[str, Any]) -> None:
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    def evaluated(self, state: Any, loss: float | None, model: Any) -> bool:
        """Dev loss of an epoch: a new best saves best/ (weights, manifest, curves so far). True when
        early_stop_patience epochs in a row have ended without a new best: the run should stop.

        Round 7 stopped a 1,424-row run by hand after its dev loss rose at epoch 3 (best epoch 2) to fit a
        lease; with patience 1 the trainer does that itself. No 0.5B run of rounds 5-7 found a lower dev loss
        after a worse epoch, and the learning-rate schedule is the full run's, so best/ is unchanged."""
        e = _epoch_number(state.epoch)
        self.seconds.setdefault(e, {})["eval"] = round(time.time() - self.t_eval, 2)
        if loss is None or model is None:
            return False
        best = self.best_loss
        if best is None or loss < best:
            self.stale_epochs = 0
            self.best_loss, self.best_epoch = loss, state.epoch
            history = state.log_history + [{"eval_loss": loss, "epoch": state.epoch, "step": state.global_step}]
            save_adapter_dir(model, self.out / BEST, self.manifest_for("best", history, state.epoch, state.global_step),
                             history, self.title, best_epoch=state.epoch, adapter_dtype=self.adapter_dtype,
                             type_prior=self.type_prior)
            log.info("epoch %g: dev loss %.4f, new best -> %s", state.epoch, loss, self.out / BEST)
            return False
        self.stale_epochs += 1
        log.info("epoch %g: dev loss %.4f (best %.4f)", state.epoch, loss, best)
        patience = self.cfg.early_stop_patience
        if patience and self.stale_epochs >= patience and state.global_step < state.max_steps:
            self.stopped_early_after = e
            log.info("early stop after epoch %d: no lower dev loss for %d epoch(s); best epoch %g (dev loss %.4f)",
                     e, self.stale_epochs, self.best_epoch, best)
            return True
        return False

    def write_metrics(self, state: Any) -> None:
        stats = epoch_stats(state.log_history, self.seconds)
        write_json(self.metrics_path, {"epochs": [s.to_dict() for s in stats], "seconds": self.seconds,
                                       "global_step": state.global_step, "max_steps": state.max_steps})

    # ---- save -----------------------------------------------------------------------------------------

    def manifest_for(self, kind: str, history: list[dict[str, Any]], epoch: float, step: int) -> Any:
        """The reportminer_adapter.json of best/ or final/ at `epoch`."""
        cfg = self.cfg
        stats = epoch_stats(history, self.seconds)
        this = next((s for s in stats if s.epoch == _epoch_number(epoch)), stats[-1] if stats else None)
        return build_manifest(
            model_dir=cfg.model,  # type: ignore[arg-type]
            data_files=self.files,
            hyperparameters={**cfg.hyperparameters(), "effective_batch_size": cfg.effective_batch_size},
            train_loss=None if this is None else this.train_loss,
            eval_loss=None if this is None else this.eval_loss,
            library_versions=self.versions,
            extra={
                "adapter": kind, "epoch": epoch, "global_step": step, "recipe": cfg.recipe,
                "train_rows": len(self.train_set.examples), "dev_rows": len(self.dev_set.examples),
                "train_mix": describe_mix(self.loaded.train),
                "graft": self.graft,
                "skipped_rows": self.skipped, "plan": self.plan.to_dict(),
                "nonfinite_steps_skipped": list(self.guard.skipped),
                "first_loss": next((h["loss"] for h in history if "loss" in h), None),
                "type_prior": {"sha256": self.type_prior.sha256(), "keys": len(self.type_prior.counts),
                               "labelled_metrics": self.type_prior.labelled_metrics},
            },
        )

    def save(self) -> TrainResult:
        """final/ (adapter, manifest, curves), the full curves in best/, metrics.json; the result."""
        cfg, out = self.cfg, self.out
        state = self.trainer.state
        history = state.log_history
        stats = epoch_stats(history, self.seconds)
        final_epoch = float(state.epoch or cfg.epochs)
        save_adapter_dir(self.trainer.model, out / FINAL, self.manifest_for("final", history, final_epoch, state.global_step),
                         history, self.title, best_epoch=self.best_epoch, adapter_dtype=self.adapter_dtype,
                         type_prior=self.type_prior)
        best_dir = out / BEST if (out / BEST).exists() else None
        if best_dir is not None:  # the full curves, not the ones up to the best epoch
            plot_loss_curves(history, best_dir / "loss_curves.png", title=self.title, best_epoch=self.best_epoch)
        last = stats[-1] if stats else None
        result = TrainResult(
            output_dir=out,
            final_adapter=out / FINAL,
            best_adapter=best_dir,
            epochs=stats,
            global_step=state.global_step,
            first_loss=next((h["loss"] for h in history if "loss" in h), None),
            train_loss=None if last is None else last.train_loss,
            eval_loss=None if last is None else last.eval_loss,
            best_eval_loss=self.best_loss,
            train_rows=len(self.train_set.examples),
            dev_rows=len(self.dev_set.examples),
            skipped_rows=self.skipped,
            seconds=round(time.time() - self.t0, 2),
            resumed_from=self.checkpoint,
            plan=self.plan.to_dict(),
            stopped_early_after=self.stopped_early_after,
        )
        write_json(self.metrics_path, {**result.to_dict(), "epochs": [s.to_dict() for s in stats],
                                       "seconds": self.seconds, "total_seconds": result.seconds, "config": asdict(cfg)})
        for s in stats:
            log.info("epoch %d: train loss %s, dev loss %s, %ss", s.epoch, _fmt(s.train_loss), _fmt(s.eval_loss),
                     s.train_seconds)
        log.info("final adapter %s; best adapter %s (dev loss %s); %.1fs", out / FINAL, best_dir, _fmt(self.best_loss),
                 result.seconds)
        return result


def _epoch_number(epoch: float | None) -> int:
    """The 1-based epoch a (fractional) Trainer epoch value falls in."""
    return max(1, math.ceil(round(epoch or 0, 6)))


def _run_recorder(recipe: LoraRecipe) -> Any:
    """A TrainerCallback that hands epoch timings, log records, dev losses and saves to the recipe."""
    from transformers import TrainerCallback

    class RunRecorder(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kw):
            recipe.epoch_began()

        def on_epoch_end(self, args, state, control, **kw):
            recipe.epoch_ended(state)
            control.should_log = True  # an epoch's last steps always reach the log (and its mean loss)

        def on_step_end(self, args, state, control, **kw):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                recipe.log_record(state, logs)

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
            if recipe.evaluated(state, (metrics or {}).get("eval_loss"), model):
                control.should_training_stop = True

        def on_save(self, args, state, control, **kw):
            recipe.write_metrics(state)

    return RunRecorder()


def _planned_steps(cfg: TrainConfig, n: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(math.ceil(n / cfg.micro_batch_size) / cfg.gradient_accumulation_steps)
    return int(math.ceil(per_epoch * cfg.epochs))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
