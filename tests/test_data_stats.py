"""stats flags the data shapes that hurt training (the seed's 'every row has two metrics' set) and not the
seed's balanced set."""
from __future__ import annotations

import json
from pathlib import Path

from reportminer.data.io import jsonl_to_table, write_shards
from reportminer.data.stats import compute_stats


def row(n_metrics: int, scenario: str = "A", i: int = 0, types: tuple[str, ...] = ("financial", "business")) -> dict:
    return {
        "type": scenario,
        "input": {"chapter_title": "章节", "paragraph": f"第{i}段：公司毛利率提升，出货量增长{i}%。"},
        "output": {
            "analysis": "分析",
            "metrics": [
                {"metric_name": f"指标{k}", "metric_type": types[k % len(types)], "score": 0.9, "reason": "r"}
                for k in range(n_metrics)
            ],
        },
    }


def write(tmp: Path, rows: list[dict], name: str = "s.jsonl") -> Path:
    p = tmp / name
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def codes(st) -> list[str]:
    return [a.code for a in st.alarms]


def test_all_rows_two_metrics_is_flagged(tmp_path: Path) -> None:
    rows = [row(2, "ABCD"[i % 4], i) for i in range(40)]
    st = compute_stats(write(tmp_path, rows))
    assert st.metric_count == {2: 40}
    assert codes(st) == ["label_count_skew"]
    assert "40 of 40 labelled rows (100%) have exactly 2 metric(s)" in st.alarms[0].message


def test_skew_threshold_is_80_percent(tmp_path: Path) -> None:
    just_under = [row(2, "ABCD"[i % 4], i) for i in range(79)] + [row(1, "ABCD"[i % 4], 100 + i) for i in range(21)]
    assert "label_count_skew" not in codes(compute_stats(write(tmp_path, just_under, "u.jsonl")))
    at = [row(2, "ABCD"[i % 4], i) for i in range(80)] + [row(1, "ABCD"[i % 4], 100 + i) for i in range(20)]
    assert "label_count_skew" in codes(compute_stats(write(tmp_path, at, "a.jsonl")))


def test_type_imbalance_rules(tmp_path: Path) -> None:
    counts = [1, 2, 3, 0]
    # A 65 %, B 32 %, C 3 %: A over 60 %, C under 5 %.
    rows = [row(counts[i % 4], "A", i) for i in range(65)] + [row(counts[i % 4], "B", 100 + i) for i in range(32)]
    rows += [row(1, "C", 200 + i) for i in range(3)]
    st = compute_stats(write(tmp_path, rows))
    assert codes(st) == ["type_imbalance"]
    assert "A 65%" in st.alarms[0].message and "C 3%" in st.alarms[0].message and "B" not in st.alarms[0].message.split(":")[1]
    single = compute_stats(write(tmp_path, [row(counts[i % 4], "D", i) for i in range(20)], "d.jsonl"))
    assert codes(single) == ["type_imbalance"] and "every row is scenario 'D'" in single.alarms[0].message


def test_small_sets_and_unlabelled_sets_raise_no_alarm(tmp_path: Path, demo_jsonl: Path) -> None:
    assert compute_stats(write(tmp_path, [row(2, "A", i) for i in range(9)])).alarms == []
    st = compute_stats(demo_jsonl)
    assert st.rows == 12 and st.alarms == []
    corpus = [{"input": {"chapter_title": "t", "paragraph": f"段落{i}"}} for i in range(30)]
    st = compute_stats(write(tmp_path, corpus, "c.jsonl"))
    assert st.labelled == 0 and st.metric_count == {} and st.scenarios is None and st.alarms == []


def test_duplicate_paragraphs_alarm(tmp_path: Path) -> None:
    rows = [row(i % 4, "ABCD"[i % 4], i) for i in range(20)] + [row(1, "A", 3)]
    st = compute_stats(write(tmp_path, rows))
    assert st.duplicate_paragraphs == 1 and codes(st) == ["duplicate_paragraphs"]


def test_seed_set_is_not_flagged_and_numbers_match_its_readme(seed_dir: Path, tmp_path: Path) -> None:
    st = compute_stats(seed_dir / "data")
    assert st.alarms == []
    assert st.rows == st.labelled == 700
    assert st.metric_count == {0: 27, 1: 125, 2: 291, 3: 245, 4: 12}  # as the seed README states
    assert st.scenarios == {"A": 270, "B": 202, "C": 72, "D": 156}
    assert st.scores["min"] >= 0.80 and st.scores["max"] <= 1.00
    assert round(st.paragraph_chars["mean"]) == 166
    assert st.row_type_mix["mixed"] >= 156  # every type-D row mixes
    assert st.label_chars_max == {"name": 15, "reason": 90, "analysis": 422}
    # The same numbers from shards (file by file, with column projection) as from JSONL.
    write_shards(jsonl_to_table(seed_dir / "data"), tmp_path / "shards", 100)
    st2 = compute_stats(tmp_path / "shards")
    d1, d2 = st.to_dict(), st2.to_dict()
    d1.pop("path"), d2.pop("path")
    assert d1 == d2
    # type_d.jsonl alone is the seed's "always two" failure shape.
    assert "label_count_skew" in codes(compute_stats(seed_dir / "data" / "type_d.jsonl"))


def test_distributions_on_a_known_set(tmp_path: Path) -> None:
    rows = [row(0, "B", 0), row(1, "A", 1, ("financial",)), row(2, "D", 2), row(2, "A", 3, ("business",))]
    st = compute_stats(write(tmp_path, rows))
    assert st.metric_count == {0: 1, 1: 1, 2: 2}
    assert st.count_by_scenario == {"A": {1: 1, 2: 1}, "B": {0: 1}, "D": {2: 1}}
    assert st.metric_types == {"business": 3, "financial": 2}
    assert st.row_type_mix == {"financial": 1, "business": 1, "mixed": 1, "none": 1}
    assert st.top_names[0] == ("指标0", 3) and st.distinct_names == 2
    assert "metric count" in st.render()
