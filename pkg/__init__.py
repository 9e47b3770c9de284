"""reportminer: batch extraction of core metrics from Chinese financial research reports.

The installed namespace is `reportminer`; its rooms live in folders at the repository root and are mapped
here by setuptools `package-dir` (pyproject.toml):

    reportminer.data     <- data/      the contract: schema, prompt, IO, validation, config, errors
    reportminer.engine   <- engine/    vLLM + LoRA + guided JSON over Parquet shards
    reportminer.trainer  <- trainer/   LoRA SFT producing adapters with manifests
    reportminer.evalkit  <- evalkit/   the three-layer score, comparisons, reports

One installed name (not four top-level packages: PyPI already has distributions called `data`, `trainer`
and `evalkit`, and a user's own `data.py` beside a notebook would shadow `import data`).
"""
from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("reportminer")
except _metadata.PackageNotFoundError:  # run from a source tree without an install (the GPU machine)
    __version__ = "0+source"

__all__ = ["__version__"]
