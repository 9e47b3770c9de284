#!/usr/bin/env python
"""Kept for old command lines: `scripts/calibrate_threshold.py RESULTS GOLD [--adapter NAME]
[--write-manifest ADAPTER_DIR]` is `evalkit calibrate RESULTS --gold GOLD ...` (reportminer.evalkit.calibrate)."""
from __future__ import annotations

import sys

from reportminer.evalkit.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    positional = [a for a in args if not a.startswith("-")][:2]
    if len(positional) == 2 and "--gold" not in args:  # RESULTS GOLD -> RESULTS --gold GOLD
        args.insert(args.index(positional[1]), "--gold")
    main(["calibrate", *args])
