"""The row cache: a paragraph already extracted under the same scope is served, not recomputed.

Resume works per shard (engine/shards.py), so a paragraph that arrives in another shard, or in a shard
that changed for another row's sake, would run through the model again. The cache closes that gap: an
`ok` row is stored under

    key = sha256(scope, the user text the prompt is built from)[:16]
    scope = sha256(model identity, adapter content hash and rank (none for base), prompt and schema
            fingerprints, the settings that decide a row: sampling, max_tokens, max_model_len, dtype,
            samples, score_threshold of that column, merged weights)[:16]

i.e. everything `engine/run_manifest.py: run_identity` says decides a row's output, narrowed to one
output column (the adapter's *content*, not its name: a renamed adapter still hits, one retrained in
place misses). Error rows are never stored: they are what a rerun should retry.

Storage, beside the outputs: `OUT/_rowcache/seg-*.arrow`, append-only Arrow IPC files (not `.parquet`,
so readers of `OUT/**/*.parquet` never see them), each written to a hidden temporary file, fsynced and
renamed into place: a crash leaves a whole segment or none (the temporary file is removed by the next
run's stale-file sweep). A segment that still cannot be read (a torn copy, a damaged disk) is ignored
with a warning and the rows it held are recomputed. Segments are memory-mapped: only the key index
(about 100 bytes a cached row) lives in Python memory. When a run finds more than `COMPACT_ABOVE`
segments it merges them into one first (new segment committed, then old ones deleted: a crash in
between leaves duplicates, which are harmless).

Clearing: `rm -r OUT/_rowcache` (nothing else refers to it); `row_cache: false` turns it off for a run.
Local --out only so far: on s3:// and gs:// (engine/storage.py) the cache is off with a warning; there,
segments would be downloaded at open and uploaded whole at flush (a whole-object PUT is atomic).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from reportminer.data.io import atomic_path
from reportminer.data.prompt import user_text
from reportminer.data.schema import OK

from .rows import RowResult
from .shards import fsync_dir

log = logging.getLogger("engine")

CACHE_DIR = "_rowcache"
SUFFIX = ".arrow"
# Part of every scope: bump it when the key or the stored row changes meaning, and old entries stop matching.
FORMAT = 1
COMPACT_ABOVE = 64  # segments; one nightly run adds about one per FLUSH_ROWS rows or FLUSH_S seconds
FLUSH_ROWS = 4096
FLUSH_S = 60.0

SCHEMA = pa.schema([
    pa.field("key", pa.binary(16), nullable=False),
    pa.field("scope", pa.string(), nullable=False),
    pa.field("row", pa.string(), nullable=False),  # JSON of the RowResult fields but `adapter`
])
_STORED = ("status", "analysis", "metrics", "raw", "finish_reason", "prompt_tokens", "output_tokens", "samples",
           "dropped_metrics", "raw_samples")


def column_scopes(identity: dict[str, Any], names: list[str], adapters: dict[str, Any]) -> list[str]:
    """One scope per output column (`names`, in run order) from the run identity (`run_identity`).

    `adapters` maps a column name to its `Adapter` (absent for the base model's column). Keys of the
    identity that only say which columns a run has (`adapters`, `include_base`) are left out; the
    per-adapter threshold is narrowed to the column's own.
    """
    # result_format: how rows are written (engine/run_manifest.py), not what the model answered.
    common = {k: v for k, v in identity.items() if k not in ("adapters", "include_base", "decoding", "result_format")}
    decoding = dict(identity.get("decoding") or {})
    thresholds = decoding.pop("score_threshold", None) or {}
    scopes = []
    for name in names:
        a = adapters.get(name)
        scope = {
            **common,
            "decoding": {**decoding, "score_threshold": thresholds.get(name)},
            "adapter": None if a is None else {"sha256": a.sha256, "rank": a.rank},
            "row_cache_format": FORMAT,
        }
        blob = json.dumps(scope, sort_keys=True, ensure_ascii=False, default=str).encode()
        scopes.append(hashlib.sha256(blob).hexdigest()[:16])
    return scopes


def row_key(scope: str, title: Any, paragraph: Any) -> bytes:
    """The key of one (column, paragraph): its scope and the user text the prompt is rendered from."""
    text = user_text(None if title is None else str(title), None if paragraph is None else str(paragraph))
    return hashlib.sha256(scope.encode() + b"\0" + text.encode()).digest()[:16]


@dataclass
class CacheStats:
    enabled: bool = False
    served: int = 0  # rows filled from the cache (never sent to the model)
    computed: int = 0  # rows sent to the model
    stored: int = 0  # ok rows added to the cache by this run
    seeded: int = 0  # ok rows taken from the finished shards of an OUT that had no cache yet (RowCache.seed)
    entries: int = 0  # entries of this run's scopes found at start
    segments: int = 0
    ignored_segments: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class RowCache:
    """Lookups and stores for one run; open with `open` inside the --out lock, `close` at the end."""

    def __init__(self, directory: Path | None, scopes: list[str]):
        self.dir = directory  # None: disabled
        self.scopes = scopes
        self.stats = CacheStats(enabled=directory is not None)
        self._tables: list[pa.Table] = []
        self._index: dict[bytes, tuple[int, int]] = {}
        self._pending: list[tuple[bytes, str, str]] = []
        self._stored: set[bytes] = set()  # keys this run added (looked up from the next run on)
        self._last_flush = time.monotonic()

    @classmethod
    def open(cls, out_dir: Path, scopes: list[str], enabled: bool = True) -> "RowCache":
        if not enabled:
            return cls(None, scopes)
        if not isinstance(out_dir, Path):  # s3:// or gs:// (engine/storage.py: ObjectPath)
            log.warning("row cache: off for --out %s (kept in local folders only so far); every row of a "
                        "redone shard is computed", out_dir)
            return cls(None, scopes)
        cache = cls(out_dir / CACHE_DIR, scopes)
        seeding = out_dir / (CACHE_DIR + ".seeding")
        if seeding.is_dir():  # left by a run killed while seeding (see `seed`); we hold the --out lock
            import shutil

            shutil.rmtree(seeding, ignore_errors=True)
        cache._load()
        return cache

    # ---- reading ----------------------------------------------------------------------------------

    def _segments(self) -> list[Path]:
        assert self.dir is not None
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.suffix == SUFFIX and not p.name.startswith("."))

    def _read(self, path: Path) -> pa.Table | None:
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            if not table.schema.equals(SCHEMA):
                raise ValueError(f"unexpected columns {table.schema.names}")
            table.validate(full=True)  # bad offsets in a damaged file must not reach the lookups
            return table
        except Exception as e:  # pyarrow raises several types for a truncated or damaged file
            log.warning("row cache: ignoring unreadable segment %s (%s); its rows will be recomputed; "
                        "delete it to silence this warning", path, e)
            assert self.stats is not None
            self.stats.ignored_segments.append(path.name)
            return None

    def _load(self) -> None:
        segments = self._segments()
        if len(segments) > COMPACT_ABOVE:
            segments = self._compact(segments)
        wanted = pa.array(sorted(set(self.scopes)), pa.string())
        for path in segments:
            table = self._read(path)
            if table is None:
                continue
            self.stats.segments += 1
            t = len(self._tables)
            self._tables.append(table)
            keep = pc.is_in(table.column("scope"), value_set=wanted)
            keys = table.column("key").to_pylist()
            for i, (k, mine) in enumerate(zip(keys, keep.to_pylist())):
                if mine:
                    self._index[k] = (t, i)
        self.stats.entries = len(self._index)
        if self._index:
            log.info("row cache: %d stored row(s) of this configuration in %d segment(s) of %s",
                     len(self._index), self.stats.segments, self.dir)

    def _compact(self, segments: list[Path]) -> list[Path]:
        """Merge many small segments into one (duplicate keys dropped); unreadable ones are left alone."""
        tables, merged = [], []
        for p in segments:
            t = self._read(p)
            if t is not None:
                tables.append(t)
                merged.append(p)
        self.stats.ignored_segments.clear()  # _load reads and reports them again
        if len(tables) < 2:
            return segments
        table = pa.concat_tables(tables)
        _, first = _unique_first(table.column("key").to_pylist())
        table = table.take(pa.array(first, pa.int64()))
        out = self._write(table)
        for p in merged:
            p.unlink(missing_ok=True)
        log.info("row cache: compacted %d segments into %s (%d rows)", len(merged), out.name, table.num_rows)
        return self._segments()

    def lookup(self, column: int, adapter: str, title: Any, paragraph: Any) -> RowResult | None:
        """The stored ok row of (column, paragraph) as `adapter`'s, or None; not counted (`tally` counts it).

        The pipeline looks each row up once, before it decides what to tokenise, and counts it only when
        it fills the row (a row too long for the model is neither served nor computed)."""
        if self.dir is None:
            return None
        hit = self._index.get(row_key(self.scopes[column], title, paragraph))
        if hit is None:
            return None
        t, i = hit
        try:
            stored = json.loads(self._tables[t].column("row")[i].as_py())
            r = RowResult(adapter=adapter, **{k: stored.get(k) for k in _STORED})
        except (TypeError, ValueError) as e:
            log.warning("row cache: unreadable entry (%s); recomputing the row", e)
            return None
        return r if r.status == OK else None

    def tally(self, hit: RowResult | None) -> None:
        """Count one lookup's result: served (never sent to the model) or computed."""
        if hit is not None:
            self.stats.served += 1
        else:
            self.stats.computed += 1

    def get(self, column: int, adapter: str, title: Any, paragraph: Any) -> RowResult | None:
        """The stored ok row of (column, paragraph) as `adapter`'s, or None (counted as computed)."""
        r = self.lookup(column, adapter, title, paragraph)
        self.tally(r)
        return r

    def seed(self, out_dir: Path, outputs: list[str], names: list[str]) -> int:
        """First use on an OUT written before the cache existed: store the ok rows of its finished shards.

        The caller passes the shards the run manifest lists, whose identity it has just checked equals this
        run's, so their rows are this configuration's. Without this, the first night after an upgrade
        (when `datakit ingest` also renames every shard once) would recompute the whole corpus.
        """
        if self.dir is None or self.dir.exists() or not outputs:
            return 0
        import shutil

        import pyarrow.parquet as pq

        # Built aside and renamed into place: an interrupted seeding leaves no half-seeded cache behind.
        final, self.dir = self.dir, self.dir.with_name(self.dir.name + ".seeding")
        shutil.rmtree(self.dir, ignore_errors=True)
        column = {n: j for j, n in enumerate(names)}
        n = 0
        for rel in outputs:
            try:
                rows = pq.read_table(out_dir / rel).to_pylist()
            except Exception as e:  # a damaged or vanished output only means fewer cached rows
                log.warning("row cache: cannot read %s to seed the cache (%s)", out_dir / rel, e)
                continue
            for r in rows:
                if r.get("status") == OK and r.get("adapter") in column:
                    stored = RowResult(adapter=r["adapter"], **{k: r.get(k) for k in _STORED})
                    self.put(column[r["adapter"]], r.get("chapter_title"), r.get("paragraph"), stored)
                    n += 1
        self.flush()
        self.dir.mkdir(parents=True, exist_ok=True)  # seeded once, even when no row was ok
        os.replace(self.dir, final)
        self.dir = final
        self.stats.seeded, self.stats.stored = self.stats.stored, 0
        self._tables, self._index, self._stored = [], {}, set()
        self.stats.segments, self.stats.ignored_segments = 0, []
        self._load()  # the seeded rows are served from this run on
        if n:
            log.info("row cache: seeded with %d ok row(s) of %d finished shard(s) already in %s", n, len(outputs), out_dir)
        return n

    # ---- writing ----------------------------------------------------------------------------------

    def put(self, column: int, title: Any, paragraph: Any, r: RowResult) -> None:
        """Remember a computed row; only ok rows are kept (error rows are what a rerun should retry)."""
        if self.dir is None or r.status != OK:
            return
        key = row_key(self.scopes[column], title, paragraph)
        if key in self._index or key in self._stored:
            return
        self._stored.add(key)
        row = json.dumps({k: getattr(r, k) for k in _STORED}, ensure_ascii=False)
        self._pending.append((key, self.scopes[column], row))
        if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Commit the pending rows as one segment (whole or absent after a crash)."""
        self._last_flush = time.monotonic()
        if self.dir is None or not self._pending:
            return
        keys, scopes, rows = zip(*self._pending)
        table = pa.table([pa.array(keys, pa.binary(16)), pa.array(scopes, pa.string()), pa.array(rows, pa.string())],
                         schema=SCHEMA)
        try:
            self._write(table)
        except OSError as e:  # a full disk must not fail the run: the rows are in the outputs already
            log.warning("row cache: cannot write a segment in %s (%s); %d row(s) not cached", self.dir, e, len(rows))
        else:
            self.stats.stored += len(rows)
        self._pending = []

    def _write(self, table: pa.Table) -> Path:
        assert self.dir is not None
        path = self.dir / f"seg-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        with atomic_path(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
                writer.write_table(table)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(self.dir)
        return path

    def close(self) -> CacheStats:
        self.flush()
        return self.stats


def _unique_first(keys: list[bytes]) -> tuple[set[bytes], list[int]]:
    seen: set[bytes] = set()
    first = []
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            first.append(i)
    return seen, first
