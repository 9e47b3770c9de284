"""Rules the contract (data/) holds once for every room: ids, folder kinds, result columns, the schema check."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reportminer.data import schema
from reportminer.data.check import answer_problems
from reportminer.data.errors import DataError
from reportminer.data.io import data_kind, generated_id, iter_jsonl, jsonl_to_table, write_json_atomic, write_shards


def _row(title: str = "t", paragraph: str = "p", **extra) -> str:
    return json.dumps({"input": {"chapter_title": title, "paragraph": paragraph}, **extra}, ensure_ascii=False) + "\n"


def test_one_id_rule_for_rows_without_an_id(tmp_path: Path):
    """datakit shard, validate and evalkit's gold all name an id-less row `<file>:<line>`."""
    from reportminer.data.validate import validate_path
    from reportminer.evalkit.loaders import load_gold

    assert generated_id("a/b.jsonl", 3) == "a/b.jsonl:3"
    f = tmp_path / "gold.jsonl"
    out = {"analysis": "a", "metrics": []}
    f.write_text(_row(output=out) + "\n" + _row(id="x-1", output=out) + _row(output=out), encoding="utf-8")
    expected = ["gold.jsonl:1", "x-1", "gold.jsonl:4"]
    assert [r.id for r in iter_jsonl(f)] == expected
    assert jsonl_to_table(f).column(schema.ID).to_pylist() == expected
    assert load_gold(f)["id"].to_list() == expected
    # A folder: the path under it, so ids stay unique across files; validate reports duplicates by that id.
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "a.jsonl").write_text(_row(output=out) + _row(id="sub/a.jsonl:1", output=out))
    assert [r.id for r in iter_jsonl(tmp_path / "d")] == ["sub/a.jsonl:1", "sub/a.jsonl:1"]
    report = validate_path(tmp_path / "d")
    assert any("duplicate id 'sub/a.jsonl:1'" in str(i) for i in report.errors)


def test_engine_results_of_id_less_jsonl_join_the_same_jsonl_as_gold(tmp_path: Path):
    """The bug the id rule fixes: shards made from id-less JSONL carry `file:LINE`, and gold must agree."""
    from reportminer.evalkit.loaders import load_gold, load_predictions

    f = tmp_path / "gold.jsonl"
    m = {"metric_name": "毛利率", "metric_type": "financial", "score": 0.9, "reason": "r"}
    f.write_text(_row(output={"analysis": "a", "metrics": [m]}) + _row(output={"analysis": "a", "metrics": []}))
    ids = jsonl_to_table(f).column(schema.ID).to_pylist()
    results = pa.table({
        schema.ID: ids, schema.ADAPTER: [schema.BASE_ADAPTER] * 2, schema.STATUS: [schema.OK] * 2,
        schema.METRICS: pa.array([[m], []], schema.arrow_metrics_type()),
    })
    pq.write_table(results, tmp_path / "r.parquet")
    gold = load_gold(f)
    (preds,) = load_predictions(tmp_path / "r.parquet", gold)
    assert set(preds.frame["id"]) == set(gold["id"]) and preds.name == schema.BASE_ADAPTER


def test_one_folder_kind_detector(tmp_path: Path):
    from reportminer.data.stats import compute_stats
    from reportminer.data.validate import validate_path
    from reportminer.evalkit.loaders import detect_format, load_gold
    from reportminer.trainer.rows import data_files

    jl = tmp_path / "jl"
    jl.mkdir()
    (jl / "a.jsonl").write_text(_row(output={"analysis": "a", "metrics": []}))
    shards = tmp_path / "pq"
    write_shards(jsonl_to_table(jl), shards)
    (shards / ".shard-00009.parquet.tmp.parquet").write_text("a hidden temporary file is never data")
    assert (data_kind(jl), data_kind(shards), data_kind(jl / "a.jsonl"), data_kind(shards / "shard-00000.parquet")) == (
        "jsonl", "parquet", "jsonl", "parquet")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jsonl").write_text((jl / "a.jsonl").read_text())
    (mixed / "deep").mkdir()
    (mixed / "deep" / "s.parquet").write_bytes((shards / "shard-00000.parquet").read_bytes())
    with pytest.raises(DataError, match=r"mixed: holds both \*\.jsonl \(1, e\.g\. a\.jsonl\) and \*\.parquet"):
        data_kind(mixed)
    # Every room asks the same detector, so a mixed folder is refused the same way everywhere.
    for use in (validate_path, compute_stats, load_gold, detect_format, data_files):
        with pytest.raises(DataError, match="holds both"):
            use(mixed)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no \*\.jsonl or \*\.parquet files"):
        data_kind(empty)


def test_result_columns_statuses_and_reasons_live_in_data():
    from reportminer.data import stats
    from reportminer.engine import rows

    assert rows.ENGINE_COLUMNS == schema.RESULT_COLUMNS
    assert [f.name for f in rows.engine_fields()] == list(schema.RESULT_COLUMNS)
    assert (rows.OK, rows.ERROR, rows.REASONS) == (schema.OK, schema.ROW_ERROR, schema.REASONS)
    assert stats.PREDICTED_METRICS == schema.METRICS
    assert rows.result_fields()[2].type == schema.arrow_result_metrics_type()  # gold fields + agreement


def test_one_schema_check_for_parse_and_validate():
    from reportminer.data.parse import parse_output
    from reportminer.data.validate import check_output

    dup = {"analysis": "a", "metrics": [
        {"metric_name": "毛利率", "metric_type": "financial", "score": 0.9, "reason": ""},
        {"metric_name": "毛利率", "metric_type": "finance", "score": 0.9, "reason": ""},
    ]}
    problems = answer_problems(dup)
    assert [(p.path, p.message) for p in problems] == [
        (("metrics", 1, "metric_type"), "'finance' is not one of financial/business"),
        (("metrics",), "duplicate metric_name, repeated in one row: 毛利率"),
    ]
    parsed = parse_output(json.dumps(dup, ensure_ascii=False))
    assert parsed.schema_errors == ("metrics/1/metric_type: 'finance' is not one of financial/business",
                                    "metrics: duplicate metric_name, repeated in one row: 毛利率")
    found = check_output(dup, "A", seed_rules=False)
    assert [(f, m) for f, m, _ in found] == [("output.metrics[1].metric_type", problems[0].message),
                                             ("output.metrics", problems[1].message)]


def test_atomic_json_writer(tmp_path: Path):
    p = write_json_atomic(tmp_path / "sub" / "x.json", {"名": 1})
    assert p.read_text(encoding="utf-8") == '{\n  "名": 1\n}\n'
    assert not [q for q in p.parent.iterdir() if q.name != "x.json"]  # no temporary file left


def test_engine_extract_is_the_function():
    """`from reportminer.engine import extract` gives the function, not a submodule (issue #10)."""
    import inspect

    from reportminer.engine import extract, run

    assert inspect.isfunction(extract) and extract.__name__ == "extract"
    assert inspect.isfunction(run) and run.__name__ == "run"
    import reportminer.engine as eng

    assert inspect.isfunction(eng.extract)


def test_breaks_length_cap_reads_finished_and_cut_answers_by_the_schemas_caps():
    """data.check.breaks_length_cap decides which answers of the grammar without caps the engine decodes again
    (engine.seam.needs_capped_retry): a string over its cap, finished or cut, or a closed empty metric name;
    never an answer whose strings all keep within the caps, whatever else is wrong with it."""
    from reportminer.data.check import breaks_length_cap
    from reportminer.data.schema import MAX_ANALYSIS_CHARS, MAX_NAME_CHARS, MAX_REASON_CHARS

    def answer(analysis="营收增长", name="营业收入", reason="核心"):
        m = {"metric_name": name, "metric_type": "financial", "score": 0.9, "reason": reason}
        return json.dumps({"analysis": analysis, "metrics": [m, m]}, ensure_ascii=False, separators=(",", ":"))

    assert not breaks_length_cap(answer())  # a repeated name breaks the contract, not a cap
    assert not breaks_length_cap(answer(analysis="营" * MAX_ANALYSIS_CHARS, name="名" * MAX_NAME_CHARS,
                                        reason="因" * MAX_REASON_CHARS))
    assert breaks_length_cap(answer(analysis="营" * (MAX_ANALYSIS_CHARS + 1)))
    assert breaks_length_cap(answer(name="名" * (MAX_NAME_CHARS + 1)))
    assert breaks_length_cap(answer(reason="因" * (MAX_REASON_CHARS + 1)))
    assert breaks_length_cap(answer(name=""))
    # escapes count as the characters they encode: 400 newlines are 800 characters of JSON, 400 of analysis
    assert not breaks_length_cap(answer(analysis="\n" * 400))
    assert breaks_length_cap(answer(analysis="\n" * (MAX_ANALYSIS_CHARS + 1)))
    # cut at max_tokens: an unterminated string counts as far as it got, a cut mid-escape as its full characters
    cut = '{"analysis":"' + "a" * MAX_ANALYSIS_CHARS
    assert not breaks_length_cap(cut) and breaks_length_cap(cut + "a")
    assert not breaks_length_cap('{"analysis":"' + "\\n" * (MAX_ANALYSIS_CHARS - 1) + "\\")
    assert not breaks_length_cap('{"analysis":"x","metrics":[{"metric_name":"')  # an empty name not yet closed
    assert not breaks_length_cap(None) and not breaks_length_cap("")
