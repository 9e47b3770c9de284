"""`datakit` commands end to end through click's CliRunner, with their exit codes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.data.cli import main
from reportminer.data.models.demo import demo_model_dir


@pytest.fixture()
def run():
    runner = CliRunner()

    def _run(*args: str, code: int = 0):
        res = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert res.exit_code == code, res.output
        return res

    return _run


def test_help_shows_examples(run) -> None:
    assert "datakit shard --input data/demo/demo.jsonl --out parquet_out/demo" in run("--help").output
    for cmd in ("validate", "shard", "export", "ingest", "stats", "fetch-model"):
        out = run(cmd, "--help").output
        assert "Examples:" in out and f"datakit {cmd}" in out, cmd


def test_shard_export_roundtrip(run, demo_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    res = run("shard", "--input", demo_jsonl, "--out", out, "--rows-per-shard", "5")
    assert "wrote 12 rows to 3 shard(s)" in res.output
    assert sorted(p.name for p in out.iterdir()) == [f"shard-0000{i}.parquet" for i in range(3)]
    run("export", "--input", out, "--out", tmp_path / "back.jsonl")
    assert (tmp_path / "back.jsonl").read_bytes() == demo_jsonl.read_bytes()
    # Re-sharding with bigger shards leaves no stale files behind.
    assert "removed 2 stale shard(s)" in run("shard", "--input", demo_jsonl, "--out", out).output
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.parquet"]


def test_seed_folder_roundtrip_via_cli(run, seed_dir: Path, tmp_path: Path) -> None:
    run("shard", "--input", seed_dir / "data", "--out", tmp_path / "s", "--rows-per-shard", "300")
    run("export", "--input", tmp_path / "s", "--out", tmp_path / "back.jsonl")
    original = b"".join((seed_dir / "data" / f"type_{x}.jsonl").read_bytes() for x in "abcd")
    assert (tmp_path / "back.jsonl").read_bytes() == original


def test_validate_exit_codes_and_locations(run, demo_jsonl: Path, tmp_path: Path) -> None:
    assert "OK: 12 rows (12 labelled)" in run("validate", demo_jsonl).output
    bad = tmp_path / "bad.jsonl"
    lines = demo_jsonl.read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace('"financial"', '"finance"', 1)
    lines[7] = "{oops"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = run("validate", bad, "--json", tmp_path / "issues.json", code=1)
    assert re.search(rf"{re.escape(str(bad))}:5: error: output\.metrics\[\d\]\.metric_type: 'finance' is not one of financial/business", res.output)
    assert f"{bad}:8: error: invalid JSON" in res.output
    assert "FAILED: 12 rows (11 labelled) in 1 file(s): 2 error(s), 0 warning(s)" in res.output
    dumped = json.loads((tmp_path / "issues.json").read_text())
    assert dumped["errors"] == 2 and [i["line"] for i in dumped["issues"]] == [5, 8]
    # shard refuses invalid input and writes nothing; --no-validate still stops at unparseable JSON.
    res = run("shard", "--input", bad, "--out", tmp_path / "x", code=3)  # a data error (data.errors)
    assert "nothing written" in res.output and not (tmp_path / "x").exists()
    res = run("shard", "--input", bad, "--out", tmp_path / "x", "--no-validate", code=3)
    assert f"{bad}:8: invalid JSON" in res.output
    run("validate", tmp_path / "missing.jsonl", code=2)


def test_validate_strict_fails_on_warnings(run, tmp_path: Path) -> None:
    f = tmp_path / "w.jsonl"
    f.write_text(json.dumps({"type": "A", "input": {"chapter_title": "t", "paragraph": "p"}, "output": {"analysis": "a", "metrics": []}}) + "\n")
    assert "1 warning(s)" in run("validate", f).output  # type A with no metrics
    run("validate", f, "--strict", code=1)


def test_stats_json_and_fail_on_alarm(run, demo_jsonl: Path, tmp_path: Path) -> None:
    res = run("stats", demo_jsonl, "--json", tmp_path / "st.json")
    assert "12 rows, 12 labelled" in res.output and "alarms: none" in res.output
    st = json.loads((tmp_path / "st.json").read_text())
    assert st["rows"] == 12 and st["metric_count"] == {"0": 2, "1": 2, "2": 6, "3": 1, "4": 1}
    row = json.loads(demo_jsonl.read_text(encoding="utf-8").splitlines()[0])
    skewed = tmp_path / "two.jsonl"
    with skewed.open("w", encoding="utf-8") as fh:
        for i in range(20):
            r = dict(row, id=f"r{i}", type="ABCD"[i % 4], input={"chapter_title": "t", "paragraph": f"段落{i}"})
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    res = run("stats", skewed)
    assert "[label_count_skew]" in res.output
    run("stats", skewed, "--fail-on-alarm", code=1)


def test_ingest_command(run, tmp_path: Path) -> None:
    (tmp_path / "r.md").write_text("# 盈利能力\n\n公司毛利率为41.2%，同比提升2.3个百分点。\n\n## 经营\n\n出货量28.5GW，同比增长31%。\n", encoding="utf-8")
    res = run("ingest", "--input", tmp_path / "r.md", "--out", tmp_path / "out")
    assert "wrote 2 paragraphs from 1 file(s) to 1 shard(s)" in res.output
    assert "OK: 2 rows (0 labelled)" in run("validate", tmp_path / "out").output
    (tmp_path / "e.md").write_text("![x](y.png)\n", encoding="utf-8")
    assert "no paragraphs found" in run("ingest", "--input", tmp_path / "e.md", "--out", tmp_path / "o2", code=3).output


def test_fetch_model_prints_cached_path(run) -> None:
    from conftest import require_prepared

    require_prepared(demo_model_dir() / "SOURCE.json", "the demo model")
    assert run("fetch-model").output.strip() == str(demo_model_dir())
