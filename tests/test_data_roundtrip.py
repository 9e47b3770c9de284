"""JSONL -> shards -> JSONL gives the same rows back: the engine and trainer see exactly the user's data."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reportminer.data.io import (
    DataError,
    jsonl_files,
    jsonl_to_table,
    read_table,
    table_to_seed_rows,
    write_jsonl,
    write_shards,
)
from reportminer.data.schema import GOLD_METRICS, ID, SOURCE


def _roundtrip(src: Path, tmp: Path, rows_per_shard: int) -> tuple[list[str], list[str], list[Path]]:
    table = jsonl_to_table(src)
    shards = write_shards(table, tmp / "shards", rows_per_shard)
    out = tmp / "back.jsonl"
    write_jsonl(table_to_seed_rows(read_table(tmp / "shards")), out)
    original = [ln for f in jsonl_files(src) for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return original, out.read_text(encoding="utf-8").splitlines(), shards


def test_demo_roundtrip_is_byte_identical(demo_jsonl: Path, tmp_path: Path) -> None:
    original, back, shards = _roundtrip(demo_jsonl, tmp_path, rows_per_shard=5)
    assert len(shards) == 3  # 12 rows at 5 a shard: the last shard is partial
    assert back == original


def test_seed_data_roundtrip_is_byte_identical(seed_dir: Path, tmp_path: Path) -> None:
    # Four files in one folder: ids come from "type_x.jsonl:LINE" and must not be written back.
    original, back, shards = _roundtrip(seed_dir / "data", tmp_path, rows_per_shard=128)
    assert len(original) == 700 and len(shards) == 6
    assert back == original


def test_seed_sample_roundtrip_same_objects(seed_dir: Path, tmp_path: Path) -> None:
    # sample_data.jsonl writes scores as "0.90"; through float64 that comes back as 0.9: the same value,
    # so the objects (not the bytes) are identical.
    original, back, _ = _roundtrip(seed_dir / "sample_data.jsonl", tmp_path, rows_per_shard=7)
    assert [json.loads(x) for x in back] == [json.loads(x) for x in original]


def test_ids_sources_and_passthrough_columns(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    rows = [
        {"id": "r1", "type": "A", "batch": 7, "input": {"chapter_title": "t", "paragraph": "p1"},
         "output": {"analysis": "a", "metrics": [{"metric_name": "毛利率", "metric_type": "financial", "score": 0.9, "reason": "r"}]}},
        {"input": {"chapter_title": "t", "paragraph": "p2"}},  # unlabelled, no id
    ]
    # A blank line in the middle: the second row is line 3, and its generated id says so.
    src.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n\n" + json.dumps(rows[1], ensure_ascii=False) + "\n", encoding="utf-8")
    table = jsonl_to_table(src)
    assert table.column(ID).to_pylist() == ["r1", "in.jsonl:3"]
    assert table.column(SOURCE).to_pylist() == ["in.jsonl:1", "in.jsonl:3"]
    assert table.column("batch").to_pylist() == [7, None]
    assert table.column(GOLD_METRICS).to_pylist()[1] is None
    write_shards(table, tmp_path / "s", 1)
    assert pq.read_table(tmp_path / "s" / "shard-00001.parquet").column(ID).to_pylist() == ["in.jsonl:3"]
    back = list(table_to_seed_rows(read_table(tmp_path / "s")))
    assert back[0] == rows[0]
    assert back[1] == rows[1]  # columns only other rows had (type, batch) are not invented here


def test_bom_file_reads(tmp_path: Path) -> None:
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps({"input": {"chapter_title": "t", "paragraph": "p"}}).encode() + b"\n")
    assert jsonl_to_table(src).num_rows == 1


def test_bad_json_and_duplicate_ids_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": {"chapter_title": "t", "paragraph": "p"}}\n{"input": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        jsonl_to_table(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "x", "input": {"chapter_title": "t", "paragraph": "p"}}\n' * 2, encoding="utf-8")
    with pytest.raises(DataError, match="duplicate id 'x'"):
        jsonl_to_table(dup)
