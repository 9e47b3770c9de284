"""`engine run`, `engine extract`, `engine config`: flags over --set over YAML over device defaults.

Exit codes: the shared table in reportminer.data.errors (docs/engine.md lists what they mean here).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import click

from reportminer.data.config import describe, field_options
from reportminer.data.errors import EXIT_FINDINGS, EXIT_INTERRUPTED, exit_on_error
from reportminer.data.jsonout import json_option, write_json_out

from .config import EngineConfig, bundled_configs, configs_dir, parse_adapter

RUN_HELP = """Extract metrics from every paragraph of Parquet shards into one output shard per input shard.

\b
Input: a Parquet file or a folder searched recursively (symlinked folders followed); columns id,
chapter_title, paragraph, as strings (others pass through). Seed-format JSONL (a .jsonl file or a folder
of them) is read directly, each file one shard. Output: OUT/<same relative path>.parquet with id, the
passthrough columns, adapter, analysis, metrics (each with agreement), raw, status, error,
finish_reason, prompt_tokens, output_tokens, samples, dropped_metrics (raw_samples with --samples > 1);
every input row once per adapter. OUT also holds _engine_manifest.json (what is finished, with which settings),
_engine_summary.json (this run) and _engine_runs.jsonl (every run).

\b
Reruns skip finished shards and pick up new ones; a run with other settings (model, adapters,
schema, prompt, sampling, max_model_len) into the same OUT is refused unless --overwrite.

\b
Examples:
  # the demo model over a folder of shards
  engine run --input shards/ --out results/
  # two adapters on every row in one pass (A/B), plus the base model
  engine run --input shards/ --out ab/ --adapter v3=adapters/v3 --adapter v4=adapters/v4 --include-base
  # your own model on a GPU, the bundled gpu settings, two of them overridden
  engine run --config gpu --set model=/models/Qwen3-14B --input /data/shards --out /data/out --max-tokens 768
  # guided decoding off (to measure how often the adapter alone writes valid JSON)
  engine run --input shards/ --out raw/ --adapter v4=adapters/v4 --no-guided
  # one engine per GPU over a Ray cluster (or a local Ray instance), same output files
  engine run --config gpu --backend ray --set ray_actors=8 --input /shared/shards --out /shared/out
  # server mode: a running `vllm serve` does the generation (scripts/serve.sh starts one with the adapter)
  engine run --model /models/Qwen3-14B --adapter v4=adapters/v4 --server http://127.0.0.1:8000 \\
      --api-key-env VLLM_API_KEY --input /data/shards --out /data/out

\b
Exit status: 0 every row ok (or nothing to do); 1 all shards written, some rows are errors
(counted by reason in the summary); 2 refused, nothing ran (bad settings, adapter trained for
another model/schema/prompt, OUT holds another configuration or is in use); 3 data error: some
input shard could not be read (named; the others were written), or the input cannot be read at all;
4 failed while writing (disk full; file named); 130 interrupted (finished shards kept).
"""

EXTRACT_HELP = """Extract the metrics of one paragraph and print the JSON answer.

\b
Examples:
  engine extract --title 盈利能力分析 --text "2025年前三季度，公司实现归母净利润18.6亿元，同比增长23.4%。"
  engine extract --title 经营情况 --text "$(cat paragraph.txt)" --adapter v4=adapters/v4
  echo "段落……" | engine extract --title 业务 --text -

\b
Exit status: 0 and the answer on stdout; 1 the row failed (reason and raw text on stderr); 2 refused.
"""

CONFIG_HELP = """Print the settings that run/extract would use (YAML; --config, then --set, then flags), without
starting anything. Device defaults (None) are filled in only when the engine starts.

\b
Examples:
  engine config --config gpu
  engine config --config cpu --set max_tokens=768 --temperature 0.2
  engine config --keys          # every key with its type, default and help
"""


SERVE_HELP = """Print the `vllm serve` command that serves a model and its adapters with the settings `engine run`
would start vLLM with (LoRA slots and rank, guided-decoding backend, compact JSON, prefix caching, KV cache,
seed), for `engine run --server`. Arguments after `--` are appended (extra vLLM flags).

\b
Examples:
  engine serve-args --model /models/Qwen3-14B --adapter v4=runs/v4/best --config gpu
  engine serve-args --model tiny --adapter a=adapter-a --kv-cache 512MiB --exec -- --max-num-batched-tokens 2048
  scripts/serve.sh /models/Qwen3-14B v4=runs/v4/best        # the same from environment variables, run at once
"""


def engine_options(command: str):
    """Settings shared by run, extract and config: --config, --set, and one flag per EngineConfig field that
    declares one (data.config.field_options: type, choices and help from the field; None, i.e. not given,
    leaves the YAML or default value)."""

    def decorate(f):
        opts = [
            click.option("--config", "config_path", metavar="NAME|PATH",
                         help=f"YAML file of settings, or a bundled one by name ({', '.join(bundled_configs(configs_dir()))}); "
                              "--set and flags override it."),
            click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                         help="Override any setting (repeatable), e.g. --set max_num_seqs=64; see `engine config --keys`."),
            *field_options(EngineConfig, command),
            click.option("-v", "--verbose", is_flag=True, help="Show vLLM's own log."),
        ]
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def build_config(config_path: str | None, sets: tuple[str, ...] = (), adapters: tuple[str, ...] = (),
                 **flags: Any) -> EngineConfig:
    """YAML (a path or a bundled name), then --set, then flags (sugar for --set), then --adapter; type-checked."""
    cfg = EngineConfig.named(config_path) if config_path else EngineConfig()
    cfg = cfg.with_sets(sets)
    cfg = cfg.override("flag", **flags)
    if adapters:
        cfg = cfg.override("--adapter", adapters=dict(parse_adapter(a) for a in adapters))
    return cfg


def _setup_logging(verbose: bool) -> None:
    # vLLM reads this at import; keep its INFO lines out of the operator's way unless asked for.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    # stdout carries only results (extract's JSON, run --json); vLLM logs to stdout by default.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[engine] %(levelname)s %(message)s"))
    lg = logging.getLogger("engine")
    lg.handlers[:] = [handler]
    lg.setLevel(logging.INFO)
    lg.propagate = False


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):  # cron/systemd stop: finish like Ctrl-C (summary written, temp files removed)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="reportminer", prog_name="engine", message="%(prog)s (reportminer) %(version)s")
def main() -> None:
    """reportminer engine: vLLM + LoRA + guided JSON over Parquet shards (CPU or GPU build)."""


class _Location(click.Path):
    """click.Path for local paths; s3:// and gs:// URLs pass through as text (engine/storage.py)."""

    def convert(self, value, param, ctx):
        from .storage import is_remote

        return value if is_remote(value) else super().convert(value, param, ctx)


@main.command("run", help=RUN_HELP)
@click.option("--input", "input_path", required=True, type=_Location(exists=True, path_type=Path),
              help="Parquet file, or folder of shards (recursive); or an s3:// / gs:// URL (docs/engine.md).")
@click.option("--out", "out_dir", required=True, type=_Location(file_okay=False, path_type=Path),
              help="Output folder, or an s3:// / gs:// prefix.")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH",
              help="LoRA adapter; repeat for several (every row runs under each).")
@click.option("--overwrite", is_flag=True, help="Discard results in OUT (any configuration) and redo every shard.")
@click.option("--prune", is_flag=True, help="Delete outputs in OUT whose input shard is gone (reported either way).")
@click.option("--strict-ids", is_flag=True, help="Refuse input with null or duplicate ids (exit 3; reported either way).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--batch-output", "batch_output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Also write OUT's results as OpenAI batch output JSONL (vllm run-batch's format).")
@json_option("the run summary")
@engine_options("run")
@exit_on_error("engine")
def run_cmd(input_path, out_dir, adapters, overwrite, prune, strict_ids, quiet, batch_output, json_out, config_path,
            sets, verbose, **flags):
    _setup_logging(verbose)
    cfg = build_config(config_path, sets, adapters, **flags)
    from .runner import run

    _sigterm_as_interrupt()
    try:
        summary = run(cfg, input_path, out_dir, overwrite=overwrite, progress=not quiet, prune=prune, strict_ids=strict_ids)
    except KeyboardInterrupt as e:
        click.echo(f"engine: interrupted; finished shards are kept, rerun to continue\n{e}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    click.echo(summary.render(), err=True)
    if batch_output is not None:
        _write_batch_output(out_dir, batch_output)
    if json_out:
        write_json_out(None, json_out, text=summary.to_json())
    sys.exit(summary.exit_code)


def _write_batch_output(out_dir: Path, path: Path) -> None:
    """--batch-output: every finished result row of OUT as OpenAI batch output lines (engine/interop.py)."""
    from reportminer.data.errors import ConfigError

    from .interop import write_batch_output
    from .storage import is_remote

    if is_remote(str(out_dir)):
        raise ConfigError("--batch-output: reads a local --out (copy the results down first)")
    import pyarrow as pa

    from reportminer.data.errors import DataError
    from reportminer.data.io import read_table

    try:
        results = read_table(out_dir)
    except DataError:  # no finished shard yet: an empty file says so
        results = pa.table({"id": pa.array([], pa.string())})
    n = write_batch_output(results, path)
    click.echo(f"batch output: {n} line(s) -> {path}", err=True)


@main.command("extract", help=EXTRACT_HELP)
@click.option("--title", default="", help="Chapter title.")
@click.option("--text", required=True, help="The paragraph ('-' reads it from stdin).")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH", help="One LoRA adapter (NAME= optional).")
@click.option("--pretty", is_flag=True, help="Indent the JSON.")
@engine_options("extract")
@exit_on_error("engine")
def extract_cmd(title, text, adapters, pretty, config_path, sets, verbose, **flags):
    _setup_logging(verbose)
    if text == "-":
        text = sys.stdin.read()
    cfg = build_config(config_path, sets, adapters, **flags)
    from reportminer.data.schema import OK, Extraction, to_json

    from .single import extract

    r = extract(cfg, title, text)
    if r.status != OK:
        click.echo(f"engine: {r.error}", err=True)
        if r.raw is not None:
            click.echo(f"raw output: {r.raw}", err=True)
        sys.exit(EXIT_FINDINGS)
    answer = Extraction.from_dict({"analysis": r.analysis, "metrics": r.metrics})
    click.echo(json.dumps(json.loads(to_json(answer)), ensure_ascii=False, indent=2) if pretty else to_json(answer))


@main.command("config", help=CONFIG_HELP)
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH", help="LoRA adapter; repeat for several.")
@click.option("--keys", is_flag=True, help="List every setting with its type, default and help, and exit.")
@engine_options("config")
@exit_on_error("engine")
def config_cmd(adapters, keys, config_path, sets, verbose, **flags):
    if keys:
        click.echo(describe(EngineConfig))
        return
    cfg = build_config(config_path, sets, adapters, **flags)
    click.echo(cfg.to_yaml(), nl=False)


@main.command("retype")
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path),
              help="Seed-format JSONL labels (a file or a folder) to learn the prior from.")
@click.option("--prior", "prior_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An adapter folder holding type_prior.json.")
@click.option("--adapter", "only", multiple=True, help="Retype only these adapter columns (default: all but base).")
@exit_on_error("engine")
def retype_cmd(results, out, data, prior_dir, only):
    """Apply a learned metric-type prior to results made without it (what `engine run` does per answer), to
    measure it with `evalkit compare` on results that already exist. Only `metric_type` in the `metrics`
    column changes (the model's answer stays in `raw`); other columns and the shard layout are kept. Prints
    one JSON line: files, the prior's hash and keys, metrics retyped per adapter column.

    \b
    Examples:
      engine retype results/ retyped/ --prior runs/demo/best        # the trainer's type_prior.json
      engine retype results/ retyped/ --data train.jsonl --adapter v4
    """
    from .retype import load_prior, retype_results

    report = retype_results(results, out, load_prior(data, prior_dir), tuple(only))
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False))  # one line: files, prior, retyped per adapter


@main.command("vote")
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--adapters", required=True, metavar="A,B[,C...]",
              help="The adapter columns of RESULTS to vote over (at least two; e.g. one recipe trained with several seeds).")
@click.option("--name", default="vote", show_default=True, help="Adapter name of the voted rows.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5, show_default=True,
              help="Share of the valid answers that must name a metric for it to stay (0.5 of 3: two).")
@exit_on_error("engine")
def vote_cmd(results, out, adapters, name, threshold):
    """Add to results one voted answer per row over several adapters' answers: the rule of `engine run --samples`,
    across adapters (say, one recipe trained with three seeds and served in one run) instead of across samples.
    Every shard is written under OUT at the same relative path with its rows kept and one row of adapter NAME
    added after each input row's own. Prints one JSON line: files, rows, rows no adapter answered validly,
    metrics kept and each adapter's metrics on the same rows. Round 9 (docs/RESULTS.md): three adapters voted
    within noise of the best and +7.9 points beyond noise over the worst of them.

    \b
    Examples:
      engine run --input paras/ --out results/ --adapter s42=runs/s42/best --adapter s7=runs/s7/best \\
          --adapter s1234=runs/s1234/best
      engine vote results/ voted/ --adapters s42,s7,s1234
      evalkit bench score voted/ --bench dev/ --genbench benchmarks/genbench-flat/cases.jsonl --out scores/
    """
    from .vote_adapters import vote_results

    report = vote_results(results, out, adapters.split(","), name, threshold)
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    if report.failed:
        click.echo(f"engine vote: {report.failed} of {report.rows} rows had no valid answer from any adapter "
                   f"(error rows)", err=True)


@main.command("serve-args", help=SERVE_HELP)
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH", help="LoRA adapter; repeat for several.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the server binds (0.0.0.0: every).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--vllm", "vllm_cmd", metavar="PATH", help="The vllm command of a GPU build (default: next to this "
                                                          "Python, else on PATH); the CPU build runs its server module.")
@click.option("--exec", "run_it", is_flag=True, help="Run the command in place of this process (the line goes to "
                                                      "stderr, an --api-key value masked) instead of printing it.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@engine_options("serve-args")
@exit_on_error("engine")
def serve_args_cmd(adapters, host, port, vllm_cmd, run_it, extra, config_path, sets, verbose, **flags):
    from .serving import serve_command, shown

    cfg = build_config(config_path, sets, adapters, **flags)
    cmd = serve_command(cfg, host, port, extra, vllm_cmd)
    if not run_it:
        click.echo(shlex.join(cmd))
        return
    from .compile_cache import ROOT_ENV, apply_env

    # Every compile cache under one folder, as the engine places them (engine/compile_cache.py: vLLM, Triton,
    # inductor, flashinfer; variables already set are kept), so a mounted cache volume makes the next start warm.
    ce = apply_env()
    os.environ.setdefault(ROOT_ENV, str(ce.root))
    click.echo(f"[serve] compile cache: {ce.root}", err=True)
    click.echo(f"[serve] {shown(cmd)}", err=True)
    if os.environ.get("VLLM_API_KEY"):
        click.echo("[serve] API key required (VLLM_API_KEY); clients: engine run --api-key-env NAME_OF_THE_VARIABLE",
                   err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd) if Path(cmd[0]).is_absolute() else os.execvp(cmd[0], cmd)


if __name__ == "__main__":  # pragma: no cover
    main()
