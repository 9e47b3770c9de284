"""The output contract: one definition of what an extraction is.

Everything that produces or consumes model output (guided decoding in the engine, training targets in the
trainer, parsing in evalkit) takes its shape from here, so a change of contract is one edit and one
version bump, and manifests can refuse to mix versions.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = "1"

METRIC_TYPES: tuple[str, ...] = ("financial", "business")
MAX_METRICS = 4

# Bounds sit well above the seed's maxima (name 15, reason 90, analysis 422 characters). They exist so
# that guided decoding cannot run away: the longest legal answer is finite and fits in max_tokens.
MAX_NAME_CHARS = 24
MAX_REASON_CHARS = 160
MAX_ANALYSIS_CHARS = 640

# The seed labels only metrics it is sure of; validation of labelled data enforces this range.
LABEL_SCORE_MIN = 0.80
LABEL_SCORE_MAX = 1.00

METRIC_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metric_name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        "metric_type": {"type": "string", "enum": list(METRIC_TYPES)},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
    },
    "required": ["metric_name", "metric_type", "score", "reason"],
    "additionalProperties": False,
}

OUTPUT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "analysis": {"type": "string", "maxLength": MAX_ANALYSIS_CHARS},
        "metrics": {"type": "array", "items": METRIC_JSON_SCHEMA, "minItems": 0, "maxItems": MAX_METRICS},
    },
    "required": ["analysis", "metrics"],
    "additionalProperties": False,
}


def decode_json_schema(length_caps: bool = True) -> dict[str, Any]:
    """The schema guided decoding compiles: the contract itself, or (`length_caps=False`) the contract
    without its string length caps (maxLength/minLength), everything else the same.

    Why the second: llguidance builds the next token's mask through a counting state per allowed character
    of a capped string, so the caps make the mask ~11x dearer per token (scripts/bench_grammar.py on the
    0.5B tokenizer, 200 of genbench's gold answers: 197.7 us a token with the caps, 17.5 us without, 2-core
    sandbox, docs/BENCHMARKS.md), and on a GPU the guided path is bound by that host work (the GPU idle 77 % of the
    time at 0.355x bare). The caps stay the contract: data.check.breaks_length_cap finds an answer over one
    after decoding and the engine decodes it once more under the capped grammar (engine.seam.needs_capped_retry;
    round 7: 18 of 2,532 answers reached the analysis cap of 640); data.check judges every row.
    """
    if length_caps:
        return OUTPUT_JSON_SCHEMA

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("maxLength", "minLength")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(OUTPUT_JSON_SCHEMA)


def schema_fingerprint() -> str:
    """Short hash of the schema, recorded in run and adapter manifests to detect contract drift."""
    blob = json.dumps(OUTPUT_JSON_SCHEMA, sort_keys=True, ensure_ascii=False).encode()
    return f"v{SCHEMA_VERSION}-{hashlib.sha256(blob).hexdigest()[:12]}"


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True)
class Metric:
    metric_name: str
    metric_type: str
    score: float
    reason: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Metric":
        return cls(
            metric_name=str(d.get("metric_name", "")),
            metric_type=str(d.get("metric_type", "")),
            score=_as_float(d.get("score")),
            reason=str(d.get("reason", "") or ""),
        )


@dataclass(frozen=True)
class Extraction:
    analysis: str
    metrics: tuple[Metric, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Extraction":
        return cls(
            analysis=str(d.get("analysis", "") or ""),
            metrics=tuple(Metric.from_dict(m) for m in (d.get("metrics") or []) if isinstance(m, dict)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"analysis": self.analysis, "metrics": [asdict(m) for m in self.metrics]}

    @property
    def names(self) -> list[str]:
        return [m.metric_name for m in self.metrics]


def to_json(output: Extraction | dict[str, Any]) -> str:
    """The one serialisation of an answer: compact, UTF-8, key order of the schema.

    Compact separators match what guided decoding emits with whitespace disabled, so the training target
    and the served answer are the same token sequence.
    """
    d = output.to_dict() if isinstance(output, Extraction) else output
    ordered = {
        "analysis": d.get("analysis", ""),
        "metrics": [
            {
                "metric_name": m.get("metric_name"),
                "metric_type": m.get("metric_type"),
                "score": m.get("score"),
                "reason": m.get("reason", ""),
            }
            for m in d.get("metrics", [])
        ],
    }
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


# Column names used by every Parquet shard: one row is one paragraph to analyse.
ID = "id"
CHAPTER_TITLE = "chapter_title"
PARAGRAPH = "paragraph"
INPUT_COLUMNS: tuple[str, ...] = (ID, CHAPTER_TITLE, PARAGRAPH)
# Gold labels travel as columns beside the input; `type` is the seed's scenario (A/B/C/D).
GOLD_ANALYSIS = "gold_analysis"
GOLD_METRICS = "gold_metrics"
SCENARIO = "type"
SOURCE = "source"  # "file.jsonl:LINE" where a row came from; also the id of rows that had none

# The adapter name of rows run on the base model (no LoRA); reserved, so no adapter may take it.
BASE_ADAPTER = "base"

# The engine's result columns: one output row per (input row, adapter), after the input's own columns.
# evalkit and data.stats read results by these names.
ADAPTER = "adapter"
ANALYSIS = "analysis"
METRICS = "metrics"  # gold_metrics' fields plus `agreement` (AGREEMENT, below)
RAW = "raw"  # the model's text, kept for every submitted row
STATUS = "status"  # OK or ROW_ERROR
ERROR = "error"  # "<reason>: <detail>" when status is ROW_ERROR
FINISH_REASON = "finish_reason"
PROMPT_TOKENS = "prompt_tokens"
OUTPUT_TOKENS = "output_tokens"
SAMPLES = "samples"  # {valid, total} sampled answers (self-consistency, `engine run --samples N`)
DROPPED_METRICS = "dropped_metrics"  # metrics removed by score_threshold or as a repeated name, kept for audit
RAW_SAMPLES = "raw_samples"  # only when samples > 1: every sampled text, in sample order
RESULT_COLUMNS: tuple[str, ...] = (
    ADAPTER, ANALYSIS, METRICS, RAW, STATUS, ERROR, FINISH_REASON, PROMPT_TOKENS, OUTPUT_TOKENS, SAMPLES,
    DROPPED_METRICS,
)

# Row statuses.
OK, ROW_ERROR = "ok", "error"

# Why a row has no extraction (the reason part of the `error` column).
EMPTY_PARAGRAPH = "empty_paragraph"  # null or blank paragraph: nothing to analyse, never submitted
TOO_LONG = "too_long"  # prompt + max_tokens does not fit max_model_len, never submitted
LENGTH = "length"  # output cut at max_tokens (finish_reason == "length"); raw kept
INVALID_JSON = "invalid_json"  # the text is not a JSON object (guided decoding off); raw kept
SCHEMA = "schema"  # JSON that breaks the contract (e.g. duplicate metric names); raw kept
REJECTED = "rejected"  # vLLM refused the request
ABORTED = "aborted"  # the engine aborted the request
# Server mode (`engine run --server`): the server could not answer after every retry (connection error,
# timeout, 5xx). Transient by nature: a rerun redoes the shards that hold such rows.
SERVER_ERROR = "server_error"
REASONS: tuple[str, ...] = (EMPTY_PARAGRAPH, TOO_LONG, LENGTH, INVALID_JSON, SCHEMA, REJECTED, ABORTED, SERVER_ERROR)


def arrow_metric_type():
    """Arrow type of one metric; the engine's `metrics` column and the `gold_metrics` column share it."""
    import pyarrow as pa

    return pa.struct(
        [
            pa.field("metric_name", pa.string()),
            pa.field("metric_type", pa.string()),
            pa.field("score", pa.float64()),
            pa.field("reason", pa.string()),
        ]
    )


def arrow_metrics_type():
    import pyarrow as pa

    return pa.list_(arrow_metric_type())


# Engine results carry one more field per metric: the share of sampled answers that named it
# (self-consistency, `engine run --samples N`); 1.0 for a single greedy answer. Gold labels do not.
AGREEMENT = "agreement"


# And its evidence in the paragraph (issue 19 item 4; data/grounding.py finds it after decoding, so the
# guided-decoding schema OUTPUT_JSON_SCHEMA does not change): `spans`, the [start, end) character offsets of
# the paragraph the metric rests on (`paragraph[start:end]`), and `grounded`, whether there is any.
SPANS = "spans"
GROUNDED = "grounded"


def arrow_result_metric_type():
    """Arrow type of one metric in engine results: the metric fields plus `agreement`, `spans` and `grounded`."""
    import pyarrow as pa

    return pa.struct(list(arrow_metric_type()) + [pa.field(AGREEMENT, pa.float64()),
                                                  pa.field(SPANS, pa.list_(pa.list_(pa.int32()))),
                                                  pa.field(GROUNDED, pa.bool_())])


def arrow_result_metrics_type():
    import pyarrow as pa

    return pa.list_(arrow_result_metric_type())


def result_fields(raw_samples: bool = False) -> list:
    """Arrow fields of the engine's result columns, in RESULT_COLUMNS order (+ RAW_SAMPLES when asked)."""
    import pyarrow as pa

    types = {
        ADAPTER: pa.string(), ANALYSIS: pa.string(), METRICS: arrow_result_metrics_type(), RAW: pa.string(),
        STATUS: pa.string(), ERROR: pa.string(), FINISH_REASON: pa.string(), PROMPT_TOKENS: pa.int32(),
        OUTPUT_TOKENS: pa.int32(),
        SAMPLES: pa.struct([pa.field("valid", pa.int32()), pa.field("total", pa.int32())]),
        DROPPED_METRICS: arrow_result_metrics_type(),
    }
    return [pa.field(name, types[name]) for name in RESULT_COLUMNS] + (
        [pa.field(RAW_SAMPLES, pa.list_(pa.string()))] if raw_samples else []
    )
