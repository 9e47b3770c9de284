"""evalkit.experiment's two-benchmark flow (issue 16; scripts/experiment.py's serve and score steps, `evalkit
bench score`) on made-up cases and engine-shaped results: one serve input for dev + genbench + perturbation
variants, results split back by id, each benchmark scored against its own gold with the real evalkit scorer,
the perturbation share, compares against a baseline adapter, the report."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reportminer.data.errors import DataError
from reportminer.data.io import read_table
from reportminer.data.schema import arrow_result_metrics_type
from reportminer.evalkit import experiment as ex
from reportminer.evalkit.cli import main as evalkit


def metric(name: str) -> dict:
    return {"metric_name": name, "metric_type": "financial", "score": 0.9, "reason": "r"}


def row(i: str, scen: str, para: str, names: list[str], perturb: dict | None = None, **kw) -> dict:
    r = {"id": i, "type": "test", "scenario": scen, **kw, "input": {"chapter_title": "t", "paragraph": para},
         "output": {"analysis": "a", "metrics": [metric(n) for n in names]}}
    if perturb:
        r["perturb"] = perturb
    return r


DEV = [row("dev-0001", "single_metric", "营收增长10%。", ["营业收入"], source_type="A"),
       row("dev-0002", "empty_output_background", "行业规模100亿元。", [], source_type="B"),
       row("dev-0003", "single_metric", "毛利率为30%。", ["毛利率"], source_type="C")]
GEN = [row("gb-w1-001", "boundary_many_numbers_one_core", "毛利率提升至32%。行业规模500亿元。原料价格回落。", ["毛利率"],
           {"insert": "CPI上涨0.4%。", "insert_after": "32%。", "remove": "行业规模500亿元。"}),
       row("gb-w1-002", "single_metric", "营收120亿元，增长15%。门店800家。", ["营业收入"],
           {"insert": "员工1.2万人。", "insert_after": None, "remove": None})]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def fake_results(shards: Path, out: Path, answers) -> None:
    """Engine-shaped result shards (one per input shard): `answers(adapter, id, gold names)` -> names."""
    out.mkdir(parents=True)
    for f in sorted(shards.glob("*.parquet")):
        t = read_table(f).to_pylist()
        rows = []
        for ad in ("b05", "r05"):
            for r in t:
                gold = [m["metric_name"] for m in (r["gold_metrics"] or [])]
                ms = [{**metric(n), "agreement": 1.0} for n in answers(ad, r["id"], gold)]
                rows.append({"id": r["id"], "adapter": ad, "scenario": r.get("scenario"), "analysis": "a", "metrics": ms,
                             "raw": json.dumps({"analysis": "a", "metrics": ms}, ensure_ascii=False), "status": "ok",
                             "error": None})
        pq.write_table(pa.table({
            "id": pa.array([r["id"] for r in rows], pa.string()), "adapter": pa.array([r["adapter"] for r in rows]),
            "scenario": pa.array([r["scenario"] for r in rows], pa.string()),
            "analysis": pa.array([r["analysis"] for r in rows]),
            "metrics": pa.array([r["metrics"] for r in rows], arrow_result_metrics_type()),
            "raw": pa.array([r["raw"] for r in rows]), "status": pa.array([r["status"] for r in rows]),
            "error": pa.array([r["error"] for r in rows], pa.string())}), out / f.name)


def test_serve_input_split_score_perturb_compare(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    write_jsonl(bench / "dev.jsonl", DEV)
    genbench = write_jsonl(tmp_path / "cases.jsonl", GEN)

    shards = ex.serve_input(bench, genbench)
    assert ex.serve_input(bench, genbench) == shards  # built once per content
    names = sorted(p.name for p in shards.glob("*.parquet"))
    assert names == ["dev-00000.parquet", "gen-00000.parquet"]
    ids = read_table(shards)["id"].to_pylist()
    assert sorted(ids) == sorted(["dev-0001", "dev-0002", "dev-0003", "gb-w1-001", "gb-w1-001~ins", "gb-w1-001~rem",
                                  "gb-w1-002", "gb-w1-002~ins"])
    assert read_table(shards / "dev-00000.parquet").column_names == read_table(shards / "gen-00000.parquet").column_names

    # b05 copies the gold but adds a metric to every inserted variant and misses dev-0003; r05 is the gold.
    def answers(ad: str, rid: str, gold: list[str]) -> list[str]:
        if ad == "b05" and rid.endswith("~ins"):
            return gold + ["CPI"]
        if ad == "b05" and rid == "dev-0003":
            return ["净利润"]
        return gold

    results = tmp_path / "work" / "serve-m05"
    fake_results(shards, results, answers)
    scores = tmp_path / "work" / "scores" / "serve-m05"
    rep = ex.score_results(results, bench, scores, genbench=genbench, baseline="b05")
    b, r = rep["adapters"]["b05"], rep["adapters"]["r05"]
    assert (b["dev"]["n"], b["gen"]["n"], b["genp"]["n"]) == (3, 2, 5)
    assert abs(b["dev"]["pass_rate"] - 2 / 3) < 1e-9 and r["dev"]["pass_rate"] == 1.0 and b["gen"]["pass_rate"] == 1.0
    assert b["perturb"]["share_changed"] == 1.0 and b["perturb"]["ins"][:2] == [2, 2] and b["perturb"]["rem"][:2] == [0, 1]
    assert r["perturb"]["share_changed"] == 0.0
    assert r["gen"]["by_scenario"] == {"boundary_many_numbers_one_core": [1, 1], "single_metric": [1, 1]}
    assert r["gen"]["count"]["gold1"] == 2 and r["gen"]["count"]["gold1_pred2plus"] == 0
    assert set(r["compare"]) == {"dev", "gen"} and r["compare"]["dev"]["baseline"] == "b05"
    assert abs(r["compare"]["dev"]["d_pass"] - 1 / 3) < 1e-9 and r["compare"]["gen"]["d_pass"] == 0.0
    assert b["compare"] == {}  # the baseline is not compared with itself
    md = (scores / "report.md").read_text(encoding="utf-8")
    assert "| r05 | gen | 2 | 100.0 |" in md and "| b05 | 2/2 = 100.0 % |" in md
    assert json.loads((scores / "report.json").read_text())["adapters"]["r05"]["perturb"]["cases"] == 2


def test_dev_only_when_no_genbench(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    write_jsonl(bench / "dev.jsonl", DEV)
    shards = ex.serve_input(bench, None)
    assert shards.name == "shards" and read_table(shards).num_rows == 3
    assert ex.gold_files(bench, None) == {"dev": bench / "dev.jsonl"}


def test_bench_score_command_and_refusals(tmp_path: Path) -> None:
    """`evalkit bench score`: the same report as the library, --json on stdout; a results folder without
    rows is a data error (exit 3), as are a dev and a genbench that share an id."""
    bench = tmp_path / "bench"
    write_jsonl(bench / "dev.jsonl", DEV)
    genbench = write_jsonl(tmp_path / "cases.jsonl", GEN)
    results = tmp_path / "serve"
    fake_results(ex.serve_input(bench, genbench), results, lambda ad, rid, gold: gold)
    res = CliRunner().invoke(evalkit, ["bench", "score", str(results), "--bench", str(bench), "--genbench", str(genbench),
                                       "--out", str(tmp_path / "scores"), "--baseline", "b05", "--json", "-"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["adapters"]["r05"]["compare"]["gen"]["d_pass"] == 0.0 and "| r05 | dev | 3 | 100.0 |" in res.stderr
    assert json.loads((tmp_path / "scores" / "report.json").read_text()) == rep
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(evalkit, ["bench", "score", str(tmp_path / "empty"), "--bench", str(bench),
                                       "--out", str(tmp_path / "s2")])
    assert res.exit_code == 3 and "no adapters found" in res.stderr
    clash = tmp_path / "clash"
    write_jsonl(clash / "dev.jsonl", DEV + [GEN[0]])
    with pytest.raises(DataError, match="share id"):
        ex.serve_input(clash, genbench)


def test_experiment_script_scores_through_the_library(tmp_path: Path, repo_root: Path) -> None:
    """scripts/experiment.py score: the repository's glue (folders, --no-record) around evalkit.experiment."""
    import subprocess
    import sys

    bench = tmp_path / "bench"
    write_jsonl(bench / "dev.jsonl", DEV)
    genbench = write_jsonl(tmp_path / "cases.jsonl", GEN)
    results = tmp_path / "work" / "serve-t"
    fake_results(ex.serve_input(bench, genbench), results, lambda ad, rid, gold: gold)
    res = subprocess.run([sys.executable, str(repo_root / "scripts" / "experiment.py"), "--bench", str(bench),
                          "--work", str(tmp_path / "work"), "--genbench", str(genbench), "score", "--results", str(results),
                          "--baseline", "b05", "--no-record"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| r05 | gen | 2 | 100.0 |" in res.stdout
    assert (tmp_path / "work" / "scores" / "serve-t" / "report.md").read_text(encoding="utf-8") in res.stdout


def test_several_generalisation_benchmarks_serve_and_score_as_one_union(tmp_path: Path) -> None:
    """genbench-flat + genbench-cause are chosen by as one benchmark (round 6): the union keeps every case once,
    in order, is written once per content, and a repeated id names both files."""
    bench = tmp_path / "bench"
    bench.mkdir()
    a = write_jsonl(tmp_path / "a.jsonl", GEN[:1])
    b = write_jsonl(tmp_path / "b.jsonl", GEN[1:])
    u = ex.genbench_union(bench, [a, b])
    assert [json.loads(x)["id"] for x in u.read_text(encoding="utf-8").splitlines()] == ["gb-w1-001", "gb-w1-002"]
    assert ex.genbench_union(bench, [a, b]) == u and ex.genbench_union(bench, [a]) == a
    gold = ex.gold_files(bench, u)
    assert len(gold["gen"].read_text(encoding="utf-8").splitlines()) == 2
    with pytest.raises(DataError, match=r"b\.jsonl:1: id 'gb-w1-001' is also in .*a\.jsonl:1"):
        ex.genbench_union(bench, [a, write_jsonl(tmp_path / "b.jsonl", GEN[:1])])


def test_bench_score_scores_repeated_genbench_files_as_one_union(tmp_path: Path) -> None:
    """`evalkit bench score --genbench A --genbench B` scores A and B as one benchmark, as scripts/experiment.py
    serves them (the union the round-6 validation chose)."""
    bench = tmp_path / "bench"
    write_jsonl(bench / "dev.jsonl", DEV)
    a, b = write_jsonl(tmp_path / "a.jsonl", GEN[:1]), write_jsonl(tmp_path / "b.jsonl", GEN[1:])
    results = tmp_path / "serve"
    fake_results(ex.serve_input(bench, ex.genbench_union(bench, [a, b])), results, lambda ad, rid, gold: gold)
    res = CliRunner().invoke(evalkit, ["bench", "score", str(results), "--bench", str(bench), "--genbench", str(a),
                                       "--genbench", str(b), "--out", str(tmp_path / "scores"), "--json", "-"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["adapters"]["b05"]["gen"]["n"] == 2


def test_bench_score_present_only_cuts_to_cases_answered_in_full(tmp_path: Path) -> None:
    """`--present-only` (a serve cut short by its lease, round 7): a case counts when it and its variants have a
    row for every adapter; one adapter's missing variant drops the case for both (a paired cut), dev is scored
    as it is, and a genbench file with no case answered is a data error naming it."""
    import pyarrow.compute as pc

    bench = tmp_path / "bench"
    write_jsonl(bench / "dev.jsonl", DEV)
    a, b = write_jsonl(tmp_path / "a" / "cases.jsonl", GEN[:1]), write_jsonl(tmp_path / "b.jsonl", GEN[1:])
    results = tmp_path / "serve"
    fake_results(ex.serve_input(bench, ex.genbench_union(bench, [a, b])), results, lambda ad, rid, gold: gold)
    for f in results.glob("*.parquet"):  # r05 never answered gb-w1-001's insertion variant
        t = pq.read_table(f)
        gone = pc.and_(pc.equal(t["id"], "gb-w1-001~ins"), pc.equal(t["adapter"], "r05"))
        pq.write_table(t.filter(pc.invert(gone)), f)
    args = ["bench", "score", str(results), "--bench", str(bench), "--genbench", str(a), "--genbench", str(b), "--json", "-"]
    res = CliRunner().invoke(evalkit, args + ["--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    whole = json.loads(res.stdout)["adapters"]
    assert whole["b05"]["gen"]["n"] == 2 and whole["b05"]["genp"]["n"] == 5
    res = CliRunner().invoke(evalkit, args + ["--out", str(tmp_path / "cut"), "--present-only"])
    assert res.exit_code == 0, res.output
    assert f"present-only: {a}: 0 of 1 cases answered in full" in res.stderr
    assert f"present-only: {b}: 1 of 1 cases answered in full" in res.stderr
    cut = json.loads(res.stdout)["adapters"]
    assert {ad: (cut[ad]["dev"]["n"], cut[ad]["gen"]["n"], cut[ad]["genp"]["n"]) for ad in cut} == {
        "b05": (3, 1, 2), "r05": (3, 1, 2)}
    assert [json.loads(x)["id"] for x in (tmp_path / "cut" / "present" / "b.jsonl").read_text().splitlines()] == ["gb-w1-002"]
    assert not (tmp_path / "cut" / "present" / "a.jsonl").exists()
    with pytest.raises(DataError, match=r"none of the cases of .*a/cases\.jsonl was answered in full"):
        ex.present_cases(results, [a], tmp_path / "p")


def _serve_input_after(barrier, bench: Path, genbench: Path) -> str:
    barrier.wait()
    return str(ex.serve_input(bench, genbench))


def test_serve_input_two_serves_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 7: a bf16 and an FP8 serve started together on one bench folder; both wrote `<shards>.tmp`, one
    deleted the other's files, and the published folder held 1 of 23 shards. Four processes (forked, each
    shard write slowed so their writes overlap) must all get the same complete folder and leave no temporary."""
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    import reportminer.data.io as dio

    bench = tmp_path / "bench"
    write_jsonl(bench / "dev.jsonl", DEV)
    genbench = write_jsonl(tmp_path / "cases.jsonl", GEN)
    ex.gold_files(bench, genbench)  # the gold files exist before the race, as on the lease (written atomically)
    real = dio.write_shards

    def slow(*a, **kw):
        out = real(*a, **kw)
        time.sleep(0.3)
        return out

    monkeypatch.setattr(dio, "write_shards", slow)
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(4)
        with ProcessPoolExecutor(4, mp_context=ctx) as pool:
            paths = list(pool.map(_serve_input_after, [barrier] * 4, [bench] * 4, [genbench] * 4))
    assert len(set(paths)) == 1
    shards = Path(paths[0])
    assert sorted(p.name for p in shards.glob("*.parquet")) == ["dev-00000.parquet", "gen-00000.parquet"]
    assert len(read_table(shards)) == len(DEV) + len(read_table(shards / "gen-00000.parquet"))
    assert sorted(read_table(shards / "dev-00000.parquet")["id"].to_pylist()) == [r["id"] for r in DEV]
    assert not [p for p in bench.iterdir() if p.name.endswith(".tmp")]


def test_publish_dir_keeps_the_first(tmp_path: Path) -> None:
    final, mine = tmp_path / "shards", tmp_path / ".shards.x.tmp"
    for folder, text in ((final, "theirs"), (mine, "mine")):
        folder.mkdir()
        (folder / "a.parquet").write_text(text)
    ex.publish_dir(mine, final)
    assert (final / "a.parquet").read_text() == "theirs" and not mine.exists()
    with pytest.raises(OSError):  # nothing published and nothing to rename: the error is not swallowed
        ex.publish_dir(tmp_path / "absent.tmp", tmp_path / "other")
