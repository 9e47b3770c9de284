#!/usr/bin/env python3
"""Resolve docker/NAME.in into docker/NAME.lock: every package of an image pinned exactly (name==version).

    .venv/bin/python scripts/lock_images.py            # serve and train
    .venv/bin/python scripts/lock_images.py serve      # one of them
    .venv/bin/python scripts/lock_images.py --check    # exit 1 when a lock no longer matches its .in

The Dockerfiles install a lock with `pip install --no-deps -r docker/NAME.lock`, so an image holds exactly
the versions written here, whatever the index publishes later. The lock is made without Docker and without
a GPU: pip resolves for the image's interpreter and platform (CPython 3.12, x86-64 glibc 2.39, Ubuntu 24.04,
binary wheels only) with `pip install --dry-run --report`, which reads the wheels' metadata and installs
nothing. It needs the package index and downloads wheels whose metadata the index does not serve separately
(about 4 GB for serve; they land in a throw-away cache folder).

Two directives in a .in file: `#+ name==version` appends a pin to the lock unresolved, for a package whose
own metadata cannot be satisfied together with the rest (vllm 0.27.1 names torch==2.13.0; the GPU runs used
it with torch 2.11.0, so it is installed without its declared dependencies, as it was there); `#- name`
leaves a resolved package out (a prefix: `#- nvidia-cutlass-dsl` drops its -libs-* too), for a dependency
the GPU runs went without. Local pip settings (find-links, constraint files) are ignored: the lock depends
on the index alone.
The project's base dependencies and its `models` extra (pyproject.toml) are added to every image's request.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib  # type: ignore[import-not-found,unused-ignore]  # Python >= 3.11 (mypy checks as 3.10)

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
IMAGES = ("serve", "train")
PYTHON_VERSION = "3.12"  # Ubuntu 24.04's python3 (3.12.3), the H200 image's
# glibc 2.39 (Ubuntu 24.04) accepts manylinux_2_39 down to manylinux_2_17; pip prefers them in this order,
# as it does inside the image, so the lock names the versions the image's pip will pick.
PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def project_requirements() -> list[str]:
    """pyproject's base dependencies + the `models` extra (without the self-references)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["models"])
    return [r for r in reqs if not r.startswith(project["name"])]


def read_in(name: str) -> tuple[list[str], list[str], list[str]]:
    """(requirements, unresolved pins, left-out name prefixes) of docker/NAME.in."""
    reqs, extra, drop = [], [], []
    for line in (DOCKER / f"{name}.in").read_text().splitlines():
        line = line.strip()
        if line.startswith("#+"):
            extra.append(line[2:].strip())
        elif line.startswith("#-"):
            drop.append(_norm(line[2:].split("#")[0].strip()))
        elif line and not line.startswith("#"):
            reqs.append(line.split(" #")[0].strip())
    return reqs, extra, drop


def resolve(reqs: list[str], cache_dir: str) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        req_file, report = Path(tmp) / "req.txt", Path(tmp) / "report.json"
        req_file.write_text("\n".join(reqs) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--cache-dir", cache_dir, "--target", str(Path(tmp) / "t"),
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:",
               *[f"--platform={p}" for p in PLATFORMS], "-r", str(req_file)]
        env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL")}
        subprocess.run(cmd, check=True, env={**env, "PIP_CONFIG_FILE": os.devnull})
        installs = json.loads(report.read_text())["install"]
    return sorted(((i["metadata"]["name"], i["metadata"]["version"]) for i in installs), key=lambda p: _norm(p[0]))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def render(name: str, pins: list[tuple[str, str]], extra: list[str]) -> str:
    head = (f"# docker/{name}.lock: written by scripts/lock_images.py from docker/{name}.in + pyproject.toml; do not edit.\n"
            f"# CPython {PYTHON_VERSION}, x86-64 manylinux wheels. Installed with `pip install --no-deps -r`.\n")
    body = "".join(f"{n}=={v}\n" for n, v in pins)
    tail = "".join(f"{p}  # unresolved (#+ in docker/{name}.in)\n" for p in extra)
    return head + body + tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="*", metavar="IMAGE", help=f"of {', '.join(IMAGES)} (default: all)")
    ap.add_argument("--check", action="store_true", help="resolve again and compare; write nothing")
    ap.add_argument("--cache-dir", default=None, help="pip's cache (default: a temporary folder, removed after)")
    args = ap.parse_args()
    unknown = sorted(set(args.images) - set(IMAGES))
    if unknown:
        ap.error(f"unknown image(s) {', '.join(unknown)}; expected {', '.join(IMAGES)}")
    stale = []
    with tempfile.TemporaryDirectory(prefix="lock-images-") as tmp_cache:
        for name in args.images or IMAGES:
            reqs, extra, drop = read_in(name)
            pins = resolve(reqs + project_requirements(), args.cache_dir or tmp_cache)
            pins = [(n, v) for n, v in pins if not any(_norm(n).startswith(d) for d in drop)]
            text = render(name, pins, extra)
            lock = DOCKER / f"{name}.lock"
            if args.check:
                if not lock.exists() or lock.read_text() != text:
                    stale.append(str(lock.relative_to(REPO)))
            else:
                lock.write_text(text)
                print(f"{lock.relative_to(REPO)}: {len(pins) + len(extra)} packages")
    if stale:
        print("stale (rerun scripts/lock_images.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
