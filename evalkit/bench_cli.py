"""`evalkit bench`: build and check the benchmarks, score an experiment's results on them (thin over
evalkit.devbench, evalkit.genbench and evalkit.experiment).

Imports nothing heavy at import time, like evalkit.cli: each command imports the module it drives.
scripts/build_dev_benchmark.py, scripts/build_genbench.py and scripts/experiment.py call these commands with
the repository's folders as defaults.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from reportminer.data.errors import EXIT_FINDINGS, DataError, exit_on_error
from reportminer.data.jsonout import json_option, to_stdout, write_json_out

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(file_okay=False, path_type=Path)
_SETS = {"bench": "benchmarks/genbench", "train": "benchmarks/restraint-train"}
_other_out = click.option("--other-out", type=click.Path(file_okay=False, path_type=Path), default=None,
                          help="bench/train: the other set's built folder (default its benchmarks/ folder).")


@click.group("bench")
def bench() -> None:
    """Build and check the benchmarks; score an experiment's engine results on them.

    \b
    evalkit bench build-dev --seed-dir SEED --out DIR        # dev benchmark + train split, from the seed
    evalkit bench build-gen bench|train --src WRITERS        # genbench cases / the team's training rows
    evalkit bench check dev|bench|train [--out DIR]          # re-check a built folder
    evalkit bench score RESULTS --bench DIR --out SCORES     # dev + genbench + perturbation, one report
    """


def _report_check(problems: list[str], ok: str) -> None:
    for p in problems:
        click.echo(f"check failed: {p}", err=True)
    if problems:
        sys.exit(EXIT_FINDINGS)
    click.echo(ok)


@bench.command("build-dev")
@click.option("--seed-dir", required=True, type=_DIR, help="The seed folder (data/type_{a,b,c,d}.jsonl, sample_data.jsonl).")
@click.option("--out", required=True, type=_OUT, help="Folder to write dev.jsonl, train.jsonl, manifest.json into.")
@click.option("--seed", type=int, default=7, show_default=True, help="Sampling seed.")
@click.option("--scale", type=int, default=3, show_default=True, help="Cases per hidden case (3: 150 cases).")
@click.option("--all-rows", is_flag=True,
              help="Issue 16's validation protocol instead: train.jsonl = all 700 data/ rows, dev.jsonl = the 50 "
                   "sample_data rows (none is in data/); --seed and --scale do not apply.")
@exit_on_error("evalkit")
def build_dev(seed_dir: Path, out: Path, seed: int, scale: int, all_rows: bool) -> None:
    """The dev benchmark (the hidden benchmark's composition x --scale, held out from training) and the
    train split, from the seed; then checked as `check dev` does (exit 1 on a problem).

    The same seed files, --seed and --scale give the same bytes. Rules: reportminer.evalkit.devbench.

    \b
      evalkit bench build-dev --seed-dir ../shared/seed --out .cache/devbench
      evalkit bench build-dev --seed-dir ../shared/seed --out .stage/bench700 --all-rows   # train as the README does
    """
    from . import devbench

    b = devbench.build_all_rows(seed_dir) if all_rows else devbench.build(seed_dir, seed=seed, scale=scale)
    paths = devbench.write(b, out)
    click.echo(b.table)
    click.echo(f"wrote {paths['dev']}, {paths['train']}, {paths['manifest']}")
    _report_check(devbench.check(out, seed_dir),
                  f"check ok: {out}: dev and train share no paragraph, ids unique, sha256s match")


@bench.command("build-gen")
@click.argument("set_name", metavar="SET", type=click.Choice(sorted(_SETS)))
@click.option("--src", required=True, type=_DIR,
              help="The writers' folder: W*.jsonl (bench) or T*.jsonl (train).")
@click.option("--out", type=_OUT, default=None, help="Output folder (default benchmarks/genbench | benchmarks/restraint-train).")
@click.option("--labels", type=_FILE, default=None, help="bench: adjudicated labels, JSONL of {id, output}.")
@click.option("--second", type=_FILE, default=None, help="bench: labeller 2's blind labels, JSONL of {id, output}.")
@click.option("--other-src", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The other set's writers' folder, to refuse shared paragraphs before it is built.")
@_other_out
@click.option("--seed-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The seed folder, read only to refuse copies (absent: skipped).")
@exit_on_error("evalkit")
def build_gen(set_name: str, src: Path, out: Path | None, labels: Path | None, second: Path | None,
              other_src: Path | None, other_out: Path | None, seed_dir: Path | None) -> None:
    """Assemble the generalisation benchmark (bench) or the team's training rows (train) from the writers'
    files, validated, kept apart from the other set and the seed, with composition stats.

    Any refusal (a row the validator rejects, a shared paragraph, a perturbation that does not apply) is
    listed by source file and line, nothing is written, exit 1. Rules: reportminer.evalkit.genbench.
    """
    from . import genbench

    b = genbench.build(set_name, src, labels=labels, second=second, other_src=other_src, other_out=other_out,
                       seed_dir=seed_dir)
    for w in b.warnings:
        click.echo(f"warning: near copy: {w}", err=True)
    if b.errors:
        for err in b.errors:
            click.echo(f"error: {err}", err=True)
        click.echo(f"{len(b.errors)} error(s): nothing written", err=True)
        sys.exit(EXIT_FINDINGS)
    paths = genbench.write(b, set_name, out)
    click.echo(genbench.table(b.stats))
    click.echo(f"wrote {paths['rows']} ({len(b.rows)} rows) and {paths['stats']}")


@bench.command("check")
@click.argument("set_name", metavar="SET", type=click.Choice(["dev", *sorted(_SETS)]))
@click.option("--out", type=_OUT, default=None,
              help="The built folder (needed for dev; default benchmarks/genbench | benchmarks/restraint-train).")
@_other_out
@click.option("--seed-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="dev: the seed folder, to check its files still have the recorded sha256s.")
@exit_on_error("evalkit")
def check(set_name: str, out: Path | None, other_out: Path | None, seed_dir: Path | None) -> None:
    """Re-check a built folder: dev (dev and train disjoint, ids unique, sha256s), bench or train (sha256
    against stats.json, ids, validation, perturbation). Exit 1 on a problem."""
    if set_name == "dev":
        from . import devbench

        if out is None:
            raise click.UsageError("check dev needs --out (the folder build-dev wrote)")
        _report_check(devbench.check(out, seed_dir),
                      f"check ok: {out}: dev and train share no paragraph, ids unique, sha256s match")
        return
    from . import genbench

    problems = genbench.check(set_name, out, other_out=other_out)
    for p in problems:
        click.echo(f"check failed: {p}", err=True)
    click.echo("check ok" if not problems else f"{len(problems)} problem(s)")
    if problems:
        sys.exit(EXIT_FINDINGS)


@bench.command("score")
@click.argument("results", type=_DIR)
@click.option("--bench", "bench_dir", required=True, type=_DIR, help="The dev benchmark folder (dev.jsonl).")
@click.option("--out", required=True, type=_OUT, help="The scores folder (split results, summaries, report.md/json).")
@click.option("--genbench", type=_FILE, multiple=True,
              help="The generalisation benchmark the results also hold (cases with perturb fields); repeat it to "
                   "score several as one union (genbench-flat + genbench-cause: the benchmark defaults are chosen by).")
@click.option("--baseline", default=None,
              help="An adapter of the same results (compared on dev and genbench) or a dev cases file.")
@click.option("--baseline-name", default=None, help="Name of a --baseline cases file in the report (default its stem).")
@click.option("--gen-baseline", type=_FILE, default=None, help="A genbench cases file to compare with.")
@click.option("--present-only", is_flag=True,
              help="Score only the genbench cases the results answered in full (the case and its variants, for "
                   "every adapter): a serve cut short by its lease. The cut files go to OUT/present/; stderr "
                   "says how many cases each kept. Dev rows are scored as they are.")
@json_option("the report")
@exit_on_error("evalkit")
def score(results: Path, bench_dir: Path, out: Path, genbench: tuple[Path, ...], baseline: str | None,
          baseline_name: str | None, gen_baseline: Path | None, present_only: bool, json_out: str | None) -> None:
    """Score one engine pass over dev + genbench + its perturbation variants: split by id, score each
    benchmark against its own gold, perturbation share, compare with the baseline; report.md on stdout.

    \b
    Example:
      evalkit bench score .cache/experiments/serve-m05 --bench .cache/devbench \\
          --genbench benchmarks/genbench-flat/cases.jsonl --genbench benchmarks/genbench-cause/cases.jsonl \
          --out .cache/experiments/scores/serve-m05 --baseline b05
      evalkit bench score .cache/r8/serve-m05 --bench .stage/bench700 --present-only \
          --genbench benchmarks/genbench-cause/cases.jsonl --out .cache/r8/cause/serve-m05
    """
    from .experiment import genbench_union, present_cases, report_markdown, score_results

    files = list(genbench)
    if present_only and files:
        files, counts = present_cases(results, files, out / "present")
        for f, (kept, total) in counts.items():
            click.echo(f"present-only: {f}: {kept} of {total} cases answered in full", err=True)
    gb = genbench_union(bench_dir, files) if files else None
    report = score_results(results, bench_dir, out, genbench=gb, baseline=baseline,
                           baseline_name=baseline_name, gen_baseline=gen_baseline)
    if not report["adapters"]:
        raise DataError(f"{results}: no adapters found in the results")
    if json_out:
        write_json_out(report, json_out)
    click.echo(report_markdown(report), err=to_stdout(json_out))
