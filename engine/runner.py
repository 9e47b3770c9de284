"""`run`: input shards -> output shards; resumable, idempotent, never stopped by a row. One run, any backend.

Steps, the same for every backend (backends.py): plan (settings, shards, adapters: every refusal before
anything starts: plan.make_plan) -> lock --out, read the run manifest and select the shards to do
(plan.prepare_out, plan.select) -> start the backend's engines -> execute the shards (each committed and
recorded as it finishes: pipeline.py) -> summarise and record (`_engine_summary.json`, `_engine_runs.jsonl`).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from reportminer.data.errors import ConfigMismatch, RunFailed

from .backends import make_backend
from .config import EngineConfig
from .plan import Plan, input_paths, make_plan, prepare_out, select
from .preflight import check_out, os_reason
from .run_manifest import (
    HISTORY_NAME,
    MANIFEST_NAME,
    SUMMARY_NAME,
    OutLock,
    RunManifest,
    now,
    run_identity,
    settle_eager,
    write_json_or_fail,
)
from .seam import GenerationEngine, Outcome, ShardJob
from .storage import append_line, location
from .summary import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROW_ERRORS, EXIT_SHARD_FAILED, RowStats, RunSummary

log = logging.getLogger("engine")


def run(
    config: EngineConfig,
    input_path: str | Path,
    out_dir: str | Path,
    *,
    engine: GenerationEngine | None = None,
    overwrite: bool = False,
    progress: bool = True,
    prune: bool = False,
    strict_ids: bool = False,
) -> RunSummary:
    """Run every row of every shard under `input_path` through the model (and each adapter) into `out_dir`.

    Raises before any row runs when the run cannot be right (ConfigError, AdapterMismatch,
    ConfigMismatch, OutputLocked, DataError for a missing input). Row errors and unreadable shards do not
    raise: they are counted in the returned summary, whose `exit_code` says what happened. Pass an
    `engine` to reuse a started one (its engine-level settings must match `config`); else `backend` and
    `server` choose where the rows run (backends.make_backend).
    """
    backend = make_backend(config, engine)
    backend.check(input_path, out_dir)
    t0 = time.perf_counter()
    started_at = now()
    # s3:// and gs:// become storage.ObjectPath, which has the Path methods the run uses (engine/storage.py)
    plan = make_plan(config, location(input_path), location(out_dir), engine, strict_ids)  # type: ignore[arg-type]
    config, out = plan.config, plan.out_dir
    check_out(out)  # a folder we can write in (created if missing), else refused (exit 2)

    summary = new_summary(plan, started_at)
    with OutLock(out):
        started_as = getattr(getattr(engine, "config", None), "enforce_eager", None)
        if config.enforce_eager is None and (backend.starts_vllm or isinstance(started_as, bool)):
            # One rule for every backend, decided once per --out (run_manifest.settle_eager): the choice its
            # manifest records, else by the whole input's size. Never by the rows left, so a resumed run
            # computes its rows as the first one did (issue 19); and it is in the identity the manifest checks.
            # A handed-in engine was started one way already: that is the choice (a None here made a library
            # resume of a CLI run's --out "another configuration": enforce_eager False -> None).
            rows = sum(i.num_rows for i in (plan.infos or {}).values()) * len(config.adapter_names)
            config = settle_eager(config, out, rows) if backend.starts_vllm else replace(config, enforce_eager=started_as)
            plan = replace(plan, config=config, identity=run_identity(config, plan.adapters))
            summary.settings["enforce_eager"] = config.enforce_eager
        manifest = prepare_out(out, plan.identity, config, plan.adapters, overwrite, input_paths(plan), summary.warnings)
        backend.adopt(out, manifest, overwrite)
        todo, failed_early = select(plan, manifest, summary, prune)
        outcome: Outcome | None = None
        if todo:
            backend.start(plan, config)
            try:
                # Written only once the engines are up: a run that fails to start leaves nothing that would make
                # its corrected rerun look like "another configuration" (issue 9). A local vLLM starts at the
                # first row the row cache cannot serve (backends.LocalBackend writes it then, or at the first commit).
                if getattr(backend, "lazy", None) is None:
                    manifest.write(out)
                outcome = backend.execute(plan, config, todo, manifest, progress)
            finally:
                backend.stop()
        elif (out / MANIFEST_NAME).exists():  # nothing to run: keep fingerprints and prunes
            manifest.write(out)
        summarise(summary, outcome, failed_early, manifest, todo)
        # recorded under the lock; Ctrl-C re-raised after it
        return finish(out, summary, t0, outcome.interrupted if outcome else False)


def new_summary(plan: Plan, started_at: str) -> RunSummary:
    """The summary a run starts from: what was planned, before any shard is done."""
    c = plan.config
    summary = RunSummary(
        status="ok", exit_code=EXIT_OK, input=str(plan.input_path), out=str(plan.out_dir), model=str(c.model),
        adapters=[a.describe() for a in plan.adapters], adapter_columns=c.adapter_names,
        shards_total=len(plan.shards), warnings=list(plan.warnings), settings=c.to_dict(), started_at=started_at,
    )
    if plan.ids is not None and plan.ids.rows:
        summary.ids = plan.ids.as_dict()
    return summary


def summarise(summary: RunSummary, outcome: Outcome | None, failed_early: list[tuple[str, str]],
              manifest: RunManifest, todo: list[ShardJob]) -> None:
    """Counts, rates and the status / exit code of the run."""
    # Rows are counted from committed shards (what --out now holds from this run); tokens and rates
    # from all work done, including shards that failed or were interrupted part-way.
    o = outcome or Outcome()
    work = o.stats
    s = RowStats()
    for d in o.done:
        s.output_rows += d.stats.output_rows
        s.ok += d.stats.ok
        s.error += d.stats.error
        s.errors_by_reason.update(d.stats.errors_by_reason)
    summary.shards_done = len(o.done)
    summary.shards_failed = [{"shard": r, "error": e} for r, e in failed_early + o.failed]
    summary.rows = sum(d.num_rows for d in o.done)
    summary.output_rows, summary.ok, summary.error = s.output_rows, s.ok, s.error
    summary.errors_by_reason = dict(sorted(s.errors_by_reason.items()))
    summary.by_adapter = {n: st.as_dict() for n, st in o.by_adapter.items()}
    summary.row_cache = o.row_cache
    summary.prompt_tokens, summary.output_tokens = work.prompt_tokens, work.output_tokens
    summary.capped_retries = work.capped_retries
    if o.engine_start_s is not None:
        summary.engine_start_s = o.engine_start_s
    summary.rows_per_s = work.output_rows / o.gen_s if o.gen_s else 0.0
    summary.output_tokens_per_s = work.output_tokens / o.gen_s if o.gen_s else 0.0
    summary.out_totals = manifest.totals()
    if o.interrupted:
        summary.status, summary.exit_code = "interrupted", EXIT_INTERRUPTED
    elif summary.shards_failed:
        summary.status, summary.exit_code = "shard_failed", EXIT_SHARD_FAILED
    elif s.error:
        summary.status, summary.exit_code = "row_errors", EXIT_ROW_ERRORS
    elif not todo:
        summary.status = "nothing_to_do"


def record(out_dir: Path, summary: RunSummary) -> None:
    """_engine_summary.json (this run) and a line of _engine_runs.jsonl (every run)."""
    write_json_or_fail(out_dir / SUMMARY_NAME, asdict(summary))
    try:
        append_line(out_dir / HISTORY_NAME, json.dumps(asdict(summary), ensure_ascii=False))
    except OSError as e:
        raise RunFailed(f"{out_dir / HISTORY_NAME}: cannot write: {os_reason(e)}") from None


def finish(out: Path, summary: RunSummary, t0: float, interrupted: bool) -> RunSummary:
    """Every run ends the same way: times, the summary and run log on disk, Ctrl-C re-raised with it."""
    summary.wall_s = time.perf_counter() - t0
    summary.finished_at = now()
    record(out, summary)
    if interrupted:
        raise KeyboardInterrupt(summary.render())
    return summary


__all__ = ["ConfigMismatch", "run"]
