"""Loading the base model for LoRA training: device, precision, quantisation and optimiser choices.

The recipe says what the run wants (8-bit base, bf16, paged AdamW 8-bit); this module decides what the
machine can give and logs every substitution, so a CPU smoke run works with the same recipe keys as a GPU
run and nobody has to guess afterwards which optimiser or precision actually ran (the choices are also
written into the adapter manifest).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .config import TrainConfig

log = logging.getLogger("trainer")


@dataclass
class Plan:
    """What will run on this machine, after fallbacks."""

    device: str  # "cpu" or "cuda:N"
    precision: str  # bf16 | fp16 | fp32
    optimizer: str
    quantization: str
    notes: list[str] = field(default_factory=list)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.precision, "optimizer": self.optimizer,
                "quantization": self.quantization, "notes": list(self.notes)}


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def plan_for(cfg: TrainConfig) -> Plan:
    import torch

    notes: list[str] = []
    cuda = torch.cuda.is_available()
    if cfg.device == "auto":
        device = "cuda:0" if cuda else "cpu"
    elif cfg.device.startswith("cuda"):
        if not cuda:
            from .config import ConfigError

            raise ConfigError(f"device {cfg.device!r} asked for, but torch sees no CUDA GPU")
        device = cfg.device if ":" in cfg.device else "cuda:0"
    else:
        device = "cpu"

    precision = cfg.precision
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    elif precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        notes.append("bf16 asked for but this GPU does not support it; using fp16")
        precision = "fp16"
    elif precision == "fp16" and device == "cpu":
        notes.append("fp16 mixed precision needs a GPU; using fp32 on CPU")
        precision = "fp32"

    optimizer = cfg.optimizer
    # Paged optimisers page their state through CUDA unified memory; 8-bit state needs bitsandbytes'
    # CUDA kernels. On a CPU the plain torch AdamW is the honest substitute.
    if device == "cpu" and ("paged" in optimizer or "8bit" in optimizer or "bnb" in optimizer):
        notes.append(f"optimizer {optimizer} needs a CUDA device; using adamw_torch on CPU")
        optimizer = "adamw_torch"

    plan = Plan(device=device, precision=precision, optimizer=optimizer, quantization=cfg.quantization, notes=notes)
    for n in notes:
        log.warning("note: %s", n)
    log.info("device %s (%s), precision %s, optimizer %s, base %s", device, _device_name(device), precision,
             optimizer, "unquantised" if cfg.quantization == "none" else cfg.quantization)
    return plan


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def quantization_config(cfg: TrainConfig, plan: Plan):
    if cfg.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=cfg.llm_int8_threshold)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=torch_dtype("bf16" if plan.precision == "fp32" else plan.precision),
    )


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(cfg: TrainConfig, plan: Plan):
    """The base model on its device, quantised per recipe and prepared for k-bit training when quantised."""
    import torch
    from transformers import AutoModelForCausalLM

    qcfg = quantization_config(cfg, plan)
    dtype = torch_dtype(plan.precision)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = {"": plan.device if plan.is_cuda else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
    if qcfg is None:
        model.to(plan.device)
    else:
        from peft import prepare_model_for_kbit_training

        # Casts norms (and other non-quantised weights) to fp32 and wires gradient checkpointing so
        # gradients flow through the frozen quantised layers: the standard QLoRA preparation.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    if torch.cuda.is_available() and plan.is_cuda:
        log.info("base model on GPU: %.2f GiB allocated", torch.cuda.memory_allocated() / 2**30)
    return model


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def library_versions() -> dict[str, str]:
    from reportminer.data.manifest import library_versions as versions

    out = versions(("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "reportminer"))
    try:
        import torch

        if torch.cuda.is_available():
            out["cuda"] = str(torch.version.cuda)
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # versions are informative; never fail a run over them
        pass
    return out
