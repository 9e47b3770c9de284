"""The engine seam: what the row pipeline needs from an engine, and what a backend is given and returns.

An **engine** turns token-id requests into completions. Two exist: `generate.Engine` (an in-process
`vllm.LLM`) and `server.ServerEngine` (HTTP to a `vllm serve`); `engines.open_engine` picks one. The row
pipeline (`pipeline.py`) needs from it only `GenerationEngine`'s members, so either one writes the same
files. Both feed requests through a `RequestFeeder` and yield `Completion`s in any order.

A **backend** (the `Backend` protocol: backends.py) gets the shards a run selected done and reports an
`Outcome`; `ShardJob` is one shard it is given.

This module imports only the contract, the settings, adapters and the row statistics, so it sits below
everything that implements or uses it (no import loop in engine/: scripts/check_imports.py checks).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reportminer.data.check import breaks_length_cap
from reportminer.data.prompt import render_prompt

from .adapters import Adapter
from .config import EngineConfig
from .summary import RowStats

if TYPE_CHECKING:
    from .shards import InputShard


# ---- requests and completions ---------------------------------------------------------------------------


@dataclass
class Request:
    key: Any  # the caller's handle, returned with the completion
    prompt_token_ids: list[int]
    adapter: Adapter | None


@dataclass
class Sample:
    text: str | None
    finish_reason: str | None
    output_tokens: int


@dataclass
class Completion:
    key: Any
    text: str | None
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int
    rejected: str | None = None  # the engine refused the request (message); no text
    reason: str | None = None  # with `rejected`: the row's error reason; None: rejected (server mode: server_error)
    samples: list[Sample] | None = None  # every answer when sampling params ask for n > 1 (text etc. = sample 0)
    retried: bool = False  # decoded again under the capped grammar (needs_capped_retry); the retry's answer


def needs_capped_retry(c: Completion) -> bool:
    """Whether an answer decoded under the grammar without the contract's length caps
    (`guided_length_caps: false`) must be decoded again under the capped one: some answer of it, finished or cut
    at max_tokens, has a string over its cap (or an empty metric name): data.check.breaks_length_cap.

    Why this keeps the capped grammar's answers (greedy): its token mask allows a subset of the uncapped
    one's, and an answer whose strings all keep within the caps took at each step a token the capped mask also
    allows, so the capped run picks the same tokens; only the others can differ, and those are exactly the
    ones decoded again here. An answer that misses the contract otherwise (a repeated metric name) is the
    capped run's too, and is not decoded again. Cost: one more decode of those rows (round 7's serve: 18 of
    2,532 answers reached the analysis cap)."""
    if c.rejected is not None:
        return False
    answers = c.samples or [Sample(c.text, c.finish_reason, c.output_tokens)]
    return any(a.finish_reason != "abort" and breaks_length_cap(a.text) for a in answers)


def encode_prompts(tokenizer: Any, titles: Iterable[str | None], paragraphs: Iterable[str | None]) -> list[list[int]]:
    """Token ids of the served prompt for each row (data.prompt.render_prompt with the model's own chat
    template, which already holds any BOS): both engines tokenise here, so too-long rows are found before
    anything is submitted and a server sees exactly the tokens a local engine would."""
    texts = [render_prompt(tokenizer, t, p) for t, p in zip(titles, paragraphs)]
    if not texts:
        return []
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])


def capped_retry_params(engine: "GenerationEngine", config: EngineConfig) -> Any:
    """The capped grammar's sampling settings where the run decodes without the length caps (the feeder's
    `retry_params`), else None: what every caller of `feeder` passes, so a row is the same whichever way it ran."""
    if config.guided and not config.guided_length_caps:
        return engine.sampling_params(config.override(guided_length_caps=True))
    return None


# ---- the engine seam ------------------------------------------------------------------------------------


class RequestFeeder(Protocol):
    """Submits requests from an iterator while fewer than its window are unfinished; yields completions in
    any order. `abort` drops unfinished requests whose key matches; `close` aborts the rest."""

    def run(self, requests: Iterator[Request]) -> Iterator[Completion]: ...

    def abort(self, predicate: Callable[[Any], bool]) -> int: ...

    def close(self) -> None: ...


class GenerationEngine(Protocol):
    """What the row pipeline (and `extract`) use of an engine."""

    config: EngineConfig

    @property
    def max_num_seqs(self) -> int:
        """Sequences the engine decodes together (sizes the pipeline's request window)."""
        ...

    def check_compatible(self, run: EngineConfig, adapters: list[Adapter]) -> None:
        """ConfigError when a run's settings or adapters do not fit this started engine."""

    def encode_prompts(self, titles: Iterable[str | None], paragraphs: Iterable[str | None]) -> list[list[int]]: ...

    def sampling_params(self, config: EngineConfig) -> Any:
        """The run's sampling settings in the form this engine's feeder sends (vLLM `SamplingParams`, or the
        sampling part of an HTTP request body); opaque to the pipeline, which hands it to `feeder`."""

    def feeder(self, sampling_params: Any, window: int, may_submit: Callable[[], bool] | None = None,
               stall_timeout_s: Any = "engine", retry_params: Any = None) -> RequestFeeder:
        """retry_params: sampling settings under which a completion `needs_capped_retry` flags is decoded
        once more (the capped grammar, when `sampling_params` compile it without the length caps)."""

    def reset_loras(self) -> None:
        """Called once before a run's first request (vLLM's CPU LoRA slots: generate.Engine.reset_loras)."""

    def close(self) -> None: ...


# ---- what a backend is given and returns (the Backend protocol: backends.py) ----------------------------


@dataclass
class ShardJob:
    """One input shard to do: where it is, its content fingerprint and row count, and its output path."""

    shard: InputShard
    fp: dict[str, Any]
    num_rows: int
    out_path: Path  # or a storage.ObjectPath under s3:// / gs:// (the same methods)


@dataclass
class DoneShard:
    """A shard committed in this run, as the summary counts it."""

    rel: str
    num_rows: int
    stats: RowStats


@dataclass
class Outcome:
    """What a backend's `execute` did: committed shards (recorded in the manifest), failed shards, row and
    token counts of all work (failed or interrupted shards included), and its times."""

    done: list[DoneShard] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (shard rel, error)
    stats: RowStats = field(default_factory=RowStats)
    by_adapter: dict[str, RowStats] = field(default_factory=dict)
    row_cache: dict[str, Any] = field(default_factory=dict)  # row_cache.RowCache stats (served, computed, ...)
    gen_s: float = 0.0  # generation seconds: what rows_per_s divides by
    engine_start_s: float | None = None  # None: no engine was started (one was handed in)
    interrupted: bool = False


__all__ = ["Completion", "DoneShard", "GenerationEngine", "Outcome", "Request", "RequestFeeder",
           "Sample", "ShardJob", "capped_retry_params", "encode_prompts", "needs_capped_retry"]
