"""The backend seam: the `Backend` protocol `runner.run` drives, the local backend, and the one factory.

`run` owns planning, the --out lock, the choice of shards, the manifest's first write, the summary and the
run log, once for every backend (runner.py). A backend only gets the selected shards done:

  local (`LocalBackend`)   one engine in this process, a local vLLM or a `vllm serve` over HTTP, whichever
                           `engines.open_engine` picks (`server` set or not), or one handed to `run`;
  ray (`ray_backend.RayBackend`)  Ray Data maps the shards over an actor pool, one engine per actor.

Both run the same row pipeline (pipeline.process_shards), so they write the same files. A new backend is a
class with the members below and a branch in `make_backend`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .config import EngineConfig
from .engines import LazyEngine, open_engine
from .pipeline import process_shards
from .row_cache import RowCache, column_scopes
from .run_manifest import RunManifest
from .seam import GenerationEngine, Outcome, ShardJob

if TYPE_CHECKING:
    from .plan import Plan

log = logging.getLogger("engine")


class Backend(Protocol):
    """Where a run's rows are computed. `run` calls, under the --out lock: `adopt` (before the shards to do
    are chosen), then, when there is work, `start`, the manifest's first write, `execute`, and `stop`."""

    # True when this backend starts vLLM engines for the run: `run` then settles enforce_eager once per
    # --out (run_manifest.settle_eager) before `start`, the same rule for every backend, so their outputs match.
    starts_vllm: bool

    def check(self, input_path: str | Path, out_dir: str | Path) -> None:
        """Refuse what this backend cannot do, before anything is planned (ConfigError)."""

    def adopt(self, out_dir: Path, manifest: RunManifest, overwrite: bool) -> None:
        """Fold into the manifest what a killed run of this backend committed but did not record."""

    def start(self, plan: Plan, config: EngineConfig) -> None: ...

    def execute(self, plan: Plan, config: EngineConfig, todo: list[ShardJob], manifest: RunManifest,
                progress: bool) -> Outcome:
        """Every shard of `todo` through the engines; each committed (rename) and recorded
        (`manifest.shards[rel] = entry; manifest.write(out)`) as it finishes. A shard that fails is in
        `Outcome.failed`; Ctrl-C returns with `interrupted`; anything else raises."""
        ...

    def stop(self) -> None: ...


class LocalBackend:
    """One engine in this process: started here (a local vLLM, or a server client) or handed in by the caller.

    The row cache (OUT/_rowcache: row_cache.py) is this backend's: a paragraph extracted before under the same
    identity is served from it instead of the engine. A local vLLM is started lazily, at the first row the
    cache cannot serve (engines.LazyEngine): a run the cache serves whole never starts it (engine_start_s 0).
    A server client and a handed-in engine are ready at `start`, as before.
    """

    def __init__(self, engine: GenerationEngine | None = None, starts_vllm: bool = True):
        self.engine = engine
        self.starts_vllm = engine is None and starts_vllm
        self.engine_start_s: float | None = None
        self.lazy: LazyEngine | None = None

    def check(self, input_path: str | Path, out_dir: str | Path) -> None:
        pass  # local folders, s3:// and gs:// (storage.py)

    def adopt(self, out_dir: Path, manifest: RunManifest, overwrite: bool) -> None:
        pass  # a killed local run leaves only temporary files, which plan.prepare_out removes

    def start(self, plan: Plan, config: EngineConfig) -> None:
        if self.engine is None and self.starts_vllm:
            # Started at the first row the row cache cannot serve, or never (engines.LazyEngine, issue 17).
            self.lazy = LazyEngine(config, plan.merged)
            self.engine = self.lazy
            return
        if self.engine is None:
            t = time.perf_counter()
            self.engine = open_engine(config, plan.merged)
            self.engine_start_s = time.perf_counter() - t
        self.engine.reset_loras()

    def execute(self, plan: Plan, config: EngineConfig, todo: list[ShardJob], manifest: RunManifest,
                progress: bool) -> Outcome:
        assert self.engine is not None, "start() first"
        t_gen = time.perf_counter()
        by_name = {a.name: a for a in plan.adapters}
        cache = RowCache.open(plan.out_dir, column_scopes(plan.identity, config.adapter_names, by_name), config.row_cache)
        cache.seed(plan.out_dir, [e["output"] for e in manifest.shards.values()], config.adapter_names)
        if self.lazy is not None:  # the manifest's first write waits for the engine (runner.run), or a commit
            self.lazy.on_start = lambda: manifest.write(plan.out_dir)
        pipeline = process_shards(self.engine, config, plan.adapters, plan.out_dir, manifest, todo, progress=progress,
                                  cache=cache, return_on_interrupt=True)
        gen_s = time.perf_counter() - t_gen
        if self.lazy is not None:  # a lazy start happened inside the pipeline: its seconds are not generation's
            self.engine_start_s = self.lazy.start_s
            gen_s -= self.lazy.start_s or 0.0
            if self.lazy.engine is None and not pipeline.interrupted:
                log.info("row cache: every row served; vLLM was not started")
                manifest.write(plan.out_dir)  # as a run whose engine started writes it (fingerprints, prunes)
        return pipeline.outcome(gen_s, self.engine_start_s)

    def stop(self) -> None:
        """Nothing to stop: an engine this run started stays with the process, as it always did (a caller that
        reuses engines across runs starts one itself: `Engine.start`, and passes it as `engine=`)."""


def make_backend(config: EngineConfig, engine: GenerationEngine | None = None) -> Backend:
    """The backend for these settings: Ray when `backend: ray` and no engine is handed in, else local."""
    if config.backend == "ray" and engine is None:
        from .ray_backend import RayBackend

        return RayBackend()
    return LocalBackend(engine, starts_vllm=not config.server)


__all__ = ["Backend", "LocalBackend", "make_backend"]
