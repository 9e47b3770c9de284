#!/usr/bin/env bash
# Round 6 lease (issue 16's validation protocol + the 1.5B lever; issue 17's warm-start knobs and bench), on the
# device after `scripts/gpu_experiment.sh stage m05|m15|vllm ...` and `setup`. Everything trains on ALL 700 seed
# rows (.stage/bench700 = `evalkit bench build-dev --seed-dir ../shared/seed --out .stage/bench700 --all-rows`:
# train = ../shared/seed/data, dev = the 50 sample_data rows, none of which is in data/).
# .stage/r6/serve-gen.jsonl = benchmarks/genbench + genbench-flat + genbench-cause cases concatenated (468 ids, distinct).
#   bash docs/leases/2026-12-06-round6.sh queue    # freeze the tree in /tmp/repo, queue trainings and serves (detached)
#   bash docs/leases/2026-12-06-round6.sh warm m15 b15a 10GiB [--set k=v ...]  # a new engine process, 64 rows
#   bash docs/leases/2026-12-06-round6.sh wait S   # poll
#   bash docs/leases/2026-12-06-round6.sh pack     # results (+ the 0.5B adapters) into $OUT
# What happened (docs/RESULTS.md round 6): b15a ran out of GPU memory at epoch 0.18 beside r15fa (40 GB) and b05a
# on the H100; r15fa was killed and b15a re-queued by hand with the same `train b15a m15` / `AFTER=b15a serve m15a
# m15 b15a` lines (BENCH, GENBENCH, EAGER exported as in `queue`), so m15b never ran. Then, by hand:
#   after serve-m05: warm m05 b05a 6GiB; the same twice with --set cudagraph_specialize_lora=false
#   after both serves: warm m15 b15a 10GiB; the same twice with --set cudagraph_specialize_lora=false
# Two 1.5B fp32 trainings and a 0.5B one do not fit one 80 GB card together: queue at most one 1.5B beside the 0.5B.
set -uo pipefail
L=docs/leases/2026-12-06-round6.sh
case "${1:-}" in
queue)
  mkdir -p /tmp/repo /tmp/exp
  tar c --exclude='./.carry*' --exclude=./.whl --exclude=./.git --exclude=./.venv . | tar x -C /tmp/repo
  cd /tmp/repo
  G=scripts/gpu_experiment.sh
  X='extra_data=[benchmarks/restraint-train/rows.jsonl,benchmarks/flat-train/rows.jsonl]'
  export BENCH=/tmp/exp/bench700 GENBENCH=.stage/r6/serve-gen.jsonl EAGER=0
  $G train b15a m15
  $G train r15fa m15 --set "$X" --set graft_share=0.3
  $G train b05a m05
  # (r05fa, the 0.5B lever on 700 rows, was cut: the first 271 s of device time went to machines that did not start)
  AFTER=b05a $G serve m05 m05 b05a
  AFTER=b15a $G serve m15a m15 b15a
  # r15fa's serve starts with the compile cache m15a left; it captures only the LoRA graphs (issue 17's knob)
  AFTER="r15fa serve-m15a" $G serve m15b m15 r15fa -- --set cudagraph_specialize_lora=false
  echo queued
  ;;
warm)
  # issue 17: a new `engine run` process on 64 dev rows, fresh --out (no row cache), compile cache left behind
  m=$2 ad=$3 kv=$4; shift 4
  declare -A MD=([m05]=/tmp/models/qwen2.5-coder-0.5b-instruct [m15]=/tmp/models/qwen2.5-coder-1.5b-instruct)
  SRC=$(scripts/srcview.sh /tmp/srcview)
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  export REPORTMINER_CACHE=/tmp/rmcache VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_USE_FLASHINFER_SAMPLER=0
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  head -64 /tmp/exp/bench/dev.jsonl > /tmp/exp/warm-in.jsonl
  tag=warm-$m-$(date +%H%M%S)
  du -sh /tmp/rmcache/compile 2>/dev/null
  t0=$(date +%s.%N)
  PYTHONPATH=/tmp/site-vllm:$SRC python3 -m reportminer.engine.cli run --input /tmp/exp/warm-in.jsonl \
    --out /tmp/exp/$tag --model "${MD[$m]}" --adapter "$ad=/tmp/exp/$ad/best" --device cuda \
    --gpu-memory-utilization 0.08 --max-num-seqs 256 --max-model-len 4096 --kv-cache "$kv" \
    "$@" --json /tmp/exp/$tag.json > /tmp/exp/$tag.log 2>&1
  echo "$tag $* exit $? wall_s $(python3 -c "import time; print(round(time.time() - $t0, 1))")" | tee /tmp/exp/$tag.done
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"
  for f in /tmp/exp/warm-*.done; do [ -e "$f" ] && cat "$f"; done
  ;;
pack)
  cd /tmp/repo && KEEP="${KEEP-b05a}" scripts/gpu_experiment.sh pack
  cd /tmp/exp && tar czf "${OUT:-/tmp/out}/warm.tar.gz" warm-*.log warm-*.json warm-*.done 2>/dev/null; ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n 2,9p "$0"; exit 2 ;;
esac
