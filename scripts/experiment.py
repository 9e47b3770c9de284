"""One quality experiment end to end: train on the dev benchmark's train split, serve, score, record.

    # once: the dev benchmark (held out from training, built from ../shared/seed at run time, never committed)
    python scripts/build_dev_benchmark.py --out .cache/devbench

    # everything on one GPU machine: train, serve with `engine run`, score and compare, append to docs/RESULTS.md
    python scripts/experiment.py all --name count-mix --recipe qwen2.5-0.5b-lora \
        --model ~/.cache/reportminer/models/qwen2.5-coder-0.5b-instruct \
        --set "count_weights={0: 2, 1: 2, 2: 1, 3: 0.5, 4: 0.5}"

    # or step by step (train and serve where the GPU is, score anywhere)
    python scripts/experiment.py train --name count-mix --recipe qwen2.5-0.5b-lora --model M --set ...
    python scripts/experiment.py serve --adapter count-mix=.cache/experiments/count-mix/best --model M
    python scripts/experiment.py score --results .cache/experiments/serve-count-mix --baseline best

Two benchmarks, one engine pass (issue 16): the serve step runs every adapter over the dev benchmark's
dev.jsonl AND the generalisation benchmark (`--genbench`, default benchmarks/genbench/cases.jsonl when it
exists; `--genbench none` to leave it out) AND its perturbation variants (`evalkit perturb expand`: ids
`<id>~ins` / `<id>~rem`), concatenated into one input (ids checked distinct). The score step splits the
results by id, scores each benchmark against its own gold (dev, gen, gen+variants), runs `evalkit perturb
check` on the variants and `evalkit compare` against the baseline on both benchmarks, and writes
`scores/<tag>/report.md` and `report.json`: per adapter pass, strict, F1, predicted/gold, pass per
scenario, the count matrix in brief (one-metric cases answered with 2+, background cases answered with
1+, answers of 3+), the share of cases whose count moved under perturbation, and the paired intervals.

    python scripts/experiment.py serve --adapter b05=runs/b05/best --adapter r05=runs/r05/best --model M --tag m05
    python scripts/experiment.py score --results .cache/experiments/serve-m05 --baseline b05 --no-record

`--baseline`: an adapter of the same results (compared on both benchmarks), `best` (docs/RESULTS.md's
`best:` line, dev only), or a dev cases file; `--gen-baseline CASES` adds a genbench cases file.

Layout under `--work` (default `.cache/experiments`, git-ignored): `<name>/` is the trainer's run folder
(`best/`, `final/`, manifests), `serve-<tag>/` the engine's Parquet results, `scores/<tag>/` the split
results, evalkit JSON and cases files (`<adapter>.<dev|gen|genp>.json`, `.cases.parquet`,
`<adapter>.perturb.json`, `<adapter>.<dev|gen>.compare.json`) and the report. `docs/RESULTS.md` gets one row per scored adapter: the command, versions, machine, pass /
strict / F1 / predicted-to-gold, per-scenario pass, and the paired interval against the current best
(the row marked `best` in `docs/RESULTS.md`'s `best:` line, or `--baseline CASES_FILE`).

Every step shells out to the product's own CLIs (`python -m reportminer.<room>.cli`), so an experiment is
exactly what a user would run, and the GPU machine needs no console scripts installed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "docs" / "RESULTS.md"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=False, **kw)


def _cli(room: str) -> list[str]:
    return [sys.executable, "-m", f"reportminer.{room}.cli"]


def cmd_train(a: argparse.Namespace) -> int:
    bench = Path(a.bench)
    out = Path(a.work) / a.name
    cmd = _cli("trainer") + ["train", "--model", a.model, "--data", str(bench / "train.jsonl"),
                             "--output", str(out), "--config", a.recipe, "--no-progress", "--overwrite"]
    for s in a.set or []:
        cmd += ["--set", s]
    rc = _run(cmd).returncode
    if rc == 0:
        (out / "experiment.json").write_text(json.dumps(
            {"name": a.name, "recipe": a.recipe, "set": a.set or [], "model": a.model, "bench": str(bench),
             "command": shlex.join(sys.argv)}, ensure_ascii=False, indent=2))
    return rc


GENBENCH = ROOT / "benchmarks" / "genbench" / "cases.jsonl"
BENCHES = ("dev", "gen", "genp")  # the dev benchmark, the generalisation benchmark, the latter + its variants


def _genbench(a: argparse.Namespace) -> Path | None:
    g = getattr(a, "genbench", None)
    if g in (None, "", "none"):
        return None
    p = Path(g)
    if not p.is_file():
        if g == str(GENBENCH):  # the default, not built yet: dev only, said once
            print(f"note: {GENBENCH} not found; dev benchmark only", file=sys.stderr)
            return None
        raise SystemExit(f"--genbench {g}: no such file")
    return p


def _sha(*paths: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def gold_files(bench: Path, genbench: Path | None) -> dict[str, Path]:
    """bench -> its gold JSONL: dev.jsonl; the genbench cases without `perturb` (gen) and with their
    variants (genp), written once into the bench folder per genbench content (same bytes for the same file)."""
    golds = {"dev": bench / "dev.jsonl"}
    if genbench is None:
        return golds
    sys.path.insert(0, str(ROOT))
    from reportminer.data.io import write_jsonl
    from reportminer.evalkit.perturb import expand_file

    tag = _sha(genbench)
    gen, genp = bench / f"genbench-{tag}.jsonl", bench / f"genbench-{tag}-perturbed.jsonl"
    if not (gen.exists() and genp.exists()):
        ex = expand_file(str(genbench))
        write_jsonl([r for r in ex.rows if "variant" not in r], gen)
        write_jsonl(ex.rows, genp)
    golds.update(gen=gen, genp=genp)
    return golds


def serve_input(bench: Path, genbench: Path | None) -> Path:
    """Parquet shards of dev.jsonl + the genbench cases and variants (one engine pass); ids must be distinct.
    Shards are named by source (dev-*, gen-*) so results can also be told apart by file."""
    golds = gold_files(bench, genbench)
    srcs = [golds["dev"]] + ([golds["genp"]] if "genp" in golds else [])
    shards = bench / (f"shards-{_sha(*srcs)}" if genbench else "shards")
    if shards.exists():
        return shards
    sys.path.insert(0, str(ROOT))
    from reportminer.data.io import jsonl_to_table, write_shards

    tables = {name: jsonl_to_table(src) for name, src in zip(("dev", "gen"), srcs)}
    if len(tables) == 2:
        shared = set(tables["dev"].column("id").to_pylist()) & set(tables["gen"].column("id").to_pylist())
        if shared:
            raise SystemExit(f"dev and genbench share id(s) {sorted(shared)[:5]}: ids must be distinct in one input")
    # The same columns in every shard (dev rows carry source_type, variants base_id and variant): the
    # engine passes extra columns through, and results of one run should read as one table.
    common = [c for c in tables["dev"].column_names if all(c in t.column_names for t in tables.values())]
    tmp = shards.with_name(shards.name + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    for name, table in tables.items():
        write_shards(table.select(common), tmp, rows_per_shard=64, prefix=name)
    tmp.rename(shards)
    return shards


def cmd_serve(a: argparse.Namespace) -> int:
    bench = Path(a.bench)
    out = Path(a.out or Path(a.work) / f"serve-{a.tag}")
    cmd = _cli("engine") + ["run", "--input", str(serve_input(bench, _genbench(a))), "--out", str(out), "--overwrite"]
    if a.model:
        cmd += ["--model", a.model]
    if a.config:
        cmd += ["--config", a.config]
    for ad in a.adapter or []:
        cmd += ["--adapter", ad]
    for s in a.set or []:
        cmd += ["--set", s]
    cmd += a.engine_args or []
    rc = _run(cmd).returncode
    return 0 if rc in (0, 1) else rc  # 1 = some rows errored: still a result to score


def _best_line() -> str | None:
    if not RESULTS_MD.exists():
        return None
    for line in RESULTS_MD.read_text(encoding="utf-8").splitlines():
        if line.startswith("best: "):
            return line[len("best: "):].strip().strip("`")
    return None


def _versions() -> str:
    out = []
    for mod in ("vllm", "torch", "transformers", "peft"):
        try:
            from importlib.metadata import version

            out.append(f"{mod} {version(mod)}")
        except Exception:  # noqa: BLE001 - a missing library is simply not listed
            pass
    return ", ".join(out)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def split_results(results: Path, golds: dict[str, Path], out: Path) -> dict[str, Path]:
    """One folder of result shards per benchmark whose gold ids have rows in `results` (one engine pass
    held them all); rows are filtered by id, every column kept."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from reportminer.data.io import iter_jsonl, parquet_files

    ids = {b: pa.array(sorted({str(r.obj.get("id") or r.id) for r in iter_jsonl(g)})) for b, g in golds.items()}
    files = [f for f in parquet_files(results) if not any(part.startswith("_") for part in f.relative_to(results).parts)]
    done: dict[str, Path] = {}
    for b in golds:
        folder = out / b
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        for f in files:
            t = pq.read_table(f)
            keep = t.filter(pc.is_in(t.column("id"), value_set=ids[b]))
            if keep.num_rows:
                folder.mkdir(parents=True, exist_ok=True)
                pq.write_table(keep, folder / f.name)
                done[b] = folder
    return done


def adapters_in(results: Path) -> list[str]:
    """Adapter names of engine results, in order of appearance (a null adapter is evalkit's `base`)."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from reportminer.data.io import parquet_files

    names: list[str] = []
    for f in parquet_files(results):
        col = pq.read_table(f, columns=["adapter"]).column("adapter").to_pylist() if "adapter" in pq.read_schema(f).names else [None]
        for n in col:
            n = n or "base"
            if n not in names:
                names.append(n)
    return names


def _load(p: Path) -> dict:
    return json.loads(p.read_text(encoding="utf-8"))


def count_brief(s: dict) -> dict:
    """The count matrix in the figures issue 16 names: one-metric cases answered with 2+, background cases
    answered with 1+, answers of 3+, and predicted / gold."""
    cm = s.get("count_matrix") or {}
    labels, cells = cm.get("counts", []), cm.get("cases", [])

    def row(g: int) -> list[int]:
        return cells[labels.index(g)] if g in labels else []

    one, zero = row(1), row(0)
    return {
        "gold1_pred2plus": sum(one[2:]), "gold1": sum(one),
        "gold0_pred1plus": sum(zero[1:]), "gold0": sum(zero),
        "pred3plus": sum(sum(r[3:]) for r in cells), "n": s.get("n"),
        "pred_gold": (s.get("pred_total") or 0) / max(1, s.get("gold_total") or 0),
        "pred_hist": [sum(r[j] for r in cells) for j in range(len(labels))],
        "gold_hist": [sum(r) for r in cells],
    }


def _compare(gold: Path, base_cases: Path, base_name: str, adapter: str, cases: Path, out_json: Path) -> dict | None:
    _run(_cli("evalkit") + ["compare", "--gold", str(gold), f"{base_name}={base_cases}", f"{adapter}={cases}",
                            "--json", str(out_json)], stdout=subprocess.DEVNULL)
    if not out_json.exists():
        return None
    c = _load(out_json)
    return next((x for x in c.get("paired", []) if x.get("run") == adapter), None)


def score_results(a: argparse.Namespace) -> dict:
    """Split, score, perturbation check and compare; returns the report (also written as JSON and Markdown)."""
    bench = Path(a.bench)
    results = Path(a.results)
    tag = results.name
    scores = Path(a.work) / "scores" / tag
    scores.mkdir(parents=True, exist_ok=True)
    golds = gold_files(bench, _genbench(a))
    parts = split_results(results, golds, scores / "split")
    adapters = adapters_in(results)
    baseline = a.baseline if a.baseline != "best" else _best_line()
    report: dict = {"results": str(results), "golds": {b: str(g) for b, g in golds.items()}, "adapters": {},
                    "baseline": baseline, "gen_baseline": a.gen_baseline}
    for ad in adapters:
        entry: dict = {}
        for b, part in parts.items():
            js, cases = scores / f"{ad}.{b}.json", scores / f"{ad}.{b}.cases.parquet"
            rc = _run(_cli("evalkit") + ["score", "--gold", str(golds[b]), str(part), "--adapter", ad, "--json", str(js),
                                         "--cases", str(cases), "-q"]).returncode
            if rc not in (0, 1) or not js.exists():
                entry[b] = {"error": f"evalkit score exited {rc}"}
                continue
            s = _load(js)
            entry[b] = {
                "n": s["n"], "pass_rate": s.get("pass_rate"), "strict_rate": s.get("strict_rate"), "f1": s.get("f1"),
                "type_accuracy": s.get("type_accuracy"), "json_valid_rate": s.get("json_valid_rate"),
                "missing": s.get("missing"), "by_scenario": {k: [v.get("passed", 0), v.get("n", 0)]
                                                             for k, v in sorted(s.get("by_scenario", {}).items(), key=_scen_order)},
                "count": count_brief(s), "cases": str(cases),
            }
        if "genp" in parts and "error" not in entry.get("genp", {"error": 1}):
            pj = scores / f"{ad}.perturb.json"
            _run(_cli("evalkit") + ["perturb", "check", f"{ad}={entry['genp']['cases']}", "--json", str(pj),
                                    "--show-moved", "0"], stdout=subprocess.DEVNULL)
            if pj.exists():
                p = _load(pj)
                entry["perturb"] = {"cases": p["cases"], "changed": p["changed"], "share_changed": p["share_changed"],
                                    "ins": [p["by_kind"]["ins"]["changed"], p["by_kind"]["ins"]["variants"],
                                            p["by_kind"]["ins"]["mean_delta"]],
                                    "rem": [p["by_kind"]["rem"]["changed"], p["by_kind"]["rem"]["variants"],
                                            p["by_kind"]["rem"]["mean_delta"]],
                                    "by_scenario": {k: [v["changed"], v["cases"]] for k, v in sorted(p["by_scenario"].items(), key=_scen_order)},
                                    "missing_pairs": p["missing_pairs"]}
        # against the baseline: an adapter of these results (both benchmarks), or cases files
        bases: dict[str, tuple[str, Path]] = {}
        if baseline and baseline in adapters and baseline != ad:
            for b in ("dev", "gen"):
                if b in entry and "cases" in entry[b]:
                    bases[b] = (baseline, scores / f"{baseline}.{b}.cases.parquet")
        elif baseline and baseline not in adapters and Path(baseline).exists():
            bases["dev"] = ("best" if a.baseline == "best" else Path(baseline).stem, Path(baseline))
        if a.gen_baseline and Path(a.gen_baseline).exists():
            bases["gen"] = (Path(a.gen_baseline).stem, Path(a.gen_baseline))
        entry["compare"] = {}
        for b, (bname, bcases) in bases.items():
            if b not in entry or "cases" not in entry[b] or not bcases.exists():
                continue
            if bcases.resolve() == Path(entry[b]["cases"]).resolve():
                continue
            d = _compare(golds[b], bcases, f"base-{bname}", ad, Path(entry[b]["cases"]), scores / f"{ad}.{b}.compare.json")
            if d:
                entry["compare"][b] = {"baseline": bname, "d_pass": d["d_pass_rate"], "d_pass_ci": d["d_pass_ci"],
                                       "pass_significant": d["pass_significant"], "mcnemar_p": d["mcnemar_p"],
                                       "d_f1": d["d_f1"], "d_f1_ci": d["d_f1_ci"], "f1_significant": d["f1_significant"]}
        report["adapters"][ad] = entry
    (scores / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md = report_markdown(report)
    (scores / "report.md").write_text(md, encoding="utf-8")
    return report


def _scen_order(kv: tuple) -> tuple:
    return (list(SHORT).index(kv[0]) if kv[0] in SHORT else len(SHORT), kv[0])


SHORT = {"single_metric": "single", "multi_metric": "multi", "boundary_many_numbers_one_core": "boundary",
         "financial_vs_business_classification": "classif.", "empty_output_background": "empty",
         "mixed_financial_business": "mixed"}


def report_markdown(report: dict) -> str:
    """The report as Markdown tables: one row per adapter and benchmark, then perturbation and compares."""
    out = [f"results: `{report['results']}`", ""]
    head = ("| adapter | bench | n | pass % | strict % | F1 % | pred/gold | 1-gold → 2+ | 0-gold → 1+ | 3+ answers "
            "| type acc % | pass by scenario | Δpass vs baseline [95 % CI] | ΔF1 [95 % CI] |")
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for ad, e in report["adapters"].items():
        for b in ("dev", "gen"):
            r = e.get(b)
            if not r or "error" in r:
                continue
            c = r["count"]
            scen = " ".join(f"{SHORT.get(k, k)} {v[0]}/{v[1]}" for k, v in r["by_scenario"].items())
            cmp_ = e.get("compare", {}).get(b)
            if cmp_:
                lo, hi = cmp_["d_pass_ci"]
                flo, fhi = cmp_["d_f1_ci"]
                vs = (f"{100 * cmp_['d_pass']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] vs {cmp_['baseline']}"
                      f"{'' if cmp_['pass_significant'] else ' (noise)'}")
                vf = f"{100 * cmp_['d_f1']:+.1f} [{100 * flo:+.1f}, {100 * fhi:+.1f}]{'' if cmp_['f1_significant'] else ' (noise)'}"
            else:
                vs = vf = "–"
            out.append(f"| {ad} | {b} | {r['n']} | {_pct(r['pass_rate'])} | {_pct(r['strict_rate'])} | {_pct(r['f1'])} "
                       f"| {c['pred_gold']:.2f} | {c['gold1_pred2plus']}/{c['gold1']} | {c['gold0_pred1plus']}/{c['gold0']} "
                       f"| {c['pred3plus']}/{c['n']} | {_pct(r['type_accuracy'])} | {scen} | {vs} | {vf} |")
    pert = [(ad, e["perturb"]) for ad, e in report["adapters"].items() if "perturb" in e]
    if pert:
        out += ["", "| adapter | cases whose count moved (target ≤ 10 %) | insert: moved / variants, mean Δ "
                "| remove: moved / variants, mean Δ | by scenario |", "|---|---|---|---|---|"]
        for ad, p in pert:
            def k(v: list) -> str:
                return f"{v[0]}/{v[1]}, {'–' if v[2] is None else f'{v[2]:+.2f}'}"

            scen = " ".join(f"{SHORT.get(s, s)} {v[0]}/{v[1]}" for s, v in p["by_scenario"].items())
            out.append(f"| {ad} | {p['changed']}/{p['cases']} = {_pct(p['share_changed'])} % | {k(p['ins'])} | {k(p['rem'])} "
                       f"| {scen} |")
    return "\n".join(out) + "\n"


def cmd_score(a: argparse.Namespace) -> int:
    report = score_results(a)
    if not report["adapters"]:
        print(f"{a.results}: no adapters found in the results", file=sys.stderr)
        return 3
    md = report_markdown(report)
    print(md)
    if a.record:
        _append(md, a)
    return 0


def _append(md: str, a: argparse.Namespace) -> None:
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    block = (f"\n### {a.title or Path(a.results).name}\n\n"
             f"{a.date}; command: `{shlex.join(sys.argv)}`; machine: {a.machine or platform.node()}; {_versions()}\n\n" + md)
    RESULTS_MD.write_text(text + block, encoding="utf-8")


def cmd_all(a: argparse.Namespace) -> int:
    rc = cmd_train(a)
    if rc:
        return rc
    a.adapter = [f"{a.name}={Path(a.work) / a.name / 'best'}"]
    a.tag = a.name
    a.out = None
    a.config = None
    a.engine_args = []
    rc = cmd_serve(a)
    if rc:
        return rc
    a.results = str(Path(a.work) / f"serve-{a.name}")
    return cmd_score(a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=str(ROOT / ".cache" / "devbench"), help="dev benchmark folder")
    ap.add_argument("--work", default=str(ROOT / ".cache" / "experiments"), help="runs, results and scores")
    ap.add_argument("--genbench", default=str(GENBENCH),
                    help="generalisation benchmark (cases with perturb fields) served and scored beside dev; 'none' = dev only")
    sub = ap.add_subparsers(dest="step", required=True)

    def train_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", required=True)
        p.add_argument("--recipe", default="qwen2.5-0.5b-lora")
        p.add_argument("--model", required=True, help="base model folder")
        p.add_argument("--set", action="append", help="recipe override key=value (repeatable)")

    def score_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--baseline", default="best",
                       help="an adapter of the same results (compared on dev and genbench), a dev cases file, or 'best' "
                            "= docs/RESULTS.md's best: line (dev)")
        p.add_argument("--gen-baseline", default=None, help="a genbench cases file to compare with (e.g. another serve's)")
        p.add_argument("--record", action=argparse.BooleanOptionalAction, default=True,
                       help="append the report to docs/RESULTS.md")
        p.add_argument("--title", default=None)
        p.add_argument("--machine", default=None)
        p.add_argument("--date", default=_dt.date.today().isoformat())

    p = sub.add_parser("train", help="trainer train on the benchmark's train split (--set extra_data=[...], graft_share=...)")
    train_args(p)
    p = sub.add_parser("serve", help="one engine run over dev + genbench + its perturbation variants")
    p.add_argument("--model", default=None)
    p.add_argument("--adapter", action="append", help="NAME=PATH (repeatable)")
    p.add_argument("--config", default=None)
    p.add_argument("--set", action="append")
    p.add_argument("--tag", default="run")
    p.add_argument("--out", default=None)
    p.add_argument("engine_args", nargs="*", help="after --: more engine run flags")
    p = sub.add_parser("score", help="split by benchmark, evalkit score, perturb check, compare; report.md/json")
    p.add_argument("--results", required=True)
    score_args(p)
    p = sub.add_parser("all", help="train, serve, score")
    train_args(p)
    score_args(p)
    a = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return {"train": cmd_train, "serve": cmd_serve, "score": cmd_score, "all": cmd_all}[a.step](a)


if __name__ == "__main__":
    sys.exit(main())
