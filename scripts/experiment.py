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

Layout under `--work` (default `.cache/experiments`, git-ignored): `<name>/` is the trainer's run folder
(`best/`, `final/`, manifests), `serve-<tag>/` the engine's Parquet results, `scores/` the evalkit JSON and
cases files. `docs/RESULTS.md` gets one row per scored adapter: the command, versions, machine, pass /
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


def _shards(bench: Path) -> Path:
    """dev.jsonl as Parquet shards once (the engine's input format); scenario and ids pass through."""
    shards = bench / "shards"
    if not shards.exists():
        sys.path.insert(0, str(ROOT))
        from reportminer.data.io import jsonl_to_table, write_shards

        write_shards(jsonl_to_table(bench / "dev.jsonl"), shards, rows_per_shard=64)
    return shards


def cmd_serve(a: argparse.Namespace) -> int:
    bench = Path(a.bench)
    out = Path(a.out or Path(a.work) / f"serve-{a.tag}")
    cmd = _cli("engine") + ["run", "--input", str(_shards(bench)), "--out", str(out), "--overwrite"]
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


def cmd_score(a: argparse.Namespace) -> int:
    bench = Path(a.bench)
    gold = bench / "dev.jsonl"
    scores = Path(a.work) / "scores"
    scores.mkdir(parents=True, exist_ok=True)
    tag = Path(a.results).name
    summary = scores / f"{tag}.json"
    rc = _run(_cli("evalkit") + ["score", "--gold", str(gold), str(a.results), "--json", str(summary),
                                 "--cases", str(scores / f"{tag}.cases.parquet")]).returncode
    if rc not in (0, 1):
        return rc
    per_adapter = sorted(scores.glob(f"{tag}.*.json")) or [summary]
    baseline = a.baseline if a.baseline != "best" else _best_line()
    rows = []
    for js in per_adapter:
        if js.name.endswith(".compare.json"):
            continue
        s = json.loads(js.read_text(encoding="utf-8"))
        adapter = js.stem[len(tag) + 1:] if js != summary else tag
        cases = scores / f"{tag}.cases.{adapter}.parquet"  # evalkit's name when results hold several adapters
        if not cases.exists():
            cases = scores / f"{tag}.cases.parquet"
        vs = "–"
        if baseline and Path(baseline).exists() and Path(baseline).resolve() != cases.resolve():
            cmp_json = js.with_name(js.stem + ".compare.json")
            _run(_cli("evalkit") + ["compare", "--gold", str(gold), f"best={baseline}", f"{adapter}={cases}",
                                    "--json", str(cmp_json)])
            if cmp_json.exists():
                c = json.loads(cmp_json.read_text(encoding="utf-8"))
                d = next((x for x in c.get("paired", []) if x.get("run") == adapter), None)
                if d:
                    lo, hi = d["d_pass_ci"]
                    vs = (f"{100 * d['d_pass_rate']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                          f"{'' if d['pass_significant'] else ' (within noise)'}")
        scen = s.get("by_scenario", {})
        per = " ".join(f"{k[:6]} {v.get('passed', 0)}/{v.get('n', 0)}" for k, v in sorted(scen.items()))
        ratio = (s.get("pred_total") or 0) / max(1, s.get("gold_total") or 0)
        rows.append(f"| {a.date} | {adapter} | {s['n']} | {_pct(s.get('pass_rate'))} | {_pct(s.get('strict_rate'))} "
                    f"| {_pct(s.get('f1'))} | {ratio:.2f} | {_pct(s.get('type_accuracy'))} "
                    f"| {_pct(s.get('json_valid_rate'))} | {per} | {vs} | `{cases.relative_to(ROOT) if cases.is_relative_to(ROOT) else cases}` |")
    for r in rows:
        print(r)
    if a.record:
        _append(rows, a)
    return 0


def _append(rows: list[str], a: argparse.Namespace) -> None:
    head = ("| date | adapter | n | pass % | strict % | F1 % | pred/gold | type acc % | valid % | pass by scenario "
            "| Δpass vs best [95 % CI] | cases |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    block = (f"\n### {a.title or Path(a.results).name}\n\n"
             f"command: `{shlex.join(sys.argv)}`; machine: {a.machine or platform.node()}; {_versions()}\n\n"
             + head + "\n".join(rows) + "\n")
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
    sub = ap.add_subparsers(dest="step", required=True)

    def train_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", required=True)
        p.add_argument("--recipe", default="qwen2.5-0.5b-lora")
        p.add_argument("--model", required=True, help="base model folder")
        p.add_argument("--set", action="append", help="recipe override key=value (repeatable)")

    def score_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--baseline", default="best", help="cases file to compare with; 'best' = docs/RESULTS.md's best: line")
        p.add_argument("--record", action=argparse.BooleanOptionalAction, default=True, help="append to docs/RESULTS.md")
        p.add_argument("--title", default=None)
        p.add_argument("--machine", default=None)
        p.add_argument("--date", default=_dt.date.today().isoformat())

    p = sub.add_parser("train", help="trainer train on the benchmark's train split")
    train_args(p)
    p = sub.add_parser("serve", help="engine run over the benchmark's dev set")
    p.add_argument("--model", default=None)
    p.add_argument("--adapter", action="append", help="NAME=PATH (repeatable)")
    p.add_argument("--config", default=None)
    p.add_argument("--set", action="append")
    p.add_argument("--tag", default="run")
    p.add_argument("--out", default=None)
    p.add_argument("engine_args", nargs="*", help="after --: more engine run flags")
    p = sub.add_parser("score", help="evalkit score + compare, append to docs/RESULTS.md")
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
