"""`engine run --backend ray`: the same run, its shards mapped by Ray Data over a pool of engine actors.

`RayBackend` implements the backend seam (backends.py): `runner.run` plans, locks --out, selects the shards
still to do and writes the summary, as for the local backend. The rows themselves go through Ray Data:

  from_items(one item per shard to do, one block each)
    -> map_batches(ShardWorker, batch_size=1, ActorPoolStrategy(size=ray_actors), num_gpus=ray_gpus_per_actor)
    -> iter_rows() on the driver: one summary per shard, in completion order

Each actor holds one engine (engines.open_engine) and runs whole shards through `pipeline.process_shards`, the
local backend's own pipeline, so a shard's output file is written and committed (rename) by the same code: same files, columns,
per-row error semantics. Resume is the local backend's too (`plan.select` skips committed shards).

Nothing finished is lost when a part dies:
- an actor that dies mid-shard leaves only a temporary file; Ray Data restarts the actor and retries the
  shard (its defaults: max_restarts=-1, max_task_retries=-1), and the next run removes stale temporary files;
- an actor writes a marker (`_engine_ray/<rel>.json`, the shard's manifest entry) right after it commits a
  shard, and the driver folds it into `_engine_manifest.json` when the shard's summary arrives. A driver
  killed between the two leaves the marker, which the next run adopts (output present, size as recorded),
  so a committed shard is never redone; every other shard is redone whole, so each row lands exactly once.

Input shards and --out must be visible at the same path on every node (one machine, or a shared mount).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reportminer.data.errors import ConfigError, RunFailed

from .adapters import Adapter
from .config import EngineConfig
from .engines import open_engine
from .generate import prepare_process_env
from .pipeline import process_shards
from .row_cache import RowCache
from .run_manifest import RunManifest
from .seam import DoneShard, Outcome, ShardJob
from .shards import InputShard
from .storage import ObjectPath, is_remote, write_json
from .summary import RowStats

if TYPE_CHECKING:
    from .plan import Plan

log = logging.getLogger("engine")

MARKER_DIR = "_engine_ray"  # "_" keeps it out of readers of the whole --out folder, like the manifest

# Environment the actors need at vLLM import, passed as the actors' runtime_env (a `ray job submit` worker
# does not inherit the submitting shell's variables): these prefixes are copied from the driver.
_ENV_PREFIXES = ("VLLM_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "REPORTMINER_", "OMP_", "CUDA_VISIBLE")


def marker_path(out_dir: Path, rel: str) -> Path:
    return out_dir / MARKER_DIR / f"{rel}.json"


# ---- inside each actor ---------------------------------------------------------------------------------


@dataclass
class _MarkerManifest(RunManifest):
    """An actor's view of the manifest: a committed shard's entry goes to its marker file; only the driver
    writes `_engine_manifest.json` (several actors rewriting it would lose each other's entries)."""

    written: set[str] = field(default_factory=set)

    def write(self, out_dir: Path | ObjectPath) -> Path | ObjectPath:
        for rel, entry in self.shards.items():
            if rel not in self.written:
                write_json(out_dir / MARKER_DIR / f"{rel}.json", {"rel": rel, "entry": entry})
                self.written.add(rel)
        return out_dir / MARKER_DIR


class ShardWorker:
    """One Ray Data actor: one engine, started once, then whole shards through `pipeline.process_shards`."""

    def __init__(self, config: EngineConfig, adapters: list[Adapter], merged: str | None, out_dir: str):
        _actor_logging()
        prepare_process_env(config.device)
        self.config, self.adapters, self.out_dir = config, adapters, Path(out_dir)
        t = time.perf_counter()
        self.engine = open_engine(config, Path(merged) if merged else None)
        self.engine.reset_loras()
        self.start_s = time.perf_counter() - t
        self.ready_at = time.time()  # wall clock: the driver measures generation from the first ready engine

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"rel": [], "entry": [], "error": [], "stats": [], "engine_start_s": [],
                                "ready_at": []}
        for rel, path, fp, num_rows in zip(batch["rel"], batch["path"], batch["fp"], batch["num_rows"]):
            rel = str(rel)
            manifest = _MarkerManifest(identity={})
            shard = InputShard(Path(str(path)), rel)
            job = ShardJob(shard, json.loads(str(fp)), int(num_rows), shard.out_path(self.out_dir))  # type: ignore[arg-type]
            pipeline = process_shards(self.engine, self.config, self.adapters, self.out_dir, manifest, [job])
            entry = manifest.shards.get(rel)
            out["rel"].append(rel)
            out["entry"].append(json.dumps(entry) if entry else "")
            out["error"].append(pipeline.failed[0][1] if pipeline.failed else "")
            out["stats"].append(json.dumps({
                "work": pipeline.stats.as_dict(),
                "by_adapter": {n: s.as_dict() for n, s in pipeline.by_adapter.items()},
                "shard": pipeline.done[0].stats.as_dict() if pipeline.done else None,
            }))
            out["engine_start_s"].append(self.start_s)
            out["ready_at"].append(self.ready_at)
        return out


def _actor_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[engine actor] %(levelname)s %(message)s"))
    lg = logging.getLogger("engine")
    lg.handlers[:] = [handler]
    lg.setLevel(logging.INFO)
    lg.propagate = False


# ---- on the driver -------------------------------------------------------------------------------------


def _stats(d: dict[str, Any]) -> RowStats:
    from collections import Counter

    return RowStats(**{**d, "errors_by_reason": Counter(d.get("errors_by_reason") or {})})


def _add(s: RowStats, into: RowStats) -> None:
    into.output_rows += s.output_rows
    into.ok += s.ok
    into.error += s.error
    into.errors_by_reason.update(s.errors_by_reason)
    into.prompt_tokens += s.prompt_tokens
    into.output_tokens += s.output_tokens
    into.retyped_metrics += s.retyped_metrics
    into.capped_retries += s.capped_retries


def actor_env(device: str) -> dict[str, str]:
    """Variables for the actors' runtime_env: what vLLM reads at import (engine.generate.prepare_process_env)
    and the model/cache locations, copied from the driver."""
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    if device == "cpu":
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in the actor's process
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    return env


def _adopt_markers(out: Path, manifest: RunManifest, discard: bool) -> None:
    """Fold in shards an actor committed whose summary never reached a (killed) driver; drop the markers."""
    folder = out / MARKER_DIR
    if not folder.is_dir():
        return
    for p in sorted(folder.rglob("*.json")):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
            rel, entry = m["rel"], m["entry"]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: unreadable Ray shard marker, ignored (its shard is redone)", p)
            p.unlink(missing_ok=True)
            continue
        target = out / entry.get("output", rel)
        if not discard and rel not in manifest.shards and target.exists() \
                and target.stat().st_size == entry.get("output_size"):
            log.info("%s: committed by a Ray actor after the driver stopped; recorded, not redone", target)
            manifest.shards[rel] = entry
        p.unlink(missing_ok=True)
    _remove_empty(folder)


def _remove_empty(folder: Path) -> None:
    """The marker folder once no marker is left (nested shards make nested folders)."""
    if not folder.is_dir():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def _ray_init(config: EngineConfig) -> bool:
    """Attach to or start Ray; True when this call started it (and so must shut it down)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("backend ray: Ray is not installed; pip install 'reportminer[ray]'") from None
    if ray.is_initialized():
        return False
    ray.init(address=config.ray_address, include_dashboard=False, logging_level=logging.WARNING)
    return True


def _dataset(plan: Plan, config: EngineConfig, todo: list[ShardJob], progress: bool) -> Any:
    """The shards to do as a Ray dataset mapped over the actor pool (one block, one task per shard)."""
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = progress
    gpus = config.ray_gpus_per_actor
    if gpus is None:
        gpus = float(config.tensor_parallel_size) if config.device == "cuda" else 0.0
    items = [{"rel": j.shard.rel, "path": str(j.shard.path.resolve()), "fp": json.dumps(j.fp),
              "num_rows": j.num_rows} for j in todo]
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardWorker,
        fn_constructor_kwargs={"config": config, "adapters": plan.adapters,
                               "merged": str(plan.merged) if plan.merged else None,
                               "out_dir": str(plan.out_dir.resolve())},
        batch_size=1,
        batch_format="numpy",
        # One shard in flight per actor: a shard queued behind a busy actor would idle while another is free.
        compute=ActorPoolStrategy(size=min(config.ray_actors, len(items)), max_tasks_in_flight_per_actor=1),
        num_cpus=config.ray_cpus_per_actor,
        num_gpus=gpus,
        runtime_env={"env_vars": actor_env(config.device)},
    )


class RayBackend:
    """The backend seam (backends.Backend) over Ray Data: `start` attaches to or starts Ray, `execute` maps the
    shards to do over the actor pool and records each as its summary arrives, `stop` shuts down a Ray this
    backend started. `run` does the rest, as for the local backend."""

    starts_vllm = True  # the actors' engines: run settles enforce_eager once per --out, as for local engines

    def __init__(self) -> None:
        self.started = False

    def check(self, input_path: str | Path, out_dir: str | Path) -> None:
        for where in (input_path, out_dir):
            if is_remote(str(where)):  # the markers and the tests cover shared folders only, so far
                raise ConfigError(f"backend ray: {where}: s3:// and gs:// are not supported with the ray backend "
                                  "yet; use a folder every node mounts, or backend local")

    def adopt(self, out_dir: Path, manifest: RunManifest, overwrite: bool) -> None:
        _adopt_markers(out_dir, manifest, discard=overwrite)

    def start(self, plan: Plan, config: EngineConfig) -> None:
        self.started = _ray_init(config)

    def stop(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def execute(self, plan: Plan, config: EngineConfig, todo: list[ShardJob], manifest: RunManifest,
                progress: bool) -> Outcome:
        """Map the shards over the actor pool; record each as its summary arrives."""
        out = plan.out_dir
        outcome = Outcome(by_adapter={n: RowStats() for n in config.adapter_names},
                          # the actors use no row cache yet (docs/engine.md): its stats say so
                          row_cache=RowCache.open(out, [], enabled=False).stats.as_dict())
        ds = _dataset(plan, config, todo, progress)
        by_rel = {j.shard.rel: j for j in todo}
        t0 = time.perf_counter()
        engine_start = 0.0
        first_ready: float | None = None  # time.time() of the first actor whose engine was up
        last_row = 0.0
        try:
            for row in ds.iter_rows():
                rel = str(row["rel"])
                stats = json.loads(str(row["stats"]))
                engine_start = max(engine_start, float(row["engine_start_s"]))
                ready = float(row["ready_at"])
                first_ready = ready if first_ready is None else min(first_ready, ready)
                last_row = time.time()
                _add(_stats(stats["work"]), outcome.stats)
                for n, st in stats["by_adapter"].items():
                    _add(_stats(st), outcome.by_adapter.setdefault(n, RowStats()))
                if row["error"]:
                    outcome.failed.append((rel, str(row["error"])))
                    log.error("shard failed: %s", row["error"])
                    continue
                manifest.shards[rel] = json.loads(str(row["entry"]))
                manifest.write(out)
                marker_path(out, rel).unlink(missing_ok=True)
                outcome.done.append(DoneShard(rel, by_rel[rel].num_rows, _stats(stats["shard"])))
                log.info("%s: committed by a Ray actor (%d/%d)", rel, len(outcome.done), len(todo))
        except KeyboardInterrupt:
            outcome.interrupted = True
        except Exception as e:  # an engine that cannot start, a lost cluster: committed shards stay recorded
            raise RunFailed(f"backend ray: the run failed after {len(outcome.done)} of {len(todo)} shard(s): "
                            f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}") from e
        finally:
            self.stop()
            _remove_empty(out / MARKER_DIR)
        wall = time.perf_counter() - t0
        outcome.engine_start_s = engine_start
        if first_ready is not None:
            # Generation time from the first engine that was up to the last shard: wall minus the slowest start
            # also counted Ray's worker start-up and imports (seconds, before the timer in the actor) and its
            # shutdown as generation, which understated rows/s, and the most for the most actors.
            outcome.gen_s = max(last_row - first_ready, 0.0)
        else:
            outcome.gen_s = max(wall - engine_start, 0.0)
        return outcome


__all__ = ["MARKER_DIR", "RayBackend", "ShardWorker", "actor_env"]
