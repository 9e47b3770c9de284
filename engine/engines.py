"""The one place that chooses and starts an engine: `engine run` (every backend), `engine extract`, Ray actors.

Before this the choice was written three times (runner, single, the Ray actor) and drifted: only one of
them knew about merged weights. `open_engine` returns an object of the engine seam (seam.GenerationEngine):
a `server.ServerEngine` when `server` is set, else a local `generate.Engine` on the settings vLLM should
start with (the merged model and no LoRA under `merge_adapter`: merge.serving_config).
"""
from __future__ import annotations

from pathlib import Path

from .config import EngineConfig
from .generate import Engine
from .merge import serving_config
from .seam import GenerationEngine


def open_engine(config: EngineConfig, merged: Path | None = None) -> GenerationEngine:
    """A started engine for resolved settings (`merged`: the folder merge.merged_model built, if any)."""
    if config.server:  # server mode: vLLM runs in `vllm serve` (engine/server.py)
        from .server import ServerEngine

        return ServerEngine(config)
    return Engine(serving_config(config, merged))


__all__ = ["Engine", "open_engine"]
