"""The project's prompt, schema and parser as a `ray.data.llm` processor, for teams whose pipelines are Ray Data.

`engine run --backend ray` (engine/ray_backend.py) is the engine's own way to use Ray: whole shards,
resume, the run manifest. This module is for the other case, a Ray Data pipeline that already exists
and wants this project's extraction as one stage of it:

    import ray
    from reportminer.engine import EngineConfig
    from reportminer.engine.ray_llm import build_processor

    cfg = EngineConfig(model="/models/Qwen3-14B", adapters={"v4": "/adapters/v4"}, max_tokens=1024).resolve()
    processor = build_processor(cfg, adapter="v4", concurrency=2, batch_size=64)
    ds = ray.data.read_parquet("s3://corpus/shards")   # rows with chapter_title and paragraph
    ds = processor(ds)                                 # + analysis, metrics, status, error, raw, ...
    ds.write_parquet("s3://results/ray-llm")

It is `ray.data.llm.build_processor(vLLMEngineProcessorConfig(...), preprocess=Preprocess(...),
postprocess=Postprocess(...))` (Ray 2.60; the API is Ray's "beta"): the preprocess renders each row's
messages with `data.prompt.build_messages` (report text made plain of chat control tokens, as
`render_prompt` does) and asks for guided JSON with `data.schema.OUTPUT_JSON_SCHEMA`; Ray's chat-template
stage applies the model's template with thinking off (`enable_thinking=False`, as the engine does); the
postprocess parses the answer with the engine's strict parser (`engine/rows.py: result_from_text`, the
`data/parse.py` contract) into the engine's result columns (`metrics` and `dropped_metrics` as JSON
text: Ray's blocks hold them as string columns). What it does not do, and `engine run` does: resume, one
output file per input shard, the row cache, several adapters in one pass, voting and thresholds, the type
prior. The vLLM engine settings come from the same EngineConfig (`engine_kwargs`).

Ray's vLLM stage reports no finish reason, so an answer is taken as cut at max_tokens when it used all of
them (`length`), as vLLM reports it.

Tested here: the preprocess and postprocess functions for real, on the real tokenizer and the real
parser, and the processor's construction against the installed Ray (tests/test_engine_ray_llm.py). An end
to end run through Ray's vLLM stage is not part of the test suite: on the CPU build it needs Ray's
GPU-oriented engine actor and a second vLLM start (minutes on two cores).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from reportminer.data.prompt import build_messages, plain_text
from reportminer.data.schema import CHAPTER_TITLE, PARAGRAPH, decode_json_schema

from .rows import EMPTY_PARAGRAPH, ERROR, error_row, result_from_text

# Columns the postprocess adds (the engine's result columns; metrics and dropped metrics as JSON text).
RESULT_COLUMNS = ("adapter", "analysis", "metrics", "dropped_metrics", "raw", "status", "error", "finish_reason",
                  "prompt_tokens", "output_tokens")
# Ray's stage columns the postprocess drops (the engine's result columns say what matters of them).
_STAGE_COLUMNS = ("messages", "sampling_params", "prompt", "prompt_token_ids", "generated_tokens", "generated_text",
                  "num_generated_tokens", "num_input_tokens", "metrics", "embeddings", "logprobs", "prompt_logprobs",
                  "time_taken_llm", "params", "request_id", "batch_uuid", "tokenized_prompt", "model",
                  "__inference_error__", "_rm_skip")


@dataclass
class Preprocess:
    """Row -> the row plus `messages` and `sampling_params` for Ray's vLLM stage (a callable class: Ray makes
    one per worker, so the tokenizer is loaded once there)."""

    model: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    guided: bool = True
    guided_length_caps: bool = True
    lora_path: str | None = None  # the adapter folder: Ray's stage turns a `model` other than its own into a LoRARequest
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model)
        return self._tokenizer

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        tok = self.tokenizer()
        title, paragraph = row.get(CHAPTER_TITLE), row.get(PARAGRAPH)
        empty = paragraph is None or not str(paragraph).strip()
        # An empty paragraph still goes through the stage (Ray keeps every row), with one token asked for;
        # the postprocess turns it into the engine's empty_paragraph error row without reading the answer.
        sp: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": 1 if empty else self.max_tokens}
        if self.temperature > 0:
            sp["seed"] = self.seed
        if self.guided and not empty:
            # The schema as text: a nested dict would become an Arrow struct in Ray's blocks.
            sp["structured_outputs"] = {"json": json.dumps(decode_json_schema(self.guided_length_caps), ensure_ascii=False)}
        out = {**row, "messages": build_messages(plain_text(tok, title), plain_text(tok, paragraph or "")),
               "sampling_params": sp, "_rm_skip": empty}
        if self.lora_path:
            out["model"] = self.lora_path
        return out


@dataclass
class Postprocess:
    """Ray's stage output row -> the input columns plus the engine's result columns, parsed strictly."""

    adapter: str
    max_tokens: int

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in row.items() if k not in _STAGE_COLUMNS}
        if row.get("_rm_skip"):
            r = error_row(self.adapter, EMPTY_PARAGRAPH, "paragraph is empty")
        elif row.get("__inference_error__"):
            r = error_row(self.adapter, "server_error", str(row["__inference_error__"])[:500])
        else:
            n_out = int(row.get("num_generated_tokens") or 0)
            finish = "length" if n_out >= self.max_tokens else "stop"
            r = result_from_text(self.adapter, row.get("generated_text"), finish, int(row.get("num_input_tokens") or 0),
                                 n_out, self.max_tokens)
        return {**kept, "adapter": r.adapter, "analysis": r.analysis,
                "metrics": None if r.metrics is None else json.dumps(r.metrics, ensure_ascii=False),
                # A repeated name's later metrics (rows.result_from_text keeps the first), as engine run records them.
                "dropped_metrics": None if r.dropped_metrics is None else json.dumps(r.dropped_metrics, ensure_ascii=False),
                "raw": r.raw, "status": r.status, "error": r.error if r.status == ERROR else None,
                "finish_reason": r.finish_reason, "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens}


def engine_kwargs(c: Any) -> dict[str, Any]:
    """vLLM engine keywords of a resolved EngineConfig, as engine/generate.py starts vLLM (model excluded)."""
    kw: dict[str, Any] = dict(
        max_model_len=c.max_model_len, dtype=c.dtype, tensor_parallel_size=c.tensor_parallel_size, seed=c.seed,
        enable_prefix_caching=c.enable_prefix_caching, enforce_eager=bool(c.enforce_eager),
        structured_outputs_config={"backend": c.structured_output_backend, "disable_any_whitespace": True},
    )
    for k in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_memory_bytes", "gpu_memory_utilization"):
        if getattr(c, k, None) is not None:
            kw[k] = getattr(c, k)
    if c.adapters:
        kw.update(enable_lora=True, max_loras=c.max_loras or len(c.adapters) + 1,
                  max_cpu_loras=c.max_loras or len(c.adapters) + 1, max_lora_rank=c.max_lora_rank or 16)
    return kw


def build_processor(c: Any, adapter: str | None = None, *, concurrency: int = 1, batch_size: int = 32,
                    **config_kwargs: Any) -> Any:
    """A `ray.data.llm` Processor extracting metrics with the settings of the resolved EngineConfig `c`,
    under `adapter` (a name in `c.adapters`; None: the base model). `config_kwargs` go to
    `vLLMEngineProcessorConfig` (e.g. `accelerator_type`, `runtime_env`)."""
    from reportminer.data.errors import ConfigError

    if c.samples != 1:
        raise ConfigError("ray_llm: samples > 1 (voting) is engine run's; the processor decodes one answer a row")
    if adapter is not None and adapter not in c.adapters:
        raise ConfigError(f"ray_llm: adapter {adapter!r} is not in the config's adapters ({', '.join(c.adapters)})")
    from ray.data.llm import build_processor as ray_build_processor
    from ray.data.llm import vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(model_source=c.model, engine_kwargs=engine_kwargs(c),
                                       concurrency=concurrency, batch_size=batch_size, **config_kwargs)
    pre = Preprocess(model=c.model, max_tokens=c.max_tokens, temperature=c.temperature, top_p=c.top_p, seed=c.seed,
                     # the caps always: a Processor decodes each row once, so nothing could retry an answer
                     # the uncapped grammar let past a cap (engine.seam.needs_capped_retry)
                     guided=c.guided, guided_length_caps=True,
                     lora_path=c.adapters.get(adapter) if adapter else None)
    post = Postprocess(adapter=adapter or "base", max_tokens=c.max_tokens)
    return ray_build_processor(config, preprocess=pre, postprocess=post,
                               builder_kwargs={"chat_template_kwargs": {"enable_thinking": False}})


__all__ = ["Postprocess", "Preprocess", "RESULT_COLUMNS", "build_processor", "engine_kwargs"]
