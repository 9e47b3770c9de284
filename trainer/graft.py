"""Augmentation by grafting background sentences: more numbers, the same core metrics.

Why (issue 16): on paragraphs unlike the training rows the adapters answer three metrics where one is
labelled. They learned "a paragraph this dense has three metrics" from type A rows (169 characters, 14.9
numbers, 215 of 270 with three metrics), not the judgement of what is core. Grafting a sentence of
background figures into a labelled row, labels unchanged, shows the model more numbers with the same
answer, and the one clause appended to the analysis names the grafted figures as background, which is
what the labels of boundary rows do for their excluded numbers.

The pool is the sentences of the training split's 0-metric rows (background paragraphs: industry,
macro, history) that hold at least one figure other than a date; never a dev row's, so dev loss stays an honest measure.
For `share` of the rows (each row drawn independently, by a generator seeded with the run's seed), one
pool sentence not already in the paragraph is inserted at a sentence boundary after the first sentence,
and `note` (with `{figures}` filled with up to three figures of the sentence) is appended to the
analysis. A row whose analysis would pass the schema's 640 characters with even one figure named is left
as it is (counted). Applied after the training mix, so copies of one row get different grafts.
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from reportminer.data.schema import MAX_ANALYSIS_CHARS

from .config import DEFAULT_GRAFT_NOTE as DEFAULT_NOTE
from .rows import LabelledRow

SENTENCE = re.compile(r"[^。！？!?]+[。！？!?]+|[^。！？!?]+$")
# A figure with its unit, as an analysis would quote it: 3.2万亿元, 12%, 0.4个百分点, 2019年.
FIGURE = re.compile(r"\d+(?:[.,]\d+)*(?:\s*(?:%|‰|个百分点|pct|bp|[万亿千百]*(?:美元|港元|元|吨|台|辆|部|家|户|人|个|件|片|"
                    r"倍|年|月|季度|次|GWh|GW|MWh|MW|TWh|平方米|平米|头|只|张|套|间|所|座|列|架|艘|款|项|条|亿|万)))?")
MIN_CHARS, MAX_CHARS = 8, 160


def sentences(paragraph: str) -> list[str]:
    """The paragraph cut after 。！？ (the cut marks stay with their sentence); nothing is lost."""
    return [s for s in SENTENCE.findall(paragraph) if s]


# Dates are not the figures an analysis sets aside ("2025年", "3月", "三季度" are when, not how much).
DATE = re.compile(r"^(?:(?:19|20)\d{2}年?|\d{1,4}(?:年|月|季度))$")


def figures(sentence: str) -> list[str]:
    """Figures of a sentence with their units, in order, without repeats, dates or parts of names."""
    seen: list[str] = []
    for m in FIGURE.finditer(sentence):
        f = m.group(0).strip()
        before = sentence[m.start() - 1] if m.start() else ""
        after = sentence[m.end()] if m.end() < len(sentence) else ""
        if (before.isascii() and before.isalpha()) or (after.isascii() and after.isalpha()):
            continue  # part of a name: CR4, 2025Q2, H1, 5G
        if f not in seen and not DATE.match(f):
            seen.append(f)
    return seen


def background_pool(rows: Sequence[LabelledRow]) -> list[str]:
    """Sentences with figures from the 0-metric rows, in row order, without repeats."""
    pool: list[str] = []
    seen: set[str] = set()
    for r in rows:
        if (r.output or {}).get("metrics"):
            continue
        for s in sentences(r.paragraph):
            s = s.strip()
            if MIN_CHARS <= len(s) <= MAX_CHARS and s[-1] in "。！？!?" and figures(s) and s not in seen:
                seen.add(s)
                pool.append(s)
    return pool


def note_for(sentence: str, template: str = DEFAULT_NOTE, max_figures: int = 3) -> list[str]:
    """The analysis clauses naming the sentence's figures, longest first (3 figures, then 2, then 1)."""
    fs = figures(sentence)[:max_figures]
    return [template.format(figures="、".join(fs[:k])) for k in range(len(fs), 0, -1)]


def graft_row(row: LabelledRow, sentence: str, rng: random.Random, template: str = DEFAULT_NOTE) -> LabelledRow | None:
    """`row` with `sentence` inserted at a sentence boundary after its first sentence and the note appended
    to its analysis; None when the analysis would pass the schema's limit."""
    analysis = str((row.output or {}).get("analysis") or "")
    note = next((n for n in note_for(sentence, template) if len(analysis) + len(n) <= MAX_ANALYSIS_CHARS), None)
    if note is None:
        return None
    parts = sentences(row.paragraph)
    at = rng.randint(1, max(1, len(parts)))  # after sentence 1 .. after the last one
    paragraph = "".join(parts[:at]) + sentence + "".join(parts[at:])
    output: dict[str, Any] = {**row.output, "analysis": analysis + note}
    return replace(row, source=f"{row.source}+graft", paragraph=paragraph, output=output)


@dataclass
class GraftStats:
    share: float
    pool: int  # background sentences available
    grafted: int
    too_long: int  # picked, but the analysis had no room for the note
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"share": self.share, "pool_sentences": self.pool, "grafted_rows": self.grafted,
                "left_too_long": self.too_long, "rows": self.rows}


def graft_rows(rows: Sequence[LabelledRow], pool: Sequence[str], share: float, seed: int,
               template: str = DEFAULT_NOTE) -> tuple[list[LabelledRow], GraftStats]:
    """Rows with `share` of them grafted (order kept), reproducibly for a seed; labels never change."""
    if not 0 <= share <= 1:
        raise ValueError(f"graft share must be in [0, 1], got {share}")
    out = list(rows)
    stats = GraftStats(share=share, pool=len(pool), grafted=0, too_long=0, rows=len(out))
    if share == 0 or not pool:
        return out, stats
    rng = random.Random(f"graft-{seed}")
    for i, r in enumerate(out):
        if rng.random() >= share:
            continue
        candidates = [s for s in pool if s not in r.paragraph]
        if not candidates:
            continue
        g = graft_row(r, rng.choice(candidates), rng, template)
        if g is None:
            stats.too_long += 1
            continue
        out[i] = g
        stats.grafted += 1
    return out, stats
