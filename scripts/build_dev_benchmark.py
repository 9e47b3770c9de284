#!/usr/bin/env python
"""Build the dev benchmark (held out from training) and its train split from the seed: `evalkit bench
build-dev` (reportminer.evalkit.devbench, where the rules are) with this repository's folders as defaults.

    python scripts/build_dev_benchmark.py                  # ../shared/seed -> .cache/devbench/, then checked
    python scripts/build_dev_benchmark.py --out /tmp/db --scale 2 --seed 11
    python scripts/build_dev_benchmark.py --check          # only check what is there (evalkit bench check dev)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from reportminer.evalkit.cli import main

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEED_DIR = REPO.parent / "shared" / "seed"
DEFAULT_OUT = REPO / ".cache" / "devbench"

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-dir", type=Path, default=DEFAULT_SEED_DIR, help=f"seed folder (default {DEFAULT_SEED_DIR})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--seed", default="7", help="sampling seed (default 7)")
    ap.add_argument("--scale", default="3", help="cases per hidden case (default 3: 150 cases)")
    ap.add_argument("--check", action="store_true", help="only check the folder at --out (disjointness, ids, sha256s)")
    a = ap.parse_args()
    if a.check:
        main(["bench", "check", "dev", "--out", str(a.out), "--seed-dir", str(a.seed_dir)])
    else:
        main(["bench", "build-dev", "--seed-dir", str(a.seed_dir), "--out", str(a.out), "--seed", a.seed, "--scale", a.scale])
