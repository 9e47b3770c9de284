#!/usr/bin/env python
"""Build the tiny random Qwen3 (real Qwen3 tokenizer) and optionally random LoRA adapters for it.

The same models the tests use (data.models.tiny), for benchmarks and manual runs of the engine:

  .venv/bin/python scripts/make_tiny_model.py --out /tmp/tiny
  .venv/bin/python scripts/make_tiny_model.py --out /tmp/tiny --adapter-out /tmp/tiny-lora-a --adapter-out /tmp/tiny-lora-b
  .venv/bin/engine run --input shards/ --out /tmp/res --model /tmp/tiny --adapter a=/tmp/tiny-lora-a --max-tokens 64

Adapters get a reportminer_adapter.json manifest (base model fingerprint, schema and prompt versions) so
the engine checks them like trained ones; pass --no-manifest to get a bare adapter.
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model folder to write.")
@click.option("--adapter-out", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="LoRA folder to write (repeat for several; each gets its own random weights).")
@click.option("--rank", default=8, show_default=True, help="LoRA rank of the adapters.")
@click.option("--seed", default=0, show_default=True, help="Seed of the model weights (adapter i uses seed+1+i).")
@click.option("--no-manifest", is_flag=True, help="Do not write reportminer_adapter.json into the adapters.")
@click.option("--force", is_flag=True, help="Rebuild folders that already exist.")
def main(out: Path, adapter_out: tuple[Path, ...], rank: int, seed: int, no_manifest: bool, force: bool) -> None:
    from reportminer.data.manifest import AdapterManifest, base_model_fingerprint
    from reportminer.data.models.tiny import make_random_adapter, make_tiny_model

    if force or not (out / "SOURCE.json").exists():
        make_tiny_model(out, seed=seed)
        click.echo(f"model: {out}")
    else:
        click.echo(f"model: {out} (exists; --force rebuilds)")
    for i, a in enumerate(adapter_out):
        if force or not (a / "adapter_config.json").exists():
            make_random_adapter(out, a, rank=rank, seed=seed + 1 + i)
            if not no_manifest:
                AdapterManifest(base_model=base_model_fingerprint(out), extra={"random": True, "seed": seed + 1 + i}).write(a)
            click.echo(f"adapter: {a}")
        else:
            click.echo(f"adapter: {a} (exists; --force rebuilds)")


if __name__ == "__main__":
    main()
