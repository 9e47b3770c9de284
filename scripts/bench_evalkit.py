#!/usr/bin/env python
"""Benchmark evalkit scoring: >= 100k cases built from the seed rows with perturbed predicted names.

Gold: the seed's labelled rows (../shared/seed/data, 700 rows; data/demo/demo.jsonl when absent) repeated
to --cases cases with fresh ids. Predictions: each case's gold names perturbed with a per-case random
draw (kept, a character dropped, an affix added, characters swapped, a synonym, a name from another row,
or dropped), plus over-extraction (an extra name in ~35 % of cases) and shuffled order, so every verdict
branch and the collision path of the assignment are exercised.

Timed, per matcher: joining predictions to gold, pair scoring, assignment, verdicts and the summary (the
same `score_cases` + `summarize` the CLI runs). The embedding matcher is timed cold (every distinct name
encoded, no cache) and warm (vectors cached, as for a second adapter on the same gold). Also timed: the
whole `evalkit score` path from files (engine Parquet, and the seed batch JSON whose raw text goes
through data.parse), and the plain-Python reference of the seed protocol for scale.

    .venv/bin/python scripts/bench_evalkit.py                     # 100,800 cases, all matchers
    .venv/bin/python scripts/bench_evalkit.py --cases 20000 --matchers upstream,fuzzy
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reportminer.evalkit.loaders import PRED_SCHEMA, load_gold  # noqa: E402
from reportminer.evalkit.matchers import MatchStats, make_matcher, upstream_reference  # noqa: E402
from reportminer.evalkit.score import build_cases, score_cases, score_paths, summarize  # noqa: E402

AFFIX_PRE = ["公司", "销售", "归母", "单季度"]
AFFIX_POST = ["增速", "同比", "占比", "率", "总额"]
SYNONYMS = [("营业收入", "营收"), ("净利润", "净利"), ("现金流量净额", "现金流"), ("同比增速", "增长率"), ("毛利率", "毛利")]
FLIP = {"financial": "business", "business": "financial"}


def seed_gold() -> tuple[pl.DataFrame, str]:
    seed = REPO.parent / "shared" / "seed" / "data"
    if seed.is_dir():
        return load_gold(seed), f"{seed} (700 rows)"
    demo = REPO / "data" / "demo" / "demo.jsonl"
    return load_gold(demo), f"{demo} (seed data absent)"


def perturb(name: str, rng: random.Random, others: list[str]) -> str | None:
    r = rng.random()
    if r < 0.50:
        return name
    if r < 0.58 and len(name) > 2:
        i = rng.randrange(len(name))
        return name[:i] + name[i + 1 :]
    if r < 0.68:
        return rng.choice(AFFIX_PRE) + name if rng.random() < 0.5 else name + rng.choice(AFFIX_POST)
    if r < 0.72 and len(name) > 2:
        i = rng.randrange(len(name) - 1)
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    if r < 0.82:
        for a, b in SYNONYMS:
            if a in name:
                return name.replace(a, b)
        return name
    if r < 0.92:
        return rng.choice(others)
    return None  # the model left this metric out


def build(gold_seed: pl.DataFrame, n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = random.Random(seed)
    k = gold_seed.height
    idx = pl.Series([i % k for i in range(n)])
    gold = gold_seed[idx].with_columns(
        pl.format("b{}", pl.int_range(1, n + 1)).alias("id"),
        pl.int_range(1, n + 1, dtype=pl.Int64).alias("case"),
        pl.lit("bench").alias("source"),
    )
    others = [x for names in gold_seed["gold_names"].to_list() for x in names] or ["营业收入"]
    pn, pt = [], []
    for names, types in zip(gold["gold_names"].to_list(), gold["gold_types"].to_list()):
        out_n, out_t = [], []
        for nm, tp in zip(names, types):
            p = perturb(nm, rng, others)
            if p is not None:
                out_n.append(p)
                out_t.append(tp if rng.random() > 0.07 else FLIP.get(tp, tp))
        for _ in range(1 if rng.random() < 0.35 else 0) or ():
            out_n.append(rng.choice(others))
            out_t.append(rng.choice(["financial", "business"]))
        if rng.random() < 0.3:
            z = list(zip(out_n, out_t))
            rng.shuffle(z)
            out_n, out_t = [a for a, _ in z], [b for _, b in z]
        pn.append(out_n)
        pt.append(out_t)
    preds = pl.DataFrame(
        {"id": gold["id"], "pred_names": pn, "pred_types": pt, "json_valid": [True] * n, "error": [None] * n,
         "pred_scenario": [None] * n, "source": ["bench"] * n},
        schema=PRED_SCHEMA,
    )
    return gold, preds


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_matcher(label: str, matcher, gold: pl.DataFrame, preds: pl.DataFrame, repeats: int = 3) -> dict:
    """Median wall time of `repeats` runs (one for a cold start), the first run reported beside it."""
    stats = MatchStats()

    def work():
        cases = score_cases(build_cases(gold, preds), matcher, stats=stats)
        return summarize(cases)

    times = []
    for _ in range(repeats):
        s, dt = timed(work)
        times.append(dt)
    dt = sorted(times)[len(times) // 2]
    return {
        "matcher": label, "cases": gold.height, "seconds": round(dt, 2), "cases_per_s": round(gold.height / dt),
        "first_run_s": round(times[0], 2),
        "pairs": stats.pairs, "unique_pairs": stats.unique_pairs, "unique_names": stats.unique_names,
        "looped_cases": stats.looped_cases, "strict": s["strict"], "loose": s["loose"], "fail": s["fail"],
        "f1": round(s["f1"], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_800, help="cases to build (default 100,800 = 144 x 700)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matchers", default="upstream,fuzzy,embedding")
    ap.add_argument("--no-files", action="store_true", help="skip the end-to-end runs from files")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    gold_seed, where = seed_gold()
    (gold, preds), dt = timed(lambda: build(gold_seed, args.cases, args.seed))
    print(f"gold: {where}; built {gold.height:,} cases, {preds['pred_names'].list.len().sum():,} predicted "
          f"names in {dt:.1f} s; python {platform.python_version()}, {platform.machine()}", flush=True)
    # Warm-up on a small slice: imports, polars' thread pool, first-call costs are not scoring.
    for m in ("upstream", "fuzzy"):
        score_cases(build_cases(gold.head(1000), preds.head(1000)), make_matcher(m))
    rows = []
    for m in args.matchers.split(","):
        if m == "embedding":
            from reportminer.evalkit import embed
            from reportminer.evalkit.matchers import EmbeddingMatcher

            embedder = embed.UseEmbedder(progress=False)  # no disk cache: a true cold start
            embed._MEMORY[embedder.key].clear()
            matcher = EmbeddingMatcher(embedder)
            rows.append(bench_matcher("embedding (cold: encode every name)", matcher, gold, preds, repeats=1))
            print(rows[-1], flush=True)
            rows.append(bench_matcher("embedding (warm: cached vectors)", matcher, gold, preds))
        else:
            rows.append(bench_matcher(m, make_matcher(m), gold, preds))
        print(rows[-1], flush=True)

    g, p = gold["gold_names"].to_list(), preds["pred_names"].to_list()
    n_ref = min(len(g), 20_000)
    _, dt = timed(lambda: [upstream_reference(a, b) for a, b in zip(g[:n_ref], p[:n_ref])])
    rows.append({"matcher": "upstream, plain-Python reference loop", "cases": n_ref, "seconds": round(dt, 2),
                 "cases_per_s": round(n_ref / dt)})
    print(rows[-1], flush=True)

    if not args.no_files:
        rows.extend(bench_files(gold, preds))

    print("\n| what | cases | seconds | cases/s |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['matcher']} | {r['cases']:,} | {r['seconds']} | {r['cases_per_s']:,} |")
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=2))


def bench_files(gold: pl.DataFrame, preds: pl.DataFrame) -> list[dict]:
    """`evalkit score` from files: gold JSONL + engine Parquet, and gold JSONL + seed batch JSON (raw text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reportminer.data.schema import arrow_metrics_type

    out = []
    with tempfile.TemporaryDirectory() as d:
        dd = Path(d)
        gold_path = dd / "gold.jsonl"
        with open(gold_path, "w", encoding="utf-8") as fh:
            for i, sc, ns, ts in gold.select("id", "scenario", "gold_names", "gold_types").iter_rows():
                ms = [{"metric_name": a, "metric_type": b, "score": 0.9, "reason": ""} for a, b in zip(ns, ts)]
                fh.write(json.dumps({"id": i, "type": sc, "input": {"chapter_title": "", "paragraph": ""},
                                     "output": {"analysis": "", "metrics": ms}}, ensure_ascii=False) + "\n")
        metrics = [[{"metric_name": a, "metric_type": b, "score": 0.9, "reason": "r"} for a, b in zip(ns, ts)]
                   for ns, ts in zip(preds["pred_names"].to_list(), preds["pred_types"].to_list())]
        raws = [json.dumps({"analysis": "a", "metrics": m}, ensure_ascii=False) for m in metrics]
        engine = dd / "results.parquet"
        pq.write_table(pa.table({"id": pa.array(preds["id"].to_list()), "adapter": pa.array(["bench"] * preds.height),
                                 "metrics": pa.array(metrics, arrow_metrics_type()), "raw": pa.array(raws),
                                 "status": pa.array(["ok"] * preds.height)}), engine)
        batch = dd / "results.json"
        batch.write_text(json.dumps([{"index": k + 1, "pred_raw": r, "scenario": "A"} for k, r in enumerate(raws)], ensure_ascii=False))
        m = make_matcher("upstream")
        for label, path in (("files: gold JSONL + engine Parquet (upstream)", engine),
                            ("files: gold JSONL + seed batch JSON, raw text parsed (upstream)", batch)):
            (res,), dt = timed(lambda path=path: score_paths(gold_path, path, m))
            out.append({"matcher": label, "cases": gold.height, "seconds": round(dt, 2),
                        "cases_per_s": round(gold.height / dt), "strict": res.summary["strict"]})
            print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    main()
