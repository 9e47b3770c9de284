"""Perturbation check: does the predicted metric count hold when background sentences come and go?

Why: the adapters of issue 16 learned "this style of paragraph has three metrics", not the judgement of
what is core. A model that judges adds no metric for an extra sentence of industry figures and loses none
when one background sentence is taken out. So each benchmark case may carry

    "perturb": {"insert": "<a background sentence>", "insert_after": "<exact substring>", "remove": "<exact
                substring: a background sentence>" | null}

and this module

1. expands such cases into variant cases with the same gold labels (`expand_rows`): `<id>~ins` has the
   insert placed right after the first occurrence of `insert_after` (at the end of the paragraph when
   `insert_after` is absent or empty), `<id>~rem` has the first occurrence of `remove` deleted (no
   variant when `remove` is null). Variants carry `base_id` and `variant` ("ins" / "rem"); the `perturb`
   field is dropped, so the expanded file is an ordinary benchmark JSONL that `evalkit score` and the
   engine read;
2. measures count stability on a scored cases frame that holds base and variant ids (`count_stability`):
   the share of base cases whose predicted metric count differs in at least one of their variants
   (overall and per scenario), the share of variants whose count moved (per variant kind), the mean
   count change per kind, verdict changes beside it, and the list of cases that moved.

Issue 16's target is a count-change share of at most 10 % on the generalisation benchmark.

Expanding needs no polars (imported only by `count_stability`): `scripts/experiment.py serve` expands the
benchmark (evalkit.experiment.serve_input) on the GPU machine, whose image has no polars.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reportminer.data.errors import DataError

if TYPE_CHECKING:
    import polars as pl

SEP = "~"
KINDS = ("ins", "rem")


@dataclass(frozen=True)
class Perturbation:
    """A case's `perturb` field, checked against its paragraph."""

    insert: str | None
    insert_after: str | None
    remove: str | None

    @classmethod
    def of(cls, row: dict[str, Any], where: str) -> Perturbation | None:
        pt = row.get("perturb")
        if pt is None:
            return None
        if not isinstance(pt, dict):
            raise DataError(f"{where}: perturb must be an object, got {type(pt).__name__}")
        unknown = set(pt) - {"insert", "insert_after", "remove"}
        if unknown:
            raise DataError(f"{where}: perturb has unknown key(s) {sorted(unknown)} (insert, insert_after, remove)")
        vals = {k: pt.get(k) for k in ("insert", "insert_after", "remove")}
        for k, v in vals.items():
            if v is not None and not isinstance(v, str):
                raise DataError(f"{where}: perturb.{k} must be text or null, got {type(v).__name__}")
        return cls(vals["insert"] or None, vals["insert_after"] or None, vals["remove"] or None)


def _paragraph(row: dict[str, Any], where: str) -> str:
    inp = row.get("input")
    p = inp.get("paragraph") if isinstance(inp, dict) else None
    if not isinstance(p, str) or not p:
        raise DataError(f"{where}: input.paragraph missing")
    return p


def inserted(paragraph: str, insert: str, after: str | None, where: str = "case") -> str:
    """`paragraph` with `insert` right after the first `after` (at the end when `after` is None)."""
    if insert in paragraph:
        raise DataError(f"{where}: perturb.insert is already in the paragraph")
    if after is None:
        return paragraph + insert
    at = paragraph.find(after)
    if at < 0:
        raise DataError(f"{where}: perturb.insert_after is not in the paragraph: {after[:40]!r}")
    cut = at + len(after)
    return paragraph[:cut] + insert + paragraph[cut:]


def removed(paragraph: str, remove: str, where: str = "case") -> str:
    """`paragraph` without the first occurrence of `remove`."""
    at = paragraph.find(remove)
    if at < 0:
        raise DataError(f"{where}: perturb.remove is not in the paragraph: {remove[:40]!r}")
    out = paragraph[:at] + paragraph[at + len(remove):]
    if not out.strip():
        raise DataError(f"{where}: perturb.remove would leave an empty paragraph")
    return out


def variants(row: dict[str, Any], where: str = "case") -> list[dict[str, Any]]:
    """The variant cases of one benchmark row (none when it has no `perturb`)."""
    pt = Perturbation.of(row, where)
    if pt is None:
        return []
    rid = row.get("id")
    if not isinstance(rid, str) or not rid:
        raise DataError(f"{where}: a case with perturb needs an id")
    if SEP in rid:
        raise DataError(f"{where}: id {rid!r} contains {SEP!r}, which marks variant ids")
    para = _paragraph(row, where)
    out = []
    for kind, text in (("ins", inserted(para, pt.insert, pt.insert_after, where) if pt.insert else None),
                       ("rem", removed(para, pt.remove, where) if pt.remove else None)):
        if text is None:
            continue
        v = {k: copy.deepcopy(val) for k, val in row.items() if k != "perturb"}
        v["id"] = f"{rid}{SEP}{kind}"
        v["base_id"] = rid
        v["variant"] = kind
        v["input"] = {**row["input"], "paragraph": text}
        out.append(v)
    return out


@dataclass
class Expansion:
    rows: list[dict[str, Any]]
    cases: int  # base cases read
    with_perturb: int
    by_kind: dict[str, int]


def expand_rows(rows: Iterable[tuple[str, dict[str, Any]]], include_base: bool = True) -> Expansion:
    """Base cases (without `perturb`) followed by their variants, in input order; `rows` are
    (where, row) pairs so errors name file and line."""
    out: list[dict[str, Any]] = []
    n = with_pt = 0
    kinds = dict.fromkeys(KINDS, 0)
    seen: set[str] = set()
    for where, row in rows:
        n += 1
        vs = variants(row, where)
        with_pt += bool(vs) or row.get("perturb") is not None
        rid = row.get("id")
        if isinstance(rid, str):
            if rid in seen:
                raise DataError(f"{where}: duplicate id {rid!r}")
            seen.add(rid)
        if include_base:
            out.append({k: v for k, v in row.items() if k != "perturb"})
        for v in vs:
            kinds[v["variant"]] += 1
        out.extend(vs)
    return Expansion(out, n, with_pt, kinds)


def expand_file(path: str, include_base: bool = True) -> Expansion:
    from reportminer.data.io import iter_jsonl

    return expand_rows(((f"{r.file}:{r.line}", r.obj) for r in iter_jsonl(path)), include_base=include_base)


# --------------------------------------------------------------------------------------------------
# Count stability


def split_id(rid: str) -> tuple[str, str | None]:
    """`gb-1~ins` -> ("gb-1", "ins"); `gb-1` -> ("gb-1", None)."""
    base, sep, kind = rid.rpartition(SEP)
    return (base, kind) if sep and kind in KINDS else (rid, None)


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def count_stability(cases: pl.DataFrame) -> dict[str, Any]:
    """Count changes between each base case and its variants, on a cases frame (evalkit's `cases`).

    A pair counts only when both the base and the variant have a prediction (`missing` false); pairs
    with a missing side are counted in `missing_pairs`. `share_changed` is over base cases (a case moved
    if any of its variants changed count); `by_kind[k].share_changed` is over variants of kind k.
    """
    import polars as pl

    need = {"id", "n_pred", "n_gold", "verdict", "missing"}
    if not need <= set(cases.columns):
        raise DataError(f"cases frame lacks {sorted(need - set(cases.columns))}")
    scen = cases["scenario"] if "scenario" in cases.columns else pl.Series([None] * cases.height, dtype=pl.String)
    rows = cases.select("id", "n_pred", "n_gold", "verdict", "missing").with_columns(scen.alias("scenario"))
    parts = [split_id(i) for i in rows["id"].to_list()]
    rows = rows.with_columns(pl.Series("base", [p[0] for p in parts], dtype=pl.String),
                             pl.Series("kind", [p[1] for p in parts], dtype=pl.String))
    base = rows.filter(pl.col("kind").is_null()).select(
        "base", pl.col("n_pred").alias("n_pred_base"), pl.col("verdict").alias("verdict_base"),
        pl.col("missing").alias("missing_base"), "scenario", "n_gold")
    var = rows.filter(pl.col("kind").is_not_null()).select(
        "base", "kind", pl.col("n_pred").alias("n_pred_var"), pl.col("verdict").alias("verdict_var"),
        pl.col("missing").alias("missing_var"))
    orphan = var.join(base, on="base", how="anti")
    if orphan.height:
        raise DataError(f"variant case(s) without their base case: {', '.join(orphan['base'].head(5).to_list())}")
    pairs = var.join(base, on="base", how="inner")
    miss = pairs.filter(pl.col("missing_base") | pl.col("missing_var"))
    pairs = pairs.filter(~(pl.col("missing_base") | pl.col("missing_var"))).with_columns(
        (pl.col("n_pred_var") - pl.col("n_pred_base")).alias("delta"),
        (pl.col("n_pred_var") != pl.col("n_pred_base")).alias("changed"),
        (pl.col("verdict_var") != pl.col("verdict_base")).alias("verdict_changed"),
        ((pl.col("verdict_base") != "fail") & (pl.col("verdict_var") == "fail")).alias("lost_pass"),
    ).sort("base", "kind")
    per_case = pairs.group_by("base", "scenario").agg(pl.col("changed").any(), pl.col("verdict_changed").any())

    def block(p: pl.DataFrame, c: pl.DataFrame) -> dict[str, Any]:
        k = int(c["changed"].sum()) if c.height else 0
        return {
            "cases": c.height, "changed": k, "share_changed": _share(k, c.height),
            "verdict_changed": int(c["verdict_changed"].sum()) if c.height else 0,
            "variants": p.height, "variants_changed": int(p["changed"].sum()) if p.height else 0,
        }

    by_kind = {}
    for kind in KINDS:
        p = pairs.filter(pl.col("kind") == kind)
        ch = int(p["changed"].sum()) if p.height else 0
        by_kind[kind] = {
            "variants": p.height, "changed": ch, "share_changed": _share(ch, p.height),
            "up": int((p["delta"] > 0).sum()) if p.height else 0,
            "down": int((p["delta"] < 0).sum()) if p.height else 0,
            "mean_delta": float(p["delta"].mean()) if p.height else None,  # type: ignore[arg-type]
            "verdict_changed": int(p["verdict_changed"].sum()) if p.height else 0,
            "lost_pass": int(p["lost_pass"].sum()) if p.height else 0,
        }
    by_scenario = {}
    for s in sorted({x for x in per_case["scenario"].to_list() if x is not None}):
        by_scenario[s] = block(pairs.filter(pl.col("scenario") == s), per_case.filter(pl.col("scenario") == s))
    moved = pairs.filter(pl.col("changed")).select(
        pl.col("base").alias("id"), "scenario", "kind", "n_gold", "n_pred_base", "n_pred_var", "delta",
        "verdict_base", "verdict_var").to_dicts()
    return {
        **block(pairs, per_case),
        "missing_pairs": miss.height,
        "by_kind": by_kind,
        "by_scenario": by_scenario,
        "moved": moved,
    }


def stability_of_runs(runs: list[tuple[str, pl.DataFrame]]) -> list[dict[str, Any]]:
    """`count_stability` of each (name, cases) run, named."""
    return [{"run": name, **count_stability(cases)} for name, cases in runs]


def format_stability(results: list[dict[str, Any]], show_moved: int = 0) -> str:
    """Plain-text table of `stability_of_runs` (the CLI prints it; experiment reports embed it)."""
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f} %"

    lines = [f"{'run':<24}{'cases':>7}{'moved':>7}{'share':>9}{'ins moved':>12}{'ins Δ':>8}{'rem moved':>12}"
             f"{'rem Δ':>8}{'verdict Δ':>11}"]
    for r in results:
        ki, kr = r["by_kind"]["ins"], r["by_kind"]["rem"]

        def d(k: dict[str, Any]) -> str:
            return "–" if k["mean_delta"] is None else f"{k['mean_delta']:+.2f}"

        lines.append(f"{r['run'][:23]:<24}{r['cases']:>7}{r['changed']:>7}{pct(r['share_changed']):>9}"
                     f"{ki['changed']:>5}/{ki['variants']:<6}{d(ki):>8}{kr['changed']:>5}/{kr['variants']:<6}{d(kr):>8}"
                     f"{r['verdict_changed']:>11}")
        if r["missing_pairs"]:
            lines.append(f"  ({r['missing_pairs']} pair(s) left out: a side has no prediction)")
    for r in results:
        if r["by_scenario"]:
            lines.append(f"{r['run']}: by scenario: " + "; ".join(
                f"{s} {b['changed']}/{b['cases']}" for s, b in r["by_scenario"].items()))
        for m in r["moved"][:show_moved]:
            lines.append(f"  {m['id']} ~{m['kind']} ({m['scenario']}): {m['n_pred_base']} -> {m['n_pred_var']} "
                         f"(gold {m['n_gold']}; {m['verdict_base']} -> {m['verdict_var']})")
    return "\n".join(lines)
