"""Evidence grounding in scores: which gold and predicted metrics stand in their paragraph.

`data.grounding.ground` (the one rule, which the engine also applies to its output) is run on every gold
and predicted metric of a case whose gold carries the paragraph (`evalkit score --grounding`; `evalkit
report` from predictions). A predicted metric with no span is a name the paragraph does not support: a
model inventing or importing metrics shows as a high `pred_ungrounded_rate` whatever the matcher says.

It is plain Python per metric (~80 us each: ~1 s for 3,000 cases of 4 metrics), so it is asked for, not
run on every score.
"""
from __future__ import annotations

from typing import Any

import polars as pl

from reportminer.data.grounding import ground

# Columns a grounded cases frame adds to score.CASE_COLUMNS (saved in cases files, read back by report).
SPANS = pl.List(pl.List(pl.Int64))
GROUNDING_COLUMNS: dict[str, Any] = {
    "paragraph": pl.String,
    "gold_grounded": pl.List(pl.Boolean),
    "pred_grounded": pl.List(pl.Boolean),
    "gold_spans": SPANS,  # per case: [start, end) pairs of every gold metric, merged
    "pred_spans": SPANS,  # the same for the predicted metrics
}


def ground_cases(cases: pl.DataFrame) -> pl.DataFrame:
    """GROUNDING_COLUMNS for each case of `cases` (a frame from `score.build_cases` with `paragraph`,
    `gold_reasons` and `pred_reasons`), in its row order."""
    gold_ok: list[list[bool]] = []
    pred_ok: list[list[bool]] = []
    gold_spans: list[list[list[int]]] = []
    pred_spans: list[list[list[int]]] = []
    for para, gn, gr, pn, pr in cases.select("paragraph", "gold_names", "gold_reasons", "pred_names",
                                            "pred_reasons").iter_rows():
        for names, reasons, ok, spans in ((gn, gr, gold_ok, gold_spans), (pn, pr, pred_ok, pred_spans)):
            gs = [ground(para, n, r) for n, r in zip(names, reasons or [""] * len(names))]
            ok.append([g.grounded for g in gs])
            spans.append(_merged([s for g in gs for s in g.spans]))
    return pl.DataFrame(
        [cases["paragraph"], pl.Series("gold_grounded", gold_ok), pl.Series("pred_grounded", pred_ok),
         pl.Series("gold_spans", gold_spans), pl.Series("pred_spans", pred_spans)],
        schema=GROUNDING_COLUMNS,
    )


def _merged(spans: list[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def grounding_summary(cases: pl.DataFrame) -> dict[str, Any] | None:
    """Counts and shares of ungrounded gold and predicted metrics (None when the cases are not grounded;
    cases without a paragraph are left out)."""
    if "gold_grounded" not in cases.columns:
        return None
    with_text = cases.filter(pl.col("paragraph").is_not_null())
    out: dict[str, Any] = {"cases": with_text.height}
    for side in ("gold", "pred"):
        flags = with_text[f"{side}_grounded"].explode().drop_nulls()
        n, bad = flags.len(), int((~flags).sum())
        out[f"{side}_metrics"] = n
        out[f"{side}_ungrounded"] = bad
        out[f"{side}_ungrounded_rate"] = bad / n if n else None
    return out
