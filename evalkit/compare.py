"""Side-by-side runs with their noise: bootstrap intervals and paired tests.

The seed judged adapters on 20-50 cases, where one case moves the pass rate by 2-5 points; most of its
"improvements" were noise. So every rate here comes with a 95 % percentile bootstrap interval over cases,
and every run is compared with the first (the baseline) on the SAME cases, paired: the bootstrap resamples
case indices once and applies them to both runs (so case difficulty cancels), and McNemar's exact test
looks only at the cases whose pass/fail flipped. A difference is called real only when its paired
interval excludes zero; otherwise the output says "within noise".

A RUN is a saved cases file (from `evalkit score --cases`) or a predictions path scored on the fly
against `--gold`; both become a cases frame, which is all this module reads. Runs grouped into ARMS (one
recipe's trainings with different seeds, compared by their mean with a bootstrap over cases and seeds):
`evalkit.arms`, `evalkit compare --arm`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from reportminer.data.io import DataError

from .options import DEFAULT_BOOTSTRAP, PRIMARY_METRICS
from .score import summarize


@dataclass
class Run:
    name: str
    cases: pl.DataFrame


def _arrays(cases: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        "passed": (cases["verdict"] != "fail").to_numpy().astype(np.float64),
        "strict": (cases["verdict"] == "strict").to_numpy().astype(np.float64),
        "hits": cases["n_hits"].to_numpy().astype(np.float64),
        "gold": cases["n_gold"].to_numpy().astype(np.float64),
        "pred": cases["n_pred"].to_numpy().astype(np.float64),
    }


def _f1(hits: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    den = gold + pred
    return np.divide(2 * hits, den, out=np.zeros_like(hits, dtype=np.float64), where=den > 0)


def resample_counts(n: int, n_boot: int, n_runs: int, rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray]]:
    """Bootstrap resamples of n cases, in chunks: (first replicate, counts of shape (chunk, n)).

    counts[b, i] is how often case i was drawn in replicate b, so `values @ counts.T` is each replicate's resampled
    sum; the caller applies the same counts to every run (paired). Chunks bound the memory whatever the number of
    cases; `evalkit.arms` draws its case level here too.
    """
    chunk = max(1, int(4e6 // max(1, n * n_runs)))
    for s in range(0, n_boot, chunk):
        c = min(chunk, n_boot - s)
        counts = np.stack([np.bincount(row, minlength=n) for row in rng.integers(0, n, size=(c, n))]).astype(np.float64)
        yield s, counts


def _boot(arrs: list[dict[str, np.ndarray]], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap replicates per run, each (runs, n_boot): pass_rate, strict_rate, f1 and pred_gold_ratio.

    The same resampled case indices serve every run, which is what makes run differences paired. `evalkit.arms`
    takes its case level from these same replicates (`compare_arms` draws them once for both).
    """
    n = len(arrs[0]["passed"])
    rng = np.random.default_rng(seed)
    x = {k: np.stack([a[k] for a in arrs]) for k in ("passed", "strict", "hits", "gold", "pred")}
    out = {m: np.empty((len(arrs), n_boot)) for m in ("pass_rate", "strict_rate", "f1", "pred_gold_ratio")}
    for s, counts in resample_counts(n, n_boot, len(arrs), rng):
        c = counts.shape[0]
        out["pass_rate"][:, s : s + c] = x["passed"] @ counts.T / n
        out["strict_rate"][:, s : s + c] = x["strict"] @ counts.T / n
        g_sum, p_sum = x["gold"] @ counts.T, x["pred"] @ counts.T
        out["f1"][:, s : s + c] = _f1(x["hits"] @ counts.T, g_sum, p_sum)
        out["pred_gold_ratio"][:, s : s + c] = np.divide(p_sum, g_sum, out=np.full_like(p_sum, np.nan), where=g_sum > 0)
    return out


def _ci(rep: np.ndarray) -> list[float]:
    lo, hi = np.percentile(rep, [2.5, 97.5])
    return [float(lo), float(hi)]


def _ci_or_none(rep: np.ndarray) -> list[float] | None:
    """The interval over the replicates where the value exists (predicted / gold needs gold metrics)."""
    rep = rep[np.isfinite(rep)]
    return _ci(rep) if rep.size else None


def _boot_p(diff_rep: np.ndarray) -> float:
    """Two-sided bootstrap p-value for a difference of zero."""
    p = 2 * min(float(np.mean(diff_rep <= 0)), float(np.mean(diff_rep >= 0)))
    return min(1.0, p)


def mcnemar(a_pass: np.ndarray, b_pass: np.ndarray) -> tuple[int, int, float]:
    """(cases only A passed, cases only B passed, exact two-sided p-value)."""
    from scipy.stats import binomtest

    only_a = int(np.sum((a_pass > 0) & (b_pass == 0)))
    only_b = int(np.sum((a_pass == 0) & (b_pass > 0)))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def align(runs: list[Run]) -> tuple[list[Run], dict[str, int]]:
    """Restrict every run to the case ids they all have, in the first run's order."""
    if not runs:
        raise DataError("nothing to compare")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise DataError(f"run names must differ (got {names}); name them with LABEL=PATH")
    common = runs[0].cases.select("id")
    for r in runs[1:]:
        common = common.join(r.cases.select("id"), on="id", how="semi")
    if common.height == 0:
        raise DataError("the runs share no case ids; were they scored against the same gold?")
    dropped = {r.name: r.cases.height - common.height for r in runs}
    out = [Run(r.name, common.join(r.cases, on="id", how="left")) for r in runs]
    return out, dropped


def compare_runs(
    runs: list[Run], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, reps: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Per-run rates with 95 % intervals, and each run against the first, paired on shared cases.

    `reps`: `_boot`'s replicates of these runs once aligned, when the caller has drawn them already
    (`evalkit.arms.compare_arms`); otherwise drawn here from `seed`.
    """
    runs, dropped = align(runs)
    arrs = [_arrays(r.cases) for r in runs]
    if reps is None:
        reps = _boot(arrs, n_boot, seed)
    pass_rep, f1_rep, ratio_rep = reps["pass_rate"], reps["f1"], reps["pred_gold_ratio"]
    n = runs[0].cases.height
    out_runs = []
    for i, r in enumerate(runs):
        s = summarize(r.cases)
        out_runs.append(
            {
                "name": r.name,
                "matcher": s["matcher"],
                "n": n,
                "dropped": dropped[r.name],
                "pass_rate": s["pass_rate"],
                "pass_ci": _ci(pass_rep[i]),
                "strict_rate": s["strict_rate"],
                "f1": s["f1"] if s["f1"] is not None else 0.0,
                "f1_ci": _ci(f1_rep[i]),
                "gold_total": s["gold_total"],
                "pred_total": s["pred_total"],
                "pred_gold_ratio": s["pred_gold_ratio"],
                "pred_gold_ci": _ci_or_none(ratio_rep[i]),
                "precision": s["precision"],
                "recall": s["recall"],
                "type_accuracy": s["type_accuracy"],
                "json_valid_rate": s["json_valid_rate"],
                "missing": s["missing"],
            }
        )
    paired = []
    for i in range(1, len(runs)):
        a, b = out_runs[0], out_runs[i]
        d_pass = pass_rep[i] - pass_rep[0]
        d_f1 = f1_rep[i] - f1_rep[0]
        only_a, only_b, p_mc = mcnemar(arrs[0]["passed"], arrs[i]["passed"])
        d_pass_ci, d_f1_ci = _ci(d_pass), _ci(d_f1)
        pass_real = (d_pass_ci[0] > 0 or d_pass_ci[1] < 0) and p_mc < 0.05
        f1_real = d_f1_ci[0] > 0 or d_f1_ci[1] < 0
        paired.append(
            {
                "baseline": a["name"],
                "run": b["name"],
                "d_pass_rate": b["pass_rate"] - a["pass_rate"],
                "d_pass_ci": d_pass_ci,
                "only_baseline_passed": only_a,
                "only_run_passed": only_b,
                "mcnemar_p": p_mc,
                "pass_significant": bool(pass_real),
                "d_f1": b["f1"] - a["f1"],
                "d_f1_ci": d_f1_ci,
                "f1_p": _boot_p(d_f1),
                "f1_significant": bool(f1_real),
                "verdict": _say(b["name"], a["name"], b["pass_rate"] - a["pass_rate"], pass_real, b["f1"] - a["f1"], f1_real),
            }
        )
    matchers = sorted({str(r["matcher"]) for r in out_runs})
    return {
        "n": n,
        "bootstrap": n_boot,
        "seed": seed,
        "runs": out_runs,
        "paired": paired,
        "warnings": (
            [f"runs were scored with different matchers {matchers}: their numbers are not comparable"]
            if len(matchers) > 1
            else []
        )
        + [f"{k}: {v} case(s) not shared by every run were left out" for k, v in dropped.items() if v],
    }


def _say(run: str, base: str, d_pass: float, pass_real: bool, d_f1: float, f1_real: bool) -> str:
    def part(what: str, d: float, real: bool, unit: str) -> str:
        if not real:
            return f"{what} {d * 100:+.1f}{unit} is within noise"
        return f"{what} {'better' if d > 0 else 'worse'} by {abs(d) * 100:.1f}{unit} (beyond noise)"

    return f"{run} vs {base}: " + part("pass rate", d_pass, pass_real, " pts") + "; " + part("F1", d_f1, f1_real, " pts")




def worse_beyond_noise(res: dict[str, Any], primary: str = "pass_rate") -> list[str]:
    """One sentence per run that is worse than the baseline beyond noise on `primary` (empty: none is).

    "Beyond noise" is what `compare_runs` decided, nothing new: for the pass rate, the paired 95 % interval
    of the difference excludes zero and McNemar's exact p < 0.05; for F1, the paired interval excludes zero.
    `evalkit compare --fail-if-worse` exits 1 when this is not empty.
    """
    if primary not in PRIMARY_METRICS:
        raise ValueError(f"primary metric {primary!r}: choose one of {', '.join(PRIMARY_METRICS)}")
    out = []
    for p in res["paired"]:
        if primary == "pass_rate":
            d, ci, real = p["d_pass_rate"], p["d_pass_ci"], p["pass_significant"]
            extra = f", McNemar p = {p['mcnemar_p']:.3g}"
        else:
            d, ci, real = p["d_f1"], p["d_f1_ci"], p["f1_significant"]
            extra = ""
        if real and d < 0:
            label = "pass rate" if primary == "pass_rate" else "F1"
            out.append(
                f"{p['run']} is worse than {p['baseline']} beyond noise on {label}: {d * 100:+.1f} pts "
                f"(paired 95 % interval [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]{extra})"
            )
    return out
