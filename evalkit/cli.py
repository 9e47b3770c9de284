"""`evalkit`: score, compare and report extraction runs against gold labels (a thin layer over the API)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from reportminer.data.errors import EXIT_FINDINGS, DataError, ReportminerError, fail
from reportminer.data.jsonout import json_option, to_stdout, write_json_out

from .bench_cli import bench
from .options import DEFAULT_BOOTSTRAP, MATCHERS, PRIMARY_METRICS

# Imports nothing heavy at import time (polars, pyarrow, numpy: ~0.35 s): each command imports what it
# uses, so `evalkit score` starts its JSONL decode workers before those imports (`score`).

EX = "evalkit/examples"


def _matcher_options(f):
    f = click.option("--embed-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder for cached name embeddings (default: the reportminer cache; '-' disables).")(f)
    f = click.option("--model", default=None, metavar="PATH",
                     help="embedding matcher: a local sentence-transformers folder (default: offline USE multilingual v3).")(f)
    f = click.option("--threshold", type=float, default=None,
                     help="fuzzy: edit similarity (default 0.7); difflib: difflib ratio (default 0.7); embedding: "
                          "cosine (default 0.8). Not for upstream.")(f)
    f = click.option("--matcher", type=click.Choice(MATCHERS), default="upstream", show_default=True,
                     help="upstream = the seed's verdict protocol; difflib = the rule of the seed's eval_script.py "
                          "(first unused prediction equal, contained or difflib ratio >= 0.7); fuzzy / embedding "
                          "use optimal assignment.")(f)
    return f


def _matcher(matcher: str, threshold: float | None, model: str | None, embed_cache: Path | None):
    from .embed import default_cache_dir
    from .matchers import make_matcher

    cache: Any = None
    if matcher == "embedding":
        cache = None if str(embed_cache) == "-" else (embed_cache or default_cache_dir())
    try:
        return make_matcher(matcher, threshold=threshold, model=model, cache_dir=cache)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _suffixed(path: Path, name: str, many: bool) -> Path:
    """summary.json -> summary.<adapter>.json when one predictions folder held several adapters."""
    if not many:
        return path
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return path.with_name(f"{path.stem}.{safe}{path.suffix}")


def _write_json(obj: Any, path: Path) -> None:
    from reportminer.data.io import write_json_atomic

    write_json_atomic(path, obj)


def _fail(e: DataError) -> None:
    fail("evalkit", e)  # one line on stderr and the shared exit code (data error: 3; reportminer.data.errors)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="reportminer", prog_name="evalkit", message="%(prog)s (reportminer) %(version)s")
def main() -> None:
    """Score extraction runs against gold labels, compare runs with their noise, and write HTML reports.

    \b
    evalkit score   --gold GOLD PREDICTIONS [--json summary.json|-] [--cases cases.parquet]
    evalkit compare --gold GOLD RUN RUN... [--fail-if-worse] [--arm NAME=RUN,RUN]   (RUN: predictions or a cases file)
    evalkit report  --gold GOLD RUN --out report.html
    evalkit perturb expand|check ...   (does the predicted count hold when background sentences come and go?)
    evalkit calibrate RESULTS --gold GOLD [--write-manifest ADAPTER]   (the engine's score_threshold)
    evalkit bench build-dev|build-gen|check|score ...   (the benchmarks, and an experiment's results on them)
    """


main.add_command(bench)


@main.command()
@click.argument("predictions", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--pred", "pred_opt", type=click.Path(exists=True, path_type=Path), default=None,
              help="Predictions (same as the positional argument).")
@click.option("--gold", required=True, type=click.Path(exists=True, path_type=Path),
              help="Gold: seed-format JSONL (file or folder) or Parquet with id + gold_metrics (+ type).")
@_matcher_options
@click.option("--adapter", default=None, help="Engine results: score only this adapter (default: each one present).")
@click.option("--name", default=None, help="Label for this run (default: file stem or adapter name).")
@json_option("the summary (several adapters: one file each, or one list on stdout)")
@click.option("--cases", "cases_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one row per case here (.parquet, else JSONL); compare/report accept this file.")
@click.option("--show-fails", type=int, default=0, show_default=True, help="Print the first N failing cases.")
@click.option("--grounding", is_flag=True,
              help="Also ground every gold and predicted metric in its paragraph (data.grounding: gold must carry "
                   "the paragraphs): the summary gets `grounding` (ungrounded shares), the cases their spans.")
@click.option("-q", "--quiet", is_flag=True, help="No tables (files only).")
def score(predictions, pred_opt, gold, matcher, threshold, model, embed_cache, adapter, name, json_out, cases_out,
          show_fails, grounding, quiet):
    """Score PREDICTIONS against --gold.

    PREDICTIONS is one of: the engine's Parquet results (file or folder, joined on id; every adapter in
    it is scored separately unless --adapter picks one); JSONL with an `output` object or raw string per
    row (joined on `id`, else row k is gold case k); or the seed's batch results JSON (a list of
    {index, pred_raw, scenario}, index = 1-based gold case). Raw text is parsed by data.parse: text that
    is not a JSON object scores as zero metrics and invalid JSON. Gold cases without a prediction are
    scored as empty, invalid and listed as missing; a prediction id that is not in gold is an error.

    \b
    Examples:
      evalkit score --gold data/demo/demo.jsonl evalkit/examples/demo_predictions.jsonl
      evalkit score --gold data/demo/demo.jsonl evalkit/examples/demo_batch.json \\
          --json /tmp/summary.json --cases /tmp/cases.parquet --show-fails 5
      evalkit score --gold data/demo/demo.jsonl evalkit/examples/demo_predictions.jsonl \\
          --matcher fuzzy --threshold 0.75
      evalkit score --gold data/demo/demo.jsonl evalkit/examples/demo_predictions.jsonl --matcher embedding
      evalkit score --gold shards/ runs/nightly/ --adapter my-lora --json nightly.json
    """
    path = predictions or pred_opt
    if path is None or (predictions and pred_opt):
        raise click.UsageError("give the predictions once: as the argument or with --pred")
    from .pardecode import Prefetch, score_specs

    # JSONL gold and predictions start decoding in worker processes now, while this process imports
    # polars, pyarrow and numpy (~0.35 s of one core on the 2-core sandbox).
    with Prefetch(score_specs(gold, path, grounding)) as pre:
        from .score import score_paths, write_cases

        m = _matcher(matcher, threshold, model, embed_cache)
        try:
            results = score_paths(gold, path, m, adapter=adapter, name=name, prefetch=pre, grounding=grounding)
        except DataError as e:
            _fail(e)
            return
    many = len(results) > 1
    for r in results:  # files first: a closed pipe on the terminal side must not lose them
        if json_out and not to_stdout(json_out):
            _write_json(r.summary, _suffixed(Path(json_out), r.name, many))
        if cases_out:
            write_cases(r.cases, _suffixed(cases_out, r.name, many))
    if to_stdout(json_out):
        write_json_out([r.summary for r in results] if many else results[0].summary, json_out)
    if quiet and not many:
        return
    # rich only here: its import is ~40 ms of a command's start that `-q` (a cron job) does not need.
    from .console import make_console, print_summary

    console = make_console(stderr=to_stdout(json_out))
    for r in results:
        if not quiet:
            fails = r.cases.filter(r.cases["verdict"] == "fail").head(show_fails).to_dicts() if show_fails else None
            print_summary(r.summary, console, show_fails=fails)
            console.print()
    if many and ((json_out and not to_stdout(json_out)) or cases_out):
        console.print(f"[dim]{len(results)} adapters: files written with the adapter name before the extension[/]")


def _runs(specs: tuple[str, ...], gold: Path | None, matcher, adapter: str | None, grounding: bool = False) -> list[Any]:
    """Each RUN: LABEL=PATH or PATH; a cases file is read as is, anything else is scored against gold."""
    from .compare import Run
    from .score import is_cases_file, read_cases, score_paths

    runs: list[Run] = []
    for spec in specs:
        label, path = None, Path(spec)
        if not path.exists() and "=" in spec:
            label, rest = spec.split("=", 1)
            path = Path(rest)
        if not path.exists():
            raise DataError(f"{path}: no such run (a cases file or predictions)")
        if is_cases_file(path):
            cases = read_cases(path)
            names = cases["run"].unique(maintain_order=True).to_list()
            runs.append(Run(label or (names[0] if len(names) == 1 else path.stem), cases))
            continue
        if gold is None:
            raise click.UsageError(f"{path} holds predictions, not a cases file: pass --gold to score it")
        results = score_paths(gold, path, matcher, adapter=adapter, name=label, grounding=grounding)
        for res in results:  # one adapter: named LABEL (or the file/adapter); several: LABEL:adapter
            runs.append(Run(f"{label}:{res.name}" if label and len(results) > 1 else res.name, res.cases))
    # The same file stem twice (e.g. two runs/x/preds.jsonl): disambiguate by position.
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    if any(v > 1 for v in seen.values()):
        runs = [Run(f"{r.name}#{i + 1}" if seen[r.name] > 1 else r.name, r.cases) for i, r in enumerate(runs)]
    return runs


def _parse_arms(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """--arm NAME=RUN1,RUN2 (repeatable) -> [(NAME, [RUN1, RUN2])]; a spec without NAME= is a usage error."""
    from .arms import parse_arm

    try:
        return [parse_arm(v) for v in value]
    except DataError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--gold", type=click.Path(exists=True, path_type=Path), default=None,
              help="Gold labels; needed when a RUN is predictions rather than a saved cases file.")
@_matcher_options
@click.option("--adapter", default=None, help="Engine results: take only this adapter from each RUN.")
@click.option("--bootstrap", "n_boot", type=int, default=DEFAULT_BOOTSTRAP, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap random seed.")
@json_option("the comparison")
@click.option("--fail-if-worse", is_flag=True,
              help="Exit 1 when a RUN is worse than the first (the baseline) beyond noise on --primary (for CI).")
@click.option("--primary", type=click.Choice(PRIMARY_METRICS), default="pass_rate", show_default=True,
              help="The metric --fail-if-worse judges: pass rate (the seed's verdicts; beyond noise = paired 95 % "
                   "interval excludes 0 and McNemar p < 0.05) or F1 (paired interval excludes 0).")
@click.option("--arm", "arms", multiple=True, metavar="NAME=RUN1,RUN2", callback=_parse_arms,
              help="Group runs (by their names) into an arm: one recipe's trainings with different seeds. Repeatable; "
                   "the first arm is the baseline. Adds per arm the mean pass rate over its runs with their spread, "
                   "and each arm against the first with a two-level bootstrap (cases and runs within each arm).")
def compare(runs, gold, matcher, threshold, model, embed_cache, adapter, n_boot, seed, json_out, fail_if_worse, primary,
            arms):
    """Compare RUNs side by side: 95 % bootstrap intervals and paired tests against the first RUN.

    A RUN is a cases file written by `evalkit score --cases` (.parquet or .jsonl), or predictions in any
    format `score` reads (scored against --gold with --matcher); write LABEL=PATH to name it. An engine
    results folder with several adapters contributes one run per adapter. Runs are paired on the case
    ids they share; a difference whose paired 95 % interval includes zero is reported as within noise.

    \b
    Examples:
      evalkit compare --gold data/demo/demo.jsonl \\
          base=evalkit/examples/demo_batch.json tuned=evalkit/examples/demo_predictions.jsonl
      evalkit score --gold data/demo/demo.jsonl evalkit/examples/demo_batch.json --cases /tmp/a.parquet -q
      evalkit compare /tmp/a.parquet tuned=evalkit/examples/demo_predictions.jsonl --gold data/demo/demo.jsonl \\
          --json /tmp/compare.json
      evalkit compare --gold shards/ runs/nightly/        # every adapter in the results, paired
      evalkit compare base.parquet candidate.parquet --fail-if-worse      # CI gate: exit 1 if worse beyond noise
      evalkit compare b05a=r6/b05a.cases.parquet b05s2=r7/b05s2.cases.parquet r05fr=r7/r05fr.cases.parquet \
          --arm b05=b05a,b05s2 --arm r05fr=r05fr --json /tmp/arms.json   # arms: recipes over their seeds

    With --arm, each arm (one recipe, one run per training seed) gets the mean of its runs' pass rate, strict rate
    and predicted / gold, each run's value and the spread (min, max, sd), and each arm against the first a 95 %
    interval that resamples the cases (paired) and, within each arm, its runs: the training seed moves a recipe as
    much as any lever (docs/RESULTS.md, round 7), so one run per recipe compares two draws. With 2-3 seeds that
    seed level is crude; an arm of one run has none (the output says so). The per-run output is unchanged.
    """
    from .compare import compare_runs, worse_beyond_noise

    m = _matcher(matcher, threshold, model, embed_cache)
    try:
        given = _runs(runs, gold, m, adapter)
        if arms:
            from .arms import compare_arms

            res = compare_arms(given, arms, n_boot=n_boot, seed=seed)
        else:
            res = compare_runs(given, n_boot=n_boot, seed=seed)
    except DataError as e:
        _fail(e)
        return
    if json_out:
        write_json_out(res, json_out)
    from .console import make_console, print_compare

    print_compare(res, make_console(stderr=to_stdout(json_out)))
    if fail_if_worse:
        worse = worse_beyond_noise(res, primary)
        for w in worse:
            click.echo(f"evalkit: {w}", err=True)
        if worse:
            sys.exit(EXIT_FINDINGS)


@main.group()
def perturb() -> None:
    """Perturbation check: the same cases with a background sentence inserted or removed, labels unchanged.

    \b
    evalkit perturb expand BENCH.jsonl --out expanded.jsonl      # cases + <id>~ins / <id>~rem variants
    evalkit perturb check --gold expanded.jsonl RUN [RUN...]      # share of cases whose predicted count moved
    """


@perturb.command("expand")
@click.argument("bench", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Benchmark JSONL to write: the cases (without `perturb`) and their variants.")
@click.option("--base/--no-base", default=True, show_default=True, help="Also write the cases themselves.")
@json_option("counts of cases and variants")
def perturb_expand(bench, out, base, json_out):
    """Expand BENCH's cases that carry `perturb` into variant cases with the same gold.

    `<id>~ins`: perturb.insert placed right after the first perturb.insert_after (at the end when it is
    absent); `<id>~rem`: the first perturb.remove deleted (no variant when it is null). Variants keep
    every field of their case and add `base_id` and `variant`. A text that is not in the paragraph, an
    insert already there or a duplicate id is a data error (exit 3) naming file and line.

    \b
    Example:
      evalkit perturb expand benchmarks/genbench/cases.jsonl --out /tmp/genbench-perturbed.jsonl
    """
    from reportminer.data.io import write_jsonl

    from .perturb import expand_file

    try:
        ex = expand_file(str(bench), include_base=base)
    except DataError as e:
        _fail(e)
        return
    write_jsonl(ex.rows, out)
    info = {"cases": ex.cases, "with_perturb": ex.with_perturb, "variants": ex.by_kind, "rows_written": len(ex.rows),
            "out": str(out)}
    if json_out:
        write_json_out(info, json_out)
    click.echo(f"{out}: {len(ex.rows)} rows ({ex.cases} cases, {ex.with_perturb} with perturb; variants "
               f"ins {ex.by_kind['ins']}, rem {ex.by_kind['rem']})", err=to_stdout(json_out))


@perturb.command("check")
@click.argument("runs", nargs=-1, required=True)
@click.option("--gold", type=click.Path(exists=True, path_type=Path), default=None,
              help="The expanded benchmark (cases + variants); needed when a RUN is predictions, not a cases file.")
@_matcher_options
@click.option("--adapter", default=None, help="Engine results: take only this adapter from each RUN.")
@click.option("--show-moved", type=int, default=10, show_default=True, help="List the first N variants whose count moved.")
@json_option("per run: shares overall, per variant kind and per scenario, and every case that moved")
@click.option("--max-share", type=float, default=None,
              help="Exit 1 when a run's share of cases whose count moved is above this (e.g. 0.10, issue 16's target).")
def perturb_check(runs, gold, matcher, threshold, model, embed_cache, adapter, show_moved, json_out, max_share):
    """Share of cases whose predicted metric COUNT changes between a case and its variants.

    Each RUN (a cases file from `evalkit score --cases`, or predictions scored against --gold; LABEL=PATH
    names it; an engine results folder gives one run per adapter) must hold the base ids and the
    `<id>~ins` / `<id>~rem` ids of `evalkit perturb expand`. Reported per run: the share of base cases
    with a count change in any variant, the same per scenario, per variant kind the moved variants, how
    many went up or down and the mean change, verdict changes, and the list of cases that moved.

    \b
    Example:
      evalkit perturb expand benchmarks/genbench/cases.jsonl -o /tmp/gp.jsonl
      engine run --input /tmp/gp.jsonl --out /tmp/gp-out --adapter v4=adapters/v4
      evalkit perturb check --gold /tmp/gp.jsonl /tmp/gp-out --json perturb.json --max-share 0.10
    """
    from .perturb import format_stability, stability_of_runs

    m = _matcher(matcher, threshold, model, embed_cache)
    try:
        res = stability_of_runs([(r.name, r.cases) for r in _runs(runs, gold, m, adapter)])
    except DataError as e:
        _fail(e)
        return
    if json_out:
        write_json_out(res if len(res) > 1 else res[0], json_out)
    click.echo(format_stability(res, show_moved), err=to_stdout(json_out))
    if max_share is not None:
        over = [r for r in res if r["share_changed"] is not None and r["share_changed"] > max_share]
        for r in over:
            click.echo(f"evalkit: {r['run']}: {100 * r['share_changed']:.1f} % of cases moved count "
                       f"(> {100 * max_share:.1f} %)", err=True)
        if over:
            sys.exit(EXIT_FINDINGS)


@main.command()
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.option("--gold", required=True, type=click.Path(exists=True, path_type=Path),
              help="The same rows' labels (as `evalkit score` reads them).")
@click.option("--adapter", default=None, help="Adapter rows to calibrate (needed when RESULTS holds several).")
@click.option("--write-manifest", "adapter_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Store the best threshold in this adapter's reportminer_adapter.json (`decoding`).")
@json_option("the sweep (every threshold, the best)")
def calibrate(results, gold, adapter, adapter_dir, json_out):
    """Calibrate the engine's score_threshold on labelled rows (RESULTS: `engine run` output, threshold off).

    Every candidate threshold (0 = off, and each observed score, or agreement for runs with --samples > 1)
    drops the metrics below it; the rows are scored with the seed's verdicts and the best threshold (most
    passed, then most strict, then the lowest) is shown, and with --write-manifest stored as the adapter's
    `decoding`, which `engine run` applies to runs with the same sample count. Calibrate on a dev split:
    on the rows you report on, the gain is overstated.

    \b
    Examples:
      evalkit calibrate runs/dev/ --gold .cache/devbench/dev.jsonl --adapter v4
      evalkit calibrate runs/dev/ --gold dev.jsonl --adapter v4 --write-manifest adapters/v4
    """
    from .calibrate import calibrate as sweep
    from .calibrate import format_table, write_threshold

    try:
        cal = sweep(results, gold, adapter)
        written = write_threshold(cal, adapter_dir) if adapter_dir is not None else None
    except ReportminerError as e:
        fail("evalkit", e)
    if json_out:
        write_json_out({**cal.to_dict(), "written": written}, json_out)
    err = to_stdout(json_out)
    for line in format_table(cal):
        click.echo(line, err=err)
    if written is not None:
        click.echo(f"wrote decoding.score_threshold={written['score_threshold']} (samples={written['samples']}) "
                   f"to {adapter_dir}", err=True)


@main.command()
@click.argument("run")
@click.option("--gold", type=click.Path(exists=True, path_type=Path), default=None,
              help="Gold labels; needed when RUN is predictions rather than a saved cases file.")
@_matcher_options
@click.option("--adapter", default=None, help="Engine results with several adapters: the one to report.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write.")
@click.option("--title", default=None, help="Page title.")
@click.option("--max-rows", type=int, default=5000, show_default=True, help="Cases shown in the table.")
def report(run, gold, matcher, threshold, model, embed_cache, adapter, out, title, max_rows):
    """Write a self-contained HTML report of RUN (a cases file, or predictions with --gold).

    The page has the summary, verdict bars per scenario and per gold metric-type mix, the gold vs
    predicted metric-count histogram, the metric-type confusion over hit pairs, and every case with its
    hits and misses (filterable by verdict). CSS and plots are inline: it opens offline, anywhere.

    \b
    Examples:
      evalkit report --gold data/demo/demo.jsonl evalkit/examples/demo_predictions.jsonl --out /tmp/report.html
      evalkit report /tmp/cases.parquet --out /tmp/report.html --title "adapter v3 on the hold-out set"
    """
    from .report import write_report
    from .score import summarize

    m = _matcher(matcher, threshold, model, embed_cache)
    try:
        rs = _runs((run,), gold, m, adapter, grounding=True)  # the page shows each paragraph with its spans
        if len(rs) > 1:
            raise DataError(f"{run}: holds {len(rs)} adapters ({', '.join(r.name for r in rs)}); pick one with --adapter")
        path = write_report(rs[0].cases, out, title=title, max_rows=max_rows, source=str(run))
    except DataError as e:
        _fail(e)
        return
    s = summarize(rs[0].cases)
    f1 = "–" if s["f1"] is None else f"{s['f1'] * 100:.1f}%"
    from rich.console import Console

    Console().print(f"wrote {path} ({s['n']} cases, pass rate {s['pass_rate'] * 100:.1f}%, F1 {f1})")


if __name__ == "__main__":  # pragma: no cover
    main()
