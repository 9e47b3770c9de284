"""The choices `evalkit`'s command line offers, in a module that imports nothing: the CLI declares its
options before it imports polars and the rest (`evalkit score` starts its decode workers first)."""
from __future__ import annotations

MATCHERS = ("upstream", "fuzzy", "difflib", "embedding")  # evalkit.matchers.make_matcher builds each
PRIMARY_METRICS = ("pass_rate", "f1")  # what `evalkit compare --fail-if-worse` judges (evalkit.compare)
DEFAULT_BOOTSTRAP = 2000  # bootstrap resamples of `evalkit compare`
