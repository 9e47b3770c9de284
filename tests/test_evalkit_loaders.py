"""Every input format evalkit reads, and the id rules: missing predictions, unknown ids, alignment."""
from __future__ import annotations

import json
from pathlib import Path

import evalkit_reference as reference
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reportminer.data.io import DataError, jsonl_to_table, write_parquet
from reportminer.data.schema import arrow_metrics_type
from reportminer.evalkit.loaders import load_gold, load_predictions
from reportminer.evalkit.matchers import UpstreamMatcher
from reportminer.evalkit.score import score_paths, summarize

REQUIRED_KEYS = {
    "n", "json_valid", "strict", "loose", "passed", "fail", "pred_total", "gold_total", "exact_hits",
    "fuzzy_hits", "precision", "recall", "f1", "type_accuracy", "by_scenario", "by_metric_type",
}


def metric(name: str, typ: str = "financial") -> dict:
    return {"metric_name": name, "metric_type": typ, "score": 0.9, "reason": "r"}


def seed_row(names: list[str], scenario: str = "A", id: str | None = None, typ: str = "financial") -> dict:
    row = {"type": scenario, "input": {"chapter_title": "t", "paragraph": "p"},
           "output": {"analysis": "a", "metrics": [metric(n, typ) for n in names]}}
    if id is not None:
        row["id"] = id
    return row


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def gold_noid(tmp_path: Path) -> Path:
    """Three gold cases without ids: their ids are gold.jsonl:1, :2, :3 (data.io.generated_id)."""
    return write_jsonl(tmp_path / "gold.jsonl", [seed_row(["毛利率"], "A"), seed_row(["净利润", "营业收入"], "B"), seed_row([], "B")])


def raw(names: list[str]) -> str:
    return json.dumps({"analysis": "a", "metrics": [metric(n) for n in names]}, ensure_ascii=False)


def verdicts(results) -> list[str]:
    assert len(results) == 1
    return results[0].cases["verdict"].to_list()


# ------------------------------------------------------------------------------------------- gold


def test_gold_jsonl_ids_are_file_and_line_or_id_field(gold_noid: Path, tmp_path: Path):
    g = load_gold(gold_noid)
    assert g["id"].to_list() == ["gold.jsonl:1", "gold.jsonl:2", "gold.jsonl:3"]
    assert g["scenario"].to_list() == ["A", "B", "B"]
    assert g["gold_names"].to_list() == [["毛利率"], ["净利润", "营业收入"], []]
    with_ids = write_jsonl(tmp_path / "g2.jsonl", [seed_row(["毛利率"], id="x-1"), seed_row([], id="x-2")])
    assert load_gold(with_ids)["id"].to_list() == ["x-1", "x-2"]


def test_gold_parquet_equals_gold_jsonl(demo_jsonl: Path, tmp_path: Path):
    pq_path = write_parquet(jsonl_to_table(demo_jsonl), tmp_path / "gold.parquet")
    a, b = load_gold(demo_jsonl), load_gold(pq_path)
    assert a.select("id", "case", "scenario", "gold_names", "gold_types").equals(
        b.select("id", "case", "scenario", "gold_names", "gold_types")
    )


def test_gold_errors_name_the_line(tmp_path: Path):
    p = write_jsonl(tmp_path / "g.jsonl", [seed_row(["a"]), {"type": "A", "input": {}}])
    with pytest.raises(DataError, match=r"g\.jsonl:2: gold row has no output\.metrics"):
        load_gold(p)
    p = write_jsonl(tmp_path / "d.jsonl", [seed_row(["a"], id="x"), seed_row(["b"], id="x")])
    with pytest.raises(DataError, match=r"d\.jsonl:2: duplicate gold id 'x'"):
        load_gold(p)


# ---------------------------------------------------------------------------- (c) seed batch JSON


def test_batch_json_joins_index_to_gold_case(gold_noid: Path, tmp_path: Path):
    items = [
        {"index": 2, "scenario": "B", "pred_raw": "```json\n" + raw(["净利润", "营业收入"]) + "\n```"},  # fenced
        {"index": 1, "scenario": "A", "pred_raw": raw(["销售毛利率"])},
        {"index": 3, "scenario": "B", "pred_raw": "抱歉，我无法回答"},  # unparseable, empty gold
    ]
    p = tmp_path / "results.json"
    p.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    (r,) = score_paths(gold_noid, p, UpstreamMatcher())
    assert r.cases["id"].to_list() == ["gold.jsonl:1", "gold.jsonl:2", "gold.jsonl:3"]
    assert r.cases["verdict"].to_list() == ["strict", "strict", "strict"]
    assert r.cases["json_valid"].to_list() == [True, True, False]
    assert r.summary["json_valid"] == 2 and r.summary["missing"] == 0
    assert "invalid JSON" in r.cases["error"][2]


def test_batch_json_unparseable_scores_zero_metrics(gold_noid: Path, tmp_path: Path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps([{"index": 1, "pred_raw": '{"analysis": "a", "metrics": [{"metric_name": "毛利'}]), encoding="utf-8")
    (r,) = score_paths(gold_noid, p, UpstreamMatcher())
    row = r.cases.row(0, named=True)
    assert (row["json_valid"], row["n_pred"], row["verdict"]) == (False, 0, "fail")
    assert r.cases["missing"].to_list() == [False, True, True]
    assert r.summary["missing_ids"] == ["gold.jsonl:2", "gold.jsonl:3"]


def test_batch_json_index_out_of_range_is_an_error(gold_noid: Path, tmp_path: Path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps([{"index": 4, "pred_raw": raw([])}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"index 4 matches no gold case \(gold has cases 1\.\.3\)"):
        score_paths(gold_noid, p, UpstreamMatcher())


# -------------------------------------------------------------------------------- (b) JSONL output


def test_jsonl_with_ids_joins_on_id(gold_noid: Path, tmp_path: Path):
    p = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "gold.jsonl:3", "output": {"analysis": "", "metrics": []}},
        {"id": "gold.jsonl:1", "output": raw(["毛利率", "ROE"])},  # a raw string is parsed too
    ])
    (r,) = score_paths(gold_noid, p, UpstreamMatcher())
    assert r.cases["verdict"].to_list() == ["loose", "fail", "strict"]
    assert r.cases["missing"].to_list() == [False, True, False]


def test_jsonl_without_ids_aligns_by_line(gold_noid: Path, tmp_path: Path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"output": raw(["毛利率"])}, {"output": raw(["净利润"])}, {"output": raw(["x"])}])
    (r,) = score_paths(gold_noid, p, UpstreamMatcher())
    assert r.cases["verdict"].to_list() == ["strict", "fail", "loose"]


def test_jsonl_errors(gold_noid: Path, tmp_path: Path):
    gold = load_gold(gold_noid)
    extra = write_jsonl(tmp_path / "a.jsonl", [{"output": raw([])}] * 4)
    with pytest.raises(DataError, match=r"a\.jsonl:4: prediction row 4 has no gold case 4"):
        load_predictions(extra, gold)
    mixed = write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "output": raw([])}, {"output": raw([])}])
    with pytest.raises(DataError, match=r"b\.jsonl:2: some rows have an `id`"):
        load_predictions(mixed, gold)
    dup = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "output": raw([])}, {"id": "1", "output": raw([])}])
    with pytest.raises(DataError, match=r"c\.jsonl:2: a second prediction for gold id '1'"):
        load_predictions(dup, gold)
    no_output = write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "x"}])
    with pytest.raises(DataError, match=r"d\.jsonl:1: prediction row has no `output`"):
        load_predictions(no_output, gold)


def test_unknown_prediction_id_is_an_error_naming_it(gold_noid: Path, tmp_path: Path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"id": "gold.jsonl:1", "output": raw([])}, {"id": "nope-7", "output": raw([])}])
    with pytest.raises(DataError, match=r"prediction id\(s\) with no gold case: 'nope-7' \(.*p\.jsonl:2\)"):
        score_paths(gold_noid, p, UpstreamMatcher())


# ---------------------------------------------------------------------------- (a) engine Parquet


def engine_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "adapter": pa.array([r.get("adapter") for r in rows], pa.string()),
        "analysis": pa.array([r.get("analysis", "") for r in rows], pa.string()),
        "metrics": pa.array([r.get("metrics") for r in rows], arrow_metrics_type()),
        "raw": pa.array([r.get("raw") for r in rows], pa.string()),
        "status": pa.array([r.get("status", "ok") for r in rows], pa.string()),
        "error": pa.array([r.get("error") for r in rows], pa.string()),
    })


def test_engine_parquet_folder_per_adapter(gold_noid: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    good = [metric("毛利率")]
    pq.write_table(engine_table([
        {"id": "gold.jsonl:1", "adapter": "lora-a", "metrics": good, "raw": raw(["毛利率"])},
        {"id": "gold.jsonl:2", "adapter": "lora-a", "metrics": [metric("净利润"), metric("营业收入", "business")]},
        {"id": "gold.jsonl:3", "adapter": "lora-a", "metrics": [], "raw": raw([])},
    ]), out / "shard-00000.parquet")
    pq.write_table(engine_table([
        {"id": "gold.jsonl:1", "adapter": None, "metrics": None, "raw": raw(["毛利率"] ) [:30], "status": "error",
         "error": "finish_reason=length"},
        {"id": "gold.jsonl:2", "adapter": None, "metrics": None, "raw": raw(["净利润", "营业收入"]), "status": "error",
         "error": "schema: reason too long"},  # parsed leniently from raw: names still count
    ]), out / "shard-00001.parquet")
    results = {r.name: r for r in score_paths(gold_noid, out, UpstreamMatcher())}
    assert set(results) == {"lora-a", "base"}
    a = results["lora-a"]
    assert a.cases["verdict"].to_list() == ["strict", "strict", "strict"]
    assert a.summary["type_accuracy"] == pytest.approx(2 / 3)
    b = results["base"]
    assert b.cases["json_valid"].to_list() == [False, True, False]
    assert b.cases["verdict"].to_list() == ["fail", "strict", "strict"]
    assert b.cases["missing"].to_list() == [False, False, True]
    assert b.cases["error"][0] == "finish_reason=length"
    (only,) = score_paths(gold_noid, out, UpstreamMatcher(), adapter="lora-a")
    assert only.name == "lora-a"
    with pytest.raises(DataError, match=r"no rows for adapter 'zzz'; adapters present"):
        score_paths(gold_noid, out, UpstreamMatcher(), adapter="zzz")


def test_engine_parquet_against_gold_parquet_shards(demo_jsonl: Path, tmp_path: Path):
    gold_pq = write_parquet(jsonl_to_table(demo_jsonl), tmp_path / "gold.parquet")
    gold = load_gold(gold_pq)
    rows = [{"id": i, "adapter": "x", "metrics": [metric(n, t) for n, t in zip(ns, ts)]}
            for i, ns, ts in gold.select("id", "gold_names", "gold_types").iter_rows()]
    res = tmp_path / "res.parquet"
    pq.write_table(engine_table(rows), res)
    (r,) = score_paths(gold_pq, res, UpstreamMatcher())
    s = r.summary
    assert s["strict"] == s["n"] == 12 and s["f1"] == 1.0 and s["type_accuracy"] == 1.0
    assert set(s["by_scenario"]) == {"A", "B", "C", "D"}


# ------------------------------------------------------------------------------------- summary


def test_summary_keys_and_groups(demo_jsonl: Path, repo_root: Path):
    (r,) = score_paths(demo_jsonl, repo_root / "evalkit/examples/demo_predictions.jsonl", UpstreamMatcher())
    s = r.summary
    assert REQUIRED_KEYS <= set(s)
    assert s["passed"] == s["strict"] + s["loose"] and s["n"] == s["passed"] + s["fail"] == 12
    assert s["exact_hits"] + s["fuzzy_hits"] == s["hits"]
    assert s["f1"] == pytest.approx(2 * s["hits"] / (s["gold_total"] + s["pred_total"]))
    for name, g in s["by_scenario"].items():
        assert {"n", "strict", "loose", "fail"} <= set(g), name
    assert sum(g["n"] for g in s["by_scenario"].values()) == 12
    assert set(s["by_metric_type"]) == {"financial", "business", "mixed", "none"}
    assert sum(g["n"] for g in s["by_metric_type"].values()) == 12
    # Hand-checked against the example file: demo-05 misses 海外销量占比, demo-12 is missing.
    assert (s["strict"], s["loose"], s["fail"], s["missing"], s["json_valid"]) == (9, 1, 2, 1, 10)
    assert summarize(r.cases)["by_metric_type"] == s["by_metric_type"]


def test_summary_without_scenarios_has_empty_by_scenario(tmp_path: Path):
    g = write_jsonl(tmp_path / "g.jsonl", [{"input": {}, "output": {"analysis": "", "metrics": [metric("毛利率")]}}])
    p = write_jsonl(tmp_path / "p.jsonl", [{"output": raw(["毛利率"])}])
    (r,) = score_paths(g, p, UpstreamMatcher())
    assert r.summary["by_scenario"] == {} and r.summary["strict"] == 1


# ------------------------------------------------------------- the one reader against the reference


def test_predictions_read_as_the_reference_reads_them(tmp_path: Path):
    """Every kind of prediction line, in a clean file and in one with a BOM, CRLF and blank lines (read
    line by line): the frame of the plain reference reader (json.loads and `parse_output` a line), row
    for row (names, types, validity, error text, scenario, source)."""
    ok = {"analysis": "a", "metrics": [metric("毛利率"), metric("营业收入", "business")]}
    bare = {"metric_name": "净利润", "metric_type": "financial"}
    lines = [
        {"id": "1", "output": ok, "type": "A"},
        {"id": "2", "output": {**ok, "metrics": [metric(f"m{i}") for i in range(5)]}},  # 5 metrics: contract error
        {"id": "3", "output": {**ok, "metrics": [metric("名" * 25)]}},  # name too long: kept, with the error
        {"id": "4", "output": {**ok, "metrics": [metric("毛利率"), metric("毛利率")]}},  # repeated name
        {"id": "5", "output": {**ok, "metrics": [metric("  "), metric("净利润")]}},  # blank name dropped
        {"id": "6", "output": {**ok, "metrics": [{**metric("x"), "score": 1.5}]}},
        {"id": "7", "output": {**ok, "metrics": [{**metric("x"), "score": True}]}},
        {"id": "8", "output": {**ok, "metrics": [{**metric("x"), "score": 1}]}},  # an int score is valid
        {"id": "9", "output": {**ok, "metrics": [{**metric("x"), "metric_type": "finance"}]}},
        {"id": "10", "output": {**ok, "extra": 1}},
        {"id": "11", "output": {"metrics": [metric("x")]}},  # no analysis
        {"id": "12", "output": json.dumps(ok, ensure_ascii=False)},  # raw model text
        {"id": "13", "output": "```json\n" + json.dumps(ok) + "\n```"},
        {"id": "14", "output": "no json here"},
        {"id": 15, "output": ok, "scenario": 7},  # an int id and scenario
        {"id": "16", "output": {**ok, "analysis": "长" * 641}},
        {"id": "17", "output": None},
        {"id": "18", "output": {"analysis": "a", "metrics": [bare, {**bare, "metric_name": "毛利率", "score": 0.5}]}},
        {"id": "19", "output": {"metrics": [bare] * 5 + [{"metric_name": "x", "reason": None}]}},  # null: a type error
    ]
    gold = write_jsonl(tmp_path / "gold.jsonl", [seed_row(["毛利率"], id=str(i)) for i in range(1, 20)])
    pred = tmp_path / "pred.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines)
    for variant, data in (("lf", text.encode()), ("crlf-bom-blank", b"\xef\xbb\xbf" + text.replace("\n", "\r\n\n").encode())):
        pred.write_bytes(data)
        g = load_gold(gold)
        got = load_predictions(pred, g)[0].frame
        want = reference.preds(pred, g)
        assert got.equals(want), (variant, got, want)
        assert got.height == 19 and got["json_valid"].sum() == 17
        assert got.filter(got["id"] == "1")["error"][0] is None
        assert "5 metrics" in got.filter(got["id"] == "2")["error"][0]
        assert got.filter(got["id"] == "5")["pred_names"][0].to_list() == ["净利润"]
        assert got.filter(got["id"] == "18")["error"][0] == (
            "metrics/0: 'score' is missing; metrics/0: 'reason' is missing; metrics/1: 'reason' is missing")
    pred.write_text(text + "{oops\n", encoding="utf-8")  # a line that is not JSON: named by its line
    with pytest.raises(DataError, match="pred.jsonl:20: invalid JSON"):
        load_predictions(pred, load_gold(gold))


def test_gold_read_as_the_reference_reads_it(tmp_path: Path, demo_jsonl: Path):
    rows = [seed_row(["毛利率", "营业收入"], "A"), seed_row([], "B", id="x"), {**seed_row(["净利润"]), "scenario": "single"},
            {"type": "C", "input": {}, "output": {"analysis": "", "metrics": None}},
            {**seed_row(["现金流"]), "id": 12}]
    gold = tmp_path / "gold.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    for data in (text.encode(), b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(), ("\n" + text + "  \n").encode()):
        gold.write_bytes(data)
        got = load_gold(gold)
        assert got.equals(reference.gold(gold)), (data[:20], got)
        assert got.height == 5 and got["id"].to_list()[1:] == ["x", got["id"][2], got["id"][3], "12"]
    assert load_gold(gold)["id"][0] == "gold.jsonl:2"  # the blank first line counts
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.jsonl").write_bytes(demo_jsonl.read_bytes())
    write_jsonl(folder / "b.jsonl", rows[:2])
    got = load_gold(folder)
    assert got.equals(reference.gold(folder)) and got["id"][0] == "b.jsonl:1" and got.height == 14
    # An object across two lines and two objects on one line balance the count: still an error, named
    # by its line, not a misread (msgspec's decode_lines would take both).
    line = json.dumps(rows[0], ensure_ascii=False)
    gold.write_text(line.replace('"output": ', '"output":\n', 1) + "\n" + line + " " + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="gold.jsonl:1: invalid JSON"):
        load_gold(gold)
    # An `output` kept as JSON text is read too.
    write_jsonl(gold, [rows[0], {**rows[1], "output": json.dumps(rows[1]["output"])}])
    got = load_gold(gold)
    assert got.equals(reference.gold(gold)) and got.height == 2


# ----------------------------------------------------------------------- empty and wrong formats


@pytest.mark.parametrize("name,content", [("pred.jsonl", ""), ("pred.jsonl", "\n  \n"), ("pred.json", ""),
                                          ("pred.json", "[]"), ("pred.txt", "")])
def test_empty_predictions_are_a_data_error(gold_noid: Path, tmp_path: Path, name: str, content: str):
    from click.testing import CliRunner

    from reportminer.evalkit.cli import main

    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_predictions(p, load_gold(gold_noid))
    res = CliRunner().invoke(main, ["score", "--gold", str(gold_noid), str(p)])
    assert res.exit_code == 3, res.output
    assert res.stderr.strip() == res.stderr.strip().splitlines()[0]  # one line
    assert f"{p}: the predictions file is empty" in res.stderr and "nothing to score" in res.stderr


def test_empty_engine_results_are_a_data_error(gold_noid: Path, tmp_path: Path):
    out = tmp_path / "res.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "metrics": pa.array([], arrow_metrics_type())}), out)
    with pytest.raises(DataError, match="hold no rows; nothing to score"):
        load_predictions(out, load_gold(gold_noid))


def test_gold_format_errors_say_which_formats_are_accepted(tmp_path: Path, demo_jsonl: Path):
    from click.testing import CliRunner

    from reportminer.evalkit.cli import main

    csv = tmp_path / "gold.csv"
    csv.write_text("id,paragraph,metrics\n1,营业收入增长,营业收入\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["score", "--gold", str(csv), str(demo_jsonl)])
    assert res.exit_code == 3, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and f"{csv}:1: invalid JSON" in err
    assert "gold must be seed-format JSONL" in err and "Parquet with `id` and `gold_metrics`" in err
    arr = tmp_path / "gold.jsonl"
    arr.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gold.jsonl:1: expected a JSON object.*gold must be seed-format JSONL"):
        load_gold(arr)
    nolabel = write_jsonl(tmp_path / "nolabel.jsonl", [{"input": {"paragraph": "p"}}])
    with pytest.raises(DataError, match=r"nolabel.jsonl:1: gold row has no output.metrics") as e:
        load_gold(nolabel)
    assert "gold must be" not in str(e.value)  # a JSONL file of the wrong rows: that message is already precise


# --------------------------------------------------------------- OpenAI batch output (vllm run-batch)


def test_vllm_run_batch_output_is_read_as_predictions(demo_jsonl: Path, repo_root: Path, tmp_path: Path):
    """evalkit/examples/demo_run_batch.jsonl was written by vLLM 0.32.0's own classes
    (`BatchRequestOutput(...).model_dump_json()`, vllm/entrypoints/launchers/run_batch.py) from the answers of
    demo_predictions.jsonl, with demo-04's request failed (status 400, `error` set). Joined on `custom_id`
    (not the response `id`); the answer is `response.body.choices[0].message.content` through data.parse."""
    from click.testing import CliRunner

    from reportminer.evalkit.cli import main
    from reportminer.evalkit.pardecode import Prefetch

    ex = repo_root / "evalkit" / "examples"
    g = load_gold(demo_jsonl)
    batch = load_predictions(ex / "demo_run_batch.jsonl", g)[0].frame
    plain = load_predictions(ex / "demo_predictions.jsonl", g)[0].frame
    assert batch["id"].to_list() == plain["id"].to_list()
    others = batch["id"] != "demo-04"
    cols = ["id", "pred_names", "pred_types", "json_valid", "error"]
    assert batch.filter(others).select(cols).equals(plain.filter(others).select(cols))
    failed = batch.filter(~others).row(0, named=True)
    assert failed["pred_names"] == [] and not failed["json_valid"]
    assert failed["error"] == "batch request failed: This model's maximum context length is 2048 tokens."
    with Prefetch([("pred", ex / "demo_run_batch.jsonl")], workers=2, min_bytes=0) as pre:
        assert load_predictions(ex / "demo_run_batch.jsonl", g, pre=pre)[0].frame.equals(batch)
    res = CliRunner().invoke(main, ["score", "--gold", str(demo_jsonl), str(ex / "demo_run_batch.jsonl"), "--json", "-"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 12
    # A JSONL that is neither format: refused with what each would need, exit 3.
    other = write_jsonl(tmp_path / "other.jsonl", [{"custom_id": "demo-01", "body": {"messages": []}}])  # a batch *input*
    res = CliRunner().invoke(main, ["score", "--gold", str(demo_jsonl), str(other)])
    assert res.exit_code == 3
    assert ("other.jsonl:1: prediction row has no `output` (object or raw model text) and is no OpenAI batch output "
            "row either (`custom_id` and `response`, as `vllm run-batch` writes); keys: body, custom_id") in res.stderr
