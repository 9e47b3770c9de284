"""`evalkit compare --arm`: runs grouped by recipe (one per training seed), compared with a two-level bootstrap.

Real cases frames built here (and real cases files written by `evalkit score --cases` for the CLI), no mocks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from reportminer.data.errors import DataError
from reportminer.evalkit.arms import ONE_SEED, arm_summary, check_arms, compare_arms, parse_arm
from reportminer.evalkit.cli import main
from reportminer.evalkit.compare import Run, compare_runs

N = 400


def run(name: str, passed: list[bool], strict: list[bool] | None = None, n_pred: int = 2, n: int = N) -> Run:
    """A cases frame: each case has 2 gold metrics; a pass is strict unless `strict` says loose."""
    strict = passed if strict is None else strict
    verdict = ["fail" if not p else "strict" if s else "loose" for p, s in zip(passed, strict)]
    return Run(name, pl.DataFrame({
        "run": [name] * n, "matcher": ["upstream"] * n, "id": [str(i) for i in range(n)], "verdict": verdict,
        "n_hits": [2 if p else 0 for p in passed], "n_gold": [2] * n, "n_pred": [n_pred] * n,
        "json_valid": [True] * n, "missing": [False] * n, "exact_hits": [2 if p else 0 for p in passed],
        "type_hits": [2 if p else 0 for p in passed], "scenario": ["A"] * n, "mix": ["financial"] * n,
    }))


def share(k: int, of: int = 10, shift: int = 0) -> list[bool]:
    """k in `of` cases pass, the pattern shifted by `shift` cases."""
    return [(i + shift) % of < k for i in range(N)]


def test_arm_mean_is_the_mean_of_its_runs():
    runs = [run("a1", share(4), share(2), n_pred=2), run("a2", share(5, shift=3), share(3, shift=3), n_pred=3),
            run("a3", share(6, shift=7), share(1, shift=7), n_pred=2), run("b1", share(5))]
    res = arm_summary(runs, [("a", ["a1", "a2", "a3"]), ("b", ["b1"])], n_boot=300)
    a, b = res["per_arm"]
    assert (a["name"], a["runs"], a["n_seeds"], b["n_seeds"]) == ("a", ["a1", "a2", "a3"], 3, 1)
    p = a["pass_rate"]
    assert p["per_run"] == {"a1": 0.4, "a2": 0.5, "a3": 0.6}
    assert p["mean"] == pytest.approx(0.5) and (p["min"], p["max"]) == (0.4, 0.6)
    assert p["sd"] == pytest.approx(0.1)  # sample sd of 40, 50, 60 %
    assert a["strict_rate"]["mean"] == pytest.approx((0.2 + 0.3 + 0.1) / 3)
    assert a["pred_gold_ratio"]["per_run"] == {"a1": 1.0, "a2": 1.5, "a3": 1.0}
    assert a["pred_gold_ratio"]["mean"] == pytest.approx(3.5 / 3)
    assert p["ci"][0] <= p["mean"] <= p["ci"][1]
    assert b["pass_rate"]["sd"] is None and b["caveat"] == ONE_SEED and "3 seeds" in a["caveat"]
    # The arm's mean is the mean of what `compare_runs` reports for each run.
    per_run = {r["name"]: r["pass_rate"] for r in compare_runs(runs, n_boot=50)["runs"]}
    assert p["mean"] == pytest.approx(np.mean([per_run[r] for r in a["runs"]]))
    (d,) = res["paired"]
    assert (d["baseline"], d["arm"]) == ("a", "b") and d["d_pass_rate"] == pytest.approx(0.0)
    assert d["d_pred_gold_ratio"] == pytest.approx(1.0 - 3.5 / 3)


def test_arms_that_differ_by_construction_are_beyond_noise():
    base = [run("a1", share(5)), run("a2", share(5, shift=5))]  # 50 % each
    better = [run("b1", share(9)), run("b2", share(9, shift=4))]  # 90 % each
    res = compare_arms(base + better, [("a", ["a1", "a2"]), ("b", ["b1", "b2"])], n_boot=400)
    assert [r["name"] for r in res["runs"]] == ["a1", "a2", "b1", "b2"]  # the per-run comparison is still there
    (d,) = res["arms"]["paired"]
    assert d["d_pass_rate"] == pytest.approx(0.4)
    assert d["d_pass_rate_ci"][0] > 0 and d["pass_rate_significant"]
    assert "mean pass rate better by 40.0 pts (beyond noise" in d["verdict"] and d["caveats"] == []
    same = arm_summary(base + better, [("a", ["a1", "a2"]), ("a_again", ["b1"])], n_boot=200)
    assert same["paired"][0]["pass_rate_significant"]  # one seed of the better recipe: still beyond noise
    flat = arm_summary([run("x1", share(5)), run("x2", share(5))], [("x", ["x1"]), ("y", ["x2"])], n_boot=200)
    assert flat["paired"][0]["d_pass_rate_ci"] == [0.0, 0.0] and "within noise" in flat["paired"][0]["verdict"]


def test_seed_variance_widens_the_interval():
    """Runs of one arm that disagree (30 % and 70 %): the two-level interval holds that; a case-only one does not."""
    runs = [run("a1", share(3)), run("a2", share(7, shift=2)), run("b1", share(5, shift=1)), run("b2", share(5, shift=6))]
    res = compare_arms(runs, [("a", ["a1", "a2"]), ("b", ["b1", "b2"])], n_boot=1000)
    (d,) = res["arms"]["paired"]
    width = d["d_pass_rate_ci"][1] - d["d_pass_rate_ci"][0]
    cases_only = d["d_pass_rate_ci_cases_only"][1] - d["d_pass_rate_ci_cases_only"][0]
    pair = next(p for p in res["paired"] if p["run"] == "b1")  # b1 against a1: one run each, cases only
    pair_width = pair["d_pass_ci"][1] - pair["d_pass_ci"][0]
    assert width > 2 * pair_width and width > 2 * cases_only
    assert d["d_pass_rate_ci"][0] < -0.15 and d["d_pass_rate_ci"][1] > 0.15  # the seed draw of a spans +-20 pts
    assert not d["pass_rate_significant"] and "within noise" in d["verdict"]
    assert pair["pass_significant"]  # one draw of each: "b1 beats a1 beyond noise", which the seeds undo
    assert any("crude" in n and "3 distinct" in n for n in res["arms"]["notes"])


def test_one_seed_arms_get_a_case_only_interval_and_say_so():
    runs = [run("a1", share(4)), run("b1", share(6, shift=3))]
    res = arm_summary(runs, [("a", ["a1"]), ("b", ["b1"])], n_boot=300)
    (d,) = res["paired"]
    assert d["d_pass_rate_ci"] == d["d_pass_rate_ci_cases_only"]  # nothing to resample at the seed level
    assert d["d_pass_rate_ci"] == compare_runs(runs, n_boot=300)["paired"][0]["d_pass_ci"]  # the same case draws
    assert d["caveats"] == [f"a: {ONE_SEED}", f"b: {ONE_SEED}"]
    assert all(e["caveat"] == ONE_SEED for e in res["per_arm"])
    assert any(ONE_SEED in n for n in res["notes"])


def test_arm_errors():
    names = ["a1", "a2", "b1"]
    assert check_arms([("a", ["a1", "a2"]), ("b", ["b1"])], names) == [("a", ["a1", "a2"]), ("b", ["b1"])]
    cases = [
        ([("a", ["a1", "nope"])], "'nope' is not one of the runs given (a1, a2, b1)"),
        ([("a", [])], "arm 'a' has no runs"),
        ([("a", ["a1"]), ("b", ["a1", "b1"])], "run 'a1' is in arms 'a' and 'b'"),
        ([("a", ["a1", "a1"])], "run 'a1' is twice in it"),
        ([("a", ["a1"]), ("a", ["b1"])], "arm 'a' is given twice"),
        ([], "no arms given"),
    ]
    for arms, msg in cases:
        with pytest.raises(DataError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            check_arms(arms, names)
    with pytest.raises(DataError, match="is not one of the runs given"):
        compare_arms([run("a1", share(5)), run("b1", share(5))], [("a", ["a1"]), ("b", ["b2"])], n_boot=10)
    assert parse_arm("b05=b05a, b05s2") == ("b05", ["b05a", "b05s2"])
    assert parse_arm("b05=") == ("b05", [])
    for bad in ("b05", "=b05a"):
        with pytest.raises(DataError, match="write NAME=RUN1,RUN2"):
            parse_arm(bad)


def test_cli_arms_on_saved_cases_files(tmp_path: Path):
    """Cases files written by `evalkit score --cases`, then `compare --arm` on them."""
    n = 60
    m = lambda name: {"metric_name": name, "metric_type": "financial", "score": 0.9, "reason": "r"}  # noqa: E731
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": str(i), "type": "A", "input": {"chapter_title": "t", "paragraph": "p"},
                                        "output": {"analysis": "a", "metrics": [m(f"指标{i}")]}}, ensure_ascii=False)
                            + "\n" for i in range(n)), encoding="utf-8")
    runner = CliRunner()

    def cases(name: str, wrong: set[int]) -> Path:
        pred = tmp_path / f"{name}.jsonl"
        pred.write_text("".join(json.dumps({"id": str(i), "output": {"analysis": "a", "metrics": [] if i in wrong
                                                                      else [m(f"指标{i}")]}}, ensure_ascii=False) + "\n"
                                for i in range(n)), encoding="utf-8")
        out = tmp_path / f"{name}.cases.parquet"
        r = runner.invoke(main, ["score", "-q", "--gold", str(gold), str(pred), "--cases", str(out)])
        assert r.exit_code == 0, r.output
        return out

    files = {"b05a": cases("b05a", set(range(0, n, 3))), "b05s2": cases("b05s2", set(range(0, n, 2))),
             "r05fr": cases("r05fr", set(range(0, n, 5)))}
    given = [f"{k}={v}" for k, v in files.items()]

    def cmp(*args: str):
        return runner.invoke(main, ["compare", *given, "--bootstrap", "200", *args])

    r = cmp("--arm", "b05=b05a,b05s2", "--arm", "r05fr=r05fr", "--json", str(tmp_path / "c.json"))
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "c.json").read_text())
    b05, r05 = res["arms"]["per_arm"]
    assert b05["pass_rate"]["per_run"] == {"b05a": pytest.approx(40 / 60), "b05s2": pytest.approx(0.5)}
    assert b05["pass_rate"]["mean"] == pytest.approx((40 / 60 + 0.5) / 2) and r05["n_seeds"] == 1
    (d,) = res["arms"]["paired"]
    assert d["d_pass_rate"] == pytest.approx(48 / 60 - (40 / 60 + 0.5) / 2)
    assert "arms against b05" in r.output and "r05fr vs b05 (arms, 1 vs 2 seeds" in r.output
    assert f"r05fr: {ONE_SEED}" in r.output and "crude" in r.output
    assert [p["run"] for p in res["paired"]] == ["b05s2", "r05fr"]  # the per-run output is still there

    plain = cmp("--json", str(tmp_path / "plain.json"))
    assert plain.exit_code == 0 and "arms" not in json.loads((tmp_path / "plain.json").read_text())
    assert "arms against" not in plain.output

    bad = cmp("--arm", "b05=b05a,b05s3")
    assert bad.exit_code == 3 and "'b05s3' is not one of the runs given (b05a, b05s2, r05fr)" in bad.output
    bad = cmp("--arm", "b05=b05a", "--arm", "x=b05a")
    assert bad.exit_code == 3 and "run 'b05a' is in arms 'b05' and 'x'" in bad.output
    bad = cmp("--arm", "b05a,b05s2")
    assert bad.exit_code == 2 and "write NAME=RUN1,RUN2" in bad.output
    helptext = runner.invoke(main, ["compare", "--help"]).output
    assert "--arm b05=b05a,b05s2" in helptext and "round 7" in helptext
