"""`evalkit calibrate` (reportminer.evalkit.calibrate) on hand-made engine results: the sweep, the choice,
the manifest write the engine reads, the refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reportminer.data.errors import ConfigError, DataError
from reportminer.data.manifest import AdapterManifest
from reportminer.data.schema import arrow_result_metrics_type
from reportminer.evalkit.calibrate import calibrate, write_threshold
from reportminer.evalkit.cli import main


def m(name, score, agreement=1.0):
    return {"metric_name": name, "metric_type": "financial", "score": score, "reason": "", "agreement": agreement}


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    gold = tmp_path / "gold.jsonl"
    golds = [["营业收入"], ["毛利率"], ["净利润"]]
    gold.write_text("".join(json.dumps({"id": f"r{i}", "output": {"analysis": "", "metrics": [
        {"metric_name": n, "metric_type": "financial", "score": 0.9, "reason": ""} for n in g]}}, ensure_ascii=False) + "\n"
        for i, g in enumerate(golds)), encoding="utf-8")
    metrics = [[m("营业收入", 0.95), m("订单量", 0.6), m("现金流", 0.5)], [m("毛利率", 0.9)], [m("净利润", 0.92), m("ROE", 0.7)]]
    t = pa.table({"id": ["r0", "r1", "r2"], "adapter": ["v"] * 3, "metrics": pa.array(metrics, arrow_result_metrics_type()),
                  "raw": ["{}"] * 3, "status": ["ok"] * 3, "error": pa.array([None] * 3, pa.string()),
                  "samples": [{"valid": 1, "total": 1}] * 3})
    pq.write_table(t, tmp_path / "res.parquet")
    return tmp_path / "res.parquet", gold


def test_sweep_picks_the_threshold_that_removes_low_score_extras(run, tmp_path: Path):
    results, gold = run
    cal = calibrate(results, gold)
    assert (cal.key, cal.samples) == ("score", 1)
    assert [r["threshold"] for r in cal.table] == [0.0, 0.5, 0.6, 0.7, 0.9, 0.92, 0.95]
    # Off: r0 names three metrics for one gold (fail), r2 two for one (loose), r1 is strict.
    assert (cal.table[0]["passed"], cal.table[0]["strict"]) == (2, 1)
    # 0.9 keeps exactly the labelled metrics; 0.92 starts dropping right ones (r1's 0.9).
    assert cal.best["threshold"] == 0.9 and (cal.best["passed"], cal.best["strict"]) == (3, 3)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    AdapterManifest(base_model={"name": "x", "config_hash": "y"}, decoding={"note": "kept"}).write(adapter)
    written = write_threshold(cal, adapter)
    dec = AdapterManifest.read(adapter).decoding
    assert dec == written and dec["note"] == "kept"  # other decoding keys stay
    # The keys and values the engine applies (engine/decoding.py reads score_threshold for `samples`).
    assert {k: dec[k] for k in ("score_threshold", "samples", "threshold_on", "calibrated_on", "pass_rate", "pass_rate_off")} == {
        "score_threshold": 0.9, "samples": 1, "threshold_on": "score", "calibrated_on": str(gold), "pass_rate": 1.0,
        "pass_rate_off": 2 / 3}


def test_the_command_writes_the_manifest_and_the_json(run, tmp_path: Path):
    results, gold = run
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    AdapterManifest(base_model={"name": "x", "config_hash": "y"}).write(adapter)
    r = CliRunner().invoke(main, ["calibrate", str(results), "--gold", str(gold), "--write-manifest", str(adapter),
                                  "--json", str(tmp_path / "cal.json")])
    assert r.exit_code == 0, r.output
    assert "<- best" in r.output and "wrote decoding.score_threshold=0.9" in r.output
    out = json.loads((tmp_path / "cal.json").read_text())
    assert out["best"]["threshold"] == 0.9 and out["written"]["score_threshold"] == 0.9 and len(out["table"]) == 7
    assert AdapterManifest.read(adapter).decoding["score_threshold"] == 0.9


def test_refusals(run, tmp_path: Path, demo_jsonl: Path):
    results, gold = run
    with pytest.raises(ConfigError, match="no reportminer_adapter.json"):
        write_threshold(calibrate(results, gold), tmp_path)
    with pytest.raises(DataError, match="needs engine results"):
        calibrate(gold, gold)
    t = pq.read_table(results)
    dropped = t.append_column("dropped_metrics", pa.array([[m("x", 0.1)], [], []], arrow_result_metrics_type()))
    pq.write_table(dropped, tmp_path / "dropped.parquet")
    r = CliRunner().invoke(main, ["calibrate", str(tmp_path / "dropped.parquet"), "--gold", str(gold)])
    assert r.exit_code == 3 and "already dropped by a threshold; rerun the engine with --score-threshold 0" in r.stderr
