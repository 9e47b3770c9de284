"""The one place that chooses and starts an engine: `engine run` (every backend), `engine extract`, Ray actors.

Before this the choice was written three times (runner, single, the Ray actor) and drifted: only one of
them knew about merged weights. `open_engine` returns an object of the engine seam (seam.GenerationEngine):
a `server.ServerEngine` when `server` is set, else a local `generate.Engine` on the settings vLLM should
start with (the merged model and no LoRA under `merge_adapter`: merge.serving_config).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .adapters import Adapter
from .config import EngineConfig
from .generate import Engine
from .merge import serving_config
from .seam import GenerationEngine, RequestFeeder

log = logging.getLogger("engine")


def open_engine(config: EngineConfig, merged: Path | None = None) -> GenerationEngine:
    """A started engine for resolved settings (`merged`: the folder merge.merged_model built, if any)."""
    if config.server:  # server mode: vLLM runs in `vllm serve` (engine/server.py)
        from .server import ServerEngine

        return ServerEngine(config)
    return Engine(serving_config(config, merged))


class LazyEngine:
    """`open_engine` deferred to the first call that needs the engine (issue 17: a run the row cache serves
    whole, e.g. a nightly rerun over unchanged input, started vLLM for nothing: 87 s warm on an H100).

    The pipeline asks an engine for something only for a row the cache cannot serve (pipeline.Pipeline
    tokenises only those and opens its feeder at the first request), so this starts vLLM right before that
    row, or never. `start_s` is the start's seconds (None: not started)."""

    def __init__(self, config: EngineConfig, merged: Path | None = None):
        self.config = config
        self.merged = merged
        self.engine: GenerationEngine | None = None
        self.start_s: float | None = None
        self.on_start: Callable[[], object] | None = None  # called once the engine is up (LocalBackend: the manifest)

    def started(self) -> GenerationEngine:
        if self.engine is None:
            log.info("starting the engine: a row the row cache cannot serve")
            t = time.perf_counter()
            self.engine = open_engine(self.config, self.merged)
            self.start_s = time.perf_counter() - t
            self.engine.reset_loras()
            if self.on_start is not None:
                self.on_start()
        return self.engine

    @property
    def max_num_seqs(self) -> int:
        return self.started().max_num_seqs

    def check_compatible(self, run: EngineConfig, adapters: list[Adapter]) -> None:
        self.started().check_compatible(run, adapters)

    def encode_prompts(self, titles: Iterable[str | None], paragraphs: Iterable[str | None]) -> list[list[int]]:
        return self.started().encode_prompts(titles, paragraphs)

    def sampling_params(self, config: EngineConfig) -> Any:
        return self.started().sampling_params(config)

    def feeder(self, sampling_params: Any, window: int, may_submit: Callable[[], bool] | None = None,
               stall_timeout_s: Any = "engine", retry_params: Any = None) -> RequestFeeder:
        return self.started().feeder(sampling_params, window, may_submit, stall_timeout_s, retry_params)

    def reset_loras(self) -> None:
        if self.engine is not None:  # a fresh engine's slots are reset when it starts
            self.engine.reset_loras()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


__all__ = ["Engine", "LazyEngine", "open_engine"]
