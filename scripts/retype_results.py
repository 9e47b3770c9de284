#!/usr/bin/env python
"""Kept for the commands in docs/RESULTS.md: the feature is `engine retype` (engine/retype.py).

    python scripts/retype_results.py RESULTS OUT --prior runs/demo/best    # = engine retype RESULTS OUT ...
"""
from __future__ import annotations

import sys

from reportminer.engine.cli import main

if __name__ == "__main__":
    main(["retype", *sys.argv[1:]], prog_name="retype_results.py")
