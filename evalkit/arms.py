"""Arms: the runs of one recipe trained with several seeds, compared as one, with a two-level bootstrap.

Why: `evalkit compare`'s intervals are over cases only, and each run is one draw of a training. Round 7
(docs/RESULTS.md) trained the same recipe twice, differing only in the training seed: -9.8 pts [-16.0, -4.1] of
pass rate on the same 194 cases, as much as any lever the project has pulled. A claim "recipe X beats recipe Y"
from one run each compares two draws. An ARM groups the runs of one recipe (one per seed); arms are compared by
the mean over their runs, with an interval that resamples both levels.

The two-level bootstrap, per replicate:
  1. resample the n cases with replacement, the same case indices for every run (paired, as `compare_runs` does,
     so case difficulty cancels);
  2. within each arm independently, resample its k runs with replacement (k draws of k);
  3. each arm's value is the mean over its resampled runs of their rate on the resampled cases.
The difference of an arm from the first (the baseline arm) is taken replicate by replicate; its 95 % percentile
interval is reported beside the case-only interval (step 2 left out: every run of the arm once), so the share
of the seed level is visible. A difference is "beyond noise" when its two-level interval excludes zero; there is
no McNemar test at this level (its pairs are single runs). Rates: pass rate, strict rate and predicted / gold
(each arm's value is the mean of its runs' predicted / gold ratios).

Caveats (the output says them too):
  - with 2-3 seeds the seed level is crude: k runs resampled with replacement have C(2k-1, k) distinct outcomes
    (3 for 2 runs, 10 for 3); the bootstrap variance of a mean of k runs is (k-1)/k of the usual s^2/k (too
    narrow on average), and the spread s of 2-3 seeds is itself a rough estimate: a rough interval, better than
    one that leaves the seed out;
  - an arm of ONE run has no seed level: its side of the interval is over cases only ("1 seed: the seed's
    variance is not in this interval");
  - arms are scored on the cases that every run given has (`compare.align`), runs outside every arm included.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Any

import numpy as np

from reportminer.data.io import DataError

from .compare import Run, _arrays, _boot, _ci, _ci_or_none, align, compare_runs
from .options import DEFAULT_BOOTSTRAP

METRICS = ("pass_rate", "strict_rate", "pred_gold_ratio")
ONE_SEED = "1 seed: the seed's variance is not in this interval"


def parse_arm(spec: str) -> tuple[str, list[str]]:
    """`NAME=RUN1,RUN2[,...]` -> (NAME, [RUN1, RUN2, ...]); an empty run list is left to `check_arms`."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise DataError(f"--arm {spec!r}: write NAME=RUN1,RUN2[,...] (RUN: the name of a run given)")
    return name, [r.strip() for r in rest.split(",") if r.strip()]


def check_arms(arms: Sequence[tuple[str, Sequence[str]]], run_names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The arms as (name, runs) pairs, first = baseline; a DataError names what is wrong."""
    if not arms:
        raise DataError("no arms given (--arm NAME=RUN1,RUN2)")
    known = list(run_names)
    seen_arm: set[str] = set()
    owner: dict[str, str] = {}
    out = []
    for name, runs in arms:
        if name in seen_arm:
            raise DataError(f"arm {name!r} is given twice")
        seen_arm.add(name)
        runs = list(runs)
        if not runs:
            raise DataError(f"arm {name!r} has no runs: write --arm {name}=RUN1,RUN2")
        for r in runs:
            if r not in known:
                raise DataError(f"arm {name!r}: {r!r} is not one of the runs given ({', '.join(known)})")
            if r in owner:
                where = "twice in it" if owner[r] == name else f"in arms {owner[r]!r} and {name!r}"
                raise DataError(f"run {r!r} is {where}: an arm is one recipe's runs, each run in one arm")
            owner[r] = name
        out.append((name, runs))
    return out


def _point(a: dict[str, np.ndarray]) -> dict[str, float | None]:
    g = float(a["gold"].sum())
    return {
        "pass_rate": float(a["passed"].mean()),
        "strict_rate": float(a["strict"].mean()),
        "pred_gold_ratio": float(a["pred"].sum()) / g if g > 0 else None,
    }


def _spread(values: list[float | None]) -> dict[str, Any]:
    if any(v is None for v in values):
        return {"mean": None, "min": None, "max": None, "sd": None}
    v = np.array(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "sd": float(v.std(ddof=1)) if len(v) >= 2 else None}


def _caveat(k: int) -> str | None:
    if k == 1:
        return ONE_SEED
    if k <= 3:
        return f"{k} seeds: the seed level is crude ({comb(2 * k - 1, k)} distinct resamples of {k} runs)"
    return None


def _say(arm: str, base: str, k: int, k0: int, d: dict[str, Any]) -> str:
    def part(what: str, m: str) -> str:
        x, ci, real = d[f"d_{m}"], d[f"d_{m}_ci"], d[f"{m}_significant"]
        iv = f"[{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]"
        if not real:
            return f"{what} {x * 100:+.1f} pts is within noise {iv}"
        return f"{what} {'better' if x > 0 else 'worse'} by {abs(x) * 100:.1f} pts (beyond noise, {iv})"

    return (f"{arm} vs {base} (arms, {k} vs {k0} seed{'s' if k0 != 1 else ''}, cases × seeds): "
            + part("mean pass rate", "pass_rate") + "; " + part("mean strict", "strict_rate"))


def arm_summary(
    runs: list[Run],
    arms: Sequence[tuple[str, Sequence[str]]],
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    reps: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Per arm: seeds, mean / per-run / spread of each rate, and each arm against the first, two-level bootstrap.

    `runs` are every run given (aligned here on the cases they all share); `arms` are (name, run names), the
    first being the baseline arm. The module docstring says what the intervals mean and where they are crude.
    """
    runs, _ = align(runs)
    arm_list = check_arms(arms, [r.name for r in runs])
    index = {r.name: i for i, r in enumerate(runs)}
    arrs = [_arrays(r.cases) for r in runs]
    points = [_point(a) for a in arrs]
    if reps is None:  # the case level: compare's replicates (the same resampled cases for every run)
        reps = _boot(arrs, n_boot, seed)
    seed_rng = np.random.default_rng([seed, 1])  # the seed level: its own stream, so the case level is compare's
    cols = np.arange(n_boot)[:, None]
    arm_reps: list[dict[str, np.ndarray]] = []  # per arm: metric -> (n_boot,) two-level replicates of the mean
    case_reps: list[dict[str, np.ndarray]] = []  # per arm: metric -> (n_boot,) case-only replicates of the mean
    per_arm = []
    for name, members in arm_list:
        idx = [index[r] for r in members]
        k = len(idx)
        pick = seed_rng.integers(0, k, size=(n_boot, k))  # replicate b takes runs idx[pick[b]] (with replacement)
        arm_reps.append({m: reps[m][idx][pick, cols].mean(axis=1) for m in METRICS})
        case_reps.append({m: reps[m][idx].mean(axis=0) for m in METRICS})
        entry: dict[str, Any] = {"name": name, "runs": members, "n_seeds": k, "caveat": _caveat(k)}
        for m in METRICS:
            per_run = {r: points[index[r]][m] for r in members}
            entry[m] = {**_spread(list(per_run.values())), "per_run": per_run,
                        "ci": _ci_or_none(arm_reps[-1][m]) if m == "pred_gold_ratio" else _ci(arm_reps[-1][m])}
        per_arm.append(entry)
    paired = []
    base = per_arm[0]
    for j in range(1, len(per_arm)):
        a = per_arm[j]
        d: dict[str, Any] = {"baseline": base["name"], "arm": a["name"], "n_seeds": a["n_seeds"],
                             "baseline_seeds": base["n_seeds"]}
        for m in METRICS:
            x, x0 = a[m]["mean"], base[m]["mean"]
            d[f"d_{m}"] = None if x is None or x0 is None else x - x0
            two = arm_reps[j][m] - arm_reps[0][m]
            one = case_reps[j][m] - case_reps[0][m]
            d[f"d_{m}_ci"], d[f"d_{m}_ci_cases_only"] = _ci_or_none(two), _ci_or_none(one)
            ci = d[f"d_{m}_ci"]
            d[f"{m}_significant"] = bool(ci is not None and (ci[0] > 0 or ci[1] < 0))
        d["caveats"] = [f"{e['name']}: {ONE_SEED}" for e in (base, a) if e["n_seeds"] == 1]
        d["verdict"] = _say(a["name"], base["name"], a["n_seeds"], base["n_seeds"], d)
        paired.append(d)
    in_arms = {r for _, members in arm_list for r in members}
    notes = [
        "arm = the mean over its runs (seeds); intervals resample cases (paired, the same for every run) and, "
        "within each arm, its runs with replacement; beyond noise = the 95 % interval excludes 0",
    ]
    crude = [e["name"] for e in per_arm if 2 <= e["n_seeds"] <= 3]
    if crude:
        notes.append(f"{', '.join(crude)}: 2-3 seeds make the seed level crude (a resample of 2 runs has 3 "
                     "distinct outcomes, of 3 runs 10); the bootstrap tends to make such an interval too narrow")
    one = [e["name"] for e in per_arm if e["n_seeds"] == 1]
    if one:
        notes.append(f"{', '.join(one)}: {ONE_SEED} (its side is over cases only)")
    outside = [r.name for r in runs if r.name not in in_arms]
    if outside:
        notes.append(f"in no arm (their cases still count in the alignment): {', '.join(outside)}")
    return {"baseline": base["name"], "n": runs[0].cases.height, "bootstrap": n_boot, "seed": seed,
            "per_arm": per_arm, "paired": paired, "notes": notes}


def compare_arms(
    runs: list[Run], arms: Sequence[tuple[str, Sequence[str]]], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """`compare_runs` (per run, paired on cases, unchanged) plus `"arms"`: `arm_summary` of the same runs.

    The arms are checked before any bootstrap, so a wrong name fails at once.
    """
    check_arms(arms, [r.name for r in runs])
    aligned, _ = align(runs)
    reps = _boot([_arrays(r.cases) for r in aligned], n_boot, seed)  # drawn once: the runs' and the arms' case level
    res = compare_runs(runs, n_boot=n_boot, seed=seed, reps=reps)
    res["arms"] = arm_summary(aligned, arms, n_boot=n_boot, seed=seed, reps=reps)
    return res
