"""The row cache (engine/row_cache.py): a paragraph extracted before under the same model, adapter weights,
prompt, schema and decoding settings is served, not recomputed, whatever shard it arrives in.

The store's own rules (whole-or-absent segments, torn segments ignored, error rows never kept, scopes)
are checked without an engine; then one real vLLM engine (tiny model) runs five small runs that count,
through the run summary, which rows reached the model.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from reportminer.data.io import jsonl_to_table, read_table, write_parquet
from reportminer.engine import Engine, EngineConfig, row_cache
from reportminer.engine.adapters import Adapter
from reportminer.engine.row_cache import CACHE_DIR, RowCache, column_scopes
from reportminer.engine.rows import RowResult, error_row, output_schema, output_table
from reportminer.engine.runner import run

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "demo.jsonl"


def _ok(n: int) -> RowResult:
    return RowResult(adapter="v1", status="ok", analysis=f"分析{n}", raw='{"analysis":"x","metrics":[]}',
                     metrics=[{"metric_name": f"营收{n}", "metric_type": "financial", "score": 0.91, "reason": "r",
                               "agreement": 1.0}],
                     finish_reason="stop", prompt_tokens=300 + n, output_tokens=20 + n,
                     samples={"valid": 1, "total": 1}, dropped_metrics=None)


def _segments(out: Path) -> list[Path]:
    return sorted((out / CACHE_DIR).glob("seg-*.arrow"))


# ---- the store ----------------------------------------------------------------------------------------


def test_ok_rows_round_trip_error_rows_are_not_kept(tmp_path):
    c = RowCache.open(tmp_path, ["s0", "s1"])
    c.put(0, "标题", "段落一", _ok(1))
    c.put(1, "标题", "段落一", _ok(2))
    c.put(0, "标题", "段落二", error_row("v1", "length", "cut"))
    c.put(0, None, "段落三", _ok(3))
    assert not _segments(tmp_path)  # nothing committed before a flush
    assert c.close().stored == 3 and len(_segments(tmp_path)) == 1

    c = RowCache.open(tmp_path, ["s0", "s1"])
    assert c.stats.entries == 3
    got = c.get(0, "renamed", "标题", "段落一")
    assert got is not None and got.adapter == "renamed"
    # Served rows are written exactly like computed ones: the same Arrow columns.
    schema, _ = output_schema(pa.schema([("id", pa.string())]))
    batch = pa.RecordBatch.from_pydict({"id": ["x"]}, schema=pa.schema([("id", pa.string())]))
    want = _ok(1)
    want.adapter = "renamed"
    assert output_table(batch, [got], 1, schema).equals(output_table(batch, [want], 1, schema))
    assert c.get(1, "b", "标题", "段落一").prompt_tokens == 302  # the other column's own row
    assert c.get(0, "a", "标题", "段落二") is None  # the error row was not kept
    assert c.get(0, "a", "", "段落三") is not None  # title None and "" give the same prompt
    assert c.get(0, "a", "标题", " 段落一 ") is not None  # so does surrounding space (the prompt strips it)
    assert c.get(0, "a", "标题", "段落一。") is None
    assert (c.stats.served, c.stats.computed) == (4, 2)
    # The pipeline looks a row up once (`lookup`) and counts it when it fills the row (`tally`).
    hit = c.lookup(0, "a", "标题", "段落一")
    assert hit is not None and hit.prompt_tokens == 301 and c.lookup(0, "a", "标题", "段落二") is None
    assert (c.stats.served, c.stats.computed) == (4, 2)
    c.tally(hit)
    c.tally(None)
    assert (c.stats.served, c.stats.computed) == (5, 3)

    assert RowCache.open(tmp_path, ["s2"]).stats.entries == 0  # another scope sees nothing
    off = RowCache.open(tmp_path, ["s0"], enabled=False)
    off.put(0, "标题", "段落四", _ok(4))
    assert off.get(0, "a", "标题", "段落一") is None and off.close().stored == 0 and len(_segments(tmp_path)) == 1


def test_a_torn_or_foreign_segment_is_ignored_with_a_warning(tmp_path, caplog):
    for n in range(3):
        c = RowCache.open(tmp_path, ["s"])
        c.put(0, "t", f"p{n}", _ok(n))
        c.close()
    segs = _segments(tmp_path)
    segs[0].write_bytes(segs[0].read_bytes()[: segs[0].stat().st_size // 2])  # torn
    (tmp_path / CACHE_DIR / "seg-junk.arrow").write_bytes(b"not arrow at all")
    (tmp_path / CACHE_DIR / ".seg-x.arrow.abc.tmp").write_bytes(b"a crashed write")  # never read
    with caplog.at_level(logging.WARNING, logger="engine"):
        c = RowCache.open(tmp_path, ["s"])
    assert sorted(c.stats.ignored_segments) == sorted([segs[0].name, "seg-junk.arrow"])
    assert sum("ignoring unreadable segment" in r.message for r in caplog.records) == 2
    assert c.get(0, "a", "t", "p0") is None  # its row is recomputed ...
    assert c.get(0, "a", "t", "p1") is not None and c.get(0, "a", "t", "p2") is not None  # ... the others are served
    c.put(0, "t", "p0", _ok(0))
    assert c.close().stored == 1  # and the cache keeps working
    assert RowCache.open(tmp_path, ["s"]).get(0, "a", "t", "p0") is not None


def test_many_segments_are_compacted(tmp_path, monkeypatch):
    monkeypatch.setattr(row_cache, "COMPACT_ABOVE", 3)
    for n in range(5):
        c = RowCache.open(tmp_path, ["s"])
        c.put(0, "t", f"p{n}", _ok(n))
        c.close()
    assert len(_segments(tmp_path)) == 2  # the 5th open found 4 segments and merged them into one
    monkeypatch.setattr(row_cache, "COMPACT_ABOVE", 1)
    c = RowCache.open(tmp_path, ["s"])
    assert len(_segments(tmp_path)) == 1 and c.stats.entries == 5 and c.stats.segments == 1


def test_an_out_folder_without_a_cache_seeds_it_from_its_finished_shards(tmp_path):
    """The first run after an upgrade: rows already in OUT are not recomputed (ingest renames shards once)."""
    in_schema = pa.schema([("id", pa.string()), ("chapter_title", pa.string()), ("paragraph", pa.string())])
    schema, _ = output_schema(in_schema)
    batch = pa.RecordBatch.from_pydict({"id": ["1", "2"], "chapter_title": ["t", None], "paragraph": ["p1", "p2"]},
                                       schema=in_schema)
    ok_b, ok_c, err = _ok(1), _ok(2), error_row("c", "length", "cut")
    ok_b.adapter, ok_c.adapter = "base", "c"
    results = [ok_b, ok_c, _ok(3), err]  # row 1: base, c; row 2: base (adapter v1 is not a column), c
    results[2].adapter = "v1"
    write_parquet(output_table(batch, results, 2, schema), tmp_path / "old" / "s.parquet")
    (tmp_path / (CACHE_DIR + ".seeding")).mkdir()  # a seeding killed part-way is cleared, not used
    c = RowCache.open(tmp_path, ["sb", "sc"])
    assert not (tmp_path / (CACHE_DIR + ".seeding")).exists()
    assert c.seed(tmp_path, ["old/s.parquet", "gone.parquet"], ["base", "c"]) == 2
    assert (c.stats.seeded, c.stats.stored, c.stats.entries) == (2, 0, 2)
    got = c.get(1, "c", "t", "p1")
    assert got is not None and output_table(batch.slice(0, 1), [got], 1, schema).equals(
        output_table(batch.slice(0, 1), [ok_c], 1, schema))
    assert c.get(1, "c", None, "p2") is None  # the error row was not seeded
    assert RowCache.open(tmp_path, ["sb", "sc"]).seed(tmp_path, ["old/s.parquet"], ["base", "c"]) == 0  # once


def test_scope_follows_adapter_content_and_decoding_not_names(tmp_path):
    ident = {"model": {"name": "m"}, "schema": "v1", "prompt": "v2", "max_tokens": 32, "adapters": [],
             "include_base": True, "decoding": {"samples": 1, "score_threshold": {"a": None, "b": 0.5, "base": None},
                                                "merge_adapter": False}}
    a, b = Adapter("a", tmp_path, 8, "aaaa"), Adapter("b", tmp_path, 8, "bbbb")
    s = column_scopes(ident, ["base", "a", "b"], {"a": a, "b": b})
    assert len(set(s)) == 3
    renamed = column_scopes(ident, ["x"], {"x": Adapter("x", tmp_path / "elsewhere", 8, "aaaa")})
    assert renamed == [s[1]]  # same weights under another name and folder: same rows
    assert column_scopes({**ident, "max_tokens": 33}, ["a"], {"a": a}) != [s[1]]
    assert column_scopes({**ident, "include_base": False}, ["a"], {"a": a}) == [s[1]]  # only says which columns run


# ---- the engine -----------------------------------------------------------------------------------------

MAX_TOKENS = 32  # base rows of the random model run to the cut (error rows); closing-adapter rows end ok


@pytest.fixture(scope="module")
def cfg(tiny_model, tiny_closing_adapter) -> EngineConfig:
    return EngineConfig(model=str(tiny_model), adapters={"c": str(tiny_closing_adapter)}, include_base=True,
                        max_model_len=2048, kv_cache_memory_bytes="512MiB", max_num_seqs=64, max_tokens=MAX_TOKENS,
                        max_loras=3)


@pytest.fixture(scope="module")
def eng(cfg):
    e = Engine.start(cfg)
    yield e
    e.close()


@pytest.fixture(scope="module")
def first(eng, cfg, tmp_path_factory):
    """The demo's 12 paragraphs in two shards, run once: (input table, out folder, summary, rows by key)."""
    table = jsonl_to_table(DEMO)
    d = tmp_path_factory.mktemp("rc")
    write_parquet(table.slice(0, 6), d / "in1" / "a.parquet")
    write_parquet(table.slice(6), d / "in1" / "b.parquet")
    s = run(cfg, d / "in1", d / "out", engine=eng, progress=False)
    return table, d, s, {(r["id"], r["adapter"]): r for r in read_table(d / "out").to_pylist()}


@pytest.mark.engine
def test_rows_moved_to_other_shards_are_served_and_error_rows_retried(eng, cfg, first):
    table, d, s1, rows1 = first
    c1 = s1.row_cache
    assert s1.by_adapter["c"]["ok"] == 12 and s1.by_adapter["base"]["error"] >= 1  # both kinds of row exist
    assert (c1["served"], c1["computed"], c1["stored"]) == (0, 24, s1.ok)

    # The nightly case: the same paragraphs regrouped into other shards, plus two new ones.
    new = table.slice(0, 2)
    new = new.set_column(new.schema.get_field_index("id"), "id", pa.array(["new-1", "new-2"]))
    new = new.set_column(new.schema.get_field_index("paragraph"), "paragraph",
                         pa.array([p + "另据公告，公司新增订单12亿元。" for p in new.column("paragraph").to_pylist()]))
    write_parquet(pa.concat_tables([table.slice(6), table.slice(0, 3)]), d / "in2" / "x.parquet")
    write_parquet(pa.concat_tables([table.slice(3, 3), new]), d / "in2" / "y.parquet")
    s2 = run(cfg, d / "in2", d / "out", engine=eng, progress=False)
    c2 = s2.row_cache
    base_errors = s1.by_adapter["base"]["error"]
    # Only the new paragraphs and the error rows of the moved ones reached the model.
    assert c2["served"] == s1.ok == 12 + 12 - base_errors
    assert c2["computed"] == 2 * 2 + base_errors
    assert s2.output_rows == 28 and s2.by_adapter["c"]["ok"] == 14
    rows2 = {(r["id"], r["adapter"]): r for r in read_table(d / "out" / "x.parquet").to_pylist()
             + read_table(d / "out" / "y.parquet").to_pylist()}
    for key, r in rows1.items():  # a served row is the computed row, column for column
        assert rows2[key] == r, key


@pytest.mark.engine
def test_other_adapter_weights_or_decoding_miss_and_the_switch_turns_it_off(eng, cfg, first, tiny_closing_adapter,
                                                                          tiny_adapter, tmp_path):
    table, d, s1, _ = first
    shutil.copytree(d / "out" / CACHE_DIR, tmp_path / "out" / CACHE_DIR)  # the first run's cache, another --out
    # The closing adapter's weights under the name x hit; the name c now holds other weights and misses.
    swapped = cfg.override(adapters={"x": str(tiny_closing_adapter), "c": str(tiny_adapter)}, include_base=False)
    s = run(swapped, d / "in1", tmp_path / "out", engine=eng, progress=False)
    assert (s.row_cache["served"], s.row_cache["computed"]) == (12, 12)
    assert s.by_adapter["x"]["ok"] == 12 and s.by_adapter["x"]["output_tokens"] == 0  # no work for x

    only_c = cfg.override(include_base=False)
    s = run(only_c.override(max_tokens=MAX_TOKENS + 1), d / "in1", tmp_path / "o2", engine=eng, progress=False)
    assert s.row_cache["served"] == 0 and s.row_cache["computed"] == 12  # a decoding setting changed

    shutil.copytree(d / "out" / CACHE_DIR, tmp_path / "o3" / CACHE_DIR)
    before = sorted(p.name for p in (tmp_path / "o3" / CACHE_DIR).iterdir())
    s = run(only_c.override(row_cache=False), d / "in1", tmp_path / "o3", engine=eng, progress=False)
    assert s.row_cache["enabled"] is False and (s.row_cache["served"], s.row_cache["computed"]) == (0, 12)
    assert sorted(p.name for p in (tmp_path / "o3" / CACHE_DIR).iterdir()) == before
    assert "row cache" not in s.render()


@pytest.mark.engine
def test_a_run_the_cache_serves_whole_never_starts_vllm_and_a_partly_cached_one_does(cfg, tmp_path, monkeypatch,
                                                                                       caplog):
    """Issue 17: a rerun over unchanged input with --overwrite (the nightly case) used to start vLLM (87 s warm on
    an H100) and then serve 64 of 64 rows from the cache. The local engine now starts at the first row the cache
    cannot serve: never for this rerun, which writes the same files; once a row is new, it does start."""
    from conftest import EngineTripwire

    from reportminer.engine import engines
    from reportminer.engine.run_manifest import MANIFEST_NAME, RunManifest

    only_c = cfg.override(include_base=False)  # closing-adapter rows end ok, so every row is stored
    table = jsonl_to_table(DEMO)
    inp, out = tmp_path / "in", tmp_path / "out"
    write_parquet(table.slice(0, 6), inp / "a.parquet")
    caplog.set_level(logging.INFO, logger="engine")
    first = run(only_c, inp, out, progress=False)  # no engine handed in: this run starts its own
    assert first.ok == 6 and first.engine_start_s > 0
    assert (first.row_cache["served"], first.row_cache["computed"]) == (0, 6)
    assert "starting the engine: a row the row cache cannot serve" in caplog.text
    files = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    shards = RunManifest.read(out).shards  # type: ignore[union-attr]

    monkeypatch.setattr(engines, "Engine", EngineTripwire)  # from here on, starting vLLM fails the test
    caplog.clear()
    again = run(only_c, inp, out, overwrite=True, progress=False)
    assert (again.row_cache["served"], again.row_cache["computed"]) == (6, 0)
    assert again.exit_code == 0 and again.status == "ok" and again.ok == 6 and again.shards_done == 1
    assert again.engine_start_s == 0.0 and "vLLM was not started" in caplog.text
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == files  # byte for byte
    strip = {"completed_at"}
    assert ({k: {f: v for f, v in e.items() if f not in strip} for k, e in RunManifest.read(out).shards.items()}  # type: ignore[union-attr]
            == {k: {f: v for f, v in e.items() if f not in strip} for k, e in shards.items()})
    assert (out / MANIFEST_NAME).exists()

    # One new paragraph: the cached shard is served and committed, then the engine is asked for.
    new = table.slice(6, 1)
    write_parquet(new, inp / "b.parquet")
    with pytest.raises(AssertionError, match="vLLM was started"):
        run(only_c, inp, out, overwrite=True, progress=False)
    monkeypatch.undo()
    partly = run(only_c, inp, out, overwrite=True, progress=False)  # the real engine, started for b's row
    assert partly.engine_start_s > 0 and partly.ok == 7
    assert (partly.row_cache["served"], partly.row_cache["computed"]) == (6, 1)
    assert (out / "a.parquet").read_bytes() == files["a.parquet"]
