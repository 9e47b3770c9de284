"""evalkit.devbench (`evalkit bench build-dev`, scripts/build_dev_benchmark.py) on the real seed
(../shared/seed): a dev set held out from training with the hidden benchmark's composition, reproducible to
the byte, and readable by datakit, trainer and evalkit."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.data.scenarios import SCENARIOS
from reportminer.data.validate import validate_path
from reportminer.evalkit import devbench as bdb
from reportminer.evalkit.cli import main as evalkit
from reportminer.evalkit.loaders import load_gold
from reportminer.trainer.rows import read_rows


@pytest.fixture(scope="module")
def built(seed_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("devbench")
    res = CliRunner().invoke(evalkit, ["bench", "build-dev", "--seed-dir", str(seed_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "check ok" in res.stdout
    return out


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_dev_and_train_are_disjoint_and_ids_unique(built: Path, seed_dir: Path):
    dev, train = rows(built / "dev.jsonl"), rows(built / "train.jsonl")
    dev_paras = {"".join(r["input"]["paragraph"].split()) for r in dev}
    assert not dev_paras & {"".join(r["input"]["paragraph"].split()) for r in train}
    assert len(dev_paras) == len(dev)
    ids = [r["id"] for r in dev + train]
    assert len(ids) == len(set(ids))
    assert [r["id"] for r in dev] == [f"dev-{i:04d}" for i in range(1, len(dev) + 1)]
    m = json.loads((built / "manifest.json").read_text())
    assert len(train) + m["dev"]["from_data"] == 700 and m["dev"]["from_data"] + m["dev"]["from_sample"] == len(dev)
    assert bdb.check(built, seed_dir) == []


def test_composition_matches_the_hidden_benchmark_x3(built: Path):
    dev = rows(built / "dev.jsonl")
    assert 140 <= len(dev) <= 160
    scen = Counter(r["scenario"] for r in dev)
    target = {s: 3 * n for s, n in bdb.HIDDEN_SCENARIOS.items()}
    for s, n in target.items():
        assert abs(scen[s] - n) <= max(2, 0.1 * n), (s, scen[s], n)
    counts = Counter(len(r["output"]["metrics"]) for r in dev)
    for k, n in {0: 15, 1: 69, 2: 51, 3: 15}.items():
        assert abs(counts[k] - n) <= max(2, 0.1 * n), (k, counts[k], n)
    assert sum(counts[k] for k in counts if k > 3) <= 2
    mean = sum(k * v for k, v in counts.items()) / len(dev)
    assert mean == pytest.approx(1.44, abs=0.05)
    # every row's scenario follows the documented rule, and `source_type` keeps its seed type
    for r in dev:
        assert r["type"] == "test" and r["source_type"] in "ABCD"
        assert bdb.scenario_of(r["source_type"], [m["metric_type"] for m in r["output"]["metrics"]]) == r["scenario"]
    # sample_data rows are used before any training row is held out
    m = json.loads((built / "manifest.json").read_text())
    for cell in m["dev"]["cells"].values():
        assert cell["from_data"] == 0 or cell["from_sample"] == cell["candidates_sample"]


def test_same_seed_same_bytes_other_seed_same_composition(built: Path, seed_dir: Path, tmp_path: Path):
    again = tmp_path / "again"
    bdb.write(bdb.build(seed_dir), again)
    for f in ("dev.jsonl", "train.jsonl", "manifest.json"):
        assert (again / f).read_bytes() == (built / f).read_bytes(), f
    other = bdb.build(seed_dir, seed=11)
    base = json.loads((built / "manifest.json").read_text())
    assert other.manifest["dev"]["by_scenario"] == base["dev"]["by_scenario"]
    assert other.manifest["dev"]["by_gold_count"] == base["dev"]["by_gold_count"]
    assert [d["input"] for d in other.dev] != [d["input"] for d in rows(built / "dev.jsonl")]


def test_datakit_trainer_and_evalkit_read_the_sets(built: Path):
    for f in ("train.jsonl", "dev.jsonl"):
        report = validate_path(built / f, seed_rules=True, require_labels=True)
        assert not report.errors, [str(e) for e in report.errors[:3]]
    train = read_rows(built / "train.jsonl")
    assert len(train) == len(rows(built / "train.jsonl")) and {r.scenario for r in train} == {"A", "B", "C", "D"}
    gold = load_gold(built / "dev.jsonl")
    assert set(gold["scenario"].unique()) == set(SCENARIOS)


def test_check_catches_a_shared_paragraph(built: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("dev.jsonl", "train.jsonl", "manifest.json"):
        (bad / f).write_bytes((built / f).read_bytes())
    train = rows(bad / "train.jsonl")
    train[0]["input"] = rows(bad / "dev.jsonl")[0]["input"]
    (bad / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train), encoding="utf-8")
    problems = bdb.check(bad, None)
    assert any("both dev and train" in p for p in problems) and any("sha256" in p for p in problems)


def test_all_rows_protocol_trains_on_every_data_row_and_holds_out_the_sample(seed_dir: Path, tmp_path: Path):
    """`--all-rows` (issue 16's validation protocol, round 6): train = all 700 data/ rows in file order, dev = the
    sample rows with their scenarios, nothing shared, the same bytes twice, and `check` passes."""
    out = tmp_path / "b700"
    res = CliRunner().invoke(evalkit, ["bench", "build-dev", "--seed-dir", str(seed_dir), "--out", str(out), "--all-rows"])
    assert res.exit_code == 0, res.output
    assert "check ok" in res.stdout
    train, dev = rows(out / "train.jsonl"), rows(out / "dev.jsonl")
    data = [json.loads(x) for f in bdb.DATA_FILES for x in (seed_dir / f).read_text(encoding="utf-8").splitlines() if x.strip()]
    assert [r["input"] for r in train] == [r["input"] for r in data]
    sample = rows(seed_dir / bdb.SAMPLE_FILE)
    assert [d["input"] for d in dev] == [s["input"] for s in sample]
    assert all(d["scenario"] in SCENARIOS for d in dev) and {d["id"] for d in dev}.isdisjoint(r["id"] for r in train)
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["protocol"] == "all-rows"
    again = tmp_path / "again"
    CliRunner().invoke(evalkit, ["bench", "build-dev", "--seed-dir", str(seed_dir), "--out", str(again), "--all-rows"])
    assert (again / "train.jsonl").read_bytes() == (out / "train.jsonl").read_bytes()
    assert (again / "dev.jsonl").read_bytes() == (out / "dev.jsonl").read_bytes()
