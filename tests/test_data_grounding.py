"""Evidence grounding (data/grounding.py, issue 19 item 4): the spans a metric rests on, by name, near
forms and the reason's figures; deterministic, CJK-aware, in the paragraph's own characters."""
from __future__ import annotations

import json
from pathlib import Path

from reportminer.data.grounding import Grounding, ground, ground_metrics

PARA = ("2025年前三季度，公司实现归属于母公司股东的净利润18.6亿元，同比增长23.4%。营业总收入为152亿元；"
        "销售毛利率为４１.２％，ＲＯＥ提升至 15.2%。在建机组7台。")


def spans(g: Grounding, text: str = PARA) -> list[str]:
    return [text[a:b] for a, b in g.spans]


def test_each_basis_finds_its_form():
    assert (ground(PARA, "毛利率").basis, spans(ground(PARA, "毛利率"))) == ("name", ["毛利率"])
    g = ground(PARA, "营业收入")  # 营业总收入: an alias form in the table
    assert g.grounded and g.basis == "alias" and spans(g) == ["营业总收入"]
    g = ground(PARA, "归母净利润")
    assert g.basis == "alias" and spans(g) == ["归属于母公司股东的净利润"]
    g = ground(PARA, "销售毛利率同比增速")  # suffix stripped
    assert g.basis == "stem" and spans(g) == ["销售毛利率"]
    assert spans(ground(PARA, "roe")) == ["ＲＯＥ"]  # full width and case: NFKC + casefold
    text = "公司产能的综合利用率回升"
    g = ground(text, "产能利用率")  # characters in order within a short window
    assert g.basis == "fuzzy" and spans(g, text) == ["产能的综合利用率"]
    assert not ground("产能扩张较快，相关设备的利用效率与产出比率均低", "产能利用率").grounded  # too spread out
    g = ground(PARA, "在建机组数量", "7台在建提供增量")
    assert g.basis == "stem" and spans(g) == ["在建机组7台"]  # the stem and the figure, touching: one span


def test_figures_of_the_reason_ground_a_name_the_paragraph_does_not_use():
    g = ground(PARA, "盈利能力", "归母净利润18.6亿元，同比增长23.4%")
    assert g.basis == "figure" and spans(g) == ["18.6", "23.4%"]
    # Not inside a longer number, not a year, not a lone digit.
    assert not ground("增长118.6亿元", "x", "18.6").grounded
    assert not ground("2025年增长3", "x", "2025年增长3").grounded
    g = ground(PARA, "毛利率", "41.2%")  # the full-width figure matches; name spans and figure spans merge
    assert spans(g) == ["毛利率", "４１.２％"]


def test_ungrounded_and_edge_inputs():
    for para, name in (("公司经营稳健。", "毛利率"), ("", "毛利率"), (None, "毛利率"), ("毛利率", ""), ("毛利率", None)):
        g = ground(para, name)
        assert g == Grounding((), False, ""), (para, name)
    assert not ground("本期净利率提升", "率").grounded  # a one-character name is no evidence
    assert ground("利率", "利率").grounded
    g = ground(PARA, "ROE（净资产收益率）")  # a bracketed part: the name outside and inside
    assert g.grounded and spans(g) == ["ＲＯＥ"]
    assert ground_metrics(PARA, [{"metric_name": "毛利率"}, {"metric_name": "不良贷款率", "reason": "1.2%"}]) == [
        ground(PARA, "毛利率"), Grounding((), False, "")]
    at = PARA.index("毛利率")
    assert ground(PARA, "毛利率").to_dict() == {"spans": [[at, at + 3]], "grounded": True, "basis": "name"}


def test_the_demo_gold_metrics_are_all_grounded(demo_jsonl: Path):
    """The demo's 21 gold metrics (seed style): every one grounded, 18 by its name as written."""
    bases = []
    for line in demo_jsonl.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for g in ground_metrics(row["input"]["paragraph"], row["output"]["metrics"]):
            assert g.grounded and g.spans
            bases.append(g.basis)
    assert len(bases) == 21 and bases.count("name") == 18
