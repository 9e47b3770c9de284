"""Frames from the decoded ranges of `jsonl_chunks`: evalkit's one way of reading JSONL, in this process
or from worker processes (`pardecode`).

`evalkit score` on 200,000 JSONL cases spent its time reading (profile of a 20k-case run, cProfile:
`json.loads` of every gold and prediction line, then per prediction `json.dumps` + `data.parse.parse_output`
+ the contract check + `Extraction`, and polars building list columns from Python lists: ~8 of 11 s). Now
each file is decoded in byte ranges by `jsonl_chunks`, each range in one msgspec call a batch into typed
structs that skip the fields scoring does not read, and the frames are built here from flat columns.

A range that holds an error gives None, and these functions None: `loaders` then reads the input line
by line only to name the error (the message each rule always had). The tests compare the frames with a
plain reference reader (json.loads and `data.parse` a line) and the messages word for word
(tests/test_evalkit_loaders.py, tests/test_evalkit_pardecode.py).
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from reportminer.data.io import generated_id

from .pardecode import FileChunks, Prefetch


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a file's rows are built: 200k rows make ~1M containers,
    and the collector's repeated passes over them doubled the time of reading the gold (2.2 s -> 1.2 s CPU
    at 200k rows). Nothing built here forms a cycle; reference counting frees what is dropped."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def series(name: str, values: pa.Array | pl.Series) -> pl.Series:
    """A polars Series of an Arrow array (or a Series, renamed), through a record batch: `pl.Series(array)`
    imports pyarrow.compute (with pydoc, ~60 ms of the command's start) for a check these arrays never need."""
    if isinstance(values, pl.Series):
        return values.alias(name)
    return pl.DataFrame(pa.RecordBatch.from_arrays([values], names=[name])).to_series()


def string_lists(lists: list[list[str]]) -> pa.Array:
    """A list<string> column from Python lists, through flat values and offsets: polars' own conversion of
    200k nested Python lists took 3.9 s, this 0.4 s. (Through polars, not `pa.array`: that imports pandas,
    ~1 s of a cold start.)"""
    offsets = [0]
    flat: list[str] = []
    for x in lists:
        flat.extend(x)
        offsets.append(len(flat))
    values = pl.Series(flat, dtype=pl.String).to_arrow()
    return pa.LargeListArray.from_arrays(pl.Series(offsets, dtype=pl.Int64).to_arrow(), values)


def arrow_strings(col: dict[str, Any], n: int) -> pa.Array | pl.Series:
    """The column of `jsonl_chunks.strings`: NUL-joined text split by polars, or Arrow buffers wrapped
    without a copy; nulls where `valid` says so."""
    valid = col["valid"]
    if "nulls" in col:
        return pl.Series([None] * n, dtype=pl.String)
    if "text" in col:
        s = pl.Series([col["text"]], dtype=pl.Binary).cast(pl.String)
        out = s.str.split("\x00").explode() if n else pl.Series([], dtype=pl.String)
        if valid is not None:
            out = pl.select(pl.when(pl.Series(np.frombuffer(valid, np.uint8).astype(bool))).then(out)).to_series()
        return out
    bitmap = None if valid is None else pa.py_buffer(np.packbits(np.frombuffer(valid, np.uint8), bitorder="little"))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(col["offsets"]), pa.py_buffer(col["data"]), bitmap)


def _nulls(col: dict[str, Any], n: int) -> np.ndarray:
    """Positions of the null values of a `jsonl_chunks.strings` column."""
    if "nulls" in col:
        return np.arange(n)
    if col["valid"] is None:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.frombuffer(col["valid"], np.uint8) == 0)


def list_column(values: dict[str, Any], counts: bytes, rows: int) -> pa.Array:
    """A list<string> array: the flattened values and an int64 count a row."""
    c = np.frombuffer(counts, np.int64)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(c, out=offsets[1:])
    # (`pa.array` would import pandas, ~0.25 s of a cold start; polars wraps the numpy array as it is.)
    flat = arrow_strings(values, int(offsets[-1]))
    if isinstance(flat, pl.Series):
        flat = flat.to_arrow()
    return pa.LargeListArray.from_arrays(pl.Series(offsets).to_arrow(), flat)


def _line_numbers(c: dict[str, Any], line0: int) -> np.ndarray:
    """The 1-based line of each row of range `c` whose first line is line0 + 1."""
    if c["at"] is None:  # row k is line k
        return np.arange(line0 + 1, line0 + c["n"] + 1, dtype=np.int64)
    return np.frombuffer(c["at"], np.int64) + (line0 + 1)


def _source(fc: FileChunks, lines: np.ndarray) -> pl.Series:
    return (pl.lit(f"{fc.file}:") + pl.Series(lines).cast(pl.String)).alias("source")


def _chunk_frames(files: list[FileChunks], build: Any) -> list[pl.DataFrame]:
    """`build(chunk, file, its rows' 1-based lines)` for each range in order."""
    out = []
    for fc in files:
        line0 = 0
        for c in fc.chunks:
            assert c is not None
            if c["n"]:
                out.append(build(c, fc, _line_numbers(c, line0)))
            line0 += c["lines"]
    return out


def _chunks(kind: str, path: Path, pre: Prefetch | None) -> list[FileChunks] | None:
    """Every file of `path` decoded in ranges: prefetched by workers, else here in one range a file."""
    if pre is not None:
        got = pre.get(kind, path)
        if got is not None:
            return got
    with Prefetch([(kind, path)], workers=1) as here:
        return here.get(kind, path)


def _concat(frames: list[pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(schema=schema)
    df = pl.concat(frames)
    return df.cast({k: v for k, v in schema.items() if k in df.columns})


# With `text` (grounding), gold frames also hold these columns and prediction frames PRED_TEXT.
GOLD_TEXT: dict[str, pl.DataType | type[pl.DataType]] = {"paragraph": pl.String, "gold_reasons": pl.List(pl.String)}
PRED_TEXT: dict[str, pl.DataType | type[pl.DataType]] = {"pred_reasons": pl.List(pl.String)}


def gold_frame(path: Path, schema: dict[str, Any], pre: Prefetch | None = None, text: bool = False) -> pl.DataFrame | None:
    """The gold frame of JSONL at `path` (with `text`: GOLD_TEXT too), or None when some line is an error
    (`loaders` names it)."""

    def build(c: dict[str, Any], fc: FileChunks, lines: np.ndarray) -> pl.DataFrame:
        n = c["n"]
        ids = series("id", arrow_strings(c["ids"], n))
        at = _nulls(c["ids"], n)
        if len(at):  # rows without an id: `name:LINE` (data.io.generated_id)
            ids = ids.scatter(at, [generated_id(fc.rel, int(lines[k])) for k in at])
        cols = [
            ids, series("scenario", arrow_strings(c["scenario"], n)),
            series("gold_names", list_column(c["names"], c["counts"], n)),
            series("gold_types", list_column(c["types"], c["counts"], n)),
        ]
        if text:
            cols += [series("paragraph", arrow_strings(c["paragraph"], n)),
                     series("gold_reasons", list_column(c["reasons"], c["counts"], n))]
        return pl.DataFrame(cols).with_columns(_source(fc, lines))

    files = _chunks("gold+text" if text else "gold", path, pre)
    if files is None:
        return None
    full = {**schema, **(GOLD_TEXT if text else {})}
    gold = _concat(_chunk_frames(files, build), full)
    return gold.select(
        "id", pl.int_range(1, gold.height + 1, dtype=pl.Int64).alias("case"), *[k for k in full if k not in ("id", "case")]
    )


def pred_frame(path: Path, gold_ids: pl.Series, schema: dict[str, Any], pre: Prefetch | None = None,
               text: bool = False) -> pl.DataFrame | None:
    """The predictions frame of JSONL at `path` (with `text`: PRED_TEXT too), or None when some line is an
    error or the rows break a rule that `loaders` states with a message (ids on some rows only, more rows
    than gold)."""

    def build(c: dict[str, Any], fc: FileChunks, lines: np.ndarray) -> pl.DataFrame:
        n = c["n"]
        return pl.DataFrame([
            series("id", arrow_strings(c["ids"], n)),
            series("pred_names", list_column(c["names"], c["counts"], n)),
            series("pred_types", list_column(c["types"], c["counts"], n)),
            pl.Series("json_valid", np.frombuffer(c["valid"], np.uint8).astype(bool)),
            series("error", arrow_strings(c["error"], n)),
            series("pred_scenario", arrow_strings(c["group"], n)),
            *([series("pred_reasons", list_column(c["reasons"], c["counts"], n))] if text else []),
        ]).with_columns(_source(fc, lines))

    files = _chunks("pred+text" if text else "pred", path, pre)
    if files is None:
        return None
    chunks = [c for fc in files for c in fc.chunks if c is not None]
    n = sum(c["n"] for c in chunks)
    with_ids = sum(c["has_ids"] for c in chunks)
    if with_ids not in (0, n) or (with_ids == 0 and n > len(gold_ids)):
        return None  # ids on some rows only, or more rows than gold: `loaders` says which row
    preds = _concat(_chunk_frames(files, build), {**schema, **(PRED_TEXT if text else {})})
    if with_ids == 0 and n:  # no ids: row k is gold case k
        preds = preds.with_columns(gold_ids.head(n).alias("id"))
    return preds
