#!/usr/bin/env python
"""Benchmark evalkit end to end against the seed's way, on 200,000 cases built from the seed rows.

Gold: the seed's labelled rows (../shared/seed/data, 700 rows; data/demo/demo.jsonl when absent) repeated
to --cases cases with fresh ids, written as seed-format JSONL with their paragraphs and analyses (320 MB
at 200k). Predictions: each case's gold names perturbed with a per-case random draw (kept, a character
dropped, an affix added, characters swapped, a synonym, a name from another row, or dropped), plus
over-extraction (an extra name in ~35 % of cases) and shuffled order, written as JSONL
`{"id", "output": {"analysis", "metrics"}}` with the gold's reasons (228 MB).

End to end (the default):
1. the seed's way, re-implemented (`seed_way`: pure Python, `json.loads` per line, then per gold metric
   the first unmatched predicted name that is equal, contained either way, or has difflib ratio >= 0.7);
2. `evalkit score --matcher difflib` on the same pair, as a subprocess (interpreter start and imports
   included), best of 2; the precision, recall, F1 and type accuracy must equal the seed's way's;
3. the same predictions as engine Parquet results, scored against gold Parquet shards and against the gold
   JSONL (`score_paths`, after one warm-up run), and the whole command on Parquet results + gold JSONL.
Wall seconds and CPU seconds (user + system, all threads) are both reported: the development machine is
shared, and under load the wall time says more about the neighbours than about the code.

--matchers also times the in-memory scoring of matchers as the first version of this script did.

    .venv/bin/python scripts/bench_evalkit.py                       # 200,000 cases, end to end
    .venv/bin/python scripts/bench_evalkit.py --cases 100800 --no-files --matchers upstream,fuzzy,difflib
    .venv/bin/python scripts/bench_evalkit.py --drop reason     # predictions whose metrics carry no `reason`

--drop FIELD,...: the predictions' metrics are written without these fields (`reason`, `score`), as other
tools' output and older runs are (issue 19): such answers break the contract (a required field is
missing), `data.parse` keeps their names, and scoring must not fall to a per-row slow path for them.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import resource
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


SEED = REPO.parent / "shared" / "seed" / "data"  # --seed-data: where a worktree keeps it elsewhere


def seed_gold() -> tuple[pl.DataFrame, str]:
    seed = SEED
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
    global SEED
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200_000, help="cases to build (default 200,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matchers", default="", help="also time the in-memory scoring of these matchers "
                    "(upstream,fuzzy,difflib,embedding), as in the first version of this benchmark")
    ap.add_argument("--no-files", action="store_true", help="skip the end-to-end runs from files")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--files", type=Path, default=None, metavar="DIR",
                    help="keep the JSONL pair in DIR and reuse it on the next run with the same --cases and "
                         "--seed (writing 548 MB takes ~10 s); default: a temporary folder")
    ap.add_argument("--drop", default="", metavar="FIELD,...",
                    help="leave these metric fields (reason, score) out of the predictions JSONL")
    ap.add_argument("--seed-data", type=Path, default=SEED, metavar="DIR",
                    help="the seed's labelled rows (default ../shared/seed/data; data/demo/demo.jsonl when absent)")
    args = ap.parse_args()
    SEED = args.seed_data

    gold_seed, where = seed_gold()
    (gold, preds), dt = timed(lambda: build(gold_seed, args.cases, args.seed))
    print(f"gold: {where}; built {gold.height:,} cases, {preds['pred_names'].list.len().sum():,} predicted "
          f"names in {dt:.1f} s; python {platform.python_version()}, {platform.machine()}", flush=True)
    rows = []
    if not args.no_files:
        drop = tuple(x for x in args.drop.split(",") if x)
        keep = args.files and args.files / "-".join([str(args.cases), str(args.seed), *(f"no{x}" for x in drop)])
        rows.extend(bench_end_to_end(gold_seed, gold, preds, keep, drop))
    if args.matchers:
        # Warm-up on a small slice: imports, polars' thread pool, first-call costs are not scoring.
        for m in ("upstream", "fuzzy"):
            score_cases(build_cases(gold.head(1000), preds.head(1000)), make_matcher(m))
    for m in [x for x in args.matchers.split(",") if x]:
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
    if args.matchers:
        g, p = gold["gold_names"].to_list(), preds["pred_names"].to_list()
        n_ref = min(len(g), 20_000)
        _, dt = timed(lambda: [upstream_reference(a, b) for a, b in zip(g[:n_ref], p[:n_ref])])
        rows.append({"matcher": "upstream, plain-Python reference loop", "cases": n_ref, "seconds": round(dt, 2),
                     "cases_per_s": round(n_ref / dt)})
        print(rows[-1], flush=True)

    print("\n| what | cases | wall s | CPU s | cases/s |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['matcher']} | {r['cases']:,} | {r['seconds']} | {r.get('cpu_s', '')} | {r['cases_per_s']:,} |")
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=2))


# ------------------------------------------------------------------------- end to end, from files


def seed_way(gold_path: Path, pred_path: Path, threshold: float = 0.7) -> dict:
    """The seed's eval_script.py way, re-implemented: pure Python, `json.loads` per line, then for each
    gold metric in order the first predicted metric not yet matched whose name is equal, contained
    either way, or has difflib `SequenceMatcher` ratio >= 0.7. Returns the counts and P/R/F1/type accuracy."""
    from difflib import SequenceMatcher

    gold: dict[str, list[tuple[str, str]]] = {}
    with open(gold_path, encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            gold[obj["id"]] = [(m["metric_name"], m["metric_type"]) for m in obj["output"]["metrics"]]
    preds: dict[str, list[tuple[str, str]]] = {}
    with open(pred_path, encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            preds[obj["id"]] = [(m["metric_name"], m["metric_type"]) for m in obj["output"]["metrics"]]
    hits = type_hits = gold_total = pred_total = 0
    for cid, gms in gold.items():
        pms = preds.get(cid, [])
        gold_total += len(gms)
        pred_total += len(pms)
        used: set[int] = set()
        for gn, gt in gms:
            for j, (pn, pt) in enumerate(pms):
                if j in used:
                    continue
                if pn == gn or gn in pn or pn in gn or SequenceMatcher(None, gn, pn).ratio() >= threshold:
                    used.add(j)
                    hits += 1
                    type_hits += gt == pt
                    break
    p, r = hits / pred_total, hits / gold_total
    return {"gold_total": gold_total, "pred_total": pred_total, "hits": hits, "type_correct": type_hits,
            "precision": p, "recall": r, "f1": 2 * p * r / (p + r), "type_accuracy": type_hits / hits}


def write_pair(gold_seed_rows: list[dict], gold: pl.DataFrame, preds: pl.DataFrame, dd: Path,
               drop: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """gold.jsonl (the seed rows, paragraph and analysis included, with fresh ids) and predictions.jsonl
    (`{"id", "output": {"analysis", "metrics"}}`, the perturbed names with the gold's reasons and scores;
    the metric fields in `drop` left out)."""
    k = len(gold_seed_rows)
    gold_path, pred_path = dd / "gold.jsonl", dd / "predictions.jsonl"
    with open(gold_path, "w", encoding="utf-8") as g, open(pred_path, "w", encoding="utf-8") as p:
        for i, (cid, names, types) in enumerate(preds.select("id", "pred_names", "pred_types").iter_rows()):
            row = gold_seed_rows[i % k]
            g.write(json.dumps({"id": cid, **row}, ensure_ascii=False) + "\n")
            reasons = [m.get("reason", "") for m in row["output"]["metrics"]] or [""]
            ms = [{k: v for k, v in {"metric_name": a, "metric_type": b, "score": 0.9, "reason": reasons[j % len(reasons)]}.items()
                   if k not in drop} for j, (a, b) in enumerate(zip(names, types))]
            p.write(json.dumps({"id": cid, "output": {"analysis": row["output"]["analysis"], "metrics": ms}},
                               ensure_ascii=False) + "\n")
    return gold_path, pred_path


def bench_end_to_end(gold_seed: pl.DataFrame, gold: pl.DataFrame, preds: pl.DataFrame, keep: Path | None = None,
                     drop: tuple[str, ...] = ()) -> list[dict]:
    """`evalkit score` as a subprocess (interpreter start and imports included) against the seed's way,
    on the same JSONL pair; then engine Parquet results of the same predictions. `keep`: the folder for the
    pair, reused when it holds one (else a temporary folder); `drop`: metric fields left out of the
    predictions JSONL."""
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    from reportminer.data.schema import arrow_metrics_type

    seed_rows = seed_rows_json()
    out = []
    with tempfile.TemporaryDirectory() as d:
        dd = Path(d)
        if keep is not None and (keep / "gold.jsonl").is_file() and (keep / "predictions.jsonl").is_file():
            gold_path, pred_path = keep / "gold.jsonl", keep / "predictions.jsonl"
            print(f"reusing the JSONL pair in {keep}", flush=True)
        elif keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            gold_path, pred_path = write_pair(seed_rows, gold, preds, keep, drop)
        else:
            gold_path, pred_path = write_pair(seed_rows, gold, preds, dd, drop)
        mb = (gold_path.stat().st_size + pred_path.stat().st_size) / 1e6
        print(f"JSONL pair: {gold_path.stat().st_size / 1e6:.0f} MB gold + {pred_path.stat().st_size / 1e6:.0f} MB "
              f"predictions ({mb:.0f} MB)", flush=True)
        c0 = time.process_time()
        ref, t_ref = timed(lambda: seed_way(gold_path, pred_path))
        cpu_ref = time.process_time() - c0
        out.append({"matcher": "the seed's way (json.loads per line, first match, difflib >= 0.7)",
                    "cases": gold.height, "seconds": round(t_ref, 2), "cpu_s": round(cpu_ref, 2),
                    "cases_per_s": round(gold.height / t_ref)})
        print(out[-1], ref, flush=True)

        def cli(pred: Path, matcher: str, summary: Path) -> tuple[float, float]:
            """Wall and CPU seconds (user + system, of the child) of one `evalkit score` command."""
            cmd = [sys.executable, "-m", "reportminer.evalkit.cli", "score", "--gold", str(gold_path), str(pred),
                   "--matcher", matcher, "--json", str(summary), "-q"]
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(cmd, check=True)
            dt = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

        summary = dd / "summary.json"
        t_cli, cpu_cli = min(cli(pred_path, "difflib", summary) for _ in range(2))
        s = json.loads(summary.read_text())
        same = all(s[k] == ref[k] for k in ("gold_total", "pred_total", "hits", "type_correct")) and all(
            abs(s[k] - ref[k]) <= 1e-12 for k in ("precision", "recall", "f1", "type_accuracy"))
        out.append({"matcher": "`evalkit score --matcher difflib`, JSONL pair, whole command", "cases": gold.height,
                    "seconds": round(t_cli, 2), "cpu_s": round(cpu_cli, 2), "cases_per_s": round(gold.height / t_cli),
                    "speedup": round(t_ref / t_cli, 2), "cpu_speedup": round(cpu_ref / cpu_cli, 2),
                    "identical_prf1_type": same, **{k: s[k] for k in ("precision", "recall", "f1", "type_accuracy")}})
        print(out[-1], flush=True)
        if not same:
            sys.exit(f"evalkit and the seed's way disagree: {ref} vs {s}")

        metrics = [[{"metric_name": a, "metric_type": b, "score": 0.9, "reason": "r"} for a, b in zip(ns, ts)]
                   for ns, ts in zip(preds["pred_names"].to_list(), preds["pred_types"].to_list())]
        raws = [json.dumps({"analysis": "a", "metrics": m}, ensure_ascii=False) for m in metrics]
        engine = dd / "results.parquet"
        pq.write_table(pa.table({"id": pa.array(preds["id"].to_list()), "adapter": pa.array(["bench"] * preds.height),
                                 "metrics": pa.array(metrics, arrow_metrics_type()), "raw": pa.array(raws),
                                 "status": pa.array(["ok"] * preds.height)}), engine)
        gold_pq = dd / "gold.parquet"
        pq.write_table(pa.table({"id": pa.array(gold["id"].to_list()), "type": pa.array(gold["scenario"].to_list()),
                                 "gold_metrics": pa.array([[{"metric_name": a, "metric_type": b, "score": 0.9, "reason": ""}
                                                           for a, b in zip(ns, ts)] for ns, ts in
                                                          zip(gold["gold_names"].to_list(), gold["gold_types"].to_list())],
                                                          arrow_metrics_type())}), gold_pq)
        for label, g in (("engine Parquet results, gold Parquet shards", gold_pq),
                         ("engine Parquet results, gold JSONL", gold_path)):
            m = make_matcher("difflib")
            score_paths(g, engine, m)  # warm (page cache, imports)
            c0 = time.process_time()
            res, dt = timed(lambda g=g, m=m: score_paths(g, engine, m))
            out.append({"matcher": f"`score_paths`: {label} (difflib)", "cases": gold.height, "seconds": round(dt, 2),
                        "cpu_s": round(time.process_time() - c0, 2), "cases_per_s": round(gold.height / dt),
                        "f1": res[0].summary["f1"]})
            print(out[-1], flush=True)
        t_cli, cpu_cli = min(cli(engine, "difflib", summary) for _ in range(2))
        out.append({"matcher": "`evalkit score --matcher difflib`, engine Parquet + gold JSONL, whole command",
                    "cases": gold.height, "seconds": round(t_cli, 2), "cpu_s": round(cpu_cli, 2),
                    "cases_per_s": round(gold.height / t_cli)})
        print(out[-1], flush=True)
    return out


def seed_rows_json() -> list[dict]:
    """The seed's rows as dicts (type, input, output), without ids; the demo rows when the seed is absent."""
    seed = SEED
    files = sorted(seed.glob("*.jsonl")) if seed.is_dir() else [REPO / "data" / "demo" / "demo.jsonl"]
    rows = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    obj.pop("id", None)
                    rows.append(obj)
    return rows


if __name__ == "__main__":
    main()
