"""Finding the input shards: Parquet or seed-format JSONL, symlinked folders followed, loops reported.

`Path.rglob` (Python < 3.13) does not descend into symlinked folders, so a shard folder linked into the
input tree was skipped without a word (issue 9: 12 rows). The walk here follows links and remembers the
real path of every folder it entered: a link back to an ancestor (a loop) or a second link to a folder
already walked is reported once and not entered again, so a loop cannot hang the run or count rows twice.

A folder holds one kind of data: `*.parquet` shards, or `*.jsonl` files in the seed's format (each file
is one shard; its output is `<name>.parquet`). Both kinds in one folder are refused, as `data.io.data_kind`
refuses them for every room, so that no command reads one data set from two places.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from reportminer.data.errors import DataError
from reportminer.data.io import iter_jsonl_file, seed_rows_table
from reportminer.data.schema import CHAPTER_TITLE, PARAGRAPH

from .interop import OPENAI_BATCH, batch_requests_table, neither_format, row_format

KINDS = {".parquet": "parquet", ".jsonl": "jsonl"}


@dataclass
class Found:
    files: list[tuple[Path, str]] = field(default_factory=list)  # (path as reached, posix path under root)
    notes: list[str] = field(default_factory=list)  # loops and folders reached twice, each said once


def walk(root: Path, suffixes: tuple[str, ...], exclude: Path | None = None) -> Found:
    """Data files under `root` (sorted by relative path), following symlinked folders once each.

    Hidden files and folders and `_`-prefixed bookkeeping files are not data (`data.io._data_files`);
    `exclude` (the resolved --out) is never entered, so outputs linked into the input are not read.
    """
    found = Found()
    seen: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) of every folder entered -> its relative path

    def visit(d: Path, rel: str) -> None:
        try:
            st = d.stat()
        except OSError as e:
            found.notes.append(f"{d}: cannot enter ({e.strerror})")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            first = seen[key] or "."
            kind = "a symlink loop" if (rel + "/").startswith((first + "/") if first != "." else "") else "reached twice"
            found.notes.append(f"{d}: folder already read as {first!r} ({kind}); not read again")
            return
        seen[key] = rel
        if exclude is not None and d.resolve() == exclude:
            found.notes.append(f"{d}: is the output folder; not read as input")
            return
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            found.notes.append(f"{d}: cannot list ({e.strerror})")
            return
        for ent in entries:
            if ent.name.startswith("."):
                continue
            sub = f"{rel}/{ent.name}" if rel else ent.name
            try:
                is_dir = ent.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                visit(Path(ent.path), sub)
            elif ent.name.lower().endswith(suffixes) and not ent.name.startswith("_"):
                # Case-blind: `B.PARQUET` is a shard too (issue 19: it was skipped without a word).
                try:
                    is_file = ent.is_file(follow_symlinks=True)
                except OSError:
                    is_file = False
                if is_file:
                    found.files.append((Path(ent.path), sub))
                elif ent.is_symlink() and not os.path.exists(ent.path):
                    found.notes.append(f"{ent.path}: dangling symlink (to {os.readlink(ent.path)}); its shard is "
                                       "missing from this run")
                else:
                    found.notes.append(f"{ent.path}: not a regular file; skipped")
            elif ent.is_symlink() and not os.path.exists(ent.path):
                found.notes.append(f"{ent.path}: dangling symlink; skipped")

    visit(root, "")
    found.files.sort(key=lambda t: t[1])
    return found


def folder_kind(root: Path, found: Found) -> str | None:
    """'parquet', 'jsonl', or None (no data files); both kinds is a DataError naming an example of each."""
    by_kind: dict[str, list[str]] = {}
    for _p, rel in found.files:
        by_kind.setdefault(KINDS[Path(rel).suffix.lower()], []).append(rel)
    if len(by_kind) > 1:
        j, p = by_kind["jsonl"], by_kind["parquet"]
        raise DataError(
            f"{root}: holds both *.jsonl ({len(j)}, e.g. {Path(j[0]).name}) and *.parquet files "
            f"({len(p)}, e.g. {Path(p[0]).name}); point at a folder of one kind"
        )
    return next(iter(by_kind), None)


def file_kind(path: Path) -> str:
    """A single --input file: .jsonl is seed-format JSONL, anything else is read as Parquet."""
    return "jsonl" if path.suffix.lower() == ".jsonl" else "parquet"


def read_jsonl_shard(path: Path, rel: str) -> pa.Table:
    """One JSONL file as shard columns: seed-format rows (data.io's reader; ids `rel:LINE` where a row has
    none) or OpenAI batch requests (engine/interop.py), told apart by the first line; a line of neither
    format is a DataError naming it.

    Refuses a row whose paragraph or title is not text (an integer paragraph would run on its digits);
    duplicate ids are not refused here: the run reports them (and `--strict-ids` refuses them).
    """
    rows = []
    it = iter_jsonl_file(path, rel)
    first = next(it, None)
    if first is not None:
        fmt = row_format(first.obj)
        if fmt == OPENAI_BATCH:  # `vllm run-batch` / OpenAI Batch API requests (engine/interop.py)
            return batch_requests_table([first, *it])
        if fmt is None:  # issue 19: such a file ran and turned every row into empty_paragraph
            raise neither_format(f"{path}:{first.line}", first.obj)
        it = iter([first, *it])
    for r in it:
        if row_format(r.obj) is None:
            raise neither_format(f"{path}:{r.line}", r.obj)
        inp = r.obj["input"] if isinstance(r.obj.get("input"), dict) else r.obj
        for col in (PARAGRAPH, CHAPTER_TITLE):
            v = inp.get(col)
            if v is not None and not isinstance(v, str):
                raise DataError(f"{path}:{r.line}: {col} is a {type(v).__name__}, not text")
        rows.append(r)
    if not rows:
        return pa.table({"id": pa.array([], pa.string()), CHAPTER_TITLE: pa.array([], pa.string()),
                         PARAGRAPH: pa.array([], pa.string())})
    return seed_rows_table(rows)


__all__ = ["Found", "file_kind", "folder_kind", "read_jsonl_shard", "walk"]
