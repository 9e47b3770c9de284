"""`engine run`, `engine extract`, `engine config`: flags over --set over YAML over device defaults.

Exit codes: the shared table in reportminer.data.errors (docs/engine.md lists what they mean here).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from reportminer.data.config import describe
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


def engine_options(f):
    """Settings shared by run and extract; None (not given) leaves the YAML or default value."""
    opts = [
        click.option("--config", "config_path", metavar="NAME|PATH",
                     help=f"YAML file of settings, or a bundled one by name ({', '.join(bundled_configs(configs_dir()))}); "
                          "--set and flags override it."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any setting (repeatable), e.g. --set max_num_seqs=64; see `engine config --keys`."),
        click.option("--model", help="Model folder (default: the embedded demo model Qwen2.5-Coder-0.5B-Instruct)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Default: the installed vLLM build."),
        click.option("--guided/--no-guided", default=None, help="Constrain output to the JSON schema (default on)."),
        click.option("--max-tokens", type=int, help="Output tokens per row (default 1024); a cut row is an error."),
        click.option("--max-model-len", type=int, help="Prompt + output window (default min(4096, model max))."),
        click.option("--max-num-seqs", type=int, help="Sequences per engine step (default 128 on CPU, vLLM's on GPU)."),
        click.option("--max-num-batched-tokens", type=int, help="Tokens per engine step (vLLM default)."),
        click.option("--kv-cache", "kv_cache_memory_bytes", help="CPU KV-cache size, e.g. 2GiB (default 2GiB)."),
        click.option("--gpu-memory-utilization", type=float, help="GPU memory share for weights + KV cache (default 0.90)."),
        click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), help="Default auto."),
        click.option("--tensor-parallel-size", type=int, help="GPUs per model (default 1)."),
        click.option("--structured-output-backend", type=click.Choice(["guidance", "xgrammar", "outlines", "auto"]),
                     help="Guided-decoding backend (default guidance)."),
        click.option("--temperature", type=float, help="Default 0 (greedy)."),
        click.option("--top-p", type=float, help="Default 1."),
        click.option("--seed", type=int, help="Default 0."),
        click.option("--prefix-caching/--no-prefix-caching", "enable_prefix_caching", default=None,
                     help="Reuse the shared system-prompt KV cache (default on)."),
        click.option("--enforce-eager/--compile", "enforce_eager", default=None,
                     help="Skip (or force) torch.compile and CUDA graphs. Default: compile, except on CPU for "
                          "runs under 256 output rows and for extract, where start time dominates."),
        click.option("--max-loras", type=int, help="LoRA slots (default adapters + 1)."),
        click.option("--max-lora-rank", type=int, help="Default: the largest adapter rank."),
        click.option("-v", "--verbose", is_flag=True, help="Show vLLM's own log."),
        # Decoding levers (engine/decoding.py).
        click.option("--samples", type=int, help="Answers sampled per row in one request; > 1 keeps the metrics most "
                                                 "samples name and records their agreement (default 1)."),
        click.option("--sample-temperature", type=float, help="Temperature of the samples when --temperature is 0 "
                                                               "(default 0.7)."),
        click.option("--vote-threshold", type=float, help="With --samples > 1: share of valid samples that must name "
                                                           "a metric (default 0.5)."),
        click.option("--score-threshold", type=float, help="Drop metrics whose score (agreement with --samples > 1) "
                                                            "is below it; default: the adapter manifest's, else off; 0 = off."),
        click.option("--type-prior/--no-type-prior", "type_prior", default=None,
                     help="Retype metrics by each adapter's learned type prior (type_prior.json; default on)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


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
@click.option("--include-base", is_flag=True, default=None,
              help="With adapters: also run every row on the base model (adapter column 'base').")
@click.option("--chunk-size", type=int, help="Requests kept queued in vLLM (default 8 x max-num-seqs).")
@click.option("--batch-rows", type=int, help="Rows read per Parquet record batch (default 512).")
@click.option("--overwrite", is_flag=True, help="Discard results in OUT (any configuration) and redo every shard.")
@click.option("--prune", is_flag=True, help="Delete outputs in OUT whose input shard is gone (reported either way).")
@click.option("--strict-ids", is_flag=True, help="Refuse input with null or duplicate ids (exit 3; reported either way).")
@click.option("--merge-adapter", is_flag=True, default=None,
              help="One adapter only: fold it into the base weights once (cached) and serve without LoRA.")
@click.option("--server", metavar="URL", help="Send the rows to a running `vllm serve` (OpenAI-compatible, e.g. "
                                              "http://127.0.0.1:8000; scripts/serve.sh) instead of starting vLLM here.")
@click.option("--api-key-env", "server_api_key_env", metavar="NAME",
              help="With --server: environment variable holding the server's API key.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_option("the run summary")
@click.option("--backend", type=click.Choice(["local", "ray"]),
              help="local (default): one engine here; ray: Ray Data over ray_actors engine actors "
                   "(--set ray_actors=N ray_gpus_per_actor=G ray_address=ADDR; docs/engine.md).")
@engine_options
@exit_on_error("engine")
def run_cmd(input_path, out_dir, adapters, overwrite, prune, strict_ids, quiet, json_out, config_path, sets,
            verbose, **flags):
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
    if json_out:
        write_json_out(None, json_out, text=summary.to_json())
    sys.exit(summary.exit_code)


@main.command("extract", help=EXTRACT_HELP)
@click.option("--title", default="", help="Chapter title.")
@click.option("--text", required=True, help="The paragraph ('-' reads it from stdin).")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH", help="One LoRA adapter (NAME= optional).")
@click.option("--pretty", is_flag=True, help="Indent the JSON.")
@engine_options
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
@click.option("--include-base", is_flag=True, default=None, help="With adapters: also run the base model.")
@click.option("--chunk-size", type=int, help="Requests kept queued in vLLM.")
@click.option("--batch-rows", type=int, help="Rows read per Parquet record batch.")
@click.option("--keys", is_flag=True, help="List every setting with its type, default and help, and exit.")
@engine_options
@exit_on_error("engine")
def config_cmd(adapters, keys, config_path, sets, verbose, **flags):
    if keys:
        click.echo(describe(EngineConfig))
        return
    cfg = build_config(config_path, sets, adapters, **flags)
    click.echo(cfg.to_yaml(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
