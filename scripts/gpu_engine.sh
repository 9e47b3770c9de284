#!/usr/bin/env bash
# Runs ON the device (H200) machine: the engine, unchanged, on vLLM's CUDA build (0.27.1, the wheel set of
# ../shared/gpu/vllm-0.27.1-cp312-wheels.txt split into .carry/pNN by ../shared/tools/chunk-carry.sh).
# One step per call; calls must follow each other while the machine is warm (/tmp/stage lives with it).
#   scripts/gpu_engine.sh stage .carry/p01      # carry .carry/p01: move one part into /tmp/stage
#   scripts/gpu_engine.sh run .carry/p07        # carry .carry/p07 .stage: last part, install, run, report
# Recorded in docs/gpu-engine-run.md.
set -uo pipefail
STAGE=/tmp/stage SITE=/tmp/site OUT=${OUT:-/tmp/out}
export PYTHONPATH="$SITE:$(scripts/srcview.sh /tmp/srcview)" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export REPORTMINER_CACHE=/tmp/rmcache
mkdir -p "$STAGE" "$OUT"
[ -n "${2:-}" ] && cp "$2"/* "$STAGE"/
case "${1:-}" in
stage) ls "$STAGE" | wc -l ;;
run)
  set -e
  (cd "$STAGE" && for f in *.chunk000; do [ -e "$f" ] || continue; b=${f%.chunk000}; cat "$b".chunk* > "$b" && rm "$b".chunk*; done && sha256sum -c --quiet MANIFEST)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$STAGE"/*.whl
  mkdir -p $REPORTMINER_CACHE/tokenizers/qwen3 && tar xzf .stage/qwen3-tokenizer.tar.gz -C $REPORTMINER_CACHE/tokenizers/qwen3
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)'
  python3 scripts/make_tiny_model.py --out /tmp/tiny --adapter-out /tmp/lora-a --adapter-out /tmp/lora-b
  python3 -c 'from reportminer.data.io import jsonl_to_table, write_shards; write_shards(jsonl_to_table("data/demo/demo.jsonl"), "/tmp/shards", rows_per_shard=4)'
  rc=0
  time python3 -m reportminer.engine.cli run --input /tmp/shards --out /tmp/res --model /tmp/tiny \
      --adapter a=/tmp/lora-a --adapter b=/tmp/lora-b --include-base --max-tokens 256 --enforce-eager \
      2>&1 | tail -40 || rc=$?
  # a rerun must skip every shard
  python3 -m reportminer.engine.cli run --input /tmp/shards --out /tmp/res --model /tmp/tiny \
      --adapter a=/tmp/lora-a --adapter b=/tmp/lora-b --include-base --max-tokens 256 --enforce-eager 2>&1 | tail -5 || true
  cp /tmp/res/_engine_summary.json "$OUT"/ ; tar czf "$OUT"/results.tar.gz -C /tmp/res .
  python3 - <<'PY'
import pyarrow.parquet as pq, collections
t = pq.read_table("/tmp/res").to_pylist()
c = collections.Counter((r["adapter"], r["status"], (r["error"] or "").split(":")[0]) for r in t)
print("rows", len(t), dict(c))
PY
  ;;
*) echo "usage: $0 stage DIR | run DIR" >&2; exit 2 ;;
esac
