"""Count-bias diagnostics (predicted / gold by gold count, the count matrix, per scenario) and grouping by
the test-case format's `scenario`, on a small hand-made gold and prediction set whose numbers are worked
out below by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.data.io import jsonl_to_table, write_parquet
from reportminer.evalkit.cli import main
from reportminer.evalkit.loaders import load_gold
from reportminer.evalkit.matchers import UpstreamMatcher
from reportminer.evalkit.score import score_paths

# id, scenario, gold names, predicted names, expected verdict
CASES = [
    ("t1", "single_metric", ["毛利率"], ["毛利率", "存货周转天数", "资产负债率"], "fail"),  # 1 gold, 3 predicted
    ("t2", "single_metric", ["营业收入"], ["营业收入"], "strict"),
    ("t3", "empty_output_background", [], [], "strict"),
    ("t4", "multi_metric", ["净利润", "毛利率"], ["净利润", "毛利率", "销售费用率"], "loose"),
    ("t5", "multi_metric", ["营业收入", "净利润", "经营现金流"], ["营业收入"], "fail"),
    ("t6", "mixed_financial_business", ["存货周转天数", "资产负债率", "研发投入", "用户数"],
     ["存货周转天数", "资产负债率", "研发投入", "用户数"], "strict"),
]


def metric(name: str) -> dict:
    return {"metric_name": name, "metric_type": "financial", "score": 0.9, "reason": "r"}


def out(names: list[str]) -> dict:
    return {"analysis": "a", "metrics": [metric(n) for n in names]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gold = write_jsonl(tmp_path / "gold.jsonl", [
        {"id": i, "type": "test", "scenario": s, "source_type": "A", "input": {"chapter_title": "t", "paragraph": f"p{i}"},
         "output": out(g)} for i, s, g, _, _ in CASES
    ])
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": i, "output": out(p)} for i, _, _, p, _ in CASES])
    return gold, pred


def test_test_case_gold_is_grouped_by_scenario_else_type(files: tuple[Path, Path], tmp_path: Path):
    gold, _ = files
    assert load_gold(gold)["scenario"].to_list() == [s for _, s, _, _, _ in CASES]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [
        {"type": "test", "scenario": "single_metric", "output": out(["a"])},
        {"type": "test", "output": out(["a"])},  # no scenario: its type
        {"type": "B", "scenario": None, "output": out([])},  # a null scenario does not hide the type
        {"output": out([])},
    ])
    assert load_gold(mixed)["scenario"].to_list() == ["single_metric", "test", "B", None]
    # the same gold as Parquet (datakit keeps `scenario` as a column beside `type`)
    write_parquet(jsonl_to_table(gold), tmp_path / "gold.parquet")
    assert load_gold(tmp_path / "gold.parquet")["scenario"].to_list() == [s for _, s, _, _, _ in CASES]


def test_count_diagnostics_numbers(files: tuple[Path, Path]):
    gold, pred = files
    (r,) = score_paths(gold, pred, UpstreamMatcher())
    assert r.cases["verdict"].to_list() == [v for *_, v in CASES]
    s = r.summary
    # gold 1+1+0+2+3+4 = 11, predicted 3+1+0+3+1+4 = 12
    assert (s["gold_total"], s["pred_total"]) == (11, 12)
    assert s["pred_gold_ratio"] == pytest.approx(12 / 11)
    assert (s["mean_gold"], s["mean_pred"]) == (pytest.approx(11 / 6), pytest.approx(2.0))
    g = s["by_gold_count"]
    assert list(g) == ["0", "1", "2", "3", "4+"]
    table = {k: (v["n"], v["gold_total"], v["pred_total"], v["mean_pred"], v["pred_gold_ratio"], v["pass_rate"]) for k, v in g.items()}
    assert table == {
        "0": (1, 0, 0, 0.0, None, 1.0),          # t3: nothing to predict, nothing predicted
        "1": (2, 2, 4, 2.0, 2.0, 0.5),           # t1 over-extracts (fail), t2 strict
        "2": (1, 2, 3, 3.0, 1.5, 1.0),           # t4 loose
        "3": (1, 3, 1, 1.0, pytest.approx(1 / 3), 0.0),  # t5 under-extracts
        "4+": (1, 4, 4, 4.0, 1.0, 1.0),          # t6
    }
    assert s["count_matrix"] == {
        "counts": [0, 1, 2, 3, 4],
        "cases": [
            [1, 0, 0, 0, 0],   # gold 0: t3 predicted 0
            [0, 1, 0, 1, 0],   # gold 1: t2 -> 1, t1 -> 3
            [0, 0, 0, 1, 0],   # gold 2: t4 -> 3
            [0, 1, 0, 0, 0],   # gold 3: t5 -> 1
            [0, 0, 0, 0, 1],   # gold 4: t6 -> 4
        ],
    }
    sc = {k: (v["n"], v["gold_total"], v["pred_total"], v["mean_gold"], v["mean_pred"], v["pred_gold_ratio"])
          for k, v in s["by_scenario"].items()}
    assert sc == {
        "empty_output_background": (1, 0, 0, 0.0, 0.0, None),
        "mixed_financial_business": (1, 4, 4, 4.0, 4.0, 1.0),
        "multi_metric": (2, 5, 4, 2.5, 2.0, 0.8),
        "single_metric": (2, 2, 4, 1.0, 2.0, 2.0),
    }


def test_count_matrix_grows_past_four_and_keeps_zero_to_three(tmp_path: Path):
    gold = write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "output": out(["甲"])}])
    pred = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "output": out(["甲", "乙", "丙", "丁", "戊"])}])
    (r,) = score_paths(gold, pred, UpstreamMatcher())
    m = r.summary["count_matrix"]
    assert m["counts"] == [0, 1, 2, 3, 4, 5] and m["cases"][1][5] == 1 and sum(map(sum, m["cases"])) == 1
    assert list(r.summary["by_gold_count"]) == ["1"]


def test_score_cli_prints_and_writes_count_diagnostics(files: tuple[Path, Path], tmp_path: Path):
    gold, pred = files
    res = CliRunner().invoke(main, ["score", "--gold", str(gold), str(pred), "--json", str(tmp_path / "s.json")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["by_gold_count"]["1"]["pred_gold_ratio"] == 2.0 and s["count_matrix"]["cases"][1] == [0, 1, 0, 1, 0]
    assert set(s["by_scenario"]) == {"single_metric", "multi_metric", "empty_output_background", "mixed_financial_business"}
    text = res.output
    for title in ("metric counts by gold count", "count matrix", "metric counts by scenario", "pred/gold"):
        assert title in text
    assert "1.09" in text  # 12 / 11 overall
    line = next(ln for ln in text.splitlines() if "single_metric" in ln and "2.00" in ln)
    assert "1.00" in line  # gold/case 1.00, pred/case 2.00, pred/gold 2.00


def test_compare_shows_predicted_over_gold_per_run(files: tuple[Path, Path], tmp_path: Path):
    gold, pred = files
    exact = write_jsonl(tmp_path / "exact.jsonl", [{"id": i, "output": out(g)} for i, _, g, _, _ in CASES])
    res = CliRunner().invoke(main, ["compare", "--gold", str(gold), f"over={pred}", f"exact={exact}",
                                    "--bootstrap", "300", "--json", str(tmp_path / "c.json")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    c = json.loads((tmp_path / "c.json").read_text())
    over, ex = c["runs"]
    assert (over["pred_total"], over["gold_total"], over["pred_gold_ratio"]) == (12, 11, pytest.approx(12 / 11))
    assert over["pred_gold_ci"][0] <= over["pred_gold_ratio"] <= over["pred_gold_ci"][1]
    assert ex["pred_gold_ratio"] == 1.0 and ex["pred_gold_ci"] == [1.0, 1.0]
    assert "pred/gold" in res.output and "1.09" in res.output and "1.00 (1.00–1.00)" in res.output


def test_report_has_the_count_tables(files: tuple[Path, Path], tmp_path: Path):
    gold, pred = files
    res = CliRunner().invoke(main, ["report", "--gold", str(gold), str(pred), "--out", str(tmp_path / "r.html")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "By gold metric count" in page and "<td>4+</td>" in page and "<td>single_metric</td>" in page
    assert "predicted / gold" in page and "1.09" in page
