"""`engine vote`: one voted answer a row across several adapters of one run (engine/vote_adapters.py).

Shards are written in the engine's own output schema (rows.output_schema), so what the command reads and writes is
what `engine run` writes; evalkit then reads the voted rows as one more adapter.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reportminer.data.errors import ConfigError, DataError
from reportminer.engine.cli import main
from reportminer.engine.rows import output_schema
from reportminer.engine.vote_adapters import vote_results

F, B = "financial", "business"
PARAS = {
    "p1": "公司2025年营收123.4亿元，同比增长12.3%；毛利率31.2%，同比提升1.1个百分点；归母净利润15.6亿元。",
    "p2": "三季度末净息差1.87%，同比收窄13bp，降幅小于同业；活期存款占比52.3%。",
    "p3": "行业背景：2024年全国社会消费品零售总额48.8万亿元，同比增长3.5%。",
}


def m(name: str, kind: str = F, score: float = 0.9) -> dict:
    return {"metric_name": name, "metric_type": kind, "score": score, "reason": f"{name}是段落论证的对象"}


def row(rid: str, adapter: str, metrics: list[dict] | None, status: str = "ok") -> dict:
    ok = status == "ok"
    return {"id": rid, "title": "章节", "paragraph": PARAS[rid], "adapter": adapter,
            "analysis": f"{adapter}对{rid}的分析" if ok else None, "metrics": metrics,
            "raw": json.dumps({"analysis": "x", "metrics": metrics or []}, ensure_ascii=False) if ok else "{\"analysis\": \"x",
            "status": status, "error": None if ok else "length: cut at max_tokens",
            "finish_reason": "stop" if ok else "length", "prompt_tokens": 500, "output_tokens": 120,
            "samples": None, "dropped_metrics": None}


def results(tmp_path: Path) -> Path:
    schema, _ = output_schema(pa.schema([("id", pa.string()), ("title", pa.string()), ("paragraph", pa.string())]))
    rows = [
        # p1: 营收 named by all three, 毛利率 by two (kept: 2 of 3 >= 0.5), 归母净利润 by one (dropped)
        row("p1", "s42", [m("营收"), m("毛利率")]),
        row("p1", "s7", [m("营收", score=0.7), m("毛利率"), m("归母净利润")]),
        row("p1", "s1234", [m("营收")]),
        # p2: one adapter cut at max_tokens; the two valid answers agree on 净息差; 活期存款占比 by one of two: kept at 0.5
        row("p2", "s42", None, status="error"),
        row("p2", "s7", [m("净息差")]),
        row("p2", "s1234", [m("净息差"), m("活期存款占比", B)]),
        # p3: no adapter answered validly
        row("p3", "s42", None, status="error"), row("p3", "s7", None, status="error"),
        row("p3", "s1234", None, status="error"),
    ]
    d = tmp_path / "res" / "part"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "shard-00000.parquet")
    return tmp_path / "res"


def test_vote_adds_one_voted_row_per_input_row_and_keeps_every_row(tmp_path: Path) -> None:
    res = results(tmp_path)
    rep = vote_results(res, tmp_path / "out", ["s42", "s7", "s1234"], name="vote")
    assert (rep.files, rep.rows, rep.failed, rep.metrics) == (1, 3, 1, 4)
    assert rep.member_metrics == {"s42": 2, "s7": 4, "s1234": 3}
    got = pq.read_table(tmp_path / "out" / "part" / "shard-00000.parquet")
    assert got.schema == pq.read_table(res / "part" / "shard-00000.parquet").schema
    rows = got.to_pylist()
    assert [(r["id"], r["adapter"]) for r in rows] == [
        ("p1", "s42"), ("p1", "s7"), ("p1", "s1234"), ("p1", "vote"),
        ("p2", "s42"), ("p2", "s7"), ("p2", "s1234"), ("p2", "vote"),
        ("p3", "s42"), ("p3", "s7"), ("p3", "s1234"), ("p3", "vote")]
    v1, v2, v3 = rows[3], rows[7], rows[11]
    assert [(x["metric_name"], round(x["agreement"], 3)) for x in v1["metrics"]] == [("营收", 1.0), ("毛利率", 0.667)]
    assert v1["metrics"][0]["score"] == pytest.approx((0.9 + 0.7 + 0.9) / 3)
    assert v1["metrics"][0]["grounded"] and v1["metrics"][0]["spans"]  # its evidence in the paragraph, as run writes
    assert v1["status"] == "ok" and v1["samples"] == {"valid": 3, "total": 3}
    assert v1["analysis"] == "s42对p1的分析" and v1["raw"] == rows[0]["raw"]  # the answer naming all that stays, first
    assert v1["prompt_tokens"] is None and v1["output_tokens"] is None  # it decoded nothing
    assert v1["paragraph"] == PARAS["p1"] and v1["title"] == "章节"
    assert [x["metric_name"] for x in v2["metrics"]] == ["净息差", "活期存款占比"]
    assert v2["samples"] == {"valid": 2, "total": 3}
    assert v3["status"] == "error" and v3["metrics"] is None and v3["error"].startswith("length: no adapter answered")
    assert rows[:3] == pq.read_table(res / "part" / "shard-00000.parquet").to_pylist()[:3]  # members unchanged


def test_a_stricter_threshold_keeps_what_every_adapter_names(tmp_path: Path) -> None:
    rep = vote_results(results(tmp_path), tmp_path / "out", ["s42", "s7", "s1234"], threshold=1.0)
    rows = pq.read_table(tmp_path / "out" / "part" / "shard-00000.parquet").to_pylist()
    assert [x["metric_name"] for x in rows[3]["metrics"]] == ["营收"] and rep.metrics == 2  # p1 营收, p2 净息差


def test_evalkit_reads_the_voted_rows_as_one_more_adapter(tmp_path: Path) -> None:
    from reportminer.evalkit.loaders import load_predictions

    vote_results(results(tmp_path), tmp_path / "out", ["s42", "s7", "s1234"], name="v3")
    sets = {s.name: s.frame for s in load_predictions(tmp_path / "out", gold=None)}  # type: ignore[arg-type]
    assert set(sets) == {"s42", "s7", "s1234", "v3"}
    names = {r["id"]: r["pred_names"] for r in sets["v3"].iter_rows(named=True)}
    assert names["p1"] == ["营收", "毛利率"] and names["p2"] == ["净息差", "活期存款占比"] and not names["p3"]


def test_two_input_rows_sharing_an_id_get_a_vote_each(tmp_path: Path) -> None:
    """Without --strict-ids an input may repeat an id; the engine writes each input row's adapters together."""
    schema, _ = output_schema(pa.schema([("id", pa.string()), ("title", pa.string()), ("paragraph", pa.string())]))
    rows = [row("p1", "a", [m("营收")]), row("p1", "b", [m("营收")]),
            row("p1", "a", [m("毛利率")]), row("p1", "b", [m("毛利率")])]
    (tmp_path / "res").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "res" / "s.parquet")
    rep = vote_results(tmp_path / "res", tmp_path / "out", ["a", "b"])
    got = pq.read_table(tmp_path / "out" / "s.parquet").to_pylist()
    assert rep.rows == 2 and [r["adapter"] for r in got] == ["a", "b", "vote", "a", "b", "vote"]
    assert [x["metric_name"] for x in got[2]["metrics"]] == ["营收"]
    assert [x["metric_name"] for x in got[5]["metrics"]] == ["毛利率"]


def test_results_put_together_adapter_by_adapter_still_vote_per_row(tmp_path: Path) -> None:
    schema, _ = output_schema(pa.schema([("id", pa.string()), ("title", pa.string()), ("paragraph", pa.string())]))
    rows = [row("p1", "a", [m("营收")]), row("p2", "a", [m("净息差")]),
            row("p1", "b", [m("营收")]), row("p2", "b", [m("净息差")]), row("p3", "base", [m("社零总额")])]
    (tmp_path / "res").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "res" / "s.parquet")
    rep = vote_results(tmp_path / "res", tmp_path / "out", ["a", "b"])
    got = pq.read_table(tmp_path / "out" / "s.parquet").to_pylist()
    assert rep.rows == 3 and [(r["id"], r["adapter"]) for r in got] == [
        ("p1", "a"), ("p1", "b"), ("p1", "vote"), ("p2", "a"), ("p2", "b"), ("p2", "vote"), ("p3", "base"), ("p3", "vote")]
    assert got[5]["metrics"][0]["metric_name"] == "净息差"
    # a row only the base model answered: the vote is an error row saying the adapters have none
    assert got[7]["status"] == "error" and "none of these adapters has a row" in got[7]["error"] and rep.failed == 1


def test_refusals_name_the_file_or_the_option(tmp_path: Path) -> None:
    res = results(tmp_path)
    with pytest.raises(ConfigError, match="at least two"):
        vote_results(res, tmp_path / "o1", ["s42"])
    with pytest.raises(ConfigError, match="appears twice"):
        vote_results(res, tmp_path / "o2", ["s42", "s42"])
    with pytest.raises(ConfigError, match="a name of their own"):
        vote_results(res, tmp_path / "o3", ["s42", "s7"], name="s7")
    with pytest.raises(DataError, match=r"shard-00000.parquet: no rows for adapter\(s\) s99"):
        vote_results(res, tmp_path / "o4", ["s42", "s99"])
    with pytest.raises(ConfigError, match="another folder"):
        vote_results(res, res, ["s42", "s7"])
    vote_results(res, tmp_path / "o5", ["s42", "s7"], name="v")
    with pytest.raises(ConfigError, match="already holds rows of adapter 'v'"):
        vote_results(tmp_path / "o5", tmp_path / "o6", ["s42", "s7"], name="v")


def test_cli_prints_one_json_line_and_exits_nonzero_on_a_missing_adapter(tmp_path: Path) -> None:
    res = results(tmp_path)
    r = CliRunner().invoke(main, ["vote", str(res), str(tmp_path / "out"), "--adapters", "s42,s7,s1234"])
    assert r.exit_code == 0, r.output
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["rows"] == 3 and line["failed"] == 1 and line["name"] == "vote"
    assert "1 of 3 rows had no valid answer" in r.stderr
    r = CliRunner().invoke(main, ["vote", str(res), str(tmp_path / "o2"), "--adapters", "s42,nope"])
    assert r.exit_code != 0 and "no rows for adapter(s) nope" in r.output
    assert "engine vote results/ voted/" in CliRunner().invoke(main, ["vote", "--help"]).output
