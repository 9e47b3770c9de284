"""A quality experiment's benchmark side: one engine input for both benchmarks, and its results scored per benchmark.

Two benchmarks, one engine pass (issue 16): the dev benchmark's dev.jsonl (evalkit.devbench) AND the
generalisation benchmark (benchmarks/genbench/cases.jsonl, evalkit.genbench) AND its perturbation variants
(`<id>~ins` / `<id>~rem`, evalkit.perturb) go into one engine input (`serve_input`, ids checked distinct).
`score_results` splits the engine's results by id, scores each benchmark against its own gold (dev, gen,
gen+variants), measures the perturbation share on the variants, compares every adapter with a baseline on
both benchmarks, and writes into the scores folder:

  split/<dev|gen|genp>/                        the results of each benchmark (every column kept)
  <adapter>.<dev|gen|genp>.json, .cases.parquet  evalkit score's summary and cases
  <adapter>.perturb.json                       evalkit perturb check
  <adapter>.<dev|gen>.compare.json             evalkit compare against the baseline
  report.json, report.md                       per adapter: pass, strict, F1, predicted/gold, pass per
                                               scenario, the count matrix in brief, the perturbation share,
                                               the paired intervals

    evalkit bench score RESULTS --bench .cache/devbench --genbench benchmarks/genbench/cases.jsonl \
        --out .cache/experiments/scores/m05 --baseline b05

scripts/experiment.py trains and serves through the trainer's and engine's CLIs and calls this for the
rest. `gold_files` and `serve_input` run on the GPU machine, whose image has no polars: they import only
data.io and evalkit.perturb (polars there is imported by the functions that need it); the scoring
functions import polars, and run anywhere.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from reportminer.data.errors import DataError
from reportminer.data.scenarios import SHORT, scenario_order

BENCHES = ("dev", "gen", "genp")  # the dev benchmark, the generalisation benchmark, the latter + its variants


def _sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def genbench_union(bench: Path, files: list[Path]) -> Path:
    """Several generalisation benchmarks served and scored as one: their cases concatenated, in the given
    order, into the bench folder once per content (`genbench-union-<sha>.jsonl`). Round 6 validated
    genbench-flat + genbench-cause as a union (docs/RESULTS.md); one file comes back as it is. Ids must be
    distinct across the files: a repeated id is a data error naming both files and the line."""
    if len(files) == 1:
        return files[0]
    seen: dict[str, str] = {}
    lines: list[str] = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                cid = str(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{f}:{n}: not a benchmark case with an id ({e})") from e
            if cid in seen:
                raise DataError(f"{f}:{n}: id {cid!r} is also in {seen[cid]}: ids must be distinct across benchmarks")
            seen[cid] = f"{f}:{n}"
            lines.append(line)
    out = bench / f"genbench-union-{_sha(*files)}.jsonl"
    if not out.exists():
        from reportminer.data.io import atomic_path

        with atomic_path(out) as tmp:  # a temporary name of its own: two serves may write it at once
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def present_cases(results: Path, files: list[Path], out: Path) -> tuple[list[Path], dict[str, tuple[int, int]]]:
    """Each genbench file cut to the cases an engine pass answered in full: the case and each of its
    perturbation variants has a row for every adapter in `results`. A serve cut short by a lease scores only
    what it served (round 7 served 34 of genbench-cause's 80 cases; the rest would otherwise count as fails),
    and the cut is the same for every adapter, so their comparison stays paired. Writes `out/<stem>.jsonl`
    per file (the file's parent folder name when the stem is `cases`, as in benchmarks/NAME/cases.jsonl); a
    file with no case answered is left out (its count says 0); returns the paths and {file: (kept, total)}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reportminer.data.io import atomic_path, iter_jsonl

    from .perturb import variants

    tables = []
    for f in result_files(results):
        t = pq.read_table(f, columns=[c for c in ("id", "adapter") if c in pq.read_schema(f).names])
        if "adapter" not in t.column_names:  # base-model results (adapters_in's `base`)
            t = t.append_column("adapter", pa.nulls(t.num_rows, pa.string()))
        tables.append(t.select(["id", "adapter"]).cast(pa.schema([("id", pa.string()), ("adapter", pa.string())])))
    ids = pa.concat_tables(tables).group_by("adapter").aggregate([("id", "distinct")]) if tables else None
    per_adapter = [set(x) for x in ids.column("id_distinct").to_pylist()] if ids is not None else []
    answered = set.intersection(*per_adapter) if per_adapter else set()
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    counts: dict[str, tuple[int, int]] = {}
    for f in files:
        kept: list[str] = []
        total = 0
        for r in iter_jsonl(f):
            total += 1
            need = [r.id] + [v["id"] for v in variants(r.obj, f"{r.file}:{r.line}")]
            if all(x in answered for x in need):
                kept.append(json.dumps(r.obj, ensure_ascii=False))
        counts[str(f)] = (len(kept), total)
        if not kept:  # left out of the union; the count says so
            continue
        stem = f.parent.name if f.stem == "cases" else f.stem
        dst = out / f"{stem}.jsonl"
        with atomic_path(dst) as tmp:
            tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
        paths.append(dst)
    if not paths:
        raise DataError(f"{results}: none of the cases of {', '.join(map(str, files))} was answered in full")
    return paths, counts


def gold_files(bench: Path, genbench: Path | None) -> dict[str, Path]:
    """bench -> its gold JSONL: dev.jsonl; the genbench cases without `perturb` (gen) and with their
    variants (genp), written once into the bench folder per genbench content (same bytes for the same file)."""
    golds = {"dev": bench / "dev.jsonl"}
    if genbench is None:
        return golds
    from reportminer.data.io import write_jsonl

    from .perturb import expand_file

    tag = _sha(genbench)
    gen, genp = bench / f"genbench-{tag}.jsonl", bench / f"genbench-{tag}-perturbed.jsonl"
    if not (gen.exists() and genp.exists()):
        ex = expand_file(str(genbench))
        write_jsonl([r for r in ex.rows if "variant" not in r], gen)
        write_jsonl(ex.rows, genp)
    golds.update(gen=gen, genp=genp)
    return golds


def serve_input(bench: Path, genbench: Path | None) -> Path:
    """Parquet shards of dev.jsonl + the genbench cases and variants (one engine pass); ids must be distinct
    (a DataError otherwise). Shards are named by source (dev-*, gen-*) so results can also be told apart by file."""
    golds = gold_files(bench, genbench)
    srcs = [golds["dev"]] + ([golds["genp"]] if "genp" in golds else [])
    shards = bench / (f"shards-{_sha(*srcs)}" if genbench else "shards")
    if shards.exists():
        return shards
    from reportminer.data.io import jsonl_to_table, write_shards

    tables = {name: jsonl_to_table(src) for name, src in zip(("dev", "gen"), srcs)}
    if len(tables) == 2:
        shared = set(tables["dev"].column("id").to_pylist()) & set(tables["gen"].column("id").to_pylist())
        if shared:
            raise DataError(f"dev and genbench share id(s) {sorted(shared)[:5]}: ids must be distinct in one input")
    # The same columns in every shard (dev rows carry source_type, variants base_id and variant): the
    # engine passes extra columns through, and results of one run should read as one table.
    common = [c for c in tables["dev"].column_names if all(c in t.column_names for t in tables.values())]
    # A folder of this process's own, published by one rename. Two serves started together on one bench
    # folder (round 7: the bf16 and FP8 serves) shared the fixed name `<shards>.tmp`: one deleted and
    # rewrote what the other was writing, the other published the folder half-written (1 of 23 shards) and
    # both engines served only that. Whoever renames first wins; the other discards its copy.
    bench.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{shards.name}.", suffix=".tmp", dir=bench))
    for name, table in tables.items():
        write_shards(table.select(common), tmp, rows_per_shard=64, prefix=name)
    publish_dir(tmp, shards)
    return shards


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` to `final`; where another process published `final` first (the same
    content: both were built from the same sources), keep theirs and remove `tmp`."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def result_files(results: Path) -> list[Path]:
    """The engine's result shards under `results`, without its private folders (`_rowcache`, `_engine_*`)."""
    from reportminer.data.io import parquet_files

    return [f for f in parquet_files(results) if not any(part.startswith("_") for part in f.relative_to(results).parts)]


def split_results(results: Path, golds: dict[str, Path], out: Path) -> dict[str, Path]:
    """One folder of result shards per benchmark whose gold ids have rows in `results` (one engine pass
    held them all); rows are filtered by id, every column kept."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from reportminer.data.io import iter_jsonl

    ids = {b: pa.array(sorted({str(r.obj.get("id") or r.id) for r in iter_jsonl(g)})) for b, g in golds.items()}
    files = result_files(results)
    done: dict[str, Path] = {}
    for b in golds:
        folder = out / b
        if folder.exists():
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

    from reportminer.data.io import parquet_files

    names: list[str] = []
    for f in parquet_files(results):
        col = pq.read_table(f, columns=["adapter"]).column("adapter").to_pylist() if "adapter" in pq.read_schema(f).names else [None]
        for n in col:
            n = n or "base"
            if n not in names:
                names.append(n)
    return names


def count_brief(s: dict[str, Any]) -> dict[str, Any]:
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


def _scen_order(kv: tuple[str, Any]) -> tuple[int, str]:
    return scenario_order(kv[0])


def _score_one(gold: Path, part: Path, adapter: str, js: Path, cases: Path) -> dict[str, Any]:
    """`evalkit score --gold GOLD PART --adapter A --json JS --cases CASES`: the summary, files written."""
    from reportminer.data.io import write_json_atomic

    from .matchers import UpstreamMatcher
    from .score import score_paths, write_cases

    r = score_paths(gold, part, UpstreamMatcher(), adapter=adapter)[0]
    write_json_atomic(js, r.summary)
    write_cases(r.cases, cases)
    return r.summary


def _perturb_check(adapter: str, cases: Path, out_json: Path) -> dict[str, Any]:
    """`evalkit perturb check ADAPTER=CASES --json OUT`."""
    from reportminer.data.io import write_json_atomic

    from .perturb import stability_of_runs
    from .score import read_cases

    res = stability_of_runs([(adapter, read_cases(cases))])[0]
    write_json_atomic(out_json, res)
    return res


def _compare(base_cases: Path, base_name: str, adapter: str, cases: Path, out_json: Path) -> dict[str, Any] | None:
    """`evalkit compare BASE_NAME=BASE_CASES ADAPTER=CASES --json OUT`: the adapter's paired row."""
    from reportminer.data.io import write_json_atomic

    from .compare import Run, compare_runs
    from .options import DEFAULT_BOOTSTRAP
    from .score import read_cases

    c = compare_runs([Run(base_name, read_cases(base_cases)), Run(adapter, read_cases(cases))],
                     n_boot=DEFAULT_BOOTSTRAP, seed=0)
    write_json_atomic(out_json, c)
    return next((x for x in c.get("paired", []) if x.get("run") == adapter), None)


def score_results(results: Path, bench: Path, scores: Path, *, genbench: Path | None = None,
                  baseline: str | None = None, baseline_name: str | None = None,
                  gen_baseline: Path | None = None) -> dict[str, Any]:
    """Split, score, perturbation check and compare; returns the report (also written as report.json and
    report.md into `scores`).

    `baseline`: an adapter of these results (compared on dev and gen) or a dev cases file (named
    `baseline_name`, default its stem); `gen_baseline`: a genbench cases file. A benchmark whose results
    cannot be scored (a DataError) is reported as {"error": ...} and the others go on.
    """
    scores.mkdir(parents=True, exist_ok=True)
    golds = gold_files(bench, genbench)
    parts = split_results(results, golds, scores / "split")
    adapters = adapters_in(results)
    report: dict[str, Any] = {"results": str(results), "golds": {b: str(g) for b, g in golds.items()}, "adapters": {},
                              "baseline": baseline, "gen_baseline": None if gen_baseline is None else str(gen_baseline)}
    for ad in adapters:
        entry: dict[str, Any] = {}
        for b, part in parts.items():
            js, cases = scores / f"{ad}.{b}.json", scores / f"{ad}.{b}.cases.parquet"
            try:
                s = _score_one(golds[b], part, ad, js, cases)
            except DataError as e:
                entry[b] = {"error": f"evalkit score: {e}"}
                continue
            entry[b] = {
                "n": s["n"], "pass_rate": s.get("pass_rate"), "strict_rate": s.get("strict_rate"), "f1": s.get("f1"),
                "type_accuracy": s.get("type_accuracy"), "json_valid_rate": s.get("json_valid_rate"),
                "missing": s.get("missing"), "by_scenario": {k: [v.get("passed", 0), v.get("n", 0)]
                                                             for k, v in sorted(s.get("by_scenario", {}).items(), key=_scen_order)},
                "count": count_brief(s), "cases": str(cases),
            }
        if "genp" in parts and "error" not in entry.get("genp", {"error": 1}):
            p = _perturb_check(ad, Path(entry["genp"]["cases"]), scores / f"{ad}.perturb.json")
            entry["perturb"] = {"cases": p["cases"], "changed": p["changed"], "share_changed": p["share_changed"],
                                "ins": [p["by_kind"]["ins"]["changed"], p["by_kind"]["ins"]["variants"],
                                        p["by_kind"]["ins"]["mean_delta"]],
                                "rem": [p["by_kind"]["rem"]["changed"], p["by_kind"]["rem"]["variants"],
                                        p["by_kind"]["rem"]["mean_delta"]],
                                "by_scenario": {k: [v["changed"], v["cases"]] for k, v in sorted(p["by_scenario"].items(), key=_scen_order)},
                                "missing_pairs": p["missing_pairs"]}
        entry["compare"] = _compare_entry(ad, entry, adapters, scores, baseline, baseline_name, gen_baseline)
        report["adapters"][ad] = entry
    (scores / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (scores / "report.md").write_text(report_markdown(report), encoding="utf-8")
    return report


def _compare_entry(ad: str, entry: dict[str, Any], adapters: list[str], scores: Path, baseline: str | None,
                   baseline_name: str | None, gen_baseline: Path | None) -> dict[str, Any]:
    """Against the baseline: an adapter of these results (both benchmarks), or cases files."""
    bases: dict[str, tuple[str, Path]] = {}
    if baseline and baseline in adapters and baseline != ad:
        for b in ("dev", "gen"):
            if b in entry and "cases" in entry[b]:
                bases[b] = (baseline, scores / f"{baseline}.{b}.cases.parquet")
    elif baseline and baseline not in adapters and Path(baseline).exists():
        bases["dev"] = (baseline_name or Path(baseline).stem, Path(baseline))
    if gen_baseline and gen_baseline.exists():
        bases["gen"] = (gen_baseline.stem, gen_baseline)
    out: dict[str, Any] = {}
    for b, (bname, bcases) in bases.items():
        if b not in entry or "cases" not in entry[b] or not bcases.exists():
            continue
        if bcases.resolve() == Path(entry[b]["cases"]).resolve():
            continue
        d = _compare(bcases, f"base-{bname}", ad, Path(entry[b]["cases"]), scores / f"{ad}.{b}.compare.json")
        if d:
            out[b] = {"baseline": bname, "d_pass": d["d_pass_rate"], "d_pass_ci": d["d_pass_ci"],
                      "pass_significant": d["pass_significant"], "mcnemar_p": d["mcnemar_p"],
                      "d_f1": d["d_f1"], "d_f1_ci": d["d_f1_ci"], "f1_significant": d["f1_significant"]}
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def report_markdown(report: dict[str, Any]) -> str:
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
            def k(v: list[Any]) -> str:
                return f"{v[0]}/{v[1]}, {'–' if v[2] is None else f'{v[2]:+.2f}'}"

            scen = " ".join(f"{SHORT.get(s, s)} {v[0]}/{v[1]}" for s, v in p["by_scenario"].items())
            out.append(f"| {ad} | {p['changed']}/{p['cases']} = {_pct(p['share_changed'])} % | {k(p['ins'])} | {k(p['rem'])} "
                       f"| {scen} |")
    return "\n".join(out) + "\n"
