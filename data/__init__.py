"""The contract shared by engine, trainer and evalkit: records, output schema, prompt, IO, validation.

Nothing here imports the engine, the trainer or evalkit; they import this.
"""
from .parse import Parsed, parse_output
from .prompt import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    build_messages,
    prompt_fingerprint,
    render_prompt,
    render_training_example,
)
from .schema import OUTPUT_JSON_SCHEMA, SCHEMA_VERSION, Extraction, Metric, schema_fingerprint, to_json

__all__ = [
    "OUTPUT_JSON_SCHEMA", "SCHEMA_VERSION", "PROMPT_VERSION", "SYSTEM_PROMPT", "Extraction", "Metric",
    "Parsed", "parse_output", "build_messages", "render_prompt", "render_training_example", "prompt_fingerprint",
    "schema_fingerprint", "to_json",
]
