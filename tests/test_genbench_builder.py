"""evalkit.genbench (`evalkit bench build-gen`, scripts/build_genbench.py) on made-up rows: the generalisation
benchmark and the team's training rows are assembled from writers' batch files, validated, kept apart from
each other, and described."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.evalkit import genbench as bg
from reportminer.evalkit.cli import main as evalkit
from reportminer.evalkit.loaders import load_gold
from reportminer.trainer.rows import read_rows

DENSE = ("2025年上半年公司实现营业收入152.3亿元，同比增长18.6%，其中海外收入48.1亿元，占比31.6%。毛利率为24.8%，同比提升1.9个"
         "百分点，主要受益于高端产品占比提升与原材料价格回落。行业规模约2100亿元，同比增长6%，前五家企业合计份额保持在六成左右，竞争格局总体保持稳定。公司产能达到45万吨，"
         "产能利用率为92%，员工人数1.2万人。")  # 180+ characters, 13 numbers: long and dense


def metric(name: str, t: str = "financial") -> dict:
    return {"metric_name": name, "metric_type": t, "score": 0.9, "reason": f"{name}是段落的主线。"}


def case(i: int, scen: str = "boundary_many_numbers_one_core", names=("营业收入",), para: str | None = None) -> dict:
    para = para or f"第{i}段：" + DENSE
    return {"id": f"gb-w1-{i:03d}", "type": "test", "scenario": scen,
            "input": {"chapter_title": "经营分析", "paragraph": para},
            "output": {"analysis": "段落围绕营业收入增长展开，其余数字为背景。", "metrics": [metric(n) for n in names]},
            "perturb": {"insert": "全国CPI同比上涨0.4%。", "insert_after": "价格回落。", "remove": "员工人数1.2万人。"}}


def trow(i: int, para: str | None = None) -> dict:
    return {"id": f"tr1-{i:03d}", "type": "B", "input": {"chapter_title": "经营分析", "paragraph": para or f"训练{i}：" + DENSE},
            "output": {"analysis": "段落围绕毛利率展开，其余数字为背景。", "metrics": [metric("毛利率")]}}


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def src(tmp_path: Path) -> tuple[Path, Path]:
    write(tmp_path / "bench" / "W1.jsonl", [case(1), case(2, "single_metric")])
    write(tmp_path / "bench" / "W2.jsonl", [case(3, "empty_output_background", names=())])
    write(tmp_path / "train" / "T1.jsonl", [trow(1), trow(2)])
    return tmp_path / "bench", tmp_path / "train"


def test_bench_builds_validates_and_describes(tmp_path: Path, src) -> None:
    bench, train = src
    b = bg.build("bench", bench, other_src=train, other_out=tmp_path / "none", seed_dir=None)
    assert b.errors == [] and [r["id"] for r in b.rows] == ["gb-w1-001", "gb-w1-002", "gb-w1-003"]
    c = b.stats["composition"]
    assert c["all"]["rows"] == 3 and c["all"]["by_gold_count"] == {"0": 1, "1": 2}
    assert c["all"]["long_dense"] == 3 and c["by_scenario"]["single_metric"]["rows"] == 1
    assert b.stats["perturb"] == {"cases": 3, "insert_variants": 3, "remove_variants": 3}
    assert set(b.stats["sources"]) == {"W1.jsonl", "W2.jsonl"}
    paths = bg.write(b, "bench", tmp_path / "out")
    assert load_gold(paths["rows"]).height == 3  # evalkit reads it as gold
    assert bg.check("bench", tmp_path / "out", other_out=tmp_path / "none") == []
    again = bg.build("bench", bench, other_src=train, other_out=tmp_path / "none", seed_dir=None)
    assert bg._dump(again.rows) == paths["rows"].read_bytes()  # same sources, same bytes
    paths["rows"].write_text(paths["rows"].read_text().replace("经营分析", "经营"), encoding="utf-8")
    assert any("sha256" in p for p in bg.check("bench", tmp_path / "out", other_out=tmp_path / "none"))


def test_train_rows_build_and_the_trainer_reads_them(tmp_path: Path, src) -> None:
    bench, train = src
    b = bg.build("train", train, other_src=bench, other_out=tmp_path / "none", seed_dir=None)
    assert b.errors == [] and b.stats["composition"]["by_type"]["B"]["rows"] == 2
    paths = bg.write(b, "train", tmp_path / "rt")
    assert len(read_rows(paths["rows"])) == 2


def test_refusals_name_the_source_line(tmp_path: Path, src) -> None:
    bench, train = src
    bad = case(4)
    bad["perturb"]["remove"] = "不在段落里。"
    write(bench / "W3.jsonl", [case(1), bad, {**case(5), "scenario": "other"}, case(6, para=trow(1)["input"]["paragraph"])])
    b = bg.build("bench", bench, other_src=train, other_out=tmp_path / "none", seed_dir=None)
    text = "\n".join(b.errors)
    assert "W3.jsonl:1: id 'gb-w1-001' also at W1.jsonl:1" in text
    assert "W3.jsonl:1: paragraph also at W1.jsonl:1" in text
    assert "W3.jsonl:2: perturb.remove is not in the paragraph" in text
    assert "W3.jsonl:3: scenario 'other'" in text
    assert "W3.jsonl:4: paragraph is also in the train set (T1.jsonl:1)" in text  # a training row is never a case
    assert "composition" not in b.stats
    # the contract's validator, with the source line
    wrong = trow(3)
    wrong["output"]["metrics"][0]["metric_type"] = "finance"
    write(train / "T2.jsonl", [wrong])
    b = bg.build("train", train, other_out=tmp_path / "none", seed_dir=None)
    assert any(e.startswith("T2.jsonl:1:") and "finance" in e for e in b.errors)
    res = CliRunner().invoke(evalkit, ["bench", "build-gen", "train", "--src", str(train), "--out", str(tmp_path / "x"),
                                       "--seed-dir", str(tmp_path / "no"), "--other-src", str(tmp_path / "no"),
                                       "--other-out", str(tmp_path / "none")])
    assert res.exit_code == 1 and "T2.jsonl:1:" in res.stderr and "nothing written" in res.stderr
    assert not (tmp_path / "x").exists()  # nothing written


def test_adjudicated_labels_and_agreement(tmp_path: Path, src) -> None:
    bench, train = src
    final = {"analysis": "段落围绕毛利率展开。", "metrics": [metric("毛利率")]}
    labels = write(tmp_path / "adj.jsonl", [{"id": "gb-w1-001", "output": final}])
    # labeller 2: agrees on 001 (count and name), names another metric on 002, adds one on 003
    second = write(tmp_path / "l2.jsonl", [
        {"id": "gb-w1-001", "output": case(1)["output"]},
        {"id": "gb-w1-002", "output": {"analysis": "a", "metrics": [metric("毛利率")]}},
        {"id": "gb-w1-003", "output": {"analysis": "a", "metrics": [metric("营业收入")]}}])
    b = bg.build("bench", bench, labels=labels, second=second, other_out=tmp_path / "none", seed_dir=None)
    assert b.errors == []
    assert b.rows[0]["output"] == final and b.stats["labels"]["adjudicated"]["changed"] == ["gb-w1-001"]
    a = b.stats["agreement"]  # against labeller 1 = the writer's labels, not the adjudicated ones
    assert (a["cases"], a["same_count"], a["same_labels"]) == (3, 2, 1)
    assert a["disagreements"] == ["gb-w1-002", "gb-w1-003"]
    assert a["by_scenario"]["empty_output_background"]["same_count"] == 0
    stray = write(tmp_path / "stray.jsonl", [{"id": "gb-w9-999", "output": final}])
    assert any("not in the set" in e for e in bg.build("bench", bench, labels=stray, other_out=tmp_path / "none",
                                                         seed_dir=None).errors)


def test_cli_builds_checks_and_refuses(tmp_path: Path, src) -> None:
    """`evalkit bench build-gen` / `check`: the library's results as exit codes (1 findings, 3 data error)."""
    bench, train = src
    out, none = tmp_path / "gb", tmp_path / "none"
    run = CliRunner().invoke
    res = run(evalkit, ["bench", "build-gen", "bench", "--src", str(bench), "--other-src", str(train),
                        "--out", str(out), "--other-out", str(none)])
    assert res.exit_code == 0, res.output
    assert "perturbation variants: insert 3, remove 3 of 3 cases" in res.stdout and "(3 rows)" in res.stdout
    res = run(evalkit, ["bench", "check", "bench", "--out", str(out), "--other-out", str(none)])
    assert res.exit_code == 0 and res.stdout.strip() == "check ok"
    (out / "cases.jsonl").write_text((out / "cases.jsonl").read_text().replace("经营分析", "经营"), encoding="utf-8")
    res = run(evalkit, ["bench", "check", "bench", "--out", str(out), "--other-out", str(none)])
    assert res.exit_code == 1 and "sha256 differs" in res.stderr and "1 problem(s)" in res.stdout
    bad = write(tmp_path / "bad.jsonl", [{"id": "gb-w1-001"}])
    res = run(evalkit, ["bench", "build-gen", "bench", "--src", str(bench), "--labels", str(bad), "--out", str(out),
                        "--other-out", str(none)])
    assert res.exit_code == 3 and "bad.jsonl:1: expected" in res.stderr


def test_the_script_has_no_default_source(repo_root: Path) -> None:
    """scripts/build_genbench.py is the CLI with the repository's folders; the writers' folder is never guessed."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(repo_root / "scripts" / "build_genbench.py"), "bench"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--src is required" in res.stderr


@pytest.mark.parametrize("folder", ["restraint-train", "flat-train", "root-train", "multi-train"])
def test_committed_training_sets_pass_their_check(repo_root: Path, folder: str) -> None:
    """Each committed team training set still matches its stats.json and passes the contract (a hand edit after the
    build, or a contract change that rejects its rows, fails here rather than in a GPU lease's training)."""
    out = repo_root / "benchmarks" / folder
    assert bg.check("train", out) == []
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == json.loads((out / "stats.json").read_text(encoding="utf-8"))["composition"]["all"]["rows"]
