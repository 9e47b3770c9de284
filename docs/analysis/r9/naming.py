"""How the team's rows name revenue against the seed's rows, and what the seed's verdict protocol makes of it.

    .venv/bin/python docs/analysis/r9/naming.py [SEED_DATA_DIR]      (default ../shared/seed/data)

Prints the share of metric names ending in 增速 / 率 / 占比 in the seed's rows and in the team's training rows, the
revenue names of each, the upstream matcher's verdict on the pairs that matter (evalkit.matchers.UpstreamMatcher:
equal, contained or bigram Jaccard >= 0.5), and the gold revenue names of the team's benchmarks. Written in the
eleventh session (docs/RESULTS.md, round 9) after a failure listing showed `营业收入` answered for gold `营收`.
"""
from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np

from reportminer.evalkit.matchers import UpstreamMatcher, bigram_jaccard

ROOT = Path(__file__).resolve().parents[3]
seed_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "seed" / "data"
if not seed_dir.is_dir():
    sys.exit(f"no seed rows at {seed_dir} (../shared/seed/data): pass the folder")


def rows(files: list[Path]) -> list[dict]:
    return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def names(rs: list[dict], key: str = "output") -> list[str]:
    return [m["metric_name"] for r in rs for m in (r.get(key) or {}).get("metrics", [])]


def ending(ns: list[str]) -> dict[str, float]:
    c = collections.Counter(next((e for e in ("增速", "占比", "率") if n.endswith(e)), "other") for n in ns)
    return {k: round(v / len(ns), 3) for k, v in sorted(c.items())}


def upstream_hit(gold: str, pred: str) -> bool:
    """The seed's protocol on one pair, by the matcher evalkit scores with (codes index distinct names)."""
    ns = [gold] if gold == pred else [gold, pred]
    _, candidate = UpstreamMatcher().pair_scores(ns, np.array([0]), np.array([len(ns) - 1]))
    return bool(candidate[0])


seed = rows(sorted(seed_dir.glob("*.jsonl")))
team = rows(sorted((ROOT / "benchmarks").glob("*-train/rows.jsonl")))
s, t = names(seed), names(team)
print(f"seed rows: {len(seed)}, {len(s)} metrics; name endings {ending(s)}")
print(f"team rows: {len(team)}, {len(t)} metrics; name endings {ending(t)}")
revenue = ("营业收入", "营收", "营收增速", "营业收入增速", "营业总收入")
for n in revenue:
    print(f"  {n}: seed {s.count(n)}, team {t.count(n)}")
says = collections.Counter()
for r in seed:
    p = r["input"]["paragraph"]
    for m in r["output"]["metrics"]:
        if m["metric_name"] in revenue:
            says[("营业收入" if "营业收入" in p else "营收" if "营收" in p else "neither", m["metric_name"])] += 1
print("seed: (the paragraph says, the revenue core's name):", dict(says))
print("upstream verdict (gold, answer):")
for g, p in [("营收增速", "营业收入"), ("营收增速", "营业收入增速"), ("营收增速", "营收"), ("营收", "营业收入"),
             ("营业收入", "营收"), ("归母净利润增速", "归母净利润"), ("出货量增速", "出货量")]:
    print(f"  {g} <- {p}: {'hit' if upstream_hit(g, p) else 'miss'} (bigram Jaccard {bigram_jaccard(g, p):.2f})")
for b in ("genbench", "genbench-flat", "genbench-cause"):
    cases = rows([ROOT / "benchmarks" / b / "cases.jsonl"])
    g = names(cases, "output") or [m["metric_name"] for c in cases for m in c.get("gold", {}).get("metrics", [])]
    print(f"{b}: gold names {len(g)}; " + ", ".join(f"{n} {g.count(n)}" for n in revenue if g.count(n)))
