#!/usr/bin/env python
"""Assemble the project's own rows (issue 16) into benchmarks/genbench (bench) or benchmarks/restraint-train
(train): `evalkit bench build-gen` (reportminer.evalkit.genbench, where the checks are) with this
repository's folders as defaults. The writers' folders have no default: --src is required to build.

    python scripts/build_genbench.py bench --src WRITERS/bench --other-src WRITERS/train \
        [--labels adjudicated.jsonl] [--second labeller2.jsonl]
    python scripts/build_genbench.py train --src WRITERS/train --other-src WRITERS/bench
    python scripts/build_genbench.py bench --check        # re-check the built folder (sha256, ids, perturb)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from reportminer.evalkit.cli import main

REPO = Path(__file__).resolve().parents[1]
OUT = {"bench": REPO / "benchmarks" / "genbench", "train": REPO / "benchmarks" / "restraint-train"}
OTHER = {"bench": "train", "train": "bench"}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", choices=sorted(OUT), help="bench (W*.jsonl) or train (T*.jsonl)")
    ap.add_argument("--src", type=Path, default=None, help="folder of the writers' files (required to build)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/genbench | benchmarks/restraint-train)")
    ap.add_argument("--labels", type=Path, default=None, help="bench: adjudicated labels, JSONL of {id, output}")
    ap.add_argument("--second", type=Path, default=None, help="bench: labeller 2's blind labels, JSONL of {id, output}")
    ap.add_argument("--other-src", type=Path, default=None, help="the other set's writers' folder (shared paragraphs)")
    ap.add_argument("--seed-dir", type=Path, default=REPO.parent / "shared" / "seed",
                    help="seed folder, read only to refuse copies (absent: skipped)")
    ap.add_argument("--check", action="store_true", help="only re-check the built folder")
    a = ap.parse_args()
    out, other_out = a.out or OUT[a.set], OUT[OTHER[a.set]]
    if a.check:
        main(["bench", "check", a.set, "--out", str(out), "--other-out", str(other_out)])
    elif a.src is None:
        ap.error("--src is required to build (the writers' folder)")
    else:
        args = ["bench", "build-gen", a.set, "--src", str(a.src), "--out", str(out), "--other-out", str(other_out),
                "--seed-dir", str(a.seed_dir)]
        for flag, v in (("--labels", a.labels), ("--second", a.second), ("--other-src", a.other_src)):
            if v is not None:
                args += [flag, str(v)]
        main(args)
