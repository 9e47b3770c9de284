"""Checks that run before the --out lock is taken and before vLLM starts, each failing as one line.

Before these existed the same problems surfaced late, as tracebacks with exit 1 (the code for "some rows
errored"): an adapter rank above `max_lora_rank` as a 100-line vLLM traceback after start, a truncated
`adapter_model.safetensors` with no path named, a read-only --out at the lock (issue 9). Each check
names the thing (adapter name and file, shard file and column, --out path) and raises the error class of
`data.errors` whose exit code says what kind of problem it is: 2 refused (settings, adapters, --out), 3
data error (an input shard).

Also here, because they decide before anything is written what a run may touch: the id report over all
input shards (`scan_ids`), and `safe_remove`, the only way the engine deletes an output (`--overwrite`,
`--prune`): resolved paths inside --out only, never an input file.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reportminer.data.errors import ConfigError, DataError
from reportminer.data.io import require_input_columns, require_utf8
from reportminer.data.schema import ID, INPUT_COLUMNS

from .adapters import adapter_manifest_problem, read_adapters, safetensors_problem
from .config import check_engine_limits  # re-exported: the settings' own check (config.validate runs it)
from .inputs import read_jsonl_shard
from .storage import ObjectPath, parquet_source

log = logging.getLogger("engine")

# ---- adapters -----------------------------------------------------------------------------------------


def check_adapters(adapters: dict[str, str], max_lora_rank: int | None) -> None:
    """Every adapter folder whole and loadable before anything starts (ConfigError, exit 2): adapters.read_adapter,
    for a caller that needs the check only (a run keeps what it read: plan.make_plan)."""
    read_adapters(adapters, max_lora_rank)


# ---- input shards -------------------------------------------------------------------------------------

def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t)
    )


def schema_problem(schema: pa.Schema, where: str) -> str | None:
    """Missing input columns (data.io's check), or one that is not text (an integer paragraph would run on its digits)."""
    try:
        require_input_columns(schema, where)
    except DataError as e:
        return str(e)
    wrong = [f"{c} is {schema.field(c).type}" for c in INPUT_COLUMNS if not _is_text(schema.field(c).type)]
    if wrong:
        return f"{where}: column type(s) {', '.join(wrong)}; id, chapter_title and paragraph must be strings (cast them)"
    return None


@dataclass
class ShardInfo:
    num_rows: int = 0
    error: str | None = None  # the shard fails alone (named, exit 3), the others run
    ids: pa.Array | None = None


def inspect_shard(path: Path | ObjectPath, rel: str, kind: str) -> ShardInfo:
    """Rows, schema problems and ids of one shard, from the Parquet footer and the id column only."""
    try:
        if kind == "jsonl":
            table = read_jsonl_shard(path, rel)  # type: ignore[arg-type]  # JSONL is local only
            schema, num_rows = table.schema, table.num_rows
            ids = table.column(ID).combine_chunks() if ID in table.column_names else None
        else:
            src, fs = parquet_source(path)
            f = pq.ParquetFile(src, filesystem=fs)
            schema, num_rows = f.schema_arrow, f.metadata.num_rows
            ids = None
    except DataError as e:
        return ShardInfo(error=str(e))
    except Exception as e:  # unreadable file or footer: pyarrow raises several types
        return ShardInfo(error=f"{path}: cannot read Parquet: {e}")
    problem = schema_problem(schema, str(path))
    if problem:
        return ShardInfo(num_rows, problem)
    if ids is None:
        try:
            ids = f.read(columns=[ID]).column(ID).combine_chunks()
        except Exception as e:
            return ShardInfo(error=f"{path}: cannot read Parquet: {e}")
    try:  # ids that are not UTF-8 would break the id report (data.io.require_utf8 names the row)
        require_utf8(pa.table({ID: ids}), str(path))
    except DataError as e:
        return ShardInfo(num_rows, str(e))
    return ShardInfo(num_rows, None, ids)


@dataclass
class IdReport:
    rows: int = 0
    null: int = 0
    duplicate: int = 0  # distinct ids that occur more than once
    duplicate_rows: int = 0  # rows carrying such an id
    null_examples: list[str] = field(default_factory=list)  # "shard (row N)"
    duplicate_examples: list[str] = field(default_factory=list)  # "'id' x3"

    @property
    def clean(self) -> bool:
        return not (self.null or self.duplicate)

    def line(self) -> str:
        parts = []
        if self.null:
            parts.append(f"{self.null} null id(s) (e.g. {', '.join(self.null_examples)})")
        if self.duplicate:
            parts.append(f"{self.duplicate} id(s) on {self.duplicate_rows} rows are not unique "
                         f"(e.g. {', '.join(self.duplicate_examples)})")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "null": self.null, "duplicate": self.duplicate,
                "duplicate_rows": self.duplicate_rows, "null_examples": self.null_examples,
                "duplicate_examples": self.duplicate_examples}


def scan_ids(ids_by_shard: list[tuple[str, pa.Array]], examples: int = 3) -> IdReport:
    """Null and duplicate ids across all input shards (duplicates across shards count too).

    Done in Arrow memory (no Python set of every id): about 40 bytes an id, 40 MB for a million rows.
    """
    rep = IdReport()
    arrays = []
    for rel, ids in ids_by_shard:
        ids = ids.cast(pa.string()) if not pa.types.is_string(ids.type) else ids
        rep.rows += len(ids)
        n_null = ids.null_count
        if n_null:
            rep.null += n_null
            if len(rep.null_examples) < examples:
                first = pc.index(pc.is_null(ids), True).as_py()
                rep.null_examples.append(f"{rel} row {first + 1}")
        arrays.append(ids.drop_null())
    if arrays:
        # Sort and compare neighbours: 1M distinct ids in 0.2-0.4 s, where value_counts over all of them took
        # 4.6 s (same 2-core sandbox, same load); only the duplicated values are then counted.
        ids_all = pa.chunked_array(arrays, pa.string()).combine_chunks()
        if len(ids_all) > 1:
            srt = ids_all.take(pc.array_sort_indices(ids_all))
            eq = pc.equal(srt.slice(1), srt.slice(0, len(srt) - 1))
            if eq.true_count:
                dup = srt.slice(1).filter(eq)
                counts = pc.value_counts(dup)  # occurrences - 1 for each duplicated id
                rep.duplicate = len(counts)
                rep.duplicate_rows = eq.true_count + rep.duplicate
                rep.duplicate_examples = [f"{v!r} x{c + 1}" for v, c in zip(
                    counts.field("values")[:examples].to_pylist(), counts.field("counts")[:examples].to_pylist())]
    return rep


# ---- --out --------------------------------------------------------------------------------------------


def check_out(out_dir: Path | ObjectPath) -> None:
    """--out exists as a folder (created if missing) we can write in; else ConfigError (exit 2).

    An s3:// or gs:// prefix has no folder to check: its lease (engine/storage.py) is the first write.
    """
    if isinstance(out_dir, ObjectPath):
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    for p in [out_dir, *out_dir.parents]:
        if p.exists() and not p.is_dir():
            what = "is a file" if p == out_dir else f"lies below {p}, which is a file"
            raise ConfigError(f"--out {out_dir}: {what}, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out_dir}: cannot create the folder: {e.strerror}") from None
    try:  # a probe file: permissions alone do not say it (root, read-only mounts, ACLs)
        fd, probe = tempfile.mkstemp(prefix=".engine-probe.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"--out {out_dir}: not writable ({e.strerror})") from None


def os_reason(e: OSError) -> str:
    """`No space left on device (ENOSPC)` from Python's or pyarrow's OSError (pyarrow sets no errno)."""
    import errno

    if e.errno:
        return f"{e.strerror or os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def safe_remove(out_dir: Path | ObjectPath, rel: str, inputs: set[Path | ObjectPath]) -> str | None:
    """Delete the output `rel` of the run manifest if it resolves inside --out and is no input file.

    Returns a warning when it refuses (a manifest naming `../../victim.txt` or an absolute path must not
    delete it: the manifest is a file anyone with write access to --out can edit).
    """
    root = out_dir.resolve()
    try:
        target = (out_dir / rel).resolve()
    except ConfigError:  # an object key with `..` in it
        return f"not deleting {rel!r} named in the run manifest: it is not a key under --out"
    if root not in target.parents:
        return f"not deleting {rel!r} named in the run manifest: it resolves outside --out ({target})"
    if target in inputs:  # resolved input paths
        return f"not deleting {target}: it is an input file"
    if target.is_dir():  # an edited manifest naming a folder (issue 19: IsADirectoryError traceback)
        return f"not deleting {rel!r} named in the run manifest: it is a folder, not an output shard"
    try:
        target.unlink(missing_ok=True)
    except OSError as e:
        return f"could not delete {target} named in the run manifest: {os_reason(e)}"
    return None


def vanished_outputs(out_dir: Path | ObjectPath, finished: dict[str, dict[str, Any]], present: set[str],
                     inputs: set[Path | ObjectPath],
                     prune: bool) -> tuple[list[str], list[str], list[str]]:
    """Finished shards (manifest entries) whose input shard is gone: (vanished, pruned, warnings).

    Reported always, since their rows still count in --out's totals; with `prune` their outputs are
    deleted through `safe_remove` and their entries dropped from `finished`.
    """
    vanished = sorted(rel for rel in finished if rel not in present)
    pruned: list[str] = []
    warnings: list[str] = []
    if vanished and not prune:
        log.warning("%d finished output(s) have no input shard any more (e.g. %s); they stay in --out and its totals: "
                    "pass --prune to delete them", len(vanished), vanished[0])
    for rel in vanished if prune else []:
        w = safe_remove(out_dir, str(finished[rel].get("output", "")), inputs)
        if w:
            log.warning(w)
            warnings.append(w)
        del finished[rel]
        pruned.append(rel)
    return vanished, pruned, warnings


__all__ = ["IdReport", "ShardInfo", "adapter_manifest_problem", "check_adapters", "check_engine_limits", "check_out",
           "inspect_shard", "safe_remove",
           "os_reason", "safetensors_problem", "scan_ids", "schema_problem", "vanished_outputs"]
