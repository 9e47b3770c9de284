"""Input shards in, output shards out: discovery, identity, streaming reads and atomic streaming writes.

A shard is the unit of resumption: its output file appears whole (temporary name, fsync, rename) or not
at all, so a killed run leaves nothing a rerun could mistake for finished work.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reportminer.data.io import DataError, atomic_path, file_sha256, parquet_files, require_input_columns


@dataclass(frozen=True)
class InputShard:
    path: Path
    rel: str  # path relative to the input root (posix); also the output's relative path

    def out_path(self, out_dir: Path) -> Path:
        return out_dir / self.rel


def discover(input_path: str | os.PathLike) -> list[InputShard]:
    """Every *.parquet under a folder (recursively, sorted; hidden temp files skipped), or one file."""
    root = Path(input_path)
    files = parquet_files(root)
    if root.is_dir():
        if not files:
            # An empty or unmounted input volume must not look like a finished night to cron (issue 9).
            raise DataError(f"{root}: no *.parquet shards under this folder{_hint(root)}")
        return [InputShard(f, f.relative_to(root).as_posix()) for f in files]
    return [InputShard(f, f.name) for f in files]


def _hint(root: Path) -> str:
    """What is there instead, and the command that turns it into shards."""
    others = [f for f in root.rglob("*") if f.is_file() and f.suffix in (".jsonl", ".json", ".csv", ".md", ".txt")]
    if not others:
        return " (the folder is empty of data files: is the volume mounted?)"
    kinds = sorted({f.suffix for f in others})
    return (f" ({len(others)} {'/'.join(kinds)} file(s) here: `datakit shard --input {root} --out SHARDS` turns "
            f"seed-format JSONL into shards, `datakit ingest` reports)")


def fingerprint(path: Path, known: dict | None = None) -> dict:
    """{size, mtime_ns, sha256} of a file; the hash is reused from `known` when size and mtime agree.

    Content decides identity (a touched or copied shard is not redone), but the full hash is only
    computed for new or changed-looking files, so a nightly rerun over a large corpus stays cheap.
    """
    st = path.stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns and known.get("sha256"):
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": known["sha256"]}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}


class ShardReader:
    """Opens a shard (footer and columns checked up front) and yields record batches of `batch_rows`."""

    def __init__(self, shard: InputShard, batch_rows: int):
        self.shard = shard
        self.batch_rows = batch_rows
        try:
            self._file = pq.ParquetFile(shard.path)
        except Exception as e:  # pyarrow raises several types for a damaged or non-Parquet file
            raise DataError(f"{shard.path}: cannot read Parquet: {e}") from None
        self.schema: pa.Schema = self._file.schema_arrow
        require_input_columns(self.schema, str(shard.path))
        self.num_rows: int = self._file.metadata.num_rows

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._file.iter_batches(batch_size=self.batch_rows)
        except Exception as e:
            raise DataError(f"{self.shard.path}: cannot read Parquet: {e}") from None

    def close(self) -> None:
        self._file.close()


class ShardWriter:
    """Streams row groups into a hidden temporary file beside the target; `commit` renames it into place."""

    ROW_GROUP_ROWS = 8192

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self._atomic = atomic_path(path)
        self.tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=max(self._pending_rows, 1))
            self._pending, self._pending_rows = [], 0

    def commit(self) -> Path:
        self._flush()
        self._writer.close()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        self._atomic.__exit__(None, None, None)
        _fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        try:
            self._writer.close()
        finally:
            self._atomic.__exit__(RuntimeError, RuntimeError("discarded"), None)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temp_files(out_dir: Path) -> list[Path]:
    """Temporary files `atomic_path` leaves behind when a run is killed (`.NAME.XXXX.tmp`)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.rglob(".*.tmp") if p.is_file())
