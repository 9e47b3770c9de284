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

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """`__version__`, looked up on first use: importing importlib.metadata took 30-50 ms of every start,
    before `evalkit score` could start its decode workers."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("reportminer")
    except metadata.PackageNotFoundError:  # run from a source tree without an install (the GPU machine)
        version = "0+source"
    globals()["__version__"] = version
    return version
