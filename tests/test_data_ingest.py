"""Reports in Markdown and plain text become paragraph rows with the right chapter titles, stable ids and
file:line sources; tables, images and captions stay out."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reportminer.data.ingest import IngestConfig, ingest_table, ingest_to_shards, is_numbered_heading, split_long
from reportminer.data.io import DataError, read_table
from reportminer.data.validate import validate_path

MARKDOWN = """# 某某公司深度报告

投资要点：公司是国内光伏组件龙头，盈利能力持续改善。

## 一、盈利能力分析

2025年前三季度，公司实现归母净利润18.6亿元，同比增长23.4%。销售毛利率为41.2%，
同比提升2.3个百分点，主要得益于高端产品占比提升。

| 指标 | 2024 | 2025E |
|---|---|---|
| 收入 | 100 | 120 |

![图1](img/fig1.png)

图1：公司营收及增速

资料来源：Wind，某某证券研究所

**经营数据**

- 组件出货量达到28.5GW，同比增长31%。
- 海外出货占比提升至58%，欧洲和中东市场贡献主要增量。

```
print("代码块不是段落")
```

### 1.3 Setext 之前的小节

盈利预测
--------

我们预计公司2025年归母净利润为25亿元，对应PE为15倍。
"""

PLAIN = """一、行业概况

2025年行业需求回暖，全球光伏装机量同比增长25%，国内装机占比超过五成。

（一）需求端
　　下游需求持续旺盛，分布式光伏装机增速达到40%。
　　海外市场方面，欧洲库存去化完成，需求恢复。

1.2 盈利能力分析
公司毛利率为41.2%，同比提升2.3个百分点，主要得益于高端产品占比提升和原材料成本回落，我们认为
毛利率的持续改善是本轮利润高增的核心驱动，预计全年毛利率维持在40%以上水平，净利率有望继续
提升。

风险提示
原材料价格波动风险。

项目    2023    2024    2025E
营收    100     120     140

第三章 盈利预测与估值
我们预计公司2025-2027年归母净利润分别为25亿元、30亿元、36亿元。
"""


@pytest.fixture()
def reports(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    (root / "2025").mkdir(parents=True)
    (root / "2025" / "deep.md").write_text(MARKDOWN, encoding="utf-8")
    (root / "note.txt").write_text(PLAIN, encoding="utf-8")
    return root


def rows_of(table) -> list[tuple[str, str, str]]:
    return list(zip(table.column("chapter_title").to_pylist(), table.column("paragraph").to_pylist(), table.column("source").to_pylist()))


def test_markdown_report(reports: Path) -> None:
    t = ingest_table(reports / "2025" / "deep.md")
    assert rows_of(t) == [
        ("某某公司深度报告", "投资要点：公司是国内光伏组件龙头，盈利能力持续改善。", "deep.md:3"),
        ("盈利能力分析", "2025年前三季度，公司实现归母净利润18.6亿元，同比增长23.4%。销售毛利率为41.2%，同比提升2.3个百分点，主要得益于高端产品占比提升。", "deep.md:7"),
        ("经营数据", "组件出货量达到28.5GW，同比增长31%。", "deep.md:22"),
        ("经营数据", "海外出货占比提升至58%，欧洲和中东市场贡献主要增量。", "deep.md:23"),
        ("盈利预测", "我们预计公司2025年归母净利润为25亿元，对应PE为15倍。", "deep.md:34"),
    ]
    assert t.column("para_index").to_pylist() == [0, 1, 2, 3, 4]
    assert set(t.column("doc").to_pylist()) == {"deep.md"}
    assert all(i.startswith("deep.md#") for i in t.column("id").to_pylist())


def test_plain_text_report_headings(reports: Path) -> None:
    t = ingest_table(reports / "note.txt")
    got = [(title, para[:12], src) for title, para, src in rows_of(t)]
    assert got == [
        ("行业概况", "2025年行业需求回暖，", "note.txt:3"),
        ("需求端", "下游需求持续旺盛，分布式", "note.txt:6"),  # indented lines are separate paragraphs
        ("需求端", "海外市场方面，欧洲库存去", "note.txt:7"),
        ("盈利能力分析", "公司毛利率为41.2%，", "note.txt:10"),  # hard-wrapped lines joined
        ("风险提示", "原材料价格波动风险。", "note.txt:15"),
        ("盈利预测与估值", "我们预计公司2025-2", "note.txt:21"),
    ]
    wrapped = t.column("paragraph").to_pylist()[3]
    assert "我们认为毛利率" in wrapped and wrapped.endswith("净利率有望继续提升。")


def test_heading_detection() -> None:
    for h in ("一、行业概况", "（三）盈利预测", "(2) 风险", "1.2 盈利能力分析", "1.2盈利能力分析", "3. 风险提示", "第三章 盈利预测与估值"):
        assert is_numbered_heading(h), h
    for s in ("2025年公司营收增长20%", "1. 公司营收同比增长20%，毛利率提升。", "2.15%的净息差", "一、" + "很长" * 30):
        assert not is_numbered_heading(s), s


def test_ids_are_stable_and_relative_to_input(reports: Path, tmp_path: Path) -> None:
    a = ingest_table(reports)
    b = ingest_table(reports)
    assert a.equals(b)
    ids = a.column("id").to_pylist()
    assert len(set(ids)) == len(ids) == 11
    assert sum(i.startswith("2025/deep.md#") for i in ids) == 5
    # Editing one paragraph changes only that paragraph's id: the engine's resume re-runs just it.
    note = reports / "note.txt"
    note.write_text(note.read_text(encoding="utf-8").replace("原材料价格波动风险。", "原材料价格大幅波动风险。"), encoding="utf-8")
    c = ingest_table(reports).column("id").to_pylist()
    assert len(set(ids) - set(c)) == 1


def test_repeated_paragraph_gets_distinct_ids(tmp_path: Path) -> None:
    f = tmp_path / "r.txt"
    f.write_text("免责声明：本报告仅供参考，不构成投资建议。\n\n免责声明：本报告仅供参考，不构成投资建议。\n", encoding="utf-8")
    ids = ingest_table(f).column("id").to_pylist()
    assert len(ids) == 2 and ids[1] == ids[0] + "-2"


def test_long_paragraph_split_at_sentences() -> None:
    sentence = "公司毛利率同比提升2.3个百分点，主要得益于高端产品占比提升。"  # 30 characters
    pieces = split_long(sentence * 30, 200)
    assert len(pieces) == 5 and all(len(p) <= 200 for p in pieces)
    assert all(p.endswith("。") for p in pieces) and "".join(pieces) == sentence * 30
    no_stop = "很长的一句话没有句号" * 50
    assert all(len(p) <= 200 for p in split_long(no_stop, 200)) and "".join(split_long(no_stop, 200)) == no_stop


def test_gb18030_and_crlf(tmp_path: Path) -> None:
    f = tmp_path / "gbk.txt"
    f.write_bytes("二、竞争格局\r\n\r\n公司市占率约13%，稳居行业前三。\r\n".encode("gb18030"))
    assert rows_of(ingest_table(f)) == [("竞争格局", "公司市占率约13%，稳居行业前三。", "gbk.txt:3")]


def test_shards_stream_validate_and_prune(reports: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = ingest_to_shards(reports, out, rows_per_shard=4)
    assert (res.files, res.paragraphs) == (2, 11)
    assert sum(pq.read_table(p).num_rows for p in res.shards) == 11 and len(res.shards) > 1
    assert all(p.name.startswith("shard-") and p.parent == out for p in res.shards)
    assert validate_path(out).ok
    # Shards are named by content, so the folder's order is not the corpus order; the rows are the same.
    assert read_table(out).sort_by([("doc", "ascending"), ("para_index", "ascending")]).equals(
        ingest_table(reports).sort_by([("doc", "ascending"), ("para_index", "ascending")]))
    # Rerun with bigger shards: old shard files must not linger and be read as part of the set.
    res2 = ingest_to_shards(reports, out, rows_per_shard=100)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in res2.shards)
    assert len(res2.removed_stale) == len(set(res.shards) - set(res2.shards)) > 0
    assert read_table(out).num_rows == 11


def _corpus(root: Path, names: list[str]) -> None:
    for n in names:
        (root / f"{n}.md").write_text(
            f"# {n} 点评\n\n" + "\n\n".join(f"{n} 公司第{k}段：营业收入同比增长{k + 3}%，毛利率提升至{k + 30}%。"
                                           for k in range(3)) + "\n",
            encoding="utf-8")


def _shard_files(out: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("shard-*.parquet")}


def _docs(path: Path) -> set[str]:
    return set(pq.read_table(path).column("doc").to_pylist())


def test_shards_of_unchanged_reports_stay_put_when_reports_are_added_or_deleted(tmp_path: Path) -> None:
    """Issue 9, item 5: one new report that sorts first used to renumber, and so re-run, every shard."""
    root, out = tmp_path / "reports", tmp_path / "out"
    root.mkdir()
    _corpus(root, [f"r{i:03d}" for i in range(60)])
    first = ingest_to_shards(root, out, rows_per_shard=10)
    assert first.paragraphs == 180 and 8 <= len(first.shards) <= 40
    before = _shard_files(out)

    _corpus(root, ["a000"])  # sorts before every other report
    added = ingest_to_shards(root, out, rows_per_shard=10)
    after = _shard_files(out)
    changed = {n for n in after if before.get(n) != after[n]}
    # The new report's rows land in the first shard (or in new shards before it); every other file is
    # untouched (same bytes and same mtime: the engine skips it without even hashing it).
    assert changed and all("a000.md" in _docs(out / n) for n in changed)
    assert len(changed & set(before)) <= 1 and set(before) <= set(after)
    assert added.unchanged == len(after) - len(changed) >= len(before) - 1
    assert sum(pq.read_table(out / n).num_rows for n in changed) <= 3 + 4 * 10

    # Deleting a report in the middle changes only the shard(s) that held its paragraphs.
    (root / "r030.md").unlink()
    holding = {n for n in after if "r030.md" in _docs(out / n)}
    ingest_to_shards(root, out, rows_per_shard=10)
    final = _shard_files(out)
    kept = {n for n in after if final.get(n) == after[n]}
    # Only the shard(s) that held r030 change, and the next one when r030 ended a shard (it then merges).
    assert len(kept) >= len(after) - len(holding) - 1 and not kept & holding
    assert all("r030.md" not in _docs(out / n) for n in final)
    assert read_table(out).num_rows == 180


def test_config_and_errors(reports: Path, tmp_path: Path) -> None:
    t = ingest_table(reports / "note.txt", IngestConfig(strip_numbering=False, min_chars=15))
    assert t.column("chapter_title").to_pylist()[0] == "一、行业概况"
    assert "原材料价格波动风险。" not in t.column("paragraph").to_pylist()  # 10 characters < 15
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no report files"):
        ingest_table(empty)
    (empty / "x.md").write_text("| a | b |\n|---|---|\n", encoding="utf-8")
    with pytest.raises(DataError, match="no paragraphs"):
        ingest_table(empty)
