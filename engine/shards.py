"""Input shards in, output shards out: discovery, identity, streaming reads and atomic streaming writes.

A shard is the unit of resumption: its output file appears whole (temporary name, fsync, rename) or not
at all, so a killed run leaves nothing a rerun could mistake for finished work.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reportminer.data.io import DataError, atomic_path, parquet_files, require_input_columns

from .storage import ObjectPath, is_remote, location, parquet_source, sha256, upload


@dataclass(frozen=True)
class InputShard:
    path: Path | ObjectPath
    rel: str  # path relative to the input root (posix); also the output's relative path

    def out_path(self, out_dir: Path | ObjectPath) -> Path | ObjectPath:
        return out_dir / self.rel


def discover(input_path: str | os.PathLike | ObjectPath) -> list[InputShard]:
    """Every *.parquet under a folder (recursively, sorted; hidden temp files skipped), or one file."""
    if is_remote(input_path):
        return _discover_objects(location(input_path))  # type: ignore[arg-type]
    root = Path(input_path)  # type: ignore[arg-type]  # not an ObjectPath: is_remote said so
    files = parquet_files(root)
    if root.is_dir():
        if not files:
            # An empty or unmounted input volume must not look like a finished night to cron (issue 9).
            raise DataError(f"{root}: no *.parquet shards under this folder{_hint(root)}")
        return [InputShard(f, f.relative_to(root).as_posix()) for f in files]
    return [InputShard(f, f.name) for f in files]


def _discover_objects(root: ObjectPath) -> list[InputShard]:
    """discover() under an s3:// or gs:// prefix: the same rules (hidden names skipped, sorted)."""
    if root.is_file():
        return [InputShard(root, root.name)]
    files = [f for f in root.rglob("*.parquet") if not f.name.startswith(".")]
    if not files:
        raise DataError(f"{root}: no *.parquet shards under this prefix{_hint(root)}")  # type: ignore[arg-type]
    return [InputShard(f, f.relative_to(root).as_posix()) for f in files]


def _hint(root: Path) -> str:
    """What is there instead, and the command that turns it into shards."""
    others = [f for f in root.rglob("*") if f.is_file() and f.suffix in (".jsonl", ".json", ".csv", ".md", ".txt")]
    if not others:
        return " (the folder is empty of data files: is the volume mounted?)"
    kinds = sorted({f.suffix for f in others})
    return (f" ({len(others)} {'/'.join(kinds)} file(s) here: `datakit shard --input {root} --out SHARDS` turns "
            f"seed-format JSONL into shards, `datakit ingest` reports)")


def fingerprint(path: Path | ObjectPath, known: dict | None = None) -> dict:
    """{size, mtime_ns, sha256} of a file; the hash is reused from `known` when size and mtime agree.

    Content decides identity (a touched or copied shard is not redone), but the full hash is only
    computed for new or changed-looking files, so a nightly rerun over a large corpus stays cheap.
    """
    st = path.stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns and known.get("sha256"):
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": known["sha256"]}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256(path)}


class ShardReader:
    """Opens a shard (footer and columns checked up front) and yields record batches of `batch_rows`."""

    def __init__(self, shard: InputShard, batch_rows: int):
        self.shard = shard
        self.batch_rows = batch_rows
        try:
            src, fs = parquet_source(shard.path)
            self._file = pq.ParquetFile(src, filesystem=fs)
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
    """Streams row groups into a hidden temporary file beside the target; `commit` renames it into place.

    For an s3:// or gs:// target there is no rename: the row groups go to a local spool file (unlinked,
    so a killed run leaves nothing) and `commit` uploads it whole to the final key, which readers see
    complete or not at all (engine/storage.py says why that holds).
    """

    ROW_GROUP_ROWS = 8192

    def __init__(self, path: Path | ObjectPath, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self._spool = tempfile.TemporaryFile(prefix=".reportminer-shard-") if isinstance(path, ObjectPath) else None
        if self._spool is not None:
            self._writer = pq.ParquetWriter(self._spool, schema, compression="zstd")
        else:
            self._atomic = atomic_path(path)  # type: ignore[arg-type]
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

    def commit(self) -> Path | ObjectPath:
        self._flush()
        self._writer.close()
        if self._spool is not None:
            self._spool.seek(0)
            try:
                upload(self._spool, self.path)  # type: ignore[arg-type]
            finally:
                self._spool.close()
            return self.path
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        self._atomic.__exit__(None, None, None)
        _fsync_dir(self.path.parent)  # type: ignore[arg-type]
        return self.path

    def discard(self) -> None:
        try:
            self._writer.close()
        finally:
            if self._spool is not None:
                self._spool.close()
            else:
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


def stale_temp_files(out_dir: Path | ObjectPath) -> list[Path]:
    """Temporary files `atomic_path` leaves behind when a run is killed (`.NAME.XXXX.tmp`).

    None on an object store: there a killed run leaves incomplete multipart uploads, which the lease
    aborts when the next run takes it (engine/storage.py).
    """
    if isinstance(out_dir, ObjectPath) or not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.rglob(".*.tmp") if p.is_file())
