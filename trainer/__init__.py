"""LoRA SFT for reportminer: validated rows in, adapters with manifests out.

API: `trainer.config.build_config(recipe, overrides) -> TrainConfig`, `trainer.train.train(config) ->
TrainResult`; CLI: `trainer train|recipes|config` (trainer.cli). Imports `data` only, never the engine or
evalkit, and nothing heavy at import time so `trainer --help` stays fast.
"""
