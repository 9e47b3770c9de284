"""Warm-up at engine start: compile every kernel the rows will need before the first row is submitted.

vLLM compiles the model and captures CUDA graphs while it starts, but several kernels are compiled only
when a request first needs them: Triton's LoRA shrink/expand kernels for each prefill shape, the guided-
decoding grammar of the schema, flashinfer's sampling kernels. On a fresh H100 (issue 17, the 0.5B model
with a trained adapter) that happened in the middle of the first generation: 168 s for 50 rows with the
GPU at 0 % and one core at 100 %, against 31 s once the caches were warm. Rows in flight wait for it, the
rate of the whole run looks broken, and the watchdog can mistake it for a hang.

`warm_up` sends one batch of `max_num_seqs` short requests through the engine with the run's own sampling
parameters (guided JSON when on) under each served adapter (and the base model when it runs), so the
prefill of a full step (`max_num_batched_tokens`, chunked), decode at full batch and the LoRA and grammar
paths all run once; only their answers are cut short (`max_tokens` 32). It prints one progress line before
and one after, and its report says how long it took. The paragraphs are data/demo's, each made unique so
the prefix cache cannot serve them; the prefix cache is reset afterwards, so nothing of the warm-up is
left for the rows.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .adapters import Adapter, adapter_hash, lora_rank
from .seam import Request

# `engine` below is a started generate.Engine (its vLLM `llm`, config, feeder); typed Any because generate
# imports this module when it starts one, and the package has no import loops (scripts/check_imports.py).
Engine = Any

log = logging.getLogger("engine")

WARMUP_MAX_TOKENS = 32  # enough decode steps at full batch for every decode kernel and the grammar's first states


@dataclass
class WarmupReport:
    requests: int
    adapters: list[str]  # "base" for rows without an adapter
    guided: bool
    seconds: float
    output_tokens: int = 0
    errors: list[str] = field(default_factory=list)  # requests vLLM refused (the message)

    def line(self) -> str:
        grammar = "guided JSON" if self.guided else "no grammar"
        bad = f"; {len(self.errors)} refused: {self.errors[0]}" if self.errors else ""
        return (f"warm-up done: {self.requests} requests ({', '.join(self.adapters)}; {grammar}) in "
                f"{self.seconds:.1f} s{bad}")


def _paragraphs() -> list[tuple[str, str]]:
    """(chapter title, paragraph) of the demo rows shipped with reportminer.data (package data)."""
    text = resources.files("reportminer.data.demo").joinpath("demo.jsonl").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            inp = r.get("input") or r
            rows.append((inp.get("chapter_title") or "", inp.get("paragraph") or ""))
    return [r for r in rows if r[1].strip()] or [("经营情况", "公司营业收入同比增长12.3%，毛利率提升1.5个百分点。")]


def served_adapters(engine: Engine) -> list[Adapter | None]:
    """What the rows will run under: each configured adapter, and None (the base model) when it runs."""
    cfg = engine.config
    out: list[Adapter | None] = [Adapter(n, Path(p), lora_rank(Path(p)), adapter_hash(Path(p)))
                                 for n, p in cfg.adapters.items()]
    if not out or cfg.include_base:
        out.insert(0, None)
    return out


def warm_up(engine: Engine, adapters: list[Adapter | None] | None = None, requests: int | None = None,
            max_tokens: int = WARMUP_MAX_TOKENS) -> WarmupReport:
    """Run one full batch of short requests (default: the engine's max_num_seqs) spread over `adapters`
    (default: `served_adapters`), with the engine's sampling parameters cut to `max_tokens`."""
    cfg = engine.config
    targets = served_adapters(engine) if adapters is None else adapters
    n = max(len(targets), requests or engine.max_num_seqs)
    names = [a.name if a else "base" for a in targets]
    grammar = "guided JSON" if cfg.guided else "no grammar"
    log.info("warm-up: %d requests (%s; %s) to compile kernels before rows flow ...", n, ", ".join(names), grammar)
    t = time.perf_counter()
    src = _paragraphs()
    titles, paras = [], []
    for i in range(n):
        title, para = src[i % len(src)]
        # unique text (no prefix-cache hit beyond the system prompt), lengths varied for several prefill shapes
        titles.append(title)
        paras.append(f"{para * (1 + i % 3)}（预热{i}）")
    ids = engine.encode_prompts(titles, paras)
    budget = (cfg.max_model_len or 4096) - max_tokens
    reqs = [Request(i, p[:budget], targets[i % len(targets)]) for i, p in enumerate(ids)]
    sp = engine.sampling_params(cfg)
    sp.max_tokens = max_tokens
    report = WarmupReport(requests=n, adapters=names, guided=bool(cfg.guided), seconds=0.0)
    feeder = engine.feeder(sp, window=n, stall_timeout_s=None)
    try:
        for c in feeder.run(iter(reqs)):
            if c.rejected is not None:
                report.errors.append(c.rejected)
            report.output_tokens += c.output_tokens
    finally:
        feeder.close()
    try:
        engine.llm.reset_prefix_cache()
    except Exception as e:  # best effort: a warm prefix cache only changes speed
        log.debug("reset_prefix_cache after warm-up: %s", e)
    report.seconds = time.perf_counter() - t
    log.info(report.line())
    return report
