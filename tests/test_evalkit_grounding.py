"""Grounding in scores (evalkit/grounding.py over data.grounding): `evalkit score --grounding` on the demo
run, from JSONL and from Parquet shards + engine results, the cases file round trip, the shares."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from reportminer.data.io import jsonl_to_table, write_parquet
from reportminer.data.schema import arrow_result_metrics_type
from reportminer.evalkit.cli import main
from reportminer.evalkit.matchers import make_matcher
from reportminer.evalkit.score import read_cases, score_paths, write_cases


def test_score_grounding_on_the_demo(demo_jsonl: Path, repo_root: Path, tmp_path: Path):
    preds = repo_root / "evalkit" / "examples" / "demo_batch.json"
    out = tmp_path / "s.json"
    res = CliRunner().invoke(main, ["score", "--gold", str(demo_jsonl), str(preds), "--grounding", "--json", str(out),
                                    "--cases", str(tmp_path / "c.parquet"), "-q"])
    assert res.exit_code == 0, res.output
    g = json.loads(out.read_text())["grounding"]
    # Every gold metric of the demo stands in its paragraph; 8 of the 31 predicted do not (e.g. demo-03's
    # 营业收入 in a paragraph of national statistics, demo-08's two metrics for a background paragraph).
    assert g == {"cases": 12, "gold_metrics": 21, "gold_ungrounded": 0, "gold_ungrounded_rate": 0.0,
                 "pred_metrics": 31, "pred_ungrounded": 8, "pred_ungrounded_rate": 8 / 31}
    cases = read_cases(tmp_path / "c.parquet")
    row = cases.filter(pl.col("id") == "demo-08").row(0, named=True)
    assert row["pred_grounded"] == [False, False] and row["pred_spans"] == []
    row = cases.filter(pl.col("id") == "demo-01").row(0, named=True)
    got = [row["paragraph"][a:b] for a, b in row["gold_spans"]]
    assert got[0] == "归母净利润18.6" and "毛利率" in got and "2.3" in got  # names and the reasons' figures
    # Without --grounding nothing of this is read or written.
    (plain,) = score_paths(demo_jsonl, preds, make_matcher("upstream"))
    assert "grounding" not in plain.summary and "paragraph" not in plain.cases.columns
    assert plain.cases.select(plain.cases.columns).equals(cases.select(plain.cases.columns))


def test_grounding_from_shards_and_engine_results_and_cases_jsonl(demo_jsonl: Path, tmp_path: Path):
    """Gold as Parquet shards (paragraph column) and predictions as engine results (metrics with reasons)
    give the groundings of the JSONL pair; a JSONL cases file keeps them."""
    shards = tmp_path / "gold.parquet"
    write_parquet(jsonl_to_table(demo_jsonl), shards)
    rows = [json.loads(line) for line in demo_jsonl.read_text(encoding="utf-8").splitlines()]
    metrics = [[{**m, "agreement": 1.0} for m in r["output"]["metrics"]] for r in rows]
    metrics[2] = [{"metric_name": "营业收入", "metric_type": "financial", "score": 0.9, "reason": "", "agreement": 1.0}]
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "adapter": ["v"] * len(rows),
                             "metrics": pa.array(metrics, arrow_result_metrics_type()), "raw": ["{}"] * len(rows),
                             "status": ["ok"] * len(rows)}), tmp_path / "res.parquet")
    (a,) = score_paths(shards, tmp_path / "res.parquet", make_matcher("upstream"), grounding=True)
    (b,) = score_paths(demo_jsonl, tmp_path / "res.parquet", make_matcher("upstream"), grounding=True)
    assert a.summary["grounding"] == b.summary["grounding"]
    assert a.summary["grounding"]["pred_ungrounded"] == 1 and a.summary["grounding"]["gold_ungrounded"] == 0
    cols = ["paragraph", "gold_grounded", "pred_grounded", "gold_spans", "pred_spans"]
    assert a.cases.select(cols).equals(b.cases.select(cols))
    write_cases(a.cases, tmp_path / "c.jsonl")
    assert read_cases(tmp_path / "c.jsonl").select(cols).equals(a.cases.select(cols))


def test_text_read_in_workers_is_the_reference_text(demo_jsonl: Path, repo_root: Path):
    """With the text (kinds gold+text / pred+text) the worker processes read what this process reads, and
    the reasons are those `parse_output` gives."""
    import evalkit_reference as reference

    from reportminer.evalkit.loaders import load_gold, load_predictions
    from reportminer.evalkit.pardecode import Prefetch, score_specs

    pred = repo_root / "evalkit" / "examples" / "demo_predictions.jsonl"
    here_g = load_gold(demo_jsonl, text=True)
    here_p = load_predictions(pred, here_g, text=True)[0].frame
    with Prefetch(score_specs(demo_jsonl, pred, text=True), workers=2, min_bytes=0) as pre:
        g = load_gold(demo_jsonl, pre=pre, text=True)
        p = load_predictions(pred, g, pre=pre, text=True)[0].frame
    assert g.equals(here_g) and p.equals(here_p)
    assert g["paragraph"].to_list() == [json.loads(x)["input"]["paragraph"] for x in demo_jsonl.read_text(encoding="utf-8").splitlines()]
    want = [reference.answer(json.loads(x)["output"])[4] for x in pred.read_text(encoding="utf-8").splitlines()]
    assert p["pred_reasons"].to_list() == want
