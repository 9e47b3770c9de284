#!/usr/bin/env bash
# Make the `reportminer` namespace importable from this source tree without installing it:
#   scripts/srcview.sh [DIR]        # default .srcview; prints DIR; then PYTHONPATH=DIR python -m reportminer.engine.cli
# DIR/reportminer/{__init__.py,data,engine,trainer,evalkit} are symlinks to pkg/__init__.py and the room folders,
# the same mapping pyproject.toml's package-dir gives an install. Two users: the GPU machine (no index to
# install from, the image's own python) and mypy, which cannot follow setuptools' editable-install finder
# for package-dir mappings (measured: "Cannot find implementation or library stub for module named
# reportminer.data").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.srcview}
mkdir -p "$dir/reportminer"
ln -sfn "$root/pkg/__init__.py" "$dir/reportminer/__init__.py"
for room in data engine trainer evalkit; do ln -sfn "$root/$room" "$dir/reportminer/$room"; done
echo "$dir"
