"""The `evalkit` command line: score, compare and report, checked on what they write, plus the seed data."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from reportminer.data.schema import Extraction, to_json
from reportminer.evalkit.cli import main
from reportminer.evalkit.compare import Run, compare_runs, mcnemar
from reportminer.evalkit.score import read_cases

from test_evalkit_loaders import REQUIRED_KEYS


@pytest.fixture
def ex(repo_root: Path) -> Path:
    return repo_root / "evalkit" / "examples"


def invoke(*args: str) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_score_writes_summary_and_cases(demo_jsonl: Path, ex: Path, tmp_path: Path):
    out = invoke("score", "--gold", demo_jsonl, ex / "demo_batch.json", "--json", tmp_path / "s.json",
                 "--cases", tmp_path / "c.parquet", "--show-fails", 3)
    s = json.loads((tmp_path / "s.json").read_text())
    assert REQUIRED_KEYS <= set(s)
    # demo_batch.json, by hand: over-extraction gives 7 loose; demo-04 (经营现金流, Jaccard 0.3), demo-06
    # (游戏收入 vs 游戏业务收入), demo-08 (two predictions for an empty gold) and demo-10 (truncated) fail.
    assert (s["n"], s["strict"], s["loose"], s["fail"], s["json_valid"]) == (12, 1, 7, 4, 11)
    assert (s["gold_total"], s["pred_total"], s["hits"], s["exact_hits"], s["fuzzy_hits"]) == (21, 31, 17, 14, 3)
    assert s["by_scenario"]["B"] == {**s["by_scenario"]["B"], "n": 3, "strict": 0, "loose": 1, "fail": 2}
    cases = pl.read_parquet(tmp_path / "c.parquet")
    assert cases.height == 12
    fails = cases.filter(pl.col("verdict") == "fail")["id"].to_list()
    assert fails == ["demo-04", "demo-06", "demo-08", "demo-10"]
    row = cases.filter(pl.col("id") == "demo-01").row(0, named=True)
    assert row["gold_names"] == ["归母净利润", "毛利率"] and row["pred_names"][-1] == "期间费用率"
    assert [h["pred"] for h in row["hits"]] == ["归母净利润", "毛利率"]
    assert "pass rate" in out and "66.7%" in out and "demo-04" in out  # terminal table and failing cases


def test_score_cases_jsonl_round_trips(demo_jsonl: Path, ex: Path, tmp_path: Path):
    invoke("score", "-q", "--gold", demo_jsonl, "--pred", ex / "demo_predictions.jsonl", "--cases", tmp_path / "c.jsonl")
    first = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])
    assert {"id", "verdict", "gold_names", "pred_names", "hits"} <= set(first)
    cases = read_cases(tmp_path / "c.jsonl")
    assert cases["verdict"].value_counts().sort("verdict").rows() == [("fail", 2), ("loose", 1), ("strict", 9)]


def test_score_unknown_id_exits_with_the_id(demo_jsonl: Path, tmp_path: Path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"id": "demo-99", "output": {"analysis": "", "metrics": []}}) + "\n")
    res = CliRunner().invoke(main, ["score", "--gold", str(demo_jsonl), str(p)])
    assert res.exit_code == 3 and "demo-99" in res.output  # a data error (data.errors)


def test_score_fuzzy_and_embedding_from_cli(demo_jsonl: Path, ex: Path, tmp_path: Path):
    invoke("score", "-q", "--gold", demo_jsonl, ex / "demo_batch.json", "--matcher", "fuzzy", "--json", tmp_path / "f.json")
    invoke("score", "-q", "--gold", demo_jsonl, ex / "demo_batch.json", "--matcher", "embedding",
           "--embed-cache", tmp_path / "emb", "--json", tmp_path / "e.json")
    f, e = json.loads((tmp_path / "f.json").read_text()), json.loads((tmp_path / "e.json").read_text())
    assert f["matcher"] == "fuzzy" and e["matcher"] == "embedding" and e["matcher_config"]["threshold"] == 0.8
    # 经营现金流 ~ 经营活动现金流量净额 is a miss for upstream (Jaccard 0.3) but not for every matcher;
    # whatever they decide, the layers stay consistent.
    for s in (f, e):
        assert s["passed"] + s["fail"] == 12 and s["hits"] == s["exact_hits"] + s["fuzzy_hits"]
    assert list((tmp_path / "emb").glob("emb-*.npz"))


def test_compare_says_within_noise_on_small_sets(demo_jsonl: Path, ex: Path, tmp_path: Path):
    invoke("score", "-q", "--gold", demo_jsonl, ex / "demo_batch.json", "--cases", tmp_path / "a.parquet")
    out = invoke("compare", "--gold", demo_jsonl, tmp_path / "a.parquet",
                 f"tuned={ex / 'demo_predictions.jsonl'}", "--json", tmp_path / "cmp.json")
    res = json.loads((tmp_path / "cmp.json").read_text())
    assert [r["name"] for r in res["runs"]] == ["demo_batch", "tuned"]
    (p,) = res["paired"]
    assert p["d_pass_rate"] == pytest.approx(10 / 12 - 8 / 12)
    assert (p["only_baseline_passed"], p["only_run_passed"]) == (2, 4)
    assert p["mcnemar_p"] == pytest.approx(0.6875)  # exact binomial, 2 vs 4 flips
    assert p["d_pass_ci"][0] < 0 < p["d_pass_ci"][1] and not p["pass_significant"]
    assert "pass rate +16.7 pts is within noise" in out
    for r in res["runs"]:
        assert r["pass_ci"][0] <= r["pass_rate"] <= r["pass_ci"][1]


def test_compare_detects_a_real_difference():
    def cases(name: str, passed: list[bool]) -> Run:
        n = len(passed)
        return Run(name, pl.DataFrame({
            "run": [name] * n, "matcher": ["upstream"] * n, "id": [str(i) for i in range(n)],
            "verdict": ["strict" if p else "fail" for p in passed], "n_hits": [2 if p else 0 for p in passed],
            "n_gold": [2] * n, "n_pred": [2] * n, "json_valid": [True] * n, "missing": [False] * n,
            "exact_hits": [2 if p else 0 for p in passed], "type_hits": [2 if p else 0 for p in passed],
            "scenario": ["A"] * n, "mix": ["financial"] * n,
        }))

    base = [i % 2 == 0 for i in range(400)]  # 50 %
    better = [True if i % 2 == 0 else i % 5 != 0 for i in range(400)]  # 90 %
    res = compare_runs([cases("a", base), cases("b", better)], n_boot=500)
    (p,) = res["paired"]
    assert p["pass_significant"] and p["f1_significant"] and p["mcnemar_p"] < 1e-6
    assert "pass rate better by 40.0 pts (beyond noise)" in p["verdict"]
    same = compare_runs([cases("a", base), cases("a2", base)], n_boot=200)["paired"][0]
    assert same["d_pass_ci"] == [0.0, 0.0] and not same["pass_significant"] and same["mcnemar_p"] == 1.0
    assert mcnemar(pl.Series([1, 0, 1]).to_numpy(), pl.Series([1, 1, 1]).to_numpy()) == (0, 1, 1.0)


def test_report_is_self_contained_with_plots_and_cases(demo_jsonl: Path, ex: Path, tmp_path: Path):
    out = invoke("report", "--gold", demo_jsonl, ex / "demo_batch.json", "--out", tmp_path / "r.html", "--title", "demo run")
    assert "pass rate 66.7%" in out
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<title>demo run</title>" in page
    assert not re.search(r"""(src|href)=["']?https?://""", page), "must not load anything from the network"
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) == 3  # verdict bars, count histogram, type confusion
    for b64 in imgs:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count('<tr data-v="') == 12
    assert page.count('<tr data-v="fail">') == 4
    assert "经营活动现金流量净额" in page and "invalid JSON" in page
    assert page.count("type f→b") == 0  # demo_batch has no wrong type on a hit
    assert "By scenario" in page and "By gold metric-type mix" in page


def test_report_type_confusion_counts(demo_jsonl: Path, ex: Path):
    from reportminer.evalkit.matchers import UpstreamMatcher
    from reportminer.evalkit.report import type_confusion
    from reportminer.evalkit.score import score_paths

    (r,) = score_paths(demo_jsonl, ex / "demo_predictions.jsonl", UpstreamMatcher())
    rows, cols, m = type_confusion(r.cases)
    # demo-06: gold 游戏业务收入 is financial, the prediction says business; the other 17 hits agree
    # (11 financial, 6 business: counted by hand from the example file).
    assert rows == ["financial", "business"] and cols == ["financial", "business"]
    assert m == [[11, 1], [0, 6]]


# ----------------------------------------------------------------------------------- seed data


def test_seed_gold_scored_against_itself_is_all_strict(seed_dir: Path, tmp_path: Path):
    """The seed's own labels, as batch results of raw text, are strict under every matcher."""
    gold = seed_dir / "sample_data.jsonl"
    rows = [json.loads(x) for x in gold.read_text(encoding="utf-8").splitlines() if x.strip()]
    items = [{"index": i, "scenario": r["type"], "pred_raw": to_json(Extraction.from_dict(r["output"]))}
             for i, r in enumerate(rows, 1)]
    (tmp_path / "self.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    for m in ("upstream", "fuzzy"):
        invoke("score", "-q", "--gold", gold, tmp_path / "self.json", "--matcher", m, "--json", tmp_path / f"{m}.json")
        s = json.loads((tmp_path / f"{m}.json").read_text())
        assert s["strict"] == s["n"] == 50 and s["f1"] == 1.0 and s["type_accuracy"] == 1.0
        assert {k: v["n"] for k, v in s["by_scenario"].items()} == {"A": 30, "B": 8, "C": 8, "D": 4}


def test_seed_folder_as_gold(seed_dir: Path, tmp_path: Path):
    from reportminer.evalkit.loaders import load_gold

    g = load_gold(seed_dir / "data")
    assert g.height == 700 and g["id"][0] == "type_a.jsonl:1"
    assert dict(g.group_by("scenario").len().iter_rows()) == {"A": 270, "B": 202, "C": 72, "D": 156}


def test_engine_folder_with_two_adapters(demo_jsonl: Path, tmp_path: Path):
    """score writes one summary per adapter; compare pairs the adapters of one results folder."""
    import pyarrow.parquet as pq

    from reportminer.evalkit.loaders import load_gold

    from test_evalkit_loaders import engine_table, metric

    gold = load_gold(demo_jsonl)
    rows = []
    for i, names, types in gold.select("id", "gold_names", "gold_types").iter_rows():
        rows.append({"id": i, "adapter": "good", "metrics": [metric(n, t) for n, t in zip(names, types)]})
        rows.append({"id": i, "adapter": "bad", "metrics": [metric("营业收入")]})
    (tmp_path / "run").mkdir()
    pq.write_table(engine_table(rows), tmp_path / "run" / "shard-00000.parquet")
    invoke("score", "-q", "--gold", demo_jsonl, tmp_path / "run", "--json", tmp_path / "s.json")
    good = json.loads((tmp_path / "s.good.json").read_text())
    bad = json.loads((tmp_path / "s.bad.json").read_text())
    assert (good["run"], good["strict"], good["f1"]) == ("good", 12, 1.0)
    assert bad["run"] == "bad" and bad["passed"] == bad["loose"] == 2  # demo-03/08: empty gold + one extra
    invoke("score", "-q", "--gold", demo_jsonl, tmp_path / "run", "--adapter", "bad", "--json", tmp_path / "only.json")
    assert json.loads((tmp_path / "only.json").read_text())["run"] == "bad"
    out = invoke("compare", "--gold", demo_jsonl, f"nightly={tmp_path / 'run'}", "--json", tmp_path / "c.json")
    res = json.loads((tmp_path / "c.json").read_text())
    assert [r["name"] for r in res["runs"]] == ["nightly:good", "nightly:bad"]
    assert res["paired"][0]["d_pass_rate"] == pytest.approx(-10 / 12)
    assert "nightly:bad vs nightly:good" in out


def test_report_marks_a_wrong_type_on_a_hit(demo_jsonl: Path, ex: Path, tmp_path: Path):
    invoke("report", "--gold", demo_jsonl, ex / "demo_predictions.jsonl", "--out", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count("type f→b") == 1 and "游戏业务收入 ← 游戏业务收入" in page
    assert "missing prediction" in page  # demo-12


def test_compare_fail_if_worse_gates_on_noise(tmp_path: Path):
    """--fail-if-worse: exit 1 only when a run is worse than the baseline beyond noise (compare.py's rule)."""
    names = [f"指标{i}" for i in range(80)]
    m = lambda n: {"metric_name": n, "metric_type": "financial", "score": 0.9, "reason": "r"}  # noqa: E731
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": str(i), "type": "A", "input": {"chapter_title": "t", "paragraph": "p"},
                                        "output": {"analysis": "a", "metrics": [m(n)]}}, ensure_ascii=False) + "\n"
                            for i, n in enumerate(names)), encoding="utf-8")

    def preds(path: str, wrong: set[int]) -> Path:
        p = tmp_path / path
        p.write_text("".join(json.dumps({"id": str(i), "output": {"analysis": "a", "metrics": [] if i in wrong else [m(n)]}},
                                        ensure_ascii=False) + "\n" for i, n in enumerate(names)), encoding="utf-8")
        return p

    good, bad, near = preds("good.jsonl", set()), preds("bad.jsonl", set(range(0, 80, 2))), preds("near.jsonl", {3})

    def cmp(*args: object):
        return CliRunner().invoke(main, ["compare", "--gold", str(gold), "--bootstrap", "300", *[str(a) for a in args]])

    r = cmp(f"base={good}", f"cand={bad}", "--fail-if-worse")
    assert r.exit_code == 1, r.output
    assert "evalkit: cand is worse than base beyond noise on pass rate: -50.0 pts (paired 95 % interval [" in r.stderr
    assert "McNemar p = " in r.stderr
    r = cmp(f"base={good}", f"cand={bad}", "--fail-if-worse", "--primary", "f1")
    assert r.exit_code == 1 and "worse than base beyond noise on F1" in r.stderr
    assert cmp(f"base={good}", f"cand={bad}").exit_code == 0  # without the flag: a report, not a gate
    r = cmp(f"base={bad}", f"cand={good}", "--fail-if-worse")  # better: passes
    assert r.exit_code == 0 and "worse" not in r.stderr
    r = cmp(f"base={good}", f"cand={near}", "--fail-if-worse")  # one case worse: within noise, passes
    assert r.exit_code == 0 and "pass rate -1.2 pts is within noise" in r.output
    r = cmp(f"base={good}", f"cand={near}", f"also={bad}", "--fail-if-worse", "--json", tmp_path / "c.json")
    assert r.exit_code == 1 and "also is worse" in r.stderr and "cand is worse" not in r.stderr
    assert json.loads((tmp_path / "c.json").read_text())["paired"][1]["pass_significant"]
