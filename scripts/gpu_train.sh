#!/usr/bin/env bash
# Runs ON the device (H200) machine, one step per call; calls must follow each other while it is warm,
# because /tmp/stage and /tmp/site live only as long as the machine. Prepared by scripts/gpu_prepare.sh.
#
#   scripts/gpu_train.sh setup            # carry .whl .stage: install wheels, GPU smoke run of the tiny model
#   scripts/gpu_train.sh stage .carry/p01 # carry .carry/p01: move one GGUF part into /tmp/stage
#   scripts/gpu_train.sh convert .carry/p08 # last part: rebuild + check the GGUF, convert to bf16
#   scripts/gpu_train.sh train [flags]    # train the demo recipe on the seed data, package $OUT
#   scripts/gpu_train.sh resume           # continue an interrupted train step (--resume), package $OUT
#
# The run is recorded in docs/gpu-training-run.md.
set -uo pipefail
STAGE=/tmp/stage
SITE=/tmp/site
RUN=/tmp/run-demo
MODEL=/tmp/qwen2.5-coder-0.5b-instruct
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}  # the image's python3 holds torch
PIP_PY=$PY
export PYTHONPATH="$SITE:$(scripts/srcview.sh /tmp/srcview)" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export REPORTMINER_CACHE=/tmp/rmcache MPLBACKEND=Agg
mkdir -p "$STAGE" "$OUT"

stage() {
  [ -n "${1:-}" ] || return 0
  cp "$1"/* "$STAGE"/ && ls -la "$STAGE" | tail -n +2
}

package() {
  # <= 8 files, each < 16 MiB, back through $OUT: adapters split in 15 MiB parts, the rest in one tarball.
  cd "$RUN" || return 1
  for a in final best; do
    [ -f "$a/adapter_model.safetensors" ] && split -b 15M -d -a 1 "$a/adapter_model.safetensors" "$OUT/$a.safetensors.part"
  done
  tar czf "$OUT/run.tar.gz" --exclude=checkpoints --exclude='adapter_model.safetensors' .
  (cd "$RUN" && sha256sum final/adapter_model.safetensors best/adapter_model.safetensors 2>/dev/null) > "$OUT/SHA256SUMS"
  ls -la "$OUT"
}

case "${1:-}" in
setup)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  [ -n "${SKIP_INSTALL:-}" ] || $PIP_PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
  $PY -c 'import torch, transformers, peft, trl, bitsandbytes, datasets, accelerate; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0)); print("transformers", transformers.__version__, "peft", peft.__version__, "trl", trl.__version__, "bnb", bitsandbytes.__version__, "datasets", datasets.__version__, "accelerate", accelerate.__version__)'
  cp -r .stage/seed "$STAGE"/seed
  [ "${2:-}" = "--no-smoke" ] && exit 0
  mkdir -p $REPORTMINER_CACHE/tokenizers/qwen3 && tar xzf .stage/qwen3-tokenizer.tar.gz -C $REPORTMINER_CACHE/tokenizers/qwen3
  $PY -c 'from reportminer.data.models.tiny import make_tiny_model; make_tiny_model("/tmp/tiny")' || exit 1
  head -12 "$STAGE"/seed/type_c.jsonl > "$STAGE"/small.jsonl
  set -e
  # bf16 LoRA on GPU with trl's fused loss, one full epoch with a dev split (best/ + final/).
  $PY -m reportminer.trainer.cli train --model /tmp/tiny --data "$STAGE"/small.jsonl --output /tmp/smoke-bf16 \
    --config tiny-cpu --precision auto --epochs 1 --no-progress 2>&1 | tail -25
  # The seed's default recipe: 8-bit base, paged AdamW 8-bit, gradient checkpointing.
  $PY -m reportminer.trainer.cli train --model /tmp/tiny --data "$STAGE"/small.jsonl --output /tmp/smoke-8bit \
    --max-steps 2 --no-progress 2>&1 | tail -12
  $PY -c 'import json; m=json.load(open("/tmp/smoke-8bit/final/reportminer_adapter.json")); print(m["extra"]["plan"], m["library_versions"])'
  ;;
stage)
  stage "${2:-}"
  ;;
convert)
  # last GGUF part in, rebuild and check the GGUF, convert it to a bf16 model folder
  stage "${2:-}"
  set -e
  cd "$STAGE" && for f in *.chunk000; do b=${f%.chunk000}; cat "$b".chunk* > "$b" && rm "$b".chunk*; done
  sha256sum -c MANIFEST
  cd - >/dev/null
  t0=$(date +%s)
  $PY -c "from pathlib import Path; from reportminer.data.models.demo import convert_gguf; convert_gguf(Path('$STAGE/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf'), Path('$MODEL'))" 2>&1 | { grep -v Converting || true; }
  echo "convert_gguf: $(( $(date +%s) - t0 )) s"
  ;;
train)
  shift
  t1=$(date +%s)
  $PY -m reportminer.trainer.cli train --model "$MODEL" --data "$STAGE"/seed --output "$RUN" \
    --config qwen2.5-0.5b-lora --no-progress --overwrite "$@" 2>&1 | tee "$OUT/train_stdout.log" | grep -v "^{'loss'" | tail -40
  rc=${PIPESTATUS[0]}
  echo "trainer train: rc $rc, $(( $(date +%s) - t1 )) s wall"
  if [ "$rc" = 4 ]; then  # diverged (non-finite gradients, exit 4 in reportminer.data.errors): once more in fp32
    t1=$(date +%s)
    $PY -m reportminer.trainer.cli train --model "$MODEL" --data "$STAGE"/seed --output "$RUN" \
      --config qwen2.5-0.5b-lora --no-progress --overwrite --precision fp32 "$@" 2>&1 | tee -a "$OUT/train_stdout.log" | grep -v "^{'loss'" | tail -40
    echo "trainer train (fp32): rc ${PIPESTATUS[0]}, $(( $(date +%s) - t1 )) s wall"
  fi
  package
  ;;
resume)
  shift
  $PY -m reportminer.trainer.cli train --model "$MODEL" --data "$STAGE"/seed --output "$RUN" \
    --config qwen2.5-0.5b-lora --no-progress --resume "$@" 2>&1 | tee "$OUT/train_stdout.log" | tail -60
  package
  ;;
*)
  echo "usage: $0 setup [--no-smoke] | stage DIR | convert DIR | train [flags] | resume [flags]" >&2; exit 2 ;;
esac
