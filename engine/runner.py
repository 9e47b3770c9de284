"""`run`: input shards -> output shards through one Engine; resumable, idempotent, never stopped by a row.

The data path is a pipeline over a single engine:

  read record batch -> render + tokenise -> (row, adapter) requests -> Feeder (vLLM, batch kept full)
    -> completions in any order -> slots of their batch -> batches flushed in input order -> shard file
    -> shard committed (rename) -> run manifest rewritten

Only the batches between "read" and "flushed" are in memory (bounded by the feeder window and the
buffer cap), so memory does not depend on the size or number of shards.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from reportminer.data.errors import ConfigError, ConfigMismatch, DataError, RunFailed
from reportminer.data.schema import CHAPTER_TITLE, PARAGRAPH, SERVER_ERROR

from .adapters import Adapter, load_adapters
from .config import EAGER_BELOW_ROWS, EngineConfig
from .decoding import adapter_thresholds, adapter_type_priors, row_from_completion
from .generate import Completion, Engine, Request
from .merge import merged_model, serving_config
from .preflight import (
    IdReport,
    ShardInfo,
    check_adapters,
    check_out,
    inspect_shard,
    os_reason,
    safe_remove,
    scan_ids,
    vanished_outputs,
)
from .progress import Progress
from .row_cache import RowCache, column_scopes
from .rows import (
    EMPTY_PARAGRAPH,
    OK,
    REJECTED,
    TOO_LONG,
    RowResult,
    error_row,
    output_schema,
    output_table,
)
from .run_manifest import (
    HISTORY_NAME,
    MANIFEST_NAME,
    SUMMARY_NAME,
    OutLock,
    RunManifest,
    identity_diff,
    now,
    run_identity,
    write_json_or_fail,
)
from .shards import InputShard, ShardReader, ShardWriter, find_shards, fingerprint, stale_temp_files
from .storage import ObjectPath, append_line, location
from .summary import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROW_ERRORS,
    EXIT_SHARD_FAILED,
    RowStats,
    RunSummary,
)

log = logging.getLogger("engine")


class _Shard:
    def __init__(self, shard: InputShard, fp: dict, num_rows: int, out_path: Path):
        self.shard = shard
        self.fp = fp
        self.num_rows = num_rows
        self.out_path = out_path
        self.reader: ShardReader | None = None
        self.schema: pa.Schema | None = None
        self.writer: ShardWriter | None = None
        self.batches_pending = 0
        self.rows_read = 0
        self.reading_done = False
        self.failed: str | None = None
        self.stats = RowStats()


class _Batch:
    __slots__ = ("shard", "batch", "results", "remaining")

    def __init__(self, shard: _Shard, batch: pa.RecordBatch, width: int):
        self.shard = shard
        self.batch = batch
        self.results: list[RowResult | None] = [None] * (batch.num_rows * width)
        self.remaining = len(self.results)


class _Pipeline:
    def __init__(self, engine: Engine, config: EngineConfig, adapters: list[Adapter], out_dir: Path,
                 manifest: RunManifest, progress: Progress, cache: RowCache | None = None):
        self.engine = engine
        self.config = config
        self.out_dir = out_dir
        self.manifest = manifest
        self.progress = progress
        names = config.adapter_names
        by_name = {a.name: a for a in adapters}
        self.run_adapters: list[Adapter | None] = [by_name.get(n) for n in names]  # None = base model
        if config.merge_adapter:  # the adapter is in the served weights (engine/merge.py); its rows need no LoRA
            self.run_adapters = [None]
        self.names = names
        self.width = len(names)
        self.cache = cache or RowCache.open(out_dir, [], enabled=False)  # engine/row_cache.py
        self.thresholds, _ = adapter_thresholds(config, adapters)  # score_threshold per adapter (decoding.py)
        self.priors = adapter_type_priors(config, adapters)  # learned metric types per adapter (decoding.py)
        self.queue: deque[_Batch] = deque()
        self.open: deque[_Shard] = deque()
        self.buffered = 0
        # The window keeps vLLM's waiting queue deeper than one batch, so the scheduler never idles
        # between our submissions; the cap bounds finished rows waiting behind a slow one.
        window = config.chunk_size or 8 * engine.max_num_seqs
        self.buffer_cap = max(8 * window, 2 * config.batch_rows * self.width)
        self.stats = RowStats()
        self.by_adapter = {n: RowStats() for n in names}
        self.done: list[_Shard] = []
        self.failed: list[tuple[str, str]] = []
        self.feeder = engine.feeder(engine.sampling_params(config), window=window,
                                    may_submit=lambda: self.buffered < self.buffer_cap,
                                    stall_timeout_s=config.stall_timeout_s)

    # ---- producing requests ---------------------------------------------------------------------------

    def requests(self, todo: list[_Shard]) -> Iterator[Request]:
        limit = self.config.max_model_len - self.config.max_tokens  # type: ignore[operator]
        for st in todo:
            try:
                st.reader = ShardReader(st.shard, self.config.batch_rows)
                st.schema, renames = output_schema(st.reader.schema, raw_samples=self.config.samples > 1)
            except DataError as e:
                self.fail(st, str(e))
                continue
            if renames:
                log.warning("%s: input column(s) renamed in the output to keep engine columns: %s", st.shard.path, renames)
            self.open.append(st)
            self.progress.set_description(f"engine {st.shard.rel}")
            try:
                for rb in st.reader.batches():
                    b = _Batch(st, rb, self.width)
                    self.queue.append(b)
                    st.batches_pending += 1
                    st.rows_read += rb.num_rows
                    titles = rb.column(CHAPTER_TITLE).to_pylist()
                    paragraphs = rb.column(PARAGRAPH).to_pylist()
                    live = [i for i, p in enumerate(paragraphs) if p is not None and str(p).strip()]
                    ids = self.engine.encode_prompts(
                        (None if titles[i] is None else str(titles[i]) for i in live), (str(paragraphs[i]) for i in live)
                    )
                    token_ids: dict[int, list[int]] = dict(zip(live, ids))
                    for i in range(rb.num_rows):
                        prompt = token_ids.get(i)
                        if prompt is None:
                            for j, name in enumerate(self.names):
                                self.fill(b, i * self.width + j, error_row(name, EMPTY_PARAGRAPH, "paragraph is empty"), False)
                        elif len(prompt) > limit:
                            detail = (f"prompt {len(prompt)} tokens + max_tokens {self.config.max_tokens} > "
                                      f"max_model_len {self.config.max_model_len}")
                            for j, name in enumerate(self.names):
                                self.fill(b, i * self.width + j, error_row(name, TOO_LONG, detail, len(prompt)), False)
                        else:
                            for j, adapter in enumerate(self.run_adapters):
                                hit = self.cache.get(j, self.names[j], titles[i], paragraphs[i])
                                if hit is not None:  # extracted before under the same scope: not resubmitted
                                    self.fill(b, i * self.width + j, hit, False)
                                else:
                                    yield Request((b, i * self.width + j), prompt, adapter)
                    self.flush()
            except DataError as e:
                self.fail(st, str(e))
                continue
            st.reading_done = True
            if st.rows_read != st.num_rows:
                self.fail(st, f"{st.shard.path}: read {st.rows_read} rows, the footer says {st.num_rows}")
                continue
            self.flush()

    # ---- consuming results ----------------------------------------------------------------------------

    def fill(self, b: _Batch, slot: int, r: RowResult, submitted: bool) -> None:
        b.results[slot] = r
        b.remaining -= 1
        self.buffered += 1
        self.stats.add(r, submitted)
        self.by_adapter[r.adapter].add(r, submitted)
        b.shard.stats.add(r, submitted)
        self.progress.update(1, r.output_tokens or 0)

    def on_completion(self, c: Completion) -> None:
        b, slot = c.key
        if b.shard.failed:
            return
        name = self.names[slot % self.width]
        if c.rejected is not None:
            r = error_row(name, c.reason or REJECTED, c.rejected, c.prompt_tokens)
        else:
            r = row_from_completion(name, c, self.config, self.thresholds[name], self.priors[name])
            if r.status == OK:
                i = slot // self.width
                self.cache.put(slot % self.width, b.batch.column(CHAPTER_TITLE)[i].as_py(),
                               b.batch.column(PARAGRAPH)[i].as_py(), r)
        self.fill(b, slot, r, submitted=c.rejected is None)
        if b is self.queue[0] and b.remaining == 0:
            self.flush()

    def flush(self) -> None:
        """Write finished batches in input order; commit shards whose every batch is written."""
        while self.queue and self.queue[0].remaining == 0:
            b = self.queue.popleft()
            st = b.shard
            if st.writer is None:
                st.writer = ShardWriter(st.out_path, st.schema)
            st.writer.write(output_table(b.batch, b.results, self.width, st.schema))  # type: ignore[arg-type]
            self.buffered -= len(b.results)
            st.batches_pending -= 1
        while self.open and self.open[0].reading_done and self.open[0].batches_pending == 0:
            self.commit(self.open.popleft())

    def commit(self, st: _Shard) -> None:
        if st.writer is None:  # a shard with no rows still gets its (empty) output file
            st.writer = ShardWriter(st.out_path, st.schema)
        expected = st.num_rows * self.width
        if st.writer.rows != expected:  # the invariant every consumer relies on; never commit without it
            self.fail(st, f"internal error: {st.writer.rows} output rows, expected {expected}")
            return
        st.writer.commit()
        if st.reader:
            st.reader.close()
        self.manifest.shards[st.shard.rel] = {
            "input": st.fp,
            "output": st.out_path.relative_to(self.out_dir).as_posix(),
            "output_size": st.out_path.stat().st_size,
            "rows": st.num_rows,
            "output_rows": expected,
            "ok": st.stats.ok,
            "error": st.stats.error,
            "errors_by_reason": dict(st.stats.errors_by_reason),
            "completed_at": now(),
        }
        self.manifest.write(self.out_dir)
        self.done.append(st)
        log.info("%s: %d rows written (ok %d, error %d)", st.out_path, expected, st.stats.ok, st.stats.error)

    def fail(self, st: _Shard, error: str) -> None:
        """Drop a shard that cannot be read: abort its requests, forget its rows, keep the others going."""
        st.failed = error
        log.error("shard failed: %s", error)
        self.failed.append((st.shard.rel, error))
        self.feeder.abort(lambda key: key[0].shard is st)
        kept: deque[_Batch] = deque()
        for b in self.queue:
            if b.shard is st:
                self.buffered -= len(b.results) - b.remaining
            else:
                kept.append(b)
        self.queue = kept
        if st in self.open:
            self.open.remove(st)
        if st.writer is not None:
            st.writer.discard()
            st.writer = None
        if st.reader is not None:
            st.reader.close()
        self.progress.shrink(st.num_rows * self.width - st.stats.output_rows)
        self.flush()

    def abandon(self) -> None:
        """On interrupt or fatal error: abort requests, delete temporary files of unfinished shards."""
        self.feeder.close()
        self.cache.close()  # rows finished so far stay cached for the rerun
        for st in list(self.open):
            if st.writer is not None:
                st.writer.discard()
                st.writer = None

    def run(self, todo: list[_Shard]) -> None:
        for c in self.feeder.run(self.requests(todo)):
            self.on_completion(c)
        self.flush()
        self.cache.close()
        if self.open:  # cannot happen unless the bookkeeping is wrong: say so rather than lose rows
            for st in list(self.open):
                self.fail(st, f"internal error: shard not finished ({st.batches_pending} batches pending)")


def process_shards(engine: Engine, config: EngineConfig, adapters: list[Adapter], out_dir: Path,
                   manifest: RunManifest, shards: list[tuple[InputShard, dict, int]], progress: bool = False) -> _Pipeline:
    """Whole shards, each `(shard, input fingerprint, row count)`, through a started engine: the seam other
    backends use (engine/ray_backend.py runs it inside each actor), so every backend writes the same files.

    Each shard is committed by rename and recorded with `manifest.shards[rel] = entry; manifest.write(out_dir)`;
    the returned pipeline holds `done`, `failed` and the row stats. On any exception, temporary files are removed.
    """
    todo = [_Shard(s, fp, n, s.out_path(out_dir)) for s, fp, n in shards]  # type: ignore[arg-type]  # or an ObjectPath
    bar = Progress(sum(s.num_rows for s in todo) * len(config.adapter_names), enabled=progress)
    pipeline = _Pipeline(engine, config, adapters, out_dir, manifest, bar)
    try:
        pipeline.run(todo)
    except BaseException:
        pipeline.abandon()
        raise
    finally:
        bar.close()
    return pipeline


def _check_paths(input_path: Path, out_dir: Path, shards: list[InputShard]) -> None:
    if input_path.is_dir():
        i, o = input_path.resolve(), out_dir.resolve()
        if o == i or i in o.parents:
            raise ConfigError(f"--out {out_dir} is inside --input {input_path}: outputs would be read as inputs next time")
    for sh in shards:  # e.g. --input out/x.parquet --out out: the output would replace its own input
        if sh.out_path(out_dir).resolve() == sh.path.resolve():
            raise ConfigError(f"--out {out_dir}: the output of {sh.path} would be written over that input file; "
                              "choose another --out")


def _prepare_out(out_dir: Path, identity: dict, config: EngineConfig, adapters: list[Adapter], overwrite: bool,
                 inputs: set[Path | ObjectPath] | None = None, warnings: list[str] | None = None) -> RunManifest:
    for tmp in stale_temp_files(out_dir):  # left by a killed run; we hold the lock, so nobody writes them
        log.info("removing temporary file of an interrupted run: %s", tmp)
        tmp.unlink(missing_ok=True)
    manifest = RunManifest.read(out_dir)
    if manifest is not None and manifest.identity != identity and not overwrite \
            and not any((out_dir / e["output"]).exists() for e in manifest.shards.values()):
        # A run that failed before it wrote a shard left nothing to mix with: the corrected rerun goes on.
        log.info("%s: the run manifest lists no existing results; starting a new one", out_dir)
        manifest = None
    if manifest is not None and manifest.identity != identity and not overwrite:
        raise ConfigMismatch(
            f"{out_dir} holds results of another configuration; use another --out, or --overwrite to discard them. "
            "Differences: " + "; ".join(identity_diff(manifest.identity, identity))
        )
    if manifest is None and not overwrite:
        stray = [p for p in out_dir.rglob("*.parquet")]
        if stray:
            raise ConfigMismatch(
                f"{out_dir} holds Parquet files ({stray[0].name}, ...) but no {MANIFEST_NAME}; "
                "point --out at an empty or engine-made folder, or pass --overwrite"
            )
    if overwrite and manifest is not None:
        for entry in manifest.shards.values():  # resolved paths inside --out only, never an input file
            warning = safe_remove(out_dir, str(entry.get("output", "")), inputs or set())
            if warning:
                log.warning(warning)
                if warnings is not None:
                    warnings.append(warning)
        manifest = None
    if manifest is None:
        manifest = RunManifest(identity=identity)
    manifest.model_path = config.model
    manifest.adapter_paths = {a.name: str(a.path) for a in adapters}
    return manifest


@dataclass
class _Plan:
    """What a run will do, decided before the --out lock is taken and before any engine starts."""

    config: EngineConfig  # resolved: device defaults filled in
    input_path: Path
    out_dir: Path
    shards: list[InputShard]
    adapters: list[Adapter]
    warnings: list[str]
    identity: dict[str, Any]
    merged: Path | None = None  # --merge-adapter: the cached base+adapter model the engine serves
    infos: dict[str, ShardInfo] | None = None  # rows, schema problem, ids of each shard (engine/preflight.py)
    ids: IdReport | None = None


def _plan(config: EngineConfig, input_path: Path, out_dir: Path, engine: Engine | None,
          strict_ids: bool = False) -> _Plan:
    """Resolve the settings, find and inspect the input shards, check the adapters: every refusal happens here."""
    check_adapters(config.adapters, config.max_lora_rank)  # before resolve(), which reads their configs
    config = config.resolve()
    shards, notes = find_shards(input_path, exclude=out_dir.resolve())
    _check_paths(input_path, out_dir, shards)
    infos = {s.rel: inspect_shard(s.path, s.rel, s.kind) for s in shards}
    ids = scan_ids([(rel, i.ids) for rel, i in infos.items() if i.ids is not None])
    for i in infos.values():
        i.ids = None  # the report is made; do not hold every id for the whole run
    if not ids.clean:
        if strict_ids:
            raise DataError(f"{input_path}: --strict-ids: {ids.line()}")
        notes.append(f"ids: {ids.line()}")
    adapters, warnings = load_adapters(config.adapters, config.model)  # type: ignore[arg-type]
    warnings = notes + warnings
    warnings += adapter_thresholds(config, adapters)[1]
    for w in warnings:
        log.warning(w)
    # --merge-adapter: the adapter folded into the base weights once (engine/merge.py), cached by hash
    merged = merged_model(config.model, adapters[0], config.dtype)[0] if config.merge_adapter else None  # type: ignore[arg-type]
    if engine is not None:
        engine.check_compatible(serving_config(config, merged), [] if merged else adapters)
    elif config.device == "cpu" and config.include_base and adapters and (config.max_loras or 0) <= len(adapters):
        raise ConfigError(
            f"max_loras {config.max_loras}: on CPU, base rows beside {len(adapters)} adapter(s) need max_loras > "
            f"{len(adapters)} (one LoRA slot must stay empty; see Engine.reset_loras)"
        )
    return _Plan(config, input_path, out_dir, shards, adapters, list(warnings), run_identity(config, adapters), merged,
                 infos, ids)


def _select(plan: _Plan, manifest: RunManifest, summary: RunSummary,
            prune: bool = False) -> tuple[list[_Shard], list[tuple[str, str]]]:
    """The shards to (re)do, skipping finished ones with unchanged input; unreadable ones fail here.

    Finished outputs whose input shard is gone are reported (`inputs_vanished`) and, with `prune`,
    deleted and forgotten; the manifest is not written here (only once the engine is up, see `run`).
    """
    todo: list[_Shard] = []
    failed_early: list[tuple[str, str]] = []
    if plan.input_path.is_dir():  # (a single-file --input says nothing about the other shards in --out)
        summary.inputs_vanished, summary.pruned, notes = vanished_outputs(
            plan.out_dir, manifest.shards, {s.rel for s in plan.shards}, _input_paths(plan), prune)
        summary.warnings += notes
    infos = plan.infos or {}
    for shard in plan.shards:
        entry = manifest.shards.get(shard.rel)
        info = infos.get(shard.rel) or inspect_shard(shard.path, shard.rel, shard.kind)
        if info.error:  # unreadable file or footer, missing or non-text columns: this shard fails, the others run
            failed_early.append((shard.rel, info.error))
            continue
        num_rows = info.num_rows
        try:
            fp = fingerprint(shard.path)
        except OSError as e:
            failed_early.append((shard.rel, f"{shard.path}: cannot read: {e.strerror}"))
            continue
        out_path = shard.out_path(plan.out_dir)
        server_errors = (entry or {}).get("errors_by_reason", {}).get(SERVER_ERROR, 0)  # transient: redo (server.py)
        if entry and entry["input"].get("sha256") == fp["sha256"] and out_path.exists() \
                and out_path.stat().st_size == entry.get("output_size") and not server_errors:
            entry["input"] = fp  # same content, maybe a new mtime: remember it for the fast path
            summary.shards_skipped += 1
            continue
        if entry:
            log.info("%s: %s; redoing it", shard.path, f"{server_errors} row(s) failed on the server"
                     if server_errors else "input changed since it was processed")
            del manifest.shards[shard.rel]
        todo.append(_Shard(shard, fp, num_rows, out_path))  # type: ignore[arg-type]  # or an ObjectPath
    for _rel, err in failed_early:
        log.error("shard failed: %s", err)
    return todo, failed_early


def _start(
    config: EngineConfig, todo: list[_Shard], engine: Engine | None, summary: RunSummary, merged: Path | None = None
) -> tuple[Engine, EngineConfig]:
    """The engine for this run: the one passed in, or a new one (eager on CPU for short runs)."""
    t_engine = time.perf_counter()
    if engine is None and config.server:  # server mode: vLLM runs in `vllm serve` (engine/server.py)
        from .server import ServerEngine

        engine = ServerEngine(config)
        summary.engine_start_s = time.perf_counter() - t_engine
    if engine is None:
        if config.enforce_eager is None:
            work = sum(s.num_rows for s in todo) * len(config.adapter_names)
            config = replace(config, enforce_eager=config.device == "cpu" and work < EAGER_BELOW_ROWS)
            summary.settings["enforce_eager"] = config.enforce_eager
        engine = Engine(serving_config(config, merged))
        summary.engine_start_s = time.perf_counter() - t_engine
    engine.reset_loras()
    return engine, config


def _feed(engine: Engine, plan: _Plan, config: EngineConfig, manifest: RunManifest, todo: list[_Shard],
          progress: bool) -> tuple[_Pipeline, float, bool]:
    """Every row of `todo` through the engine into shard files: (pipeline, generation seconds, interrupted)."""
    bar = Progress(sum(s.num_rows for s in todo) * len(config.adapter_names), enabled=progress)
    t_gen = time.perf_counter()
    by_name = {a.name: a for a in plan.adapters}
    cache = RowCache.open(plan.out_dir, column_scopes(plan.identity, config.adapter_names, by_name), config.row_cache)
    cache.seed(plan.out_dir, [e["output"] for e in manifest.shards.values()], config.adapter_names)
    pipeline = _Pipeline(engine, config, plan.adapters, plan.out_dir, manifest, bar, cache)
    interrupted = False
    try:
        pipeline.run(todo)
    except BaseException as e:
        pipeline.abandon()
        if not isinstance(e, KeyboardInterrupt):
            raise
        interrupted = True
    finally:
        bar.close()
    return pipeline, time.perf_counter() - t_gen, interrupted


def _summarise(summary: RunSummary, pipeline: _Pipeline | None, failed_early: list[tuple[str, str]],
               manifest: RunManifest, todo: list[_Shard], gen_s: float, interrupted: bool) -> None:
    """Counts, rates and the status / exit code of the run."""
    # Rows are counted from committed shards (what --out now holds from this run); tokens and rates
    # from all work done, including shards that failed or were interrupted part-way.
    work = pipeline.stats if pipeline else RowStats()
    s = RowStats()
    for st in pipeline.done if pipeline else []:
        s.output_rows += st.stats.output_rows
        s.ok += st.stats.ok
        s.error += st.stats.error
        s.errors_by_reason.update(st.stats.errors_by_reason)
    summary.shards_done = len(pipeline.done) if pipeline else 0
    summary.shards_failed = [{"shard": r, "error": e} for r, e in failed_early + (pipeline.failed if pipeline else [])]
    summary.rows = sum(st.num_rows for st in pipeline.done) if pipeline else 0
    summary.output_rows, summary.ok, summary.error = s.output_rows, s.ok, s.error
    summary.errors_by_reason = dict(sorted(s.errors_by_reason.items()))
    summary.by_adapter = {n: st.as_dict() for n, st in pipeline.by_adapter.items()} if pipeline else {}
    summary.row_cache = pipeline.cache.stats.as_dict() if pipeline else {}
    summary.prompt_tokens, summary.output_tokens = work.prompt_tokens, work.output_tokens
    summary.rows_per_s = work.output_rows / gen_s if gen_s else 0.0
    summary.output_tokens_per_s = work.output_tokens / gen_s if gen_s else 0.0
    summary.out_totals = manifest.totals()
    if interrupted:
        summary.status, summary.exit_code = "interrupted", EXIT_INTERRUPTED
    elif summary.shards_failed:
        summary.status, summary.exit_code = "shard_failed", EXIT_SHARD_FAILED
    elif s.error:
        summary.status, summary.exit_code = "row_errors", EXIT_ROW_ERRORS
    elif not todo:
        summary.status = "nothing_to_do"


def _record(out_dir: Path, summary: RunSummary) -> None:
    """_engine_summary.json (this run) and a line of _engine_runs.jsonl (every run)."""
    write_json_or_fail(out_dir / SUMMARY_NAME, asdict(summary))
    try:
        append_line(out_dir / HISTORY_NAME, json.dumps(asdict(summary), ensure_ascii=False))
    except OSError as e:
        raise RunFailed(f"{out_dir / HISTORY_NAME}: cannot write: {os_reason(e)}") from None


def _input_paths(plan: _Plan) -> set[Path | ObjectPath]:
    return {s.path.resolve() for s in plan.shards}


def _new_summary(plan: _Plan, started_at: str) -> RunSummary:
    """The summary every backend starts from (local here, Ray in engine/ray_backend.py)."""
    c = plan.config
    summary = RunSummary(
        status="ok", exit_code=EXIT_OK, input=str(plan.input_path), out=str(plan.out_dir), model=str(c.model),
        adapters=[a.describe() for a in plan.adapters], adapter_columns=c.adapter_names,
        shards_total=len(plan.shards), warnings=list(plan.warnings), settings=c.to_dict(), started_at=started_at,
    )
    if plan.ids is not None and plan.ids.rows:
        summary.ids = plan.ids.as_dict()
    return summary


def _finish(out: Path, summary: RunSummary, t0: float, interrupted: bool) -> RunSummary:
    """Every backend ends the same way: times, the summary and run log on disk, Ctrl-C re-raised with it."""
    summary.wall_s = time.perf_counter() - t0
    summary.finished_at = now()
    _record(out, summary)
    if interrupted:
        raise KeyboardInterrupt(summary.render())
    return summary


def run(
    config: EngineConfig,
    input_path: str | Path,
    out_dir: str | Path,
    *,
    engine: Engine | None = None,
    overwrite: bool = False,
    progress: bool = True,
    prune: bool = False,
    strict_ids: bool = False,
) -> RunSummary:
    """Run every row of every shard under `input_path` through the model (and each adapter) into `out_dir`.

    Raises before any row runs when the run cannot be right (ConfigError, AdapterMismatch,
    ConfigMismatch, OutputLocked, DataError for a missing input). Row errors and unreadable shards do not
    raise: they are counted in the returned summary, whose `exit_code` says what happened. Pass an
    `engine` to reuse a started one (its engine-level settings must match `config`).

    Steps: plan (settings, shards, adapters) -> lock --out and select the shards to do -> start the
    engine -> feed it every row -> summarise and record.
    """
    if config.backend == "ray" and engine is None:  # Ray Data over an actor pool, same files (engine/ray_backend.py)
        from .ray_backend import run_ray

        return run_ray(config, input_path, out_dir, overwrite=overwrite, progress=progress, prune=prune,
                       strict_ids=strict_ids)
    t0 = time.perf_counter()
    started_at = now()
    # s3:// and gs:// become storage.ObjectPath, which has the Path methods the run uses (engine/storage.py)
    plan = _plan(config, location(input_path), location(out_dir), engine, strict_ids)  # type: ignore[arg-type]
    config, out = plan.config, plan.out_dir
    check_out(out)  # a folder we can write in (created if missing), else refused (exit 2)

    summary = _new_summary(plan, started_at)
    with OutLock(out):
        manifest = _prepare_out(out, plan.identity, config, plan.adapters, overwrite, _input_paths(plan), summary.warnings)
        todo, failed_early = _select(plan, manifest, summary, prune)
        pipeline, gen_s, interrupted = None, 0.0, False
        if todo:
            engine, config = _start(config, todo, engine, summary, plan.merged)
            # Written only once the engine is up: a run that fails to start leaves nothing that would make
            # its corrected rerun look like "another configuration" (issue 9).
            manifest.write(out)
            pipeline, gen_s, interrupted = _feed(engine, plan, config, manifest, todo, progress)
        elif (out / MANIFEST_NAME).exists():  # nothing to run: keep fingerprints and prunes
            manifest.write(out)
        _summarise(summary, pipeline, failed_early, manifest, todo, gen_s, interrupted)
        return _finish(out, summary, t0, interrupted)  # recorded under the lock; Ctrl-C re-raised after it


__all__ = ["run", "ConfigMismatch"]
