"""The learned type prior for an adapter trained before the trainer wrote one (`trainer type-prior`).

`trainer train` writes `type_prior.json` beside every adapter it saves, from its training split
(data/type_prior.py). Older adapters, or adapters trained elsewhere, get one from the labels they were
trained on; the rows are validated by the same rules as for training, so a bad row is named, not skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

from reportminer.data.errors import ConfigError
from reportminer.data.type_prior import MIN_PURITY, MIN_SUPPORT, TypePrior, build_type_prior, label_pairs

from .rows import load_training_data


def write_type_prior(adapter_dir: str | os.PathLike, data: str | os.PathLike, *, seed_rules: bool = True,
                     min_support: int = MIN_SUPPORT, min_purity: float = MIN_PURITY) -> tuple[TypePrior, Path]:
    """Build the prior of every labelled metric in `data` and write it into `adapter_dir`."""
    d = Path(adapter_dir)
    if not (d / "adapter_config.json").is_file():
        raise ConfigError(f"{d}: not a LoRA adapter folder (no adapter_config.json)")
    if min_support < 1:
        raise ConfigError(f"min_support: {min_support} must be at least 1")
    if not 0.5 < min_purity <= 1:
        raise ConfigError(f"min_purity: {min_purity} must be in (0.5, 1]")
    loaded = load_training_data(data, None, 0.0, seed_rules=seed_rules)
    prior = build_type_prior(label_pairs(r.output for r in loaded.train), min_support, min_purity)
    return prior, prior.write(d)


__all__ = ["write_type_prior"]
