"""Labelled rows for training: validated, fingerprinted and split before any model is loaded.

Every row is checked with the contract's validator (data.validate) first, because a run that dies at
step 900 on a malformed row, or quietly learns from a misspelt metric type, costs far more than reading
the data once. The sha256 and row count of every file go into the adapter manifest, so an adapter can
always be traced back to the exact data it saw.
"""
from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reportminer.data.io import (
    DataError,
    data_kind,
    file_sha256,
    iter_jsonl,
    jsonl_files,
    parquet_files,
    read_table,
    table_to_seed_rows,
)
from reportminer.data.schema import CHAPTER_TITLE, PARAGRAPH, SCENARIO
from reportminer.data.validate import validate_path

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class LabelledRow:
    source: str  # "file.jsonl:LINE" or "file.parquet[row N]": where to look when something is wrong
    chapter_title: str
    paragraph: str
    output: dict[str, Any]
    scenario: str | None = None


@dataclass
class DataFile:
    path: str
    sha256: str
    rows: int
    role: str  # train | dev | train+dev (a dev split cut out of the training file) | train-extra (extra_data)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "rows": self.rows, "role": self.role}


@dataclass
class LoadedData:
    train: list[LabelledRow]
    dev: list[LabelledRow]
    files: list[DataFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def data_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    kind = data_kind(p)  # a folder of one kind (data.io.data_kind)
    if p.is_file():
        return [p]
    return parquet_files(p) if kind == "parquet" else jsonl_files(p)


def validate(path: str | os.PathLike, seed_rules: bool = True, progress: bool = False) -> list[str]:
    """Raise DataError naming file:line of every bad row; return the validator's warnings as text."""
    report = validate_path(path, seed_rules=seed_rules, require_labels=True, progress=progress)
    report.raise_for_errors()
    return [str(w) for w in report.warnings]


def read_rows(path: str | os.PathLike) -> list[LabelledRow]:
    """Rows of a validated file or folder (JSONL lines and Parquet rows with gold columns)."""
    root = Path(path)
    rows: list[LabelledRow] = []
    files = data_files(root)
    if any(f.suffix != ".parquet" for f in files):
        for r in iter_jsonl(root):  # a folder: every *.jsonl under it; a file: that file
            obj = r.obj
            inp = obj["input"] if isinstance(obj.get("input"), dict) else obj
            rows.append(
                LabelledRow(
                    source=f"{r.file}:{r.line}",
                    chapter_title=inp.get(CHAPTER_TITLE) or "",
                    paragraph=inp.get(PARAGRAPH) or "",
                    output=obj["output"],
                    scenario=obj.get(SCENARIO),
                )
            )
    for f in (x for x in files if x.suffix == ".parquet"):
        for i, obj in enumerate(table_to_seed_rows(read_table(f)), 1):
            rows.append(
                LabelledRow(
                    source=f"{f}[row {i}]",
                    chapter_title=obj["input"].get(CHAPTER_TITLE) or "",
                    paragraph=obj["input"].get(PARAGRAPH) or "",
                    output=obj["output"],
                    scenario=obj.get(SCENARIO),
                )
            )
    if not rows:
        raise DataError(f"{root}: no labelled rows")
    return rows


def split_dev(rows: list[LabelledRow], fraction: float, seed: int) -> tuple[list[LabelledRow], list[LabelledRow]]:
    """Hold out `fraction` of the rows, the same share of each scenario, reproducibly for a seed.

    Stratifying keeps a small dev set from missing the rare scenarios (the seed has 72 count-variation
    rows of 700), whose loss is the one most worth watching.
    """
    if fraction <= 0 or len(rows) < 2:
        return list(rows), []
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[str(r.scenario or "")].append(i)
    rng = random.Random(seed)
    dev_idx: set[int] = set()
    for key in sorted(groups):
        idx = groups[key][:]
        rng.shuffle(idx)
        dev_idx.update(idx[: round(len(idx) * fraction)])
    if not dev_idx:  # tiny sets: still hold one row out, so eval loss exists
        dev_idx.add(rng.randrange(len(rows)))
    if len(dev_idx) >= len(rows):
        dev_idx.discard(next(iter(dev_idx)))
    train = [r for i, r in enumerate(rows) if i not in dev_idx]
    dev = [r for i, r in enumerate(rows) if i in dev_idx]
    return train, dev


def _fingerprints(path: str | os.PathLike, rows: list[LabelledRow], role: str) -> list[DataFile]:
    out = []
    for f in data_files(path):
        prefix = str(f)
        n = sum(1 for r in rows if r.source.startswith(prefix + ":") or r.source.startswith(prefix + "[row "))
        out.append(DataFile(path=str(f), sha256=file_sha256(f), rows=n, role=role))
    return out


def load_training_data(
    data: str | os.PathLike,
    dev_data: str | os.PathLike | None = None,
    dev_fraction: float = 0.05,
    seed: int = 42,
    seed_rules: bool = True,
    progress: bool = False,
    extra_data: Sequence[str | os.PathLike] = (),
) -> LoadedData:
    """Validate, read and split; nothing is returned unless every row of every file is usable.

    `extra_data` files join the training split after the dev split is cut (they never reach dev); an
    extra row whose paragraph is a dev paragraph is refused, so dev loss never scores a trained row."""
    warnings = validate(data, seed_rules, progress)
    rows = read_rows(data)
    if dev_data:
        warnings += validate(dev_data, seed_rules, progress)
        dev = read_rows(dev_data)
        train = rows
        files = _fingerprints(data, rows, "train") + _fingerprints(dev_data, dev, "dev")
    else:
        train, dev = split_dev(rows, dev_fraction, seed)
        files = _fingerprints(data, rows, "train+dev" if dev else "train")
    dev_paragraphs = {"".join(r.paragraph.split()) for r in dev}
    for extra in extra_data:
        warnings += validate(extra, seed_rules, progress)
        more = read_rows(extra)
        leak = [r.source for r in more if "".join(r.paragraph.split()) in dev_paragraphs]
        if leak:
            raise DataError(f"{extra}: {len(leak)} row(s) repeat a dev paragraph (extra rows are training rows only): "
                            + ", ".join(leak[:5]))
        train = train + more
        files += _fingerprints(extra, more, "train-extra")
    return LoadedData(train=train, dev=dev, files=files, warnings=warnings)
