"""Planning a run, before any engine starts: settings, shards, adapters, the output folder, what to do.

`runner.run` calls these for every backend, in this order: `make_plan` (every refusal happens here, before
--out is locked or vLLM starts), then under the lock `prepare_out` (the run manifest: resume, or refuse to
mix configurations) and `select` (the shards still to do; finished ones with unchanged input are skipped).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportminer.data.errors import ConfigError, ConfigMismatch, DataError
from reportminer.data.schema import SERVER_ERROR

from .adapters import Adapter, load_adapters, read_adapters
from .config import EngineConfig
from .decoding import adapter_thresholds
from .merge import merged_model, serving_config
from .preflight import IdReport, ShardInfo, inspect_shard, safe_remove, scan_ids, vanished_outputs
from .run_manifest import MANIFEST_NAME, RunManifest, identity_diff, run_identity
from .seam import GenerationEngine, ShardJob
from .shards import InputShard, find_shards, fingerprint, stale_temp_files
from .storage import ObjectPath
from .summary import RunSummary

log = logging.getLogger("engine")


def check_paths(input_path: Path, out_dir: Path, shards: list[InputShard]) -> None:
    if input_path.is_dir():
        i, o = input_path.resolve(), out_dir.resolve()
        if o == i or i in o.parents:
            raise ConfigError(f"--out {out_dir} is inside --input {input_path}: outputs would be read as inputs next time")
    for sh in shards:  # e.g. --input out/x.parquet --out out: the output would replace its own input
        if sh.out_path(out_dir).resolve() == sh.path.resolve():
            raise ConfigError(f"--out {out_dir}: the output of {sh.path} would be written over that input file; "
                              "choose another --out")


def prepare_out(out_dir: Path, identity: dict, config: EngineConfig, adapters: list[Adapter], overwrite: bool,
                 inputs: set[Path | ObjectPath] | None = None, warnings: list[str] | None = None) -> RunManifest:
    for tmp in stale_temp_files(out_dir):  # left by a killed run; we hold the lock, so nobody writes them
        log.info("removing temporary file of an interrupted run: %s", tmp)
        tmp.unlink(missing_ok=True)
    manifest = RunManifest.read(out_dir)
    if manifest is not None and manifest.identity != identity and not overwrite \
            and not any((out_dir / e["output"]).exists() for e in manifest.shards.values()):
        # A run that failed before it wrote a shard left nothing to mix with: the corrected rerun goes on.
        log.info("%s: the run manifest lists no existing results; starting a new one", out_dir)
        manifest = None
    if manifest is not None and manifest.identity != identity and not overwrite:
        raise ConfigMismatch(
            f"{out_dir} holds results of another configuration; use another --out, or --overwrite to discard them. "
            "Differences: " + "; ".join(identity_diff(manifest.identity, identity))
        )
    if manifest is None and not overwrite:
        stray = [p for p in out_dir.rglob("*.parquet")]
        if stray:
            raise ConfigMismatch(
                f"{out_dir} holds Parquet files ({stray[0].name}, ...) but no {MANIFEST_NAME}; "
                "point --out at an empty or engine-made folder, or pass --overwrite"
            )
    if overwrite and manifest is not None:
        for entry in manifest.shards.values():  # resolved paths inside --out only, never an input file
            warning = safe_remove(out_dir, str(entry.get("output", "")), inputs or set())
            if warning:
                log.warning(warning)
                if warnings is not None:
                    warnings.append(warning)
        manifest = None
    if manifest is None:
        manifest = RunManifest(identity=identity)
    manifest.model_path = config.model
    manifest.adapter_paths = {a.name: str(a.path) for a in adapters}
    return manifest


@dataclass
class Plan:
    """What a run will do, decided before the --out lock is taken and before any engine starts."""

    config: EngineConfig  # resolved: device defaults filled in
    input_path: Path
    out_dir: Path
    shards: list[InputShard]
    adapters: list[Adapter]
    warnings: list[str]
    identity: dict[str, Any]
    merged: Path | None = None  # --merge-adapter: the cached base+adapter model the engine serves
    infos: dict[str, ShardInfo] | None = None  # rows, schema problem, ids of each shard (engine/preflight.py)
    ids: IdReport | None = None


def make_plan(config: EngineConfig, input_path: Path, out_dir: Path, engine: GenerationEngine | None,
          strict_ids: bool = False) -> Plan:
    """Resolve the settings, find and inspect the input shards, check the adapters: every refusal happens here."""
    read = read_adapters(config.adapters, config.max_lora_rank)  # each folder read once, checked whole
    config = config.resolve(read)
    shards, notes = find_shards(input_path, exclude=out_dir.resolve())
    check_paths(input_path, out_dir, shards)
    infos = {s.rel: inspect_shard(s.path, s.rel, s.kind) for s in shards}
    ids = scan_ids([(rel, i.ids) for rel, i in infos.items() if i.ids is not None])
    for i in infos.values():
        i.ids = None  # the report is made; do not hold every id for the whole run
    if not ids.clean:
        if strict_ids:
            raise DataError(f"{input_path}: --strict-ids: {ids.line()}")
        notes.append(f"ids: {ids.line()}")
    adapters, warnings = load_adapters(read, config.model)  # type: ignore[arg-type]
    warnings = notes + warnings
    warnings += adapter_thresholds(config, adapters)[1]
    for w in warnings:
        log.warning(w)
    # --merge-adapter: the adapter folded into the base weights once (engine/merge.py), cached by hash
    merged = merged_model(config.model, adapters[0], config.dtype)[0] if config.merge_adapter else None  # type: ignore[arg-type]
    if engine is not None:
        engine.check_compatible(serving_config(config, merged), [] if merged else adapters)
    elif config.device == "cpu" and config.include_base and adapters and (config.max_loras or 0) <= len(adapters):
        raise ConfigError(
            f"max_loras {config.max_loras}: on CPU, base rows beside {len(adapters)} adapter(s) need max_loras > "
            f"{len(adapters)} (one LoRA slot must stay empty; see Engine.reset_loras)"
        )
    return Plan(config, input_path, out_dir, shards, adapters, list(warnings), run_identity(config, adapters), merged,
                 infos, ids)


def select(plan: Plan, manifest: RunManifest, summary: RunSummary,
            prune: bool = False) -> tuple[list[ShardJob], list[tuple[str, str]]]:
    """The shards to (re)do, skipping finished ones with unchanged input; unreadable ones fail here.

    Finished outputs whose input shard is gone are reported (`inputs_vanished`) and, with `prune`,
    deleted and forgotten; the manifest is not written here (only once the engines are up, see `runner.run`).
    """
    todo: list[ShardJob] = []
    failed_early: list[tuple[str, str]] = []
    if plan.input_path.is_dir():  # (a single-file --input says nothing about the other shards in --out)
        summary.inputs_vanished, summary.pruned, notes = vanished_outputs(
            plan.out_dir, manifest.shards, {s.rel for s in plan.shards}, input_paths(plan), prune)
        summary.warnings += notes
    infos = plan.infos or {}
    for shard in plan.shards:
        entry = manifest.shards.get(shard.rel)
        info = infos.get(shard.rel) or inspect_shard(shard.path, shard.rel, shard.kind)
        if info.error:  # unreadable file or footer, missing or non-text columns: this shard fails, the others run
            failed_early.append((shard.rel, info.error))
            continue
        num_rows = info.num_rows
        try:
            fp = fingerprint(shard.path)
        except OSError as e:
            failed_early.append((shard.rel, f"{shard.path}: cannot read: {e.strerror}"))
            continue
        out_path = shard.out_path(plan.out_dir)
        server_errors = (entry or {}).get("errors_by_reason", {}).get(SERVER_ERROR, 0)  # transient: redo (server.py)
        if entry and entry["input"].get("sha256") == fp["sha256"] and out_path.exists() \
                and out_path.stat().st_size == entry.get("output_size") and not server_errors:
            entry["input"] = fp  # same content, maybe a new mtime: remember it for the fast path
            summary.shards_skipped += 1
            continue
        if entry:
            log.info("%s: %s; redoing it", shard.path, f"{server_errors} row(s) failed on the server"
                     if server_errors else "input changed since it was processed")
            del manifest.shards[shard.rel]
        todo.append(ShardJob(shard, fp, num_rows, out_path))  # type: ignore[arg-type]  # or an ObjectPath
    for _rel, err in failed_early:
        log.error("shard failed: %s", err)
    return todo, failed_early



def input_paths(plan: Plan) -> set[Path | ObjectPath]:
    return {s.path.resolve() for s in plan.shards}


__all__ = ["Plan", "check_paths", "input_paths", "make_plan", "prepare_out", "select"]
