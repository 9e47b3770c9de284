"""scripts/calibrate_threshold.py on hand-made engine results: the sweep, the choice, the manifest write."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from reportminer.data.manifest import AdapterManifest
from reportminer.data.schema import arrow_result_metrics_type

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_threshold.py"


def _script():
    spec = importlib.util.spec_from_file_location("calibrate_threshold", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def m(name, score, agreement=1.0):
    return {"metric_name": name, "metric_type": "financial", "score": score, "reason": "", "agreement": agreement}


def test_sweep_picks_the_threshold_that_removes_low_score_extras(tmp_path):
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
    mod = _script()
    key, samples, table = mod.sweep(tmp_path / "res.parquet", gold)
    assert (key, samples) == ("score", 1)
    assert [r["threshold"] for r in table] == [0.0, 0.5, 0.6, 0.7, 0.9, 0.92, 0.95]
    # Off: r0 names three metrics for one gold (fail), r2 two for one (loose), r1 is strict.
    assert (table[0]["passed"], table[0]["strict"]) == (2, 1)
    # 0.9 keeps exactly the labelled metrics; 0.92 starts dropping right ones (r1's 0.9).
    assert mod.best(table)["threshold"] == 0.9 and (mod.best(table)["passed"], mod.best(table)["strict"]) == (3, 3)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    AdapterManifest(base_model={"name": "x", "config_hash": "y"}).write(adapter)
    r = CliRunner().invoke(mod.main, [str(tmp_path / "res.parquet"), str(gold), "--write-manifest", str(adapter)])
    assert r.exit_code == 0, r.output
    assert "<- best" in r.output
    dec = AdapterManifest.read(adapter).decoding
    assert dec["score_threshold"] == 0.9 and dec["samples"] == 1 and dec["threshold_on"] == "score"
