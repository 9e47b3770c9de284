"""`trainer`: train LoRA adapters for the extraction engine (a thin layer over trainer.train.train).

Exit codes: the shared table in reportminer.data.errors (2 bad settings or run folder, 3 bad data,
4 training diverged, 130 interrupted).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from reportminer.data.config import describe, field_options
from reportminer.data.errors import EXIT_INTERRUPTED, exit_on_error
from reportminer.data.jsonout import STDOUT, json_option, write_json_out

from .config import DEFAULT_RECIPE, TrainConfig, apply_overrides, list_recipes, load_recipe, parse_set

TRAIN_EPILOG = """\b
Examples:
  # the demo model on the seed data, the demo recipe (bf16 LoRA, 4 epochs)
  trainer train --model ~/.cache/reportminer/models/qwen2.5-coder-0.5b-instruct \\
      --data ../shared/seed/data --output runs/demo --config qwen2.5-0.5b-lora
\b
  # the seed's recipe (8-bit base, paged AdamW 8-bit) on Qwen3-14B, 10 % dev split
  trainer train --model /models/Qwen3-14B --data labels/ --output runs/q14 --dev-fraction 0.1
\b
  # a separate dev file, 4-bit NF4 base, and two keys overridden
  trainer train --model /models/Qwen3-14B --data train.jsonl --dev dev.jsonl --output runs/q14-nf4 \\
      --quantization 4bit --set lora_r=32 --set learning_rate=1e-4
\b
  # continue an interrupted run from its last epoch checkpoint
  trainer train --model /models/Qwen3-14B --data labels/ --output runs/q14 --resume
\b
  # a 2-minute smoke run on a laptop CPU with the tiny test model
  trainer train --model tiny-model/ --data data/demo/demo.jsonl --output /tmp/smoke --config tiny-cpu --max-steps 4
\b
The run folder gets best/ and final/ adapters (each with reportminer_adapter.json and loss_curves.png),
checkpoints/ for --resume, metrics.json, train.log and log.jsonl. Bad input rows stop the run before any
model is loaded, with file:line for each.
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="reportminer", prog_name="trainer", message="%(prog)s (reportminer) %(version)s")
def main() -> None:
    """Train LoRA adapters for reportminer on labelled paragraphs (seed-format JSONL or Parquet shards).

    \b
    trainer train    run a training (recipe YAML + flags)
    trainer recipes  list the bundled recipes, or print one
    trainer config   print the resolved config of a recipe + flags, without training
    """


def _common(f):
    """--config (the recipe), --set, and one option per TrainConfig key that declares a flag."""
    opts = [
        click.option("--config", "-c", "recipe", default=None, help=f"Recipe: a bundled name ({', '.join(list_recipes())}) or a YAML path. Default: {DEFAULT_RECIPE}."),
        *field_options(TrainConfig),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe key (repeatable), e.g. --set lora_alpha=64."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _resolve(recipe: str | None, sets: tuple[str, ...], flags: dict[str, Any]):
    cfg = load_recipe(recipe)
    cfg = apply_overrides(cfg, parse_set(sets), "--set")
    cfg = apply_overrides(cfg, flags, "flag")
    return cfg.validate()


@main.command(epilog=TRAIN_EPILOG)
@_common
@click.option("--resume", is_flag=True, help="Continue from the last epoch checkpoint in --output.")
@click.option("--overwrite", is_flag=True, help="Delete a previous run in --output first.")
@click.option("--no-progress", is_flag=True, help="No progress bars (logs only).")
@json_option("the result (adapters, per-epoch losses, steps, seconds); default: stdout")
@exit_on_error("trainer")
def train(recipe, sets, resume, overwrite, no_progress, json_out, **flags) -> None:
    """Train a LoRA adapter: validate rows, split dev, SFT on answer tokens, save best/ and final/.

    stdout carries only the result JSON (unless --json PATH sends it to a file); every log line, the HF
    Trainer's `{'loss': ...}` records and progress bars included, goes to stderr and train.log.
    """
    cfg = _resolve(recipe, sets, flags)
    if no_progress:
        cfg.progress = False
    cfg.require_paths()
    from .train import train as run_training

    try:
        # transformers' PrinterCallback / ProgressCallback print the log dicts on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            result = run_training(cfg, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        click.echo("interrupted: continue with the same command and --resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    write_json_out({
        "final_adapter": str(result.final_adapter),
        "best_adapter": None if result.best_adapter is None else str(result.best_adapter),
        "epochs": [s.to_dict() for s in result.epochs],
        "best_eval_loss": result.best_eval_loss,
        "global_step": result.global_step,
        "seconds": result.seconds,
    }, json_out or STDOUT)


@main.command()
@click.argument("name", required=False)
@exit_on_error("trainer")
def recipes(name: str | None) -> None:
    """List the bundled recipes, or print one (NAME) as YAML.

    \b
    Examples:
      trainer recipes
      trainer recipes qwen2.5-0.5b-lora > my-recipe.yaml
    """
    if name:
        click.echo(load_recipe(name).to_yaml(), nl=False)
        return
    for stem in list_recipes():
        click.echo(f"{stem:22s} {load_recipe(stem).description}")


@main.command("type-prior")
@click.argument("adapter_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--data", required=True, help="The labels the adapter was trained on (seed-format JSONL, a folder, or Parquet).")
@click.option("--min-support", type=int, default=None, help="Labelled names an ending needs to decide (default 3).")
@click.option("--min-purity", type=float, default=None, help="Share of one type it needs (default 0.9).")
@click.option("--no-seed-rules", is_flag=True, help="Do not apply the seed's label rules when validating.")
@json_option("what was written; default: stdout")
@exit_on_error("trainer")
def type_prior(adapter_dir, data, min_support, min_purity, no_seed_rules, json_out) -> None:
    """Write the learned metric-type prior (type_prior.json) into an adapter folder.

    `trainer train` writes it beside every adapter; use this for adapters trained before it did, or
    elsewhere. The engine applies it by default (`--no-type-prior` turns it off).

    \b
    Examples:
      trainer type-prior runs/demo/best --data ../shared/seed/data
      trainer type-prior runs/q14/best --data labels/ --min-support 5
    """
    from reportminer.data.type_prior import MIN_PURITY, MIN_SUPPORT

    from .prior import write_type_prior

    prior, path = write_type_prior(adapter_dir, data, seed_rules=not no_seed_rules,
                                   min_support=MIN_SUPPORT if min_support is None else min_support,
                                   min_purity=MIN_PURITY if min_purity is None else min_purity)
    write_json_out({"type_prior": str(path), "sha256": prior.sha256(), "keys": len(prior.counts),
                    "labelled_metrics": prior.labelled_metrics, "min_support": prior.min_support,
                    "min_purity": prior.min_purity}, json_out or STDOUT)


@main.command("config")
@_common
@click.option("--keys", is_flag=True, help="List every key with its type, default and help, and exit.")
@exit_on_error("trainer")
def show_config(recipe, sets, keys, **flags) -> None:
    """Print the config a recipe plus flags resolves to (YAML), without loading anything.

    \b
    Examples:
      trainer config --config qwen3-14b-qlora --quantization 4bit --set lora_r=32
      trainer config --keys
    """
    if keys:
        click.echo(describe(TrainConfig))
        return
    cfg = _resolve(recipe, sets, flags)
    click.echo(cfg.to_yaml(), nl=False)


if __name__ == "__main__":
    main()
