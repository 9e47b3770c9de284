"""The slice pre-registered in docs/leases/NEXT.md (written after round 5, before round 6 ran), scored on round 6's
freshly trained b05a / b15a (all 700 seed rows): genbench cases with scenario boundary_many_numbers_one_core, or
with analyst voice (我们认为 / 我们预计 / 预计 / 有望) and >= 6 numbers per 100 characters (the datasheet's regex).
It passes if the 0.5B is ahead of the 1.5B on pass AND the 1.5B's pred/gold exceeds the 0.5B's by >= 0.3.
Reads .cache/r6 (the lease's scores, not in git). Usage: .venv/bin/python docs/analysis/r6/slice.py [R]
"""
import json
import re
import sys

import polars as pl

R = sys.argv[1] if len(sys.argv) > 1 else ".cache/r6"
NUM = re.compile(r"\d+(?:[.,]\d+)*")
VOICE = re.compile(r"我们认为|预计|有望")  # 我们预计 contains 预计
cases = {}
for line in open("benchmarks/genbench/cases.jsonl", encoding="utf-8"):
    c = json.loads(line)
    cases[c["id"]] = c


def in_slice(c: dict) -> bool:
    p = c["input"]["paragraph"]
    dense = len(NUM.findall(p)) * 100 / max(len(p), 1) >= 6
    return c["scenario"] == "boundary_many_numbers_one_core" or (bool(VOICE.search(p)) and dense)


ids = sorted(i for i, c in cases.items() if in_slice(c))
runs = {"b05a": f"{R}/genbench/scores/serve-m05/b05a.gen.cases.parquet",
        "b15a": f"{R}/genbench/scores/serve-m15a/b15a.gen.cases.parquet",
        "r15fa": f"{R}/genbench/scores/serve-m15b/r15fa.gen.cases.parquet"}
out = {}
for name, path in runs.items():
    try:
        d = pl.read_parquet(path).filter(pl.col("id").is_in(ids))
    except FileNotFoundError:
        continue
    one = d.filter(pl.col("n_gold") == 1)
    out[name] = {"n": d.height, "pass": round(100 * (d["verdict"] != "fail").mean(), 1),
                 "pred_gold": round(d["n_pred"].sum() / max(d["n_gold"].sum(), 1), 2),
                 "one_metric_2plus": f"{(one['n_pred'] >= 2).sum()}/{one.height}"}
    print(name, out[name])
if {"b05a", "b15a"} <= out.keys():
    ok = out["b05a"]["pass"] > out["b15a"]["pass"] and out["b15a"]["pred_gold"] - out["b05a"]["pred_gold"] >= 0.3
    print("pre-registered rule:", "PASSES" if ok else "FAILS")
    print("ids:", len(ids))
