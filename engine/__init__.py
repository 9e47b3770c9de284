"""The engine: vLLM with LoRA adapters and guided JSON over Parquet shards, resumable, on CPU and GPU.

Library API (the `engine` CLI is a thin layer over it):

    from reportminer.engine import EngineConfig, Engine, run, extract
    cfg = EngineConfig(adapters={"v4": "adapters/v4"})
    summary = run(cfg, "shards/", "out/")            # starts an engine for this run
    eng = Engine.start(cfg)                           # or start one and reuse it across runs
    summary = run(cfg, "more_shards/", "out2/", engine=eng)

Heavy imports (vLLM, torch) happen only when an engine starts.
"""
from .config import ConfigError, EngineConfig

__all__ = ["ConfigError", "Engine", "EngineConfig", "RunSummary", "extract", "run"]


def __getattr__(name: str):
    if name == "run":
        from .runner import run

        return run
    if name == "Engine":
        from .generate import Engine

        return Engine
    if name == "extract":
        from .single import extract

        return extract
    if name == "RunSummary":
        from .summary import RunSummary

        return RunSummary
    raise AttributeError(name)
