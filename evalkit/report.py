"""A self-contained HTML page for one scored run: summary, plots, and every case.

One file, no network: CSS inline, plots as base64 PNG (matplotlib Agg), a few lines of inline script to
filter the case table by verdict. It is meant to be attached to a pull request or mailed, so it must open
anywhere, years later.
"""
from __future__ import annotations

import base64
import html
import io
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from reportminer.data.io import atomic_path

from .fonts import font_face, matplotlib_family
from .score import MIXES, VERDICTS, readable, summarize

COLORS = {"strict": "#2e7d32", "loose": "#9ccc65", "fail": "#e53935"}
TYPES = ("financial", "business")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    # Scenario names may be Chinese: DejaVu for Latin text, the bundled CJK font for the rest (fonts.py), a
    # system CJK font only when the bundled one is missing.
    cjk = [f for f in [matplotlib_family()] if f] or [
        f.name for f in font_manager.fontManager.ttflist if any(k in f.name for k in ("CJK", "Hei", "WenQuanYi", "Noto Sans SC"))][:1]
    # A list of families (not the generic sans-serif) so that matplotlib falls back glyph by glyph.
    plt.rcParams["font.family"] = ["DejaVu Sans", *cjk]
    plt.rcParams["axes.unicode_minus"] = False
    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _verdict_bars(ax, groups: dict[str, dict[str, Any]], title: str) -> None:
    names = list(groups)
    left = [0.0] * len(names)
    for v in VERDICTS:
        vals = [groups[g][v] / groups[g]["n"] if groups[g]["n"] else 0 for g in names]
        ax.barh(names, vals, left=left, color=COLORS[v], label=v, edgecolor="white")
        for i, (x, w) in enumerate(zip(left, vals)):
            if w >= 0.07:
                ax.text(x + w / 2, i, f"{w * 100:.0f}%", ha="center", va="center", fontsize=8, color="white" if v != "loose" else "black")
        left = [a + b for a, b in zip(left, vals)]
    for i, g in enumerate(names):
        ax.text(1.01, i, f"n={groups[g]['n']}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("share of cases")


def plot_verdicts(summary: dict[str, Any]) -> str:
    plt = _plt()
    panels = [("by scenario", summary["by_scenario"])] if summary["by_scenario"] else []
    panels.append(("by gold metric-type mix", summary["by_metric_type"]))
    panels.append(("all cases", {"all": summary}))
    heights = [max(1.0, 0.45 * len(g) + 0.6) for _, g in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, sum(heights) + 0.6), gridspec_kw={"height_ratios": heights})
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (title, groups) in zip(axes, panels):
        _verdict_bars(ax, groups, title)
    axes[0].legend(ncol=3, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.12), frameon=False)
    fig.tight_layout()
    return _png(fig)


def plot_counts(summary: dict[str, Any]) -> str:
    """Count histogram and gold x predicted count map, both drawn from the summary's `count_matrix`."""
    import numpy as np

    plt = _plt()
    joint = np.array(summary["count_matrix"]["cases"], dtype=int)
    top = joint.shape[0] - 1
    bins = np.arange(top + 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.3, 1]})
    w = 0.4
    gc = joint.sum(axis=1)  # cases per gold count
    pc = joint.sum(axis=0)  # cases per predicted count
    ratio = summary["pred_gold_ratio"]
    a1.bar(bins - w / 2, gc, w, label=f"gold (total {summary['gold_total']})", color="#546e7a")
    a1.bar(bins + w / 2, pc, w, label=f"predicted (total {summary['pred_total']}"
           + ("" if ratio is None else f", {ratio:.2f}× gold") + ")", color="#fb8c00")
    a1.set_xticks(bins)
    a1.set_xlabel("metrics per case")
    a1.set_ylabel("cases")
    a1.set_title("metric count per case", fontsize=10)
    a1.legend(fontsize=8, frameon=False)
    a2.imshow(joint, cmap="Blues", origin="lower")
    for (i, j), v in np.ndenumerate(joint):
        if v:
            a2.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > joint.max() / 2 else "black")
    a2.plot([-0.5, top + 0.5], [-0.5, top + 0.5], color="#999", lw=0.8, ls="--")
    a2.set_xticks(bins)
    a2.set_yticks(bins)
    a2.set_xlabel("predicted count")
    a2.set_ylabel("gold count")
    a2.set_title("gold vs predicted count (cases)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def type_confusion(cases: pl.DataFrame) -> tuple[list[str], list[str], list[list[int]]]:
    """Gold type x predicted type over hit pairs (anything not financial/business is 'other')."""
    hits = cases.select(pl.col("hits").explode()).drop_nulls().unnest("hits")
    cols = list(TYPES) + ["other"]
    norm = lambda c: pl.when(pl.col(c).is_in(list(TYPES))).then(pl.col(c)).otherwise(pl.lit("other"))  # noqa: E731
    counts = {(a, b): 0 for a in cols for b in cols}
    if hits.height:
        for a, b, n in hits.select(norm("gold_type").alias("a"), norm("pred_type").alias("b")).group_by("a", "b").len().iter_rows():
            counts[(a, b)] = n
    rows = [r for r in cols if any(counts[(r, c)] for c in cols) or r in TYPES]
    cols_used = [c for c in cols if any(counts[(r, c)] for r in cols) or c in TYPES]
    return rows, cols_used, [[counts[(r, c)] for c in cols_used] for r in rows]


def plot_types(cases: pl.DataFrame) -> str:
    import numpy as np

    plt = _plt()
    rows, cols, m = type_confusion(cases)
    arr = np.array(m)
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.imshow(arr, cmap="Greens")
    for (i, j), v in np.ndenumerate(arr):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=10, color="white" if v > arr.max() / 2 else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted metric_type")
    ax.set_ylabel("gold metric_type")
    total = int(arr.sum())
    acc = np.trace(arr[: min(arr.shape), : min(arr.shape)]) / total if total else 0
    ax.set_title(f"type confusion over {total} hit pairs (accuracy {acc * 100:.1f}%)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


CSS = """
body{font-family:"reportminer CJK",system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;
margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:12px}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:8px 14px;min-width:110px}
.card .v{font-size:22px;font-weight:600}.card .k{font-size:11px;color:#666;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #e0e0e0;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f5f5f5;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:4px;padding:1px 7px;color:#fff;font-size:12px}
.strict{background:#2e7d32}.loose{background:#9ccc65;color:#222}.fail{background:#e53935}
.hit{color:#1b5e20}.miss{color:#c62828;font-weight:600}.extra{color:#e65100;font-style:italic}
.name{display:inline-block;margin:0 6px 2px 0}.err{color:#c62828;font-size:12px}
.plots{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}.plots img{max-width:100%;border:1px solid #eee}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}table.g{font-size:12px}table.g th{white-space:nowrap}td.id{white-space:nowrap}
.filters button{margin-right:6px;padding:3px 10px;border:1px solid #bbb;border-radius:4px;background:#fff;cursor:pointer}
.filters button.on{background:#333;color:#fff}
.legend{font-size:12px;color:#555;margin:6px 0}
td.para{min-width:320px;max-width:560px;font-size:12px;line-height:1.6}
mark{padding:0 1px;border-radius:2px}mark.g{background:#fff3a0}mark.p{background:#bde0fe}mark.gp{background:#c8f0c0}
.ungrounded{text-decoration:underline dotted #c62828}
"""

SCRIPT = """
function show(v){document.querySelectorAll('#cases tbody tr').forEach(function(r){
r.style.display=(v==='all'||r.dataset.v===v)?'':'none';});
document.querySelectorAll('.filters button').forEach(function(b){b.classList.toggle('on',b.dataset.f===v);});}
"""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _group_table(groups: dict[str, dict[str, Any]], label: str) -> str:
    head = f"<tr><th>{label}</th><th>n</th><th>strict</th><th>loose</th><th>fail</th><th>pass</th><th>P</th><th>R</th><th>F1</th><th>type</th><th>JSON ok</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td class=num>{g['n']}</td><td class=num>{g['strict']}</td>"
        f"<td class=num>{g['loose']}</td><td class=num>{g['fail']}</td><td class=num>{_pct(g['pass_rate'])}</td>"
        f"<td class=num>{_pct(g['precision'])}</td><td class=num>{_pct(g['recall'])}</td><td class=num>{_pct(g['f1'])}</td>"
        f"<td class=num>{_pct(g['type_accuracy'])}</td><td class=num>{_pct(g['json_valid_rate'])}</td></tr>"
        for k, g in groups.items()
    )
    return f"<table class=g>{head}{body}</table>"


def _x(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _count_table(groups: dict[str, dict[str, Any]], label: str) -> str:
    """Count bias per group (the numbers `evalkit score` prints): totals, means per case, predicted / gold."""
    head = (f"<tr><th>{label}</th><th>n</th><th>gold</th><th>pred</th><th>gold/case</th><th>pred/case</th>"
            "<th>pred/gold</th><th>pass</th></tr>")
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td class=num>{g['n']}</td><td class=num>{g['gold_total']}</td>"
        f"<td class=num>{g['pred_total']}</td><td class=num>{_x(g['mean_gold'])}</td><td class=num>{_x(g['mean_pred'])}</td>"
        f"<td class=num>{_x(g['pred_gold_ratio'])}</td><td class=num>{_pct(g['pass_rate'])}</td></tr>"
        for k, g in groups.items()
    )
    return f"<table class=g>{head}{body}</table>"


def _case_rows(cases: pl.DataFrame) -> str:
    with_text = "paragraph" in cases.columns
    out = []
    for r in cases.iter_rows(named=True):
        hit_g = {h["gold"] for h in r["hits"]}
        hit_p = {h["pred"] for h in r["hits"]}
        gold = "".join(
            f'<span class="name {"hit" if n in hit_g else "miss"}">{html.escape(n)}<small> {html.escape(t[:1])}</small></span>'
            for n, t in zip(r["gold_names"], r["gold_types"])
        )
        grounded = r.get("pred_grounded") or [True] * len(r["pred_names"])
        ungrounded = ' ungrounded" title="not found in the paragraph'
        pred = "".join(
            f'<span class="name {"hit" if n in hit_p else "extra"}{"" if g else ungrounded}">{html.escape(n)}'
            f'<small> {html.escape(t[:1])}</small></span>'
            for n, t, g in zip(r["pred_names"], r["pred_types"], grounded)
        )
        hits = "<br>".join(
            html.escape(f"{h['gold']} ← {h['pred']}" + ("" if h["gold"] == h["pred"] else f" ({h['score']:.2f})"))
            + ("" if h["gold_type"] == h["pred_type"]
               else f' <span class="extra">type {html.escape(h["gold_type"][:1])}→{html.escape(h["pred_type"][:1] or "?")}</span>')
            for h in r["hits"]
        )
        if r["missing"]:
            note = "missing prediction"
        elif not r["json_valid"]:
            e = str(r["error"] or "")
            note = e if e.startswith("invalid JSON") else f"invalid JSON: {e}" if e else "invalid JSON"
        else:
            note = ""
        err = f'<div class="err">{html.escape(note[:200])}</div>' if note else ""
        para = f'<td class=para>{highlight(r["paragraph"], r["gold_spans"], r["pred_spans"])}</td>' if with_text else ""
        out.append(
            f'<tr data-v="{r["verdict"]}"><td class=id>{html.escape(str(r["id"]))}</td><td>{html.escape(str(r["scenario"] or ""))}</td>'
            f'<td>{html.escape(r["mix"])}</td><td><span class="badge {r["verdict"]}">{r["verdict"]}</span></td>'
            f'<td class=num>{r["n_gold"]}/{r["n_pred"]}/{r["n_hits"]}</td>{para}<td>{gold}</td><td>{pred}{err}</td><td>{hits}</td></tr>'
        )
    return "".join(out)


def highlight(text: str | None, gold: list[list[int]] | None, pred: list[list[int]] | None) -> str:
    """The paragraph as HTML, the gold metrics' evidence spans marked `g`, the predicted ones' `p`, both
    `gp` (spans: evalkit.grounding's merged [start, end) pairs)."""
    if not text:
        return ""
    marks = [0] * (len(text) + 1)  # bit 1 gold, bit 2 predicted, per character
    for bit, spans in ((1, gold or []), (2, pred or [])):
        for a, b in spans:
            for i in range(max(a, 0), min(b, len(text))):
                marks[i] |= bit
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and marks[j] == marks[i]:
            j += 1
        piece = html.escape(text[i:j])
        out.append(piece if not marks[i] else f'<mark class={("", "g", "p", "gp")[marks[i]]}>{piece}</mark>')
        i = j
    return "".join(out)


def render_report(cases: pl.DataFrame, title: str | None = None, max_rows: int = 5000, source: str | None = None) -> str:
    """The HTML page for a cases frame (one run)."""
    s = summarize(cases)
    name = s["run"] if isinstance(s["run"], str) else ", ".join(s["run"])
    title = title or f"evalkit report: {name}"
    cards = [
        ("cases", f"{s['n']}"),
        ("passed", f"{_pct(s['pass_rate'])}"),
        ("strict / loose / fail", f"{s['strict']} / {s['loose']} / {s['fail']}"),
        ("F1", _pct(s["f1"])),
        ("precision", _pct(s["precision"])),
        ("recall (core hit)", _pct(s["recall"])),
        ("type accuracy", _pct(s["type_accuracy"])),
        ("exact / fuzzy hits", f"{s['exact_hits']} / {s['fuzzy_hits']}"),
        ("gold / predicted", f"{s['gold_total']} / {s['pred_total']}"),
        ("predicted / gold", _x(s["pred_gold_ratio"])),
        ("JSON valid", _pct(s["json_valid_rate"])),
        ("missing", f"{s['missing']}"),
    ]
    if g := s.get("grounding"):
        cards.append(("predicted not in paragraph", f"{g['pred_ungrounded']} ({_pct(g['pred_ungrounded_rate'])})"))
        cards.append(("gold not in paragraph", f"{g['gold_ungrounded']} ({_pct(g['gold_ungrounded_rate'])})"))
    with_text = "paragraph" in cases.columns
    cards_html = "".join(f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{html.escape(v)}</div></div>' for k, v in cards)
    shown = cases.head(max_rows)
    capped = (
        f"<p class=meta>Showing the first {max_rows} of {cases.height} cases (raise --max-rows to see all).</p>"
        if cases.height > max_rows
        else ""
    )
    counts = {v: int((cases["verdict"] == v).sum()) for v in VERDICTS}
    filters = '<div class="filters">' + "".join(
        f'<button data-f="{v}" onclick="show(\'{v}\')" class="{"on" if v == "all" else ""}">{v} ({counts.get(v, cases.height)})</button>'
        for v in ("all",) + VERDICTS
    ) + "</div>"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    src = f" · source {html.escape(source)}" if source else ""
    by_scen = f"<h3 style='margin-top:0'>By scenario</h3>{_group_table(s['by_scenario'], 'scenario')}" if s["by_scenario"] else ""
    by_scen_counts = (
        f"<div><h3>By scenario</h3>{_count_table(s['by_scenario'], 'scenario')}</div>" if s["by_scenario"] else ""
    )
    para_head = "<th>paragraph</th>" if with_text else ""
    para_legend = ("<br>Paragraph: evidence of <mark class=g>gold</mark>, <mark class=p>predicted</mark> and "
                   "<mark class=gp>both</mark> metrics (data.grounding); a predicted name "
                   "<span class=ungrounded>underlined</span> was not found in it.") if with_text else ""
    mixes = {k: s["by_metric_type"][k] for k in list(MIXES) + [k for k in s["by_metric_type"] if k not in MIXES] if k in s["by_metric_type"]}
    page = f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}/*FONT*/</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="meta">matcher <b>{html.escape(str(s['matcher']))}</b> · {s['n']} cases · generated {stamp}{src}</div>
<div class="cards">{cards_html}</div>
<h2>Verdicts</h2>
<div class="legend">P / R / F1: precision, recall (core hit rate) and F1 over metrics; type: type accuracy over hit pairs.<br>strict: as many predictions as gold and every gold hit · loose: every gold hit, counts differ by one ·
fail: a gold metric missed or counts differ by two or more. passed = strict + loose.</div>
<div class="row"><div><img alt="verdicts by group" style="width:480px;border:1px solid #eee" src="data:image/png;base64,{plot_verdicts(s)}"></div>
<div>{by_scen}
<h3>By gold metric-type mix</h3>{_group_table(mixes, 'mix')}</div></div>
<h2>Metric counts and types</h2>
<div class="plots"><img alt="count histogram" style="width:760px" src="data:image/png;base64,{plot_counts(s)}">
<img alt="type confusion" style="width:360px" src="data:image/png;base64,{plot_types(cases)}"></div>
<div class="row"><div><h3>By gold metric count</h3>{_count_table(s['by_gold_count'], 'gold count')}</div>
{by_scen_counts}</div>
<h2>Cases</h2>
<div class="legend">Gold names: <span class="hit">hit</span>, <span class="miss">missed</span>; predicted names:
<span class="hit">matched</span>, <span class="extra">extra</span>; the letter after a name is its type (f/b).
Counts column: gold / predicted / hits.{para_legend}</div>
{filters}{capped}
<table id="cases"><thead><tr><th>id</th><th>scen.</th><th>mix</th><th>verdict</th><th>g/p/h</th>{para_head}<th>gold</th><th>predicted</th><th>hits (gold ← predicted)</th></tr></thead>
<tbody>{_case_rows(shown)}</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""
    # The CJK glyphs this page uses, embedded (fonts.py): no empty boxes where no CJK font is installed.
    return page.replace("/*FONT*/", font_face(page), 1)


def write_report(cases: pl.DataFrame, out: str | os.PathLike, title: str | None = None, max_rows: int = 5000, source: str | None = None) -> Path:
    page = render_report(cases, title=title, max_rows=max_rows, source=source)
    p = Path(out)
    with atomic_path(p) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return readable(p)
