"""One paragraph through the same path as a batch run (prompt, token check, guided decoding, strict parse)."""
from __future__ import annotations

from .adapters import load_adapters, read_adapters
from .config import ConfigError, EngineConfig
from .decoding import adapter_thresholds, adapter_type_priors, row_from_completion
from .engines import open_engine
from .rows import EMPTY_PARAGRAPH, REJECTED, TOO_LONG, RowResult, error_row
from .seam import GenerationEngine, Request, capped_retry_params


def extract(config: EngineConfig, title: str | None, paragraph: str | None, *,
            engine: GenerationEngine | None = None) -> RowResult:
    """The extraction for one paragraph under the config's adapter (at most one) or the base model."""
    read = read_adapters(config.adapters, config.max_lora_rank)  # the same one-line refusals as `engine run`
    # One paragraph: the adapter as LoRA (a merge is for runs), and no warm-up batch of 512 requests before it.
    config = config.override(merge_adapter=False if config.merge_adapter is None else None,
                              warmup=False if config.warmup is None and engine is None else None)
    config = config.resolve(read)
    if config.enforce_eager is None and engine is None:  # one paragraph never repays compiling the model
        config = config.override(enforce_eager=True)
    if len(config.adapters) > 1:
        raise ConfigError("extract runs one adapter at a time; give a single --adapter")
    adapters, _warnings = load_adapters(read, config.model)  # type: ignore[arg-type]
    adapter = adapters[0] if adapters else None
    name = adapter.name if adapter else "base"
    if paragraph is None or not paragraph.strip():
        return error_row(name, EMPTY_PARAGRAPH, "paragraph is empty")
    if engine is None:  # a local vLLM, or server mode (--set server=URL): engines.open_engine
        engine = open_engine(config)
    else:
        engine.check_compatible(config, adapters)
    engine.reset_loras()
    (ids,) = engine.encode_prompts([title], [paragraph])
    if len(ids) > config.max_model_len - config.max_tokens:  # type: ignore[operator]
        return error_row(name, TOO_LONG, f"prompt {len(ids)} tokens + max_tokens {config.max_tokens} > "
                                         f"max_model_len {config.max_model_len}", len(ids))
    feeder = engine.feeder(engine.sampling_params(config), window=1, retry_params=capped_retry_params(engine, config))
    for c in feeder.run(iter([Request(None, ids, adapter)])):
        if c.rejected is not None:
            return error_row(name, REJECTED, c.rejected, c.prompt_tokens)
        return row_from_completion(name, c, config, adapter_thresholds(config, adapters)[0][name],
                                   adapter_type_priors(config, adapters)[name])
    raise RuntimeError("the engine returned no completion")  # pragma: no cover
