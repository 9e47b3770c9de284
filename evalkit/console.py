"""Terminal tables (rich) for score and compare; the JSON files carry the same numbers for machines."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .score import MIXES


def make_console(stderr: bool = False) -> Console:
    """A console for tables; when output goes to a file or pipe (no width to detect) use 120 columns.
    `stderr`: tables go to stderr, because stdout carries JSON (`--json -`)."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(width=120, stderr=stderr)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _groups_table(title: str, label: str, groups: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in (label, "n", "strict", "loose", "fail", "pass", "P", "R", "F1", "type"):
        t.add_column(c, justify="left" if c == label else "right", no_wrap=True)
    for k, g in groups.items():
        t.add_row(
            k, str(g["n"]), str(g["strict"]), str(g["loose"]), str(g["fail"]), _pct(g["pass_rate"]),
            _pct(g["precision"]), _pct(g["recall"]), _pct(g["f1"]), _pct(g["type_accuracy"]),
        )
    return t


def _x(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _counts_table(title: str, label: str, groups: dict[str, dict[str, Any]]) -> Table:
    """Count bias per group: metric totals, means per case, predicted / gold, pass rate."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in (label, "n", "gold", "pred", "gold/case", "pred/case", "pred/gold", "pass"):
        t.add_column(c, justify="left" if c == label else "right", no_wrap=True)
    for k, g in groups.items():
        t.add_row(
            k, str(g["n"]), str(g["gold_total"]), str(g["pred_total"]), _x(g["mean_gold"]), _x(g["mean_pred"]),
            _x(g["pred_gold_ratio"]), _pct(g["pass_rate"]),
        )
    return t


def _matrix_table(m: dict[str, Any]) -> Table:
    t = Table(title="count matrix (cases)", title_justify="left", header_style="bold")
    t.add_column("gold \\ pred", justify="left", no_wrap=True)
    for p in m["counts"]:
        t.add_column(str(p), justify="right", no_wrap=True)
    t.add_column("cases", justify="right", no_wrap=True)
    for g, row in zip(m["counts"], m["cases"]):
        cells = [("[dim]·[/]" if v == 0 else f"[bold]{v}[/]" if g == p else str(v)) for p, v in zip(m["counts"], row)]
        t.add_row(str(g), *cells, str(sum(row)))
    cols = [sum(r[j] for r in m["cases"]) for j in range(len(m["counts"]))]
    t.add_row("[dim]cases[/]", *(f"[dim]{v}[/]" for v in cols), f"[dim]{sum(cols)}[/]")
    return t


def print_summary(s: dict[str, Any], console: Console | None = None, show_fails: list[dict[str, Any]] | None = None) -> None:
    c = console or make_console()
    cfg = s.get("matcher_config") or {"matcher": s["matcher"]}
    c.print(f"[bold]{s['run']}[/] · matcher [bold]{cfg.get('matcher')}[/]"
            + "".join(f" {k}={v}" for k, v in cfg.items() if k != "matcher"))
    t = Table(show_header=True, header_style="bold", title="verdicts", title_justify="left")
    for col in ("cases", "strict", "loose", "passed", "fail", "pass rate", "JSON valid", "missing"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_row(
        str(s["n"]), str(s["strict"]), str(s["loose"]), f"[green]{s['passed']}[/]", f"[red]{s['fail']}[/]",
        f"[bold]{_pct(s['pass_rate'])}[/]", f"{s['json_valid']} ({_pct(s['json_valid_rate'])})", str(s["missing"]),
    )
    c.print(t)
    m = Table(show_header=True, header_style="bold", title="metrics", title_justify="left")
    for col in ("gold", "pred", "pred/gold", "hits", "exact", "fuzzy", "precision", "recall/core", "F1", "type acc"):
        m.add_column(col, justify="right", no_wrap=True)
    m.add_row(
        str(s["gold_total"]), str(s["pred_total"]), f"[bold]{_x(s['pred_gold_ratio'])}[/]", str(s["hits"]), str(s["exact_hits"]), str(s["fuzzy_hits"]),
        _pct(s["precision"]), _pct(s["recall"]), f"[bold]{_pct(s['f1'])}[/]", _pct(s["type_accuracy"]),
    )
    c.print(m)
    if g := s.get("grounding"):  # evalkit score --grounding
        c.print(f"grounding: [bold]{g['pred_ungrounded']}[/] of {g['pred_metrics']} predicted metrics not found in their "
                f"paragraph ({_pct(g['pred_ungrounded_rate'])}); gold {g['gold_ungrounded']} of {g['gold_metrics']} "
                f"({_pct(g['gold_ungrounded_rate'])})")
    if s["by_scenario"]:
        c.print(_groups_table("by scenario", "scenario", s["by_scenario"]))
    mixes = {k: v for k, v in sorted(s["by_metric_type"].items(), key=lambda kv: (list(MIXES) + [kv[0]]).index(kv[0]))}
    c.print(_groups_table("by gold metric-type mix", "mix", mixes))
    if s.get("by_gold_count"):
        c.print(_counts_table("metric counts by gold count", "gold count", s["by_gold_count"]))
        c.print(_matrix_table(s["count_matrix"]))
    if s["by_scenario"]:
        c.print(_counts_table("metric counts by scenario", "scenario", s["by_scenario"]))
    if s["missing"]:
        c.print(f"[yellow]{s['missing']} gold case(s) had no prediction[/] (scored as empty, invalid): "
                + ", ".join(map(str, s["missing_ids"])) + (" …" if s["missing"] > len(s["missing_ids"]) else ""))
    if show_fails:
        f = Table(title=f"first {len(show_fails)} failing cases", title_justify="left", header_style="bold")
        for col in ("id", "gold", "predicted", "hits"):
            f.add_column(col)
        for r in show_fails:
            f.add_row(str(r["id"]), " · ".join(r["gold_names"]), " · ".join(r["pred_names"]) or "[dim](none)[/]",
                      f"{r['n_hits']}/{r['n_gold']}")
        c.print(f)


def print_compare(res: dict[str, Any], console: Console | None = None) -> None:
    c = console or make_console()
    matchers = {str(r["matcher"]) for r in res["runs"]}
    one = next(iter(matchers)) if len(matchers) == 1 else None  # one matcher: named in the title, no column
    t = Table(title=f"{res['n']} shared cases · {res['bootstrap']} bootstrap resamples · 95% intervals"
              + (f" · matcher {one}" if one else ""), title_justify="left", header_style="bold")
    t.add_column("run", overflow="fold")
    if not one:
        t.add_column("matcher", overflow="fold")
    for col in ("pass rate (95% CI)", "strict", "F1 (95% CI)", "pred/gold (95% CI)", "P", "R", "type acc", "JSON valid"):
        t.add_column(col, justify="right", no_wrap="CI" in col)
    for r in res["runs"]:
        ratio = "–" if r["pred_gold_ratio"] is None else f"{r['pred_gold_ratio']:.2f}"
        if r["pred_gold_ci"] is not None:
            ratio += f" ({r['pred_gold_ci'][0]:.2f}–{r['pred_gold_ci'][1]:.2f})"
        t.add_row(
            r["name"], *(() if one else (str(r["matcher"]),)), f"{_pct(r['pass_rate'])} ({_ci(r['pass_ci'])})",
            _pct(r["strict_rate"]), f"{_pct(r['f1'])} ({_ci(r['f1_ci'])})", ratio,
            _pct(r["precision"]), _pct(r["recall"]), _pct(r["type_accuracy"]), _pct(r["json_valid_rate"]),
        )
    c.print(t)
    if res["paired"]:
        p = Table(title=f"paired against {res['paired'][0]['baseline']} (same cases)", title_justify="left", header_style="bold")
        for col in ("run", "Δ pass", "95% CI", "flips (base only / run only)", "McNemar p", "Δ F1", "95% CI", "p"):
            p.add_column(col, justify="left" if col == "run" else "right")
        for d in res["paired"]:
            p.add_row(
                d["run"], f"{d['d_pass_rate'] * 100:+.1f}", f"{d['d_pass_ci'][0] * 100:+.1f}…{d['d_pass_ci'][1] * 100:+.1f}",
                f"{d['only_baseline_passed']} / {d['only_run_passed']}", f"{d['mcnemar_p']:.3f}",
                f"{d['d_f1'] * 100:+.1f}", f"{d['d_f1_ci'][0] * 100:+.1f}…{d['d_f1_ci'][1] * 100:+.1f}", f"{d['f1_p']:.3f}",
            )
        c.print(p)
        for d in res["paired"]:
            style = "green" if (d["pass_significant"] or d["f1_significant"]) else "yellow"
            c.print(f"[{style}]{d['verdict']}[/]")
    for w in res["warnings"]:
        c.print(f"[yellow]warning:[/] {w}")
    if "arms" in res:
        print_arms(res["arms"], c)


def print_arms(a: dict[str, Any], console: Console | None = None) -> None:
    """The arms of `evalkit compare --arm` (evalkit.arms): per arm, then each arm against the first."""
    c = console or make_console()
    c.print()
    t = Table(title=f"arms (mean over seeds) · {a['n']} shared cases · {a['bootstrap']} resamples of cases × seeds · "
              "95% intervals", title_justify="left", header_style="bold")
    for col in ("arm", "seeds", "pass rate per run", "mean pass (95% CI)", "min–max", "sd", "mean strict (95% CI)",
                "mean pred/gold (95% CI)"):
        t.add_column(col, justify="left" if col in ("arm", "pass rate per run") else "right", no_wrap="CI" in col,
                     overflow="fold")
    for e in a["per_arm"]:
        p, s, r = e["pass_rate"], e["strict_rate"], e["pred_gold_ratio"]
        ratio = "–" if r["mean"] is None else f"{r['mean']:.2f}" + ("" if r["ci"] is None else f" ({r['ci'][0]:.2f}–{r['ci'][1]:.2f})")
        t.add_row(
            e["name"], str(e["n_seeds"]), " · ".join(f"{k} {v * 100:.1f}" for k, v in p["per_run"].items()),
            f"{_pct(p['mean'])} ({_ci(p['ci'])})", f"{p['min'] * 100:.1f}–{p['max'] * 100:.1f}",
            "–" if p["sd"] is None else f"{p['sd'] * 100:.1f}", f"{_pct(s['mean'])} ({_ci(s['ci'])})", ratio,
        )
    c.print(t)
    if a["paired"]:
        p = Table(title=f"arms against {a['baseline']}: Δ of the means, 95% intervals (cases × seeds: runs resampled "
                  "within each arm too; cases only: every run once) · p/g = pred/gold", title_justify="left",
                  header_style="bold")
        for col in ("arm", "seeds", "Δ pass", "CI cases×seeds", "CI cases only", "Δ strict", "95% CI", "Δ p/g", "95% CI"):
            p.add_column(col, justify="left" if col == "arm" else "right", no_wrap=col != "arm", overflow="fold")
        for d in a["paired"]:
            p.add_row(
                d["arm"], f"{d['n_seeds']} vs {d['baseline_seeds']}", _pts(d["d_pass_rate"]), _dci(d["d_pass_rate_ci"]),
                _dci(d["d_pass_rate_ci_cases_only"]), _pts(d["d_strict_rate"]), _dci(d["d_strict_rate_ci"]),
                _pts(d["d_pred_gold_ratio"], 1, 2), _dci(d["d_pred_gold_ratio_ci"], 1, 2),
            )
        c.print(p)
        for d in a["paired"]:
            style = "green" if (d["pass_rate_significant"] or d["strict_rate_significant"]) else "yellow"
            c.print(f"[{style}]{d['verdict']}[/]")
            for w in d["caveats"]:
                c.print(f"  [yellow]caveat:[/] {w}")
    for n in a["notes"]:
        c.print(f"[dim]note: {n}[/]")


def _pts(x: float | None, scale: float = 100, digits: int = 1) -> str:
    return "–" if x is None else f"{x * scale:+.{digits}f}"


def _dci(ci: list[float] | None, scale: float = 100, digits: int = 1) -> str:
    return "–" if ci is None else f"{ci[0] * scale:+.{digits}f}…{ci[1] * scale:+.{digits}f}"


def _ci(ci: list[float]) -> str:
    return f"{ci[0] * 100:.1f}–{ci[1] * 100:.1f}"
