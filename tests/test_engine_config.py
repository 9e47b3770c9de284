"""Engine settings, CLI surface and the pure row logic: no vLLM engine is started here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from reportminer.engine.cli import main
from reportminer.engine.config import BASE, ConfigError, EngineConfig, parse_adapter, parse_size
from reportminer.engine.rows import (
    ENGINE_COLUMNS,
    INVALID_JSON,
    LENGTH,
    SCHEMA,
    RowResult,
    output_schema,
    output_table,
    result_from_text,
)

REPO = Path(__file__).resolve().parents[1]


def test_sizes_read_like_humans_write_them():
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("512M") == 512 * 1024**2
    assert parse_size("1.5g") == int(1.5 * 1024**3)
    assert parse_size(4096) == 4096
    assert parse_size(None) is None
    with pytest.raises(ConfigError, match="cannot read size"):
        parse_size("lots")


def test_adapter_specs(tmp_path):
    assert parse_adapter("v4=/x/y") == ("v4", "/x/y")
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    assert parse_adapter(str(folder)) == ("my-adapter", str(folder))
    with pytest.raises(ConfigError, match="reserved"):
        parse_adapter(f"{BASE}=/x")


def test_yaml_then_flags(tmp_path):
    (tmp_path / "adapters" / "v1").mkdir(parents=True)
    y = tmp_path / "engine.yaml"
    y.write_text("max_tokens: 300\nmax_num_seqs: 32\nadapters:\n  v1: adapters/v1\nkv_cache_memory_bytes: 1GiB\n")
    cfg = EngineConfig.from_yaml(y)
    # Relative paths in YAML are relative to the YAML file, so a config travels with its adapters.
    assert cfg.adapters == {"v1": str(tmp_path / "adapters" / "v1")}
    assert cfg.max_tokens == 300
    over = cfg.override(max_tokens=128, temperature=None)
    assert over.max_tokens == 128 and over.temperature == 0.0 and over.max_num_seqs == 32


def test_yaml_typos_are_named(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("max_token: 300\n")
    with pytest.raises(ConfigError, match="max_token"):
        EngineConfig.from_yaml(y)


def test_shipped_yaml_examples_load():
    for y in sorted((REPO / "engine" / "configs").glob("*.yaml")):
        cfg = EngineConfig.from_yaml(y)
        assert cfg.max_tokens > 0, y


def test_resolve_fills_device_defaults_and_validates(tiny_model, tiny_adapter):
    cfg = EngineConfig(model=str(tiny_model), adapters={"a": str(tiny_adapter)}, device="cpu").resolve()
    assert cfg.max_model_len == 4096  # min(4096, the tiny model's 4096 positions)
    assert cfg.kv_cache_memory_bytes == 2 * 1024**3 and cfg.gpu_memory_utilization is None
    assert cfg.max_lora_rank == 8 and cfg.max_loras == 2  # one empty slot beyond the adapters
    assert cfg.adapter_names == ["a"]
    assert EngineConfig(model=str(tiny_model), adapters={"a": str(tiny_adapter)}, include_base=True).adapter_names == [BASE, "a"]
    gpu = EngineConfig(model=str(tiny_model), device="cuda").resolve()
    assert gpu.gpu_memory_utilization == 0.90 and gpu.kv_cache_memory_bytes is None
    with pytest.raises(ConfigError, match="max_tokens"):
        EngineConfig(model=str(tiny_model), device="cpu", max_tokens=5000).resolve()
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        EngineConfig(model=str(tiny_model), device="cpu", adapters={"x": str(tiny_model)}).resolve()


def test_a_fixed_kv_cache_is_kept_on_cuda(tiny_model):
    """--kv-cache on CUDA is vLLM's kv_cache_memory_bytes (its memory profiling skipped: an engine can start
    beside a training); gpu_memory_utilization stays what was given, the share that must be free at start."""
    gpu = EngineConfig(model=str(tiny_model), device="cuda", kv_cache_memory_bytes="6GiB",
                       gpu_memory_utilization=0.08).resolve()
    kw = gpu.vllm_kwargs()
    assert kw["kv_cache_memory_bytes"] == 6 * 1024**3 and kw["gpu_memory_utilization"] == 0.08
    alone = EngineConfig(model=str(tiny_model), device="cuda", kv_cache_memory_bytes="6GiB").resolve()
    assert alone.kv_cache_memory_bytes == 6 * 1024**3
    assert "gpu_memory_utilization" not in alone.vllm_kwargs()  # vLLM's own 0.9 must then be free at start


def test_result_settings_ignore_engine_sizes(tiny_model):
    a = EngineConfig(model=str(tiny_model), max_num_seqs=8, kv_cache_memory_bytes="1GiB")
    b = EngineConfig(model=str(tiny_model), max_num_seqs=256, kv_cache_memory_bytes="4GiB", chunk_size=99)
    assert a.result_settings() == b.result_settings()
    assert a.result_settings() != a.override(max_tokens=17).result_settings()


def test_row_classification_is_strict():
    ok = result_from_text("a", '{"analysis":"x","metrics":[{"metric_name":"毛利率","metric_type":"financial","score":0.9,"reason":"r"}]}',
                          "stop", 10, 5, 64)
    assert ok.status == "ok" and ok.metrics[0]["metric_name"] == "毛利率" and ok.error is None
    cut = result_from_text("a", '{"analysis":"x', "length", 10, 64, 64)
    assert (cut.status, cut.reason, cut.raw) == ("error", LENGTH, '{"analysis":"x')
    prose = result_from_text("a", "I think the answer is", "stop", 10, 5, 64)
    assert prose.reason == INVALID_JSON and prose.raw == "I think the answer is"
    # a repeated name is the one rule the grammar cannot state: the row keeps each name's first metric and records
    # the repeat; a repeat beside any other breach is still a row error
    dup = result_from_text("a", '{"analysis":"","metrics":[{"metric_name":"x","metric_type":"financial","score":1,"reason":"a"},'
                                '{"metric_name":"y","metric_type":"business","score":0.5,"reason":"b"},'
                                '{"metric_name":"x","metric_type":"business","score":0.9,"reason":"c"}]}', "stop", 1, 1, 64)
    assert dup.status == "ok" and [(m["metric_name"], m["reason"]) for m in dup.metrics] == [("x", "a"), ("y", "b")]
    assert [(m["metric_name"], m["metric_type"], m["reason"]) for m in dup.dropped_metrics] == [("x", "business", "c")]
    assert ok.dropped_metrics is None
    bad = result_from_text("a", '{"analysis":"","metrics":[{"metric_name":"x","metric_type":"financial","score":1,"reason":""},'
                                '{"metric_name":"x","metric_type":"other","score":1,"reason":""}]}', "stop", 1, 1, 64)
    assert bad.reason == SCHEMA and "duplicate" in bad.error and "metric_type" in bad.error


def test_an_uncapped_grammar_drops_only_the_length_caps_and_the_contract_still_judges(tiny_model):
    """guided_length_caps off, the default (issue 17: the caps make guidance's token masks ~11x dearer): the grammar
    is the contract less maxLength/minLength, and the caps still judge the answer (a row error unless the capped
    retry redoes it: test_engine_decoding). The setting is part of a run's identity only where it can change rows,
    i.e. off with sampled answers (greedy rows equal the capped run's, so an --out written with the caps keeps
    its identity), and the CLI takes both ways."""
    import jsonschema

    from reportminer.data.schema import MAX_ANALYSIS_CHARS, MAX_NAME_CHARS, OUTPUT_JSON_SCHEMA, decode_json_schema

    assert decode_json_schema() is OUTPUT_JSON_SCHEMA
    free = decode_json_schema(length_caps=False)
    assert "maxLength" not in json.dumps(free) and "minLength" not in json.dumps(free)
    capped = json.loads(json.dumps(free))
    capped["properties"]["analysis"]["maxLength"] = MAX_ANALYSIS_CHARS
    item = capped["properties"]["metrics"]["items"]["properties"]
    item["metric_name"].update(minLength=1, maxLength=MAX_NAME_CHARS)
    item["reason"]["maxLength"] = OUTPUT_JSON_SCHEMA["properties"]["metrics"]["items"]["properties"]["reason"]["maxLength"]
    assert capped == OUTPUT_JSON_SCHEMA and "maxLength" in json.dumps(OUTPUT_JSON_SCHEMA)
    long = {"analysis": "营" * (MAX_ANALYSIS_CHARS + 1), "metrics": []}
    jsonschema.validate(long, free)
    row = result_from_text("a", json.dumps(long, ensure_ascii=False), "stop", 10, 700, 1024)
    assert (row.status, row.reason) == ("error", SCHEMA) and "analysis" in row.error
    off = EngineConfig(model=str(tiny_model))
    assert off.guided_length_caps is False
    on = off.override(guided_length_caps=True)
    assert "guided_length_caps" not in off.result_settings() and off.result_settings() == on.result_settings()
    for sampled in ({"temperature": 0.7}, {"samples": 3}):
        assert off.override(**sampled).result_settings()["guided_length_caps"] is False
        assert "guided_length_caps" not in on.override(**sampled).result_settings()
    assert "guided_length_caps" not in off.override(guided=False, temperature=0.7).result_settings()
    for flag, shown in (([], "false"), (["--no-guided-length-caps"], "false"), (["--guided-length-caps"], "true")):
        res = CliRunner().invoke(main, ["config", "--model", str(tiny_model), *flag])
        assert res.exit_code == 0, res.output
        assert f"guided_length_caps: {shown}" in res.output


def test_output_schema_renames_colliding_passthrough_columns():
    schema = pa.schema([("paragraph", pa.string()), ("id", pa.string()), ("chapter_title", pa.string()),
                        ("status", pa.string())])
    out, renames = output_schema(schema)
    assert renames == {"status": "input_status"}
    assert out.names[:4] == ["id", "paragraph", "chapter_title", "input_status"]
    assert out.names[4:] == list(ENGINE_COLUMNS)
    batch = pa.record_batch([pa.array(["p1", "p2"]), pa.array(["i1", "i2"]), pa.array(["t", "t"]), pa.array(["s", "s"])],
                            schema=schema)
    results = [RowResult(adapter=n, status="ok", analysis="", metrics=[]) for _ in range(2) for n in ("x", "y")]
    t = output_table(batch, results, 2, out)
    assert t.column("id").to_pylist() == ["i1", "i1", "i2", "i2"]
    assert t.column("adapter").to_pylist() == ["x", "y", "x", "y"]


def test_cli_help_shows_real_examples():
    r = CliRunner().invoke(main, ["run", "--help"])
    assert r.exit_code == 0
    assert "engine run --input shards/ --out results/" in r.output and "--adapter v3=adapters/v3" in r.output
    r = CliRunner().invoke(main, ["extract", "--help"])
    assert r.exit_code == 0 and "engine extract --title" in r.output


def test_cli_refuses_adapter_for_another_schema_before_starting_anything(tmp_path, tiny_model, tiny_adapter):
    """Runs the real console script; the refusal comes before vLLM starts, so this takes seconds."""
    import shutil

    from reportminer.data.io import jsonl_to_table, write_shards
    from reportminer.data.manifest import AdapterManifest, base_model_fingerprint

    bad = tmp_path / "bad-adapter"
    shutil.copytree(tiny_adapter, bad)
    AdapterManifest(base_model=base_model_fingerprint(tiny_model), schema_version="v0-old").write(bad)
    write_shards(jsonl_to_table(REPO / "data" / "demo" / "demo.jsonl"), tmp_path / "in", rows_per_shard=6)
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(tmp_path / "in"), "--out", str(out),
         "--model", str(tiny_model), "--adapter", f"bad={bad}", "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "AdapterMismatch" in p.stderr and "schema" in p.stderr
    assert not list(out.rglob("*.parquet"))


def test_engine_run_path_imports_no_heavy_library():
    """`engine --help`, config loading and YAML checks must not pay for importing vLLM/torch, and what `engine run`
    imports before its engine starts (0.4 s of its 13 s to vLLM on 2 CPU cores, docs/BENCHMARKS.md) imports
    none of the libraries that only a later step, another backend or another command needs."""
    heavy = ["vllm", "torch", "transformers", "ray", "boto3", "botocore", "polars", "pandas"]
    code = ("import sys, reportminer.engine, reportminer.engine.cli, reportminer.engine.config, "
            "reportminer.engine.runner, reportminer.engine.backends, reportminer.engine.engines, "
            "reportminer.engine.pipeline, reportminer.engine.generate, reportminer.engine.storage; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_summary_json_round_trips():
    from reportminer.engine.summary import RunSummary

    s = RunSummary(status="ok", exit_code=0, input="i", out="o", model="m", adapters=[], adapter_columns=["base"])
    d = json.loads(s.to_json())
    assert d["versions"]["pyarrow"] and d["status"] == "ok"


@pytest.mark.parametrize("content", ["empty", "reports"])
def test_an_input_folder_without_shards_is_an_error_with_a_hint(tmp_path, tiny_model, content):
    """An empty or unmounted volume must not exit 0 ('nothing to do') under cron (issue 9).

    (A folder of seed-format JSONL is input since the engine reads it directly: tests/test_engine_hardening.py.)
    """
    inp = tmp_path / "in"
    inp.mkdir()
    if content == "reports":
        (inp / "a.md").write_text("# 报告\n\n正文。\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["run", "--input", str(inp), "--out", str(tmp_path / "out"), "--model", str(tiny_model)])
    assert r.exit_code == 3, r.output
    assert "no *.parquet or *.jsonl shards" in r.output
    assert ("datakit ingest" in r.output) if content == "reports" else ("mounted" in r.output)
    assert not (tmp_path / "out" / "_engine_manifest.json").exists()
