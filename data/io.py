"""Seed-format JSONL <-> Parquet shards.

Shards are the unit of work and of resumption in the engine, so they are plain Parquet files with the
contract's columns; anything else a user keeps beside a paragraph (gold labels, scenario, provenance,
their own keys) rides along as columns and comes back out.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError
from .schema import (
    CHAPTER_TITLE,
    GOLD_ANALYSIS,
    GOLD_METRICS,
    ID,
    PARAGRAPH,
    SCENARIO,
    SOURCE,
    arrow_metrics_type,
)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (shard fingerprints, data manifests, pinned downloads)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


DataKind = Literal["jsonl", "parquet"]


def generated_id(rel: str, line: int) -> str:
    """The id of a JSONL row that has none: `<name>:<line>`, the one rule for every room.

    `rel` is the file's name when a file was given, its path under the folder when a folder was (so ids
    stay unique across the files of a folder); `line` is 1-based. `datakit shard` writes these ids into
    shards, so engine results of id-less JSONL join the same JSONL as gold in evalkit.
    """
    return f"{rel}:{line}"


def relative_name(root: Path, f: Path) -> str:
    """How a data file is named in ids and sources: its path under a folder `root`, else its file name."""
    return f.relative_to(root).as_posix() if root.is_dir() else f.name


@dataclass(frozen=True)
class JsonlRow:
    file: Path
    line: int  # 1-based
    source: str  # "relative/file.jsonl:LINE"
    obj: dict[str, Any]

    @property
    def id(self) -> str:
        """The row's `id`, or the generated one (`generated_id`)."""
        raw = self.obj.get(ID)
        return str(raw) if raw is not None else self.source


def _data_files(root: Path, suffix: str, skip_private: bool = True) -> list[Path]:
    """Data files under `root`, their suffix matched case-blind (`B.PARQUET` is a shard too; it was skipped
    without a word, issue 19, as the engine's discovery now also reads it): hidden files and folders and, with
    `skip_private`, `_`-prefixed bookkeeping files (the engine's `_engine_runs.jsonl` beside its result
    shards) are not data. A symbolic link to a missing file is a DataError: a data set that silently lost a
    file (an unmounted volume) must not be validated, counted or converted as if whole."""
    skip = (".", "_") if skip_private else (".",)
    found = []
    for f in root.rglob("*"):
        if not f.name.lower().endswith(suffix) or f.name.startswith(skip):
            continue
        if any(part.startswith(".") for part in f.relative_to(root).parts[:-1]):
            continue  # inside a hidden folder (a shard set being staged: stage_beside), as the engine skips it
        if f.is_symlink() and not f.exists():
            raise DataError(f"{f}: a dangling symbolic link (to {os.readlink(f)}); is the volume mounted? "
                            "(remove the link to go on without it)")
        if f.is_file():
            found.append(f)
    return sorted(found)


def data_kind(path: str | os.PathLike) -> DataKind:
    """Whether `path` holds seed-format JSONL or Parquet shards: the one detector for every room.

    A file by its suffix (anything but .parquet is read as JSONL); a folder by the data files under it
    (recursively, hidden and `_`-prefixed files skipped). A folder holding both kinds, or neither, is a DataError: rows of
    one data set must not be read from two places by one command and from one by another.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if not p.is_dir():
        return "parquet" if p.suffix.lower() == ".parquet" else "jsonl"
    jsonl, parquet = _data_files(p, ".jsonl"), _data_files(p, ".parquet")
    if jsonl and parquet:
        raise DataError(
            f"{p}: holds both *.jsonl ({len(jsonl)}, e.g. {jsonl[0].name}) and *.parquet files "
            f"({len(parquet)}, e.g. {parquet[0].name}); point at a folder of one kind"
        )
    if not jsonl and not parquet:
        raise DataError(f"{p}: no *.jsonl or *.parquet files in this folder")
    return "parquet" if parquet else "jsonl"


def jsonl_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = _data_files(p, ".jsonl")
        if not files:
            raise DataError(f"{p}: no *.jsonl files in this folder")
        return files
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    return [p]


def iter_jsonl(path: str | os.PathLike) -> Iterator[JsonlRow]:
    """Rows of a JSONL file or of every *.jsonl under a folder; blank lines skipped, bad JSON named."""
    root = Path(path)
    for f in jsonl_files(root):
        yield from iter_jsonl_file(f, relative_name(root, f))


def iter_jsonl_file(f: Path, rel: str) -> Iterator[JsonlRow]:
    """Rows of one JSONL file named `rel` in ids (`relative_name`); the engine reads each file as a shard."""
    require_utf8_file(f)
    try:
        with open(f, encoding="utf-8-sig") as fh:  # a BOM (Windows editors) is not part of the JSON
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{f}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{f}:{n}: expected a JSON object, got {type(obj).__name__}")
                yield JsonlRow(f, n, generated_id(rel, n), obj)
    except UnicodeDecodeError:  # e.g. a GBK export: one line naming the place, not a traceback
        raise DataError(not_utf8_message(f)) from None


# UTF-16 (what Windows tools call "Unicode") and UTF-32, by their byte-order mark; UTF-32 first, since its
# little-endian mark begins with UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32LE"), (codecs.BOM_UTF32_BE, "UTF-32BE"),
    (codecs.BOM_UTF16_LE, "UTF-16LE"), (codecs.BOM_UTF16_BE, "UTF-16BE"),
)


def wide_encoding(head: bytes) -> str | None:
    """`UTF-16LE`, `UTF-16BE`, `UTF-32LE` or `UTF-32BE` when `head` (a file's first bytes) is such text, else None.

    By the byte-order mark, or, without one, by the NUL bytes UTF-16 puts beside every ASCII character
    (`{"` is `7b 00 22 00`): UTF-8 text has no NUL at all. Read line by line as UTF-8, a UTF-16 file
    gave one "not UTF-8" error per line with a GBK hint (12 errors for 3 rows); it is one file-level
    problem with its own fix.
    """
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            return name
    sample = head[:512]
    if len(sample) >= 4 and b"\x00" in sample:
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        # JSON keys and punctuation are ASCII, so NULs mostly on one side are enough; no share of the sample
        # is required because Chinese characters in UTF-16 rarely hold a zero byte (刀 is 52 00: a few do).
        if odd >= 2 and odd > 4 * even:
            return "UTF-16LE"
        if even >= 2 and even > 4 * odd:
            return "UTF-16BE"
    return None


def wide_encoding_message(f: Path, enc: str) -> str:
    return (f"{f}: {enc} text (a Windows \"Unicode\" export?), not UTF-8; JSONL must be UTF-8 "
            f"(convert it with: iconv -f {enc} -t UTF-8 {f.name} > {f.stem}.utf8{f.suffix})")


def require_utf8_file(f: Path) -> None:
    """DataError (one line, with the iconv command) when the file `f` is UTF-16 or UTF-32 text."""
    with open(f, "rb") as fh:
        enc = wide_encoding(fh.read(512))
    if enc:
        raise DataError(wide_encoding_message(f, enc))


def not_utf8_message(f: Path) -> str:
    """`file:LINE: not UTF-8 text ...` for the first line of `f` that does not decode (lines counted as
    text mode counts them); a UTF-16/32 file is named as such instead (`wide_encoding`)."""
    data = f.read_bytes()
    enc = wide_encoding(data[:512])
    if enc:
        return wide_encoding_message(f, enc)
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            return (f"{f}:{n}: not UTF-8 text: byte {raw[e.start:e.start + 1]!r} at column {e.start + 1}; "
                    "JSONL must be UTF-8 (convert a GBK file with: iconv -f GBK -t UTF-8)")
    return f"{f}: not UTF-8 text; JSONL must be UTF-8"


def _metrics_for_arrow(metrics: Any) -> list[dict[str, Any]] | None:
    if metrics is None:
        return None
    out = []
    for m in metrics:
        if not isinstance(m, dict):
            continue
        score = m.get("score")
        out.append(
            {
                "metric_name": m.get("metric_name"),
                "metric_type": m.get("metric_type"),
                "score": float(score) if isinstance(score, (int, float)) else None,
                "reason": m.get("reason"),
            }
        )
    return out


def seed_row_to_columns(row: JsonlRow) -> dict[str, Any]:
    """Flatten one seed-format object (`input`, `output`, `type`, optional `id`) into shard columns."""
    obj = row.obj
    inp = obj.get("input")
    if not isinstance(inp, dict):
        inp = obj
    out = obj.get("output") if isinstance(obj.get("output"), dict) else None
    cols: dict[str, Any] = {
        ID: row.id,
        CHAPTER_TITLE: inp.get(CHAPTER_TITLE),
        PARAGRAPH: inp.get(PARAGRAPH),
        SOURCE: row.source,
        GOLD_ANALYSIS: out.get("analysis") if out else None,
        GOLD_METRICS: _metrics_for_arrow(out.get("metrics")) if out else None,
    }
    for k, v in obj.items():
        if k in ("input", "output", ID, CHAPTER_TITLE, PARAGRAPH):
            continue
        cols[k if k != SOURCE else "source_"] = v
    return cols


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    arrays = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if k == GOLD_METRICS:
            arrays[k] = pa.array(vals, type=arrow_metrics_type())
        elif k in (ID, CHAPTER_TITLE, PARAGRAPH, SOURCE, GOLD_ANALYSIS, SCENARIO):
            arrays[k] = pa.array([None if v is None else str(v) for v in vals], type=pa.string())
        else:
            try:
                arrays[k] = pa.array(vals)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays[k] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in vals])
    return pa.table(arrays)


def seed_rows_table(rows: Iterable[JsonlRow]) -> pa.Table:
    """Shard columns of seed-format rows (ids not checked for uniqueness: the caller decides)."""
    return _table([seed_row_to_columns(r) for r in rows])


def jsonl_to_table(path: str | os.PathLike) -> pa.Table:
    rows = [seed_row_to_columns(r) for r in iter_jsonl(path)]
    if not rows:
        raise DataError(f"{path}: no rows")
    table = _table(rows)
    ids = table.column(ID).to_pylist()
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise DataError(f"{path}: duplicate id {dup!r}; ids must be unique across the input")
    return table


def table_to_seed_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Inverse of `seed_row_to_columns`: ids that were generated from the source line are not written."""
    for r in table.to_pylist():
        obj: dict[str, Any] = {}
        if r.get(ID) is not None and r.get(ID) != r.get(SOURCE):
            obj[ID] = r[ID]
        for k, v in r.items():
            if k in (ID, CHAPTER_TITLE, PARAGRAPH, SOURCE, GOLD_ANALYSIS, GOLD_METRICS):
                continue
            if v is None:
                # Arrow gives every row every column; a key that only some rows had comes back null in
                # the others, and writing `"type": null` there would change rows that never had it.
                continue
            obj[k if k != "source_" else SOURCE] = v
        obj["input"] = {CHAPTER_TITLE: r.get(CHAPTER_TITLE), PARAGRAPH: r.get(PARAGRAPH)}
        if r.get(GOLD_METRICS) is not None or r.get(GOLD_ANALYSIS) is not None:
            obj["output"] = {"analysis": r.get(GOLD_ANALYSIS), "metrics": r.get(GOLD_METRICS) or []}
        yield obj


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> int:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        return write_jsonl_stream(rows, fh)


def write_jsonl_stream(rows: Iterable[dict[str, Any]], fh: IO[str]) -> int:
    """One compact JSON object a line to an open text stream (a file, or stdout for `--out -`); the count."""
    n = 0
    for r in rows:
        fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        n += 1
    fh.flush()
    return n


class atomic_path:
    """Context manager yielding a temporary path in the target's folder, renamed over it on success.

    Readers (a resumed run, a nightly job) then see either the old file or the whole new one, never a
    partial write.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            # mkstemp creates 0600; give the file the mode a plain open() would have.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """The one JSON writer for manifests, summaries and metrics: indented UTF-8, fsynced, renamed into place."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_parquet(table: pa.Table, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def write_shards(
    table: pa.Table, out_dir: str | os.PathLike, rows_per_shard: int = 1000, prefix: str = "shard", first_index: int = 0
) -> list[Path]:
    """`prefix-NNNNN.parquet` files of `rows_per_shard` rows; `first_index` lets a streaming writer (ingest)
    continue the numbering chunk by chunk."""
    if rows_per_shard < 1:
        raise ValueError("rows_per_shard must be >= 1")
    out = Path(out_dir)
    paths = []
    for i, start in enumerate(range(0, table.num_rows, rows_per_shard), first_index):
        paths.append(write_parquet(table.slice(start, rows_per_shard), out / f"{prefix}-{i:05d}.parquet"))
    return paths


@dataclass(frozen=True)
class ShardSet:
    """What `write_shard_set` did: the shard files now in the folder, and the old shards it replaced."""

    paths: list[Path]
    removed: list[str]


def write_shard_set(table: pa.Table, out_dir: str | os.PathLike, rows_per_shard: int = 1000, prefix: str = "shard") -> ShardSet:
    """Replace the shard set in `out_dir` with `table` cut into `prefix-NNNNN.parquet` files, all or nothing.

    Writing shard by shard into `out_dir` left, after a Ctrl-C, a fresh folder with 21 of 210 shards and no
    sign it was incomplete, or an older set with 16 shards rewritten and 194 stale ones kept (issue 19): the
    engine would have run either as if it were the data set. So the new set is written into a temporary
    folder beside `out_dir` (`.NAME.XXXX.partial`, removed on any failure or interrupt) and swapped in at
    the end: by one atomic exchange of the two folders where the kernel offers it (Linux renameat2
    RENAME_EXCHANGE), else by two renames with Ctrl-C and SIGTERM held off between them. Files in an
    existing `out_dir` that are not `prefix-*.parquet` shards are moved into the new folder; the old shards
    are deleted (`removed`: those whose names the new set does not reuse). A reader sees the old set or the
    new one, never a mix.
    """
    if rows_per_shard < 1:
        raise ValueError("rows_per_shard must be >= 1")
    out = Path(out_dir)
    tmp = stage_beside(out)
    try:
        names = [p.name for p in write_shards(table, tmp, rows_per_shard, prefix)]
        replaced = commit_staged(tmp, out, prefix)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ShardSet([out / n for n in names], [n for n in replaced if n not in set(names)])


def stage_beside(out: Path) -> Path:
    """A new empty folder to build a shard set in: `.NAME.XXXX.partial` beside `out`, or, where `out` is a
    mount point (a container's volume: it cannot be renamed) or its parent cannot be written, a hidden
    `.staging.XXXX.partial` inside `out` (hidden folders are not data, for data.io and for the engine's
    discovery alike). The caller removes it on failure; `commit_staged` consumes it on success."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and os.path.ismount(out):
        return Path(tempfile.mkdtemp(prefix=".staging.", suffix=".partial", dir=out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:  # e.g. a root-owned /data above the user's own /data/shards
        if not out.is_dir():
            raise DataError(f"{out}: cannot create it: {e.strerror or e}") from None
        return Path(tempfile.mkdtemp(prefix=".staging.", suffix=".partial", dir=out))


def commit_staged(tmp: Path, out: Path, prefix: str = "shard") -> list[str]:
    """Make the complete folder `tmp` be `out` (mode of the old `out`, other files of the old `out` kept,
    Ctrl-C held off while it happens); the names of the old `prefix-*.parquet` shards it replaced."""
    if tmp.parent == out:
        with _signals_held():
            return _swap_inside(tmp, out, prefix)
    os.chmod(tmp, out.stat().st_mode & 0o7777 if out.exists() else 0o777 & ~_umask())
    with _signals_held():
        return _swap_in(tmp, out, prefix)


def _swap_inside(new: Path, out: Path, prefix: str) -> list[str]:
    """The staging folder inside `out`: old shards deleted, new ones renamed in, with Ctrl-C held off. Not one
    atomic step as the exchange is (a reader listing `out` meanwhile, or a SIGKILL, can see part of it), but
    only renames within one folder, a few milliseconds for hundreds of shards."""
    shard = re.compile(rf"{re.escape(prefix)}-.*\.parquet")
    removed = sorted(e.name for e in out.iterdir() if shard.fullmatch(e.name) and e.is_file())
    for name in removed:
        (out / name).unlink()
    for entry in sorted(new.iterdir()):
        os.replace(entry, out / entry.name)
    new.rmdir()
    return removed


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


class _signals_held:
    """Ctrl-C and SIGTERM wait (are delivered on exit) while the few renames of a swap run."""

    SIGNALS = {signal.SIGINT, signal.SIGTERM}

    def __enter__(self) -> None:
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)

    def __exit__(self, *exc: Any) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # no glibc >= 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_in(new: Path, out: Path, prefix: str) -> list[str]:
    """Make the complete folder `new` be `out`; returns the names of the old shards that were dropped."""
    if not out.exists():
        os.rename(new, out)
        return []
    if not _exchange(new, out):
        old = new.with_name(new.name[: -len(".partial")] + ".old")
        os.rename(out, old)
        os.rename(new, out)
        os.rename(old, new)  # `new` now names the old folder, as after an exchange
    shard = re.compile(rf"{re.escape(prefix)}-.*\.parquet")
    removed = []
    for entry in sorted(new.iterdir()):
        if shard.fullmatch(entry.name) and entry.is_file():
            removed.append(entry.name)
        elif not (out / entry.name).exists():
            os.rename(entry, out / entry.name)  # the user's other files stay in --out
    shutil.rmtree(new, ignore_errors=True)
    return removed


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """A Parquet file, or every *.parquet under a folder (recursively, sorted, suffix case-blind, hidden temp
    files skipped; a dangling symlink is a DataError: `_data_files`)."""
    p = Path(path)
    if p.is_dir():
        return _data_files(p, ".parquet", skip_private=False)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    return [p]


def read_table(path: str | os.PathLike) -> pa.Table:
    """All shards under `path` as one table (for small sets: evaluation, export, tests)."""
    files = parquet_files(path)
    if not files:
        raise DataError(f"{path}: no *.parquet files")
    return pa.concat_tables([read_parquet(f) for f in files], promote_options="permissive")


def read_parquet(f: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file (optionally only `columns`), its text checked: a damaged file or a string value that
    is not UTF-8 is a DataError naming the file (and the row and column), never a traceback later."""
    try:
        table = pq.read_table(f, columns=columns)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{f}: cannot read Parquet: {e}") from None
    require_utf8(table, str(f))
    return table


# ----------------------------------------------------------------------------------------------------------
# Text that is not UTF-8 inside Parquet string columns.
#
# Arrow's Parquet reader does not check that a string column holds UTF-8 (a writer that views raw bytes as
# strings, or another tool's shard, can put GBK or binary there); the first `to_pylist()` / `as_py()` then
# raises UnicodeDecodeError deep inside whatever touches the row. `require_utf8` finds such a value once, up
# front, with Arrow's own validation (`Array.validate(full=True)` checks UTF-8 of every string, nested ones
# too, in C++: 0.08-0.12 s for a shard of 100k rows of 360-character paragraphs with gold metrics, 108 MB of
# text, against 0.17-0.35 s to read it, on this machine's two shared cores), and only on failure walks the
# failing chunk in Python to name the row.


@dataclass(frozen=True)
class BadText:
    """Where a string value is not UTF-8: `column`, 0-based `row` of the table or batch, the `byte` and
    its 0-based `offset` inside the value's bytes (for a nested column, inside the first bad string)."""

    column: str
    row: int
    byte: bytes
    offset: int

    def message(self, where: str, first_row: int = 0, id: str | None = None) -> str:
        """`shard.parquet[row 6, id='r-6']: column paragraph: not UTF-8 text (byte b'\\xff' at byte 3) ...`.

        Rows are 1-based as in `datakit validate`; `first_row` is the batch's offset in its file.
        """
        loc = f"{where}[row {first_row + self.row + 1}" + (f", id={id!r}]" if id is not None else "]")
        return (f"{loc}: column {self.column}: not UTF-8 text (byte {self.byte!r} at byte {self.offset}); "
                "Parquet string columns must hold UTF-8 (re-encode the text when writing the shard)")


def _holds_text(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return True
    if pa.types.is_dictionary(t):
        return _holds_text(t.value_type)
    return any(_holds_text(t.field(i).type) for i in range(t.num_fields))


def _first_bad_row(chunk: pa.Array) -> tuple[int, bytes, int]:
    """The first row of `chunk` whose value does not decode (only called on a chunk that failed validation)."""
    step = 4096
    for start in range(0, len(chunk), step):
        part = chunk.slice(start, step)
        try:
            part.to_pylist()
            continue
        except UnicodeDecodeError:
            pass
        for r in range(len(part)):
            try:
                part[r].as_py()
            except UnicodeDecodeError as e:
                return start + r, bytes(e.object[e.start:e.start + 1]), e.start
    raise LookupError("no undecodable value")


def invalid_utf8(data: pa.Table | pa.RecordBatch) -> BadText | None:
    """The first string value (by column, then row) that is not UTF-8, or None. Cheap when all is well."""
    for name, col in zip(data.schema.names, data.columns):
        if not _holds_text(col.type):
            continue
        offset = 0
        for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid:
                try:
                    row, byte, at = _first_bad_row(chunk)
                except LookupError:  # invalid for another reason than text: the caller's read will say so
                    offset += len(chunk)
                    continue
                return BadText(name, offset + row, byte, at)
            offset += len(chunk)
    return None


def require_utf8(data: pa.Table | pa.RecordBatch, where: str, first_row: int = 0) -> None:
    """Raise DataError naming `where`, the row (and its id, when readable) and the column of the first string
    value that is not UTF-8. The engine calls it on each record batch it reads (`first_row`: the batch's
    offset in the shard) so that such a shard is named before any row of it is rendered."""
    bad = invalid_utf8(data)
    if bad is None:
        return
    id_: str | None = None
    if ID in data.schema.names and bad.column != ID:
        try:
            v = data.column(ID)[bad.row].as_py()
            id_ = None if v is None else str(v)
        except UnicodeDecodeError:
            id_ = None
    raise DataError(bad.message(where, first_row, id_))


def require_input_columns(schema: pa.Schema, where: str) -> None:
    missing = [c for c in (ID, CHAPTER_TITLE, PARAGRAPH) if c not in schema.names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; shards need id, chapter_title, paragraph")
