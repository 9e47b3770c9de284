"""Why r05fr (round 7's recommended recipe) fails on the validated union: the kinds of fail behind benchmarks/multi-train.

    .venv/bin/python docs/analysis/r8/fails.py [CASES_PARQUET]

Reads a cases file written by `evalkit bench score` (default: round 7's r05fr on genbench-flat + the 34 genbench-cause
cases, .cache/r7, not in git) and prints the pass rate per scenario and each fail's kind: metrics for a background
paragraph, none of the gold cores named, one core of several found, or the cores found with too many extras.
"""
from __future__ import annotations

import sys

import polars as pl

path = sys.argv[1] if len(sys.argv) > 1 else ".cache/r7/union/serve-m05all/r05fr.gen.cases.parquet"
c = pl.read_parquet(path)
print(c.group_by("scenario").agg(pl.len().alias("cases"), (pl.col("verdict") != "fail").sum().alias("passed"),
                                 pl.col("n_pred").mean().round(2).alias("pred"),
                                 pl.col("n_gold").mean().round(2).alias("gold")).sort("scenario"))
fails = c.filter(pl.col("verdict") == "fail").with_columns(
    pl.when(pl.col("n_gold") == 0).then(pl.lit("metrics for a background paragraph"))
    .when(pl.col("n_hits") == 0).then(pl.lit("none of the gold cores"))
    .when(pl.col("n_hits") < pl.col("n_gold")).then(pl.lit("one core of several"))
    .otherwise(pl.lit("cores found, too many extras")).alias("kind"))
print(f"{fails.height} fails of {c.height}")
print(fails.group_by("kind").agg(pl.len().alias("fails")).sort("fails", descending=True))
