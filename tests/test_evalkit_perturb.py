"""Perturbation check (issue 16): variant cases from `perturb` fields, and the share of cases whose
predicted count moves, on small made-up rows whose expected numbers are worked out by hand below."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.data.errors import DataError
from reportminer.evalkit.cli import main
from reportminer.evalkit.matchers import UpstreamMatcher
from reportminer.evalkit.perturb import count_stability, expand_rows, inserted, removed, split_id
from reportminer.evalkit.score import read_cases, score_paths

P1 = "公司毛利率提升至32%。行业规模达到500亿元。原材料价格回落是主因。"
P2 = "全年营收120亿元，同比增长15%。门店数量达到800家。"


def metric(name: str) -> dict:
    return {"metric_name": name, "metric_type": "financial", "score": 0.9, "reason": "r"}


def case(i: str, scen: str, para: str, gold: list[str], perturb: dict | None) -> dict:
    row = {"id": i, "type": "test", "scenario": scen, "input": {"chapter_title": "t", "paragraph": para},
           "output": {"analysis": "a", "metrics": [metric(n) for n in gold]}}
    if perturb is not None:
        row["perturb"] = perturb
    return row


BENCH = [
    case("g1", "boundary_many_numbers_one_core", P1, ["毛利率"],
         {"insert": "全国CPI同比上涨0.4%。", "insert_after": "32%。", "remove": "行业规模达到500亿元。"}),
    case("g2", "single_metric", P2, ["营业收入"], {"insert": "员工人数为1.2万人。", "insert_after": None, "remove": None}),
    case("g3", "empty_output_background", "行业产能为300万吨。", [], None),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_insert_goes_right_after_the_anchor_and_remove_deletes_once() -> None:
    assert inserted("A。B。", "X。", "A。") == "A。X。B。"
    assert inserted("A。B。", "X。", None) == "A。B。X。"
    assert removed("A。B。A。", "A。") == "B。A。"
    with pytest.raises(DataError, match="insert_after is not in"):
        inserted("A。", "X。", "Z")
    with pytest.raises(DataError, match="already in"):
        inserted("A。X。", "X。", "A。")
    with pytest.raises(DataError, match="remove is not in"):
        removed("A。", "Z")


def test_expand_keeps_gold_and_names_variants() -> None:
    ex = expand_rows((f"b:{i}", r) for i, r in enumerate(BENCH, 1))
    ids = [r["id"] for r in ex.rows]
    assert ids == ["g1", "g1~ins", "g1~rem", "g2", "g2~ins", "g3"]
    assert ex.cases == 3 and ex.with_perturb == 2 and ex.by_kind == {"ins": 2, "rem": 1}
    by = {r["id"]: r for r in ex.rows}
    assert by["g1~ins"]["input"]["paragraph"] == "公司毛利率提升至32%。全国CPI同比上涨0.4%。行业规模达到500亿元。原材料价格回落是主因。"
    assert by["g1~rem"]["input"]["paragraph"] == "公司毛利率提升至32%。原材料价格回落是主因。"
    assert by["g2~ins"]["input"]["paragraph"] == P2 + "员工人数为1.2万人。"
    for r in ex.rows:
        assert "perturb" not in r
        base = by[r.get("base_id", r["id"])]
        assert r["output"] == base["output"] and r["scenario"] == base["scenario"]
    assert by["g1~rem"]["variant"] == "rem" and by["g1~rem"]["base_id"] == "g1"
    assert BENCH[0]["input"]["paragraph"] == P1 and "perturb" in BENCH[0]  # the input rows are not changed
    assert [r["id"] for r in expand_rows(((f"b:{i}", r) for i, r in enumerate(BENCH, 1)), include_base=False).rows] == \
        ["g1~ins", "g1~rem", "g2~ins"]


def test_expand_refuses_bad_rows_with_their_place() -> None:
    bad = case("x", "single_metric", P2, [], {"insert": "新句子1。", "insert_after": "不在段落里", "remove": None})
    with pytest.raises(DataError, match="b.jsonl:7: perturb.insert_after"):
        expand_rows([("b.jsonl:7", bad)])
    with pytest.raises(DataError, match="duplicate id"):
        expand_rows([("b:1", BENCH[2]), ("b:2", BENCH[2])])
    with pytest.raises(DataError, match="marks variant ids"):
        expand_rows([("b:1", case("a~b", "single_metric", P2, [], {"insert": "新句子1。"}))])
    with pytest.raises(DataError, match="unknown key"):
        expand_rows([("b:1", case("y", "single_metric", P2, [], {"insrt": "新句子1。"}))])


def test_split_id() -> None:
    assert split_id("gb-w1-001~ins") == ("gb-w1-001", "ins")
    assert split_id("gb-w1-001") == ("gb-w1-001", None)
    assert split_id("a~other") == ("a~other", None)


def _scored(tmp_path: Path, preds: dict[str, list[str]]):
    expanded = write_jsonl(tmp_path / "gp.jsonl", expand_rows((f"b:{i}", r) for i, r in enumerate(BENCH, 1)).rows)
    pred = write_jsonl(tmp_path / "pred.jsonl",
                       [{"id": i, "output": {"analysis": "a", "metrics": [metric(n) for n in names]}} for i, names in preds.items()])
    return expanded, pred, score_paths(expanded, pred, UpstreamMatcher())[0].cases


def test_count_stability_worked_example(tmp_path: Path) -> None:
    # g1: base 1, ~ins 2 (moved up, strict -> loose), ~rem 1 (held); g2: base 1, ~ins 0 (moved down, pass lost);
    # g3 has no variants and is not counted. Cases moved: g1 and g2 = 2 of 2; variants moved 2 of 3.
    _, _, cases = _scored(tmp_path, {"g1": ["毛利率"], "g1~ins": ["毛利率", "CPI"], "g1~rem": ["毛利率"],
                                     "g2": ["营业收入"], "g2~ins": [], "g3": []})
    s = count_stability(cases)
    assert (s["cases"], s["changed"], s["share_changed"]) == (2, 2, 1.0)
    assert (s["variants"], s["variants_changed"], s["missing_pairs"]) == (3, 2, 0)
    ins, rem = s["by_kind"]["ins"], s["by_kind"]["rem"]
    assert (ins["variants"], ins["changed"], ins["up"], ins["down"], ins["mean_delta"]) == (2, 2, 1, 1, 0.0)
    assert ins["verdict_changed"] == 2 and ins["lost_pass"] == 1
    assert (rem["variants"], rem["changed"], rem["share_changed"]) == (1, 0, 0.0)
    assert s["by_scenario"]["boundary_many_numbers_one_core"]["changed"] == 1
    assert s["by_scenario"]["single_metric"]["share_changed"] == 1.0
    assert {(m["id"], m["kind"], m["n_pred_base"], m["n_pred_var"]) for m in s["moved"]} == {("g1", "ins", 1, 2), ("g2", "ins", 1, 0)}


def test_count_stability_holds_and_missing_pairs_are_left_out(tmp_path: Path) -> None:
    _, _, cases = _scored(tmp_path, {"g1": ["毛利率"], "g1~ins": ["毛利率"], "g2": ["营业收入"], "g2~ins": ["营业收入"]})
    s = count_stability(cases)  # g1~rem has no prediction: its pair is left out, not counted as a change
    assert (s["cases"], s["changed"], s["share_changed"], s["missing_pairs"]) == (2, 0, 0.0, 1)
    assert s["by_kind"]["rem"]["variants"] == 0 and s["by_kind"]["rem"]["share_changed"] is None


def test_cli_expand_and_check(tmp_path: Path) -> None:
    bench = write_jsonl(tmp_path / "bench.jsonl", BENCH)
    r = CliRunner().invoke(main, ["perturb", "expand", str(bench), "--out", str(tmp_path / "gp.jsonl")])
    assert r.exit_code == 0, r.output
    assert "6 rows" in r.output
    pred = write_jsonl(tmp_path / "pred.jsonl", [
        {"id": i, "output": {"analysis": "a", "metrics": [metric(n) for n in names]}}
        for i, names in {"g1": ["毛利率"], "g1~ins": ["毛利率", "CPI"], "g1~rem": ["毛利率"], "g2": ["营业收入"],
                         "g2~ins": ["营业收入"], "g3": []}.items()])
    r = CliRunner().invoke(main, ["score", "--gold", str(tmp_path / "gp.jsonl"), str(pred), "--cases",
                                  str(tmp_path / "c.parquet"), "-q"])
    assert r.exit_code == 0, r.output
    js = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["perturb", "check", f"tuned={tmp_path / 'c.parquet'}", "--json", str(js),
                                  "--max-share", "0.6"])
    assert r.exit_code == 0, r.output  # 1 of 2 cases moved: 50 % <= 60 %
    out = json.loads(js.read_text())
    assert out["run"] == "tuned" and out["share_changed"] == 0.5 and out["moved"][0]["id"] == "g1"
    assert "g1 ~ins" in r.output
    r = CliRunner().invoke(main, ["perturb", "check", "--gold", str(tmp_path / "gp.jsonl"), str(pred), "--max-share", "0.1"])
    assert r.exit_code == 1 and "50.0 % of cases moved" in r.output
    assert read_cases(tmp_path / "c.parquet").height == 6


def test_cli_expand_names_the_bad_line(tmp_path: Path) -> None:
    bad = case("x", "single_metric", P2, [], {"insert": "新句子1。", "insert_after": "不在段落里", "remove": None})
    bench = write_jsonl(tmp_path / "bench.jsonl", [BENCH[2], bad])
    r = CliRunner().invoke(main, ["perturb", "expand", str(bench), "-o", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 3 and "bench.jsonl:2" in r.output


def test_expanding_needs_no_polars(tmp_path: Path) -> None:
    """experiment.py serve expands the benchmark on the GPU machine, whose image has no polars."""
    import subprocess
    import sys

    bench = write_jsonl(tmp_path / "bench.jsonl", BENCH)
    code = ("import sys; from reportminer.evalkit.perturb import expand_file; "
            f"assert len(expand_file({str(bench)!r}).rows) == 6; assert 'polars' not in sys.modules, 'polars imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
