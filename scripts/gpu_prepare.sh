#!/usr/bin/env bash
# Stage everything the H200 training run needs into git-ignored folders, here, before any device time.
#
#   scripts/gpu_prepare.sh            # .whl/ (train wheels), .stage/ (seed data + Qwen3 tokenizer), .carry/pNN (GGUF)
#
# The device machine reaches no registry and refuses a call whose working tree plus carried paths exceed
# 64 MiB, so: the wheels pinned in ../shared/gpu/train-cp312-wheels.txt (+ jsonschema and its three
# dependencies, which the image lacks and data/ needs), the seed rows (never committed: copied into the
# ignored .stage/), the Qwen3 tokenizer for a GPU smoke run of the tiny model, and the demo model's joined
# GGUF split by scripts/chunk_carry.sh into folders that fit beside the tree: 64 MiB - the tree (tracked +
# untracked-not-ignored, ~14 MiB on 2026-12-06) - a 4 MiB margin = 46 MiB today; CHUNK_MIB=N fixes the size.
# (../shared/tools/chunk-carry.sh's fixed 60 MiB folders no longer fit.) Chunk other sets the same way:
#   CARRY=.carry-vllm scripts/chunk_carry.sh WHEELS/*.whl     # CARRY=.carry-m15 ... for the 1.5B GGUF
# It ends by checking each call's carry against the limit (scripts/chunk_carry.sh --fits). Run it in the
# checkout whose tree travels (the session's, not a helper's worktree). See docs/gpu-training-run.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
GGUF=${GGUF:-$HOME/.cache/reportminer/gguf/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
GGUF_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
for d in /.whl/ /.stage/ /.carry/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done

mkdir -p .whl
python3 -m pip download -q --no-deps -d .whl --python-version 3.12 --implementation cp --only-binary=:all: \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 \
  --platform manylinux_2_34_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -r "$SHARED/gpu/train-cp312-wheels.txt" \
  jsonschema==4.25.1 jsonschema-specifications==2025.9.1 referencing==0.36.2 rpds-py==0.27.1

rm -rf .stage && mkdir -p .stage/seed
cp "$SHARED"/seed/data/*.jsonl .stage/seed/
tok=$(.venv/bin/python -c 'from reportminer.data.models.tiny import qwen3_tokenizer_dir; print(qwen3_tokenizer_dir())')
tar czf .stage/qwen3-tokenizer.tar.gz -C "$tok" tokenizer.json tokenizer_config.json

echo "$GGUF_SHA  $GGUF" | sha256sum -c -
scripts/chunk_carry.sh "$GGUF"
du -sh .whl .stage
scripts/chunk_carry.sh --fits .whl,.stage .carry/p*  # one call carries .whl and .stage together
