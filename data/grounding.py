"""Evidence grounding: the characters of a paragraph that a metric rests on (issue 19 item 4).

A metric the model names should be visible in the paragraph it was read from: its name as written, a
near form of it, or the figures its reason cites. `ground(paragraph, name, reason)` finds those
character spans deterministically, after decoding, with no model: the engine attaches them to every
output metric, evalkit reports the share of metrics with none (`grounded` false) and the HTML report
highlights them.

How a name is looked for, strongest first (the first form found gives `basis`):

1. `name`: the name itself;
2. `alias`: a known other form of a part of it (营收 / 营业收入, 归母净利润 / 归属于母公司股东的净利润,
   ROE / 净资产收益率, ...: `ALIASES`);
3. `stem`: the name without a qualifier the paragraph says differently (`SUFFIXES`: 增速, 占比, 同比增长,
   ...; `PREFIXES`: 公司, 单季度, 销售, ...), at least two characters left, and its aliases;
4. `fuzzy`: the characters of the name (or its stem) in order within a short window, first and last
   included (营业收入 in 营业总收入, 归母净利润 in 归属于母公司股东的净利润): at most `FUZZY_SPREAD` times
   the name's length plus 2 characters, names of 3 characters or more;
5. `figure`: no name form found, but a figure the reason cites (`23.4%`, `18.6`, `3,260`, `7台`; not a
   bare one-digit number or a year) stands in the paragraph as a number of its own.

A name with a bracketed part (`ROE（净资产收益率）`) is also looked for without it and as the part.

Text is compared after NFKC (full-width digits, letters and `％` become ASCII) and case-folding, without
whitespace; spans are in the paragraph's own characters (`paragraph[start:end]`), sorted and merged.
A name's spans are every place its form occurs; figure spans are added to them whatever the basis.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Groups of forms that name the same thing in research notes; a name holding one form is also looked for
# with each other form in its place. Written from the seed's labels and the demo rows, not exhaustive.
ALIASES: tuple[tuple[str, ...], ...] = (
    ("营业收入", "营收", "营业总收入"),
    ("归母净利润", "归属于母公司股东的净利润", "归属于母公司所有者的净利润", "归属于上市公司股东的净利润", "归母净利"),
    ("扣非净利润", "扣非归母净利润", "扣除非经常性损益后的净利润", "扣非后归母净利润", "扣非净利"),
    ("净利润", "净利"),
    ("毛利率", "毛利润率"),
    ("毛利", "毛利润"),
    ("净资产收益率", "roe"),
    ("总资产收益率", "roa"),
    ("每股收益", "eps"),
    ("经营活动现金流", "经营活动产生的现金流量净额", "经营性现金流", "经营现金流", "经营活动现金流量净额"),
    ("现金流", "现金流量"),
    ("资本开支", "资本性支出", "capex"),
    ("市占率", "市场占有率", "市场份额"),
    ("研发费用", "研发投入", "研发支出"),
    ("费用率", "费用占比"),
    ("出货量", "出货"),
    ("销量", "销售量"),
    ("产能利用率", "产能利用"),
    ("不良贷款率", "不良率"),
    ("资产负债率", "负债率"),
)

# Qualifiers a label adds that the paragraph often puts elsewhere ("营收同比增速" for "营收...同比增长"):
# stripped from the end / the start of a name, longest first, repeatedly.
SUFFIXES: tuple[str, ...] = tuple(sorted((
    "同比增速", "同比增长率", "同比增长", "同比增幅", "同比变化", "同比下降", "同比", "环比增速", "环比增长", "环比",
    "增长率", "增速", "增幅", "增长", "增量", "下降", "降幅", "占比", "比重", "比例", "金额", "总额", "总量", "规模",
    "水平", "情况", "变动", "变化", "提升", "改善", "幅度", "涨幅", "数量", "个数", "数", "值", "yoy", "qoq",
), key=len, reverse=True))
PREFIXES: tuple[str, ...] = tuple(sorted((
    "公司", "集团", "单季度", "单季", "全年", "上半年", "下半年", "前三季度", "报告期", "整体", "综合", "销售", "主营",
    "合计", "累计", "海外", "国内", "核心", "主要",
), key=len, reverse=True))
FUZZY_SPREAD = 2
MIN_FORM = 2  # a name, stem or alias form shorter than this is not looked for (a bare 率 is everywhere)

_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?%?")
_PAREN = re.compile(r"[(（]([^()（）]*)[)）]")


@dataclass(frozen=True)
class Grounding:
    """Where a metric rests in its paragraph: `spans` are (start, end) character offsets into the
    paragraph (`paragraph[start:end]`), sorted, not overlapping; `grounded` is whether any was found;
    `basis` says how (`name`, `alias`, `stem`, `fuzzy`, `figure`; "" when not grounded)."""

    spans: tuple[tuple[int, int], ...]
    grounded: bool
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return {"spans": [list(s) for s in self.spans], "grounded": self.grounded, "basis": self.basis}


def ground(paragraph: str | None, name: str | None, reason: str | None = None) -> Grounding:
    """The spans of `paragraph` that the metric `name` (with its `reason`, for figures) rests on."""
    text, where = _normalised(paragraph or "")
    key = _normalised(name or "")[0]
    basis, found = _name_spans(text, key)
    if not found and _PAREN.search(key):  # "roe(净资产收益率)": the name outside and inside the brackets
        for part in (_PAREN.sub("", key), *_PAREN.findall(key)):
            basis, found = _name_spans(text, part)
            if found:
                break
    spans = list(found)
    if reason:
        figures = _figure_spans(text, _normalised(reason)[0])
        if figures and not basis:
            basis = "figure"
        spans += figures
    out = _merge([(where[a], where[b - 1] + 1) for a, b in spans])
    return Grounding(tuple(out), bool(out), basis)


def ground_metrics(paragraph: str | None, metrics: Iterable[Mapping[str, Any]]) -> list[Grounding]:
    """`ground` for each metric dict (`metric_name`, optional `reason`) of one paragraph, in order."""
    return [ground(paragraph, m.get("metric_name"), m.get("reason")) for m in metrics]


# --------------------------------------------------------------------------------------------- inner


def _normalised(s: str) -> tuple[str, list[int]]:
    """NFKC, case-folded, whitespace removed; and for each character of the result, its index in `s`."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(s):
        for c in unicodedata.normalize("NFKC", ch).casefold():
            if not c.isspace():
                out.append(c)
                where.append(i)
    return "".join(out), where


def _occurrences(text: str, form: str) -> list[tuple[int, int]]:
    out = []
    i = text.find(form)
    while i >= 0:
        out.append((i, i + len(form)))
        i = text.find(form, i + len(form))
    return out


def _alias_forms(name: str) -> list[str]:
    """`name` with each known form of its parts put in the place of another: longest parts first, longest
    results first (营业总收入 before 收入)."""
    forms: list[str] = []
    for group in ALIASES:
        for part in sorted(group, key=len, reverse=True):
            if part in name:
                forms += [name.replace(part, other, 1) for other in group if other != part]
                break
    return sorted((f for f in dict.fromkeys(forms) if len(f) >= MIN_FORM and f != name), key=len, reverse=True)


def _stems(name: str) -> list[str]:
    """`name` without its qualifiers, one stripped at a time (each stage kept), at least MIN_FORM long."""
    out: list[str] = []
    cur = name
    changed = True
    while changed:
        changed = False
        for s in SUFFIXES:
            if cur.endswith(s) and len(cur) - len(s) >= MIN_FORM:
                cur = cur[: -len(s)]
                out.append(cur)
                changed = True
                break
        for p in PREFIXES:
            if cur.startswith(p) and len(cur) - len(p) >= MIN_FORM:
                cur = cur[len(p) :]
                out.append(cur)
                changed = True
                break
    return out


def _fuzzy(text: str, form: str) -> list[tuple[int, int]]:
    """Places where the characters of `form` stand in order, the first and the last included, within
    FUZZY_SPREAD * len + 2 characters (the shortest such window from each start)."""
    if len(form) < 3:
        return []
    limit = FUZZY_SPREAD * len(form) + 2
    out = []
    i = text.find(form[0])
    while i >= 0:
        j, ok = i, True
        for ch in form[1:]:
            j = text.find(ch, j + 1, i + limit)
            if j < 0:
                ok = False
                break
        if ok:
            out.append((i, j + 1))
            i = text.find(form[0], j + 1)
        else:
            i = text.find(form[0], i + 1)
    return out


def _name_spans(text: str, name: str) -> tuple[str, list[tuple[int, int]]]:
    if len(name) < MIN_FORM or not text:  # a one-character name (率) stands in every paragraph: no evidence
        return "", []
    found = _occurrences(text, name)
    if found:
        return "name", found
    for basis, forms in (("alias", _alias_forms(name)), ("stem", _stems(name))):
        for form in forms:
            found = _occurrences(text, form)
            if found:
                return basis, found
    stems = _stems(name)
    for form in stems:
        for alias in _alias_forms(form):
            found = _occurrences(text, alias)
            if found:
                return "stem", found
    for form in (name, *stems):
        found = _fuzzy(text, form)
        if found:
            return "fuzzy", found
    return "", []


def _is_figure(tok: str) -> bool:
    """A number worth citing: not a lone digit, not a year (1900-2099 without a decimal or %)."""
    if tok.endswith("%") or "." in tok:
        return True
    digits = tok.replace(",", "")
    if len(digits) <= 1:
        return False
    return not (len(digits) == 4 and 1900 <= int(digits) <= 2099)


def _figure_spans(text: str, reason: str) -> list[tuple[int, int]]:
    """Where the figures of `reason` stand in `text` as whole numbers (not inside a longer one)."""
    out: list[tuple[int, int]] = []
    for m in _NUMBER.finditer(reason):
        tok = m.group()
        if not _is_figure(tok):
            unit = reason[m.end() : m.end() + 1]
            if not (tok.isdigit() and len(tok) == 1 and "\u4e00" <= unit <= "\u9fff"):
                continue
            tok += unit  # a one-digit count with its unit: 7台, 9项
        for a, b in _occurrences(text, tok):
            before = text[a - 1] if a else ""
            after = text[b] if b < len(text) else ""
            if not (before.isdigit() or before in ".," or after.isdigit() or (after == "." and b + 1 < len(text) and text[b + 1].isdigit())):
                out.append((a, b))
    return out


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
