"""The row pipeline: whole input shards through one started engine into committed output shards.

  read record batch -> render + tokenise -> (row, adapter) requests -> feeder (engine, batch kept full)
    -> completions in any order -> slots of their batch -> batches flushed in input order -> shard file
    -> shard committed (rename) -> run manifest rewritten

Only the batches between "read" and "flushed" are in memory (bounded by the feeder window and the
buffer cap), so memory does not depend on the size or number of shards. Every backend runs its rows
through `process_shards` (the local one in this process, the Ray one inside each actor), so every backend
writes the same files; what an engine must offer is the engine seam (seam.GenerationEngine).
"""
from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from reportminer.data.errors import DataError
from reportminer.data.schema import CHAPTER_TITLE, PARAGRAPH

from .adapters import Adapter
from .config import EngineConfig
from .decoding import adapter_thresholds, adapter_type_priors, row_from_completion
from .progress import Progress
from .row_cache import RowCache
from .rows import EMPTY_PARAGRAPH, OK, REJECTED, TOO_LONG, RowResult, error_row, output_schema, output_table
from .run_manifest import RunManifest, now
from .seam import (
    Completion,
    DoneShard,
    GenerationEngine,
    Outcome,
    Request,
    RequestFeeder,
    ShardJob,
    capped_retry_params,
)
from .shards import ShardReader, ShardWriter
from .summary import RowStats

log = logging.getLogger("engine")


class _Shard:
    """A shard in the pipeline: its job and the state of reading, writing and counting it."""

    def __init__(self, job: ShardJob):
        self.shard = job.shard
        self.fp = job.fp
        self.num_rows = job.num_rows
        self.out_path = job.out_path
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


class Pipeline:
    def __init__(self, engine: GenerationEngine, config: EngineConfig, adapters: list[Adapter], out_dir: Path,
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
        self.stats = RowStats()
        self.by_adapter = {n: RowStats() for n in names}
        self.done: list[_Shard] = []
        self.failed: list[tuple[str, str]] = []
        self.interrupted = False
        # Opened with the first request (`run`): a run whose every row the row cache serves never asks the
        # engine for anything, so a lazily started one (engines.LazyEngine) is never started (issue 17).
        self.feeder: RequestFeeder | None = None

    def open_feeder(self) -> RequestFeeder:
        # The window keeps vLLM's waiting queue deeper than one batch, so the scheduler never idles
        # between our submissions; the cap bounds finished rows waiting behind a slow one.
        window = self.config.chunk_size or 8 * self.engine.max_num_seqs
        self.buffer_cap = max(8 * window, 2 * self.config.batch_rows * self.width)
        # Without the length caps in the grammar (cheaper masks), answers with a string over a cap are decoded
        # once more under the capped grammar: the rows then equal the capped run's (seam.needs_capped_retry).
        c = self.config
        return self.engine.feeder(self.engine.sampling_params(c), window=window,
                                  may_submit=lambda: self.buffered < self.buffer_cap,
                                  stall_timeout_s=c.stall_timeout_s, retry_params=capped_retry_params(self.engine, c))

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
                    live = {i for i, p in enumerate(paragraphs) if p is not None and str(p).strip()}
                    # Each live row looked up once per column; rows the cache serves in every column are not
                    # tokenised: they need no engine (an ok row stored under this scope, which holds
                    # max_model_len and max_tokens, fit before). Counted below, when the row is filled.
                    hits = {i: [self.cache.lookup(j, self.names[j], titles[i], paragraphs[i])
                                for j in range(self.width)] for i in sorted(live)}
                    need = [i for i, row in hits.items() if any(h is None for h in row)]
                    ids = self.encode(titles, paragraphs, need) if need else []
                    token_ids: dict[int, list[int]] = dict(zip(need, ids))
                    for i in range(rb.num_rows):
                        prompt = token_ids.get(i)
                        if i not in live:
                            for j, name in enumerate(self.names):
                                self.fill(b, i * self.width + j, error_row(name, EMPTY_PARAGRAPH, "paragraph is empty"), False)
                        elif prompt is not None and len(prompt) > limit:
                            detail = (f"prompt {len(prompt)} tokens + max_tokens {self.config.max_tokens} > "
                                      f"max_model_len {self.config.max_model_len}")
                            for j, name in enumerate(self.names):
                                self.fill(b, i * self.width + j, error_row(name, TOO_LONG, detail, len(prompt)), False)
                        else:
                            for j, adapter in enumerate(self.run_adapters):
                                hit = hits[i][j]
                                self.cache.tally(hit)
                                if hit is not None:  # extracted before under the same scope: not resubmitted
                                    self.fill(b, i * self.width + j, hit, False)
                                else:
                                    assert prompt is not None  # a row with a miss is in `need`: tokenised above
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

    def encode(self, titles: list, paragraphs: list, rows: list[int]) -> list[list[int]]:
        return self.engine.encode_prompts((None if titles[i] is None else str(titles[i]) for i in rows),
                                          (str(paragraphs[i]) for i in rows))

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
            r.retried = c.retried
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
        if self.feeder is not None:
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
        if self.feeder is not None:
            self.feeder.close()
        self.cache.close()  # rows finished so far stay cached for the rerun
        for st in list(self.open):
            if st.writer is not None:
                st.writer.discard()
                st.writer = None

    def outcome(self, gen_s: float = 0.0, engine_start_s: float | None = None) -> Outcome:
        """What this pipeline did, as a backend reports it to `run` (seam.Outcome)."""
        return Outcome(
            done=[DoneShard(st.shard.rel, st.num_rows, st.stats) for st in self.done], failed=list(self.failed),
            stats=self.stats, by_adapter=self.by_adapter, row_cache=self.cache.stats.as_dict(), gen_s=gen_s,
            engine_start_s=engine_start_s, interrupted=self.interrupted)

    def run(self, todo: list[_Shard]) -> None:
        requests = self.requests(todo)
        first = next(requests, None)  # rows the cache serves are filled (and shards committed) on the way
        if first is not None:
            self.feeder = self.open_feeder()
            for c in self.feeder.run(itertools.chain([first], requests)):
                self.on_completion(c)
        self.flush()
        self.cache.close()
        if self.open:  # cannot happen unless the bookkeeping is wrong: say so rather than lose rows
            for st in list(self.open):
                self.fail(st, f"internal error: shard not finished ({st.batches_pending} batches pending)")


def process_shards(engine: GenerationEngine, config: EngineConfig, adapters: list[Adapter], out_dir: Path,
                   manifest: RunManifest, jobs: list[ShardJob], *, progress: bool = False,
                   cache: RowCache | None = None, return_on_interrupt: bool = False) -> Pipeline:
    """Whole shards through a started engine: what every backend runs (the local one here, the Ray one inside
    each actor), so every backend writes the same files.

    Each shard is committed by rename and recorded with `manifest.shards[rel] = entry; manifest.write(out_dir)`;
    the returned pipeline holds `done`, `failed` and the row stats (`outcome()`). On any exception temporary
    files are removed and it propagates, except Ctrl-C with `return_on_interrupt` (the pipeline then says
    `interrupted`, so the run can still count and record what it committed).
    """
    todo = [_Shard(job) for job in jobs]
    bar = Progress(sum(s.num_rows for s in todo) * len(config.adapter_names), enabled=progress)
    pipeline = Pipeline(engine, config, adapters, out_dir, manifest, bar, cache)
    try:
        pipeline.run(todo)
    except BaseException as e:
        pipeline.abandon()
        if not (return_on_interrupt and isinstance(e, KeyboardInterrupt)):
            raise
        pipeline.interrupted = True
    finally:
        bar.close()
    return pipeline


__all__ = ["Pipeline", "process_shards"]
