#!/usr/bin/env bash
# Round 5 lease (issue 16 + a warm-start figure for issue 17), as it ran on 2026-12-06 (docs/RESULTS.md round 5),
# on the device after `scripts/gpu_experiment.sh stage ...` and `setup`; it reads r5/serve-gen.jsonl = benchmarks/genbench
# + benchmarks/genbench-flat cases concatenated (`cat benchmarks/genbench/cases.jsonl benchmarks/genbench-flat/cases.jsonl > r5/serve-gen.jsonl`).
# It ran from the repository root as r5/lease.sh (the paths below say so).
#   bash r5/lease.sh queue    # freeze the tree in /tmp/repo, queue trainings, serves, warm start (all detached)
#   bash r5/lease.sh wait S   # poll (from /tmp/repo)
#   bash r5/lease.sh pack     # results into $OUT
set -uo pipefail
case "${1:-}" in
queue)
  mkdir -p /tmp/repo
  tar c --exclude='./.carry*' --exclude=./.whl --exclude=./.git --exclude=./.venv . | tar x -C /tmp/repo
  cd /tmp/repo
  G=scripts/gpu_experiment.sh
  X='extra_data=[benchmarks/restraint-train/rows.jsonl,benchmarks/flat-train/rows.jsonl]'
  $G train b15 m15
  $G train b05 m05
  AFTER=b05 $G train r05f m05 --set "$X" --set graft_share=0.3
  # serves start while other jobs train: a fixed KV cache skips vLLM's memory profiling (which fails when
  # another process frees memory during it); GPU_MEM only has to be free at start
  AFTER=b15 EAGER=0 GPU_MEM=0.08 GENBENCH=r5/serve-gen.jsonl $G serve m15 m15 b15 -- --kv-cache 10GiB
  AFTER=r05f EAGER=0 GPU_MEM=0.08 GENBENCH=r5/serve-gen.jsonl $G serve m05 m05 b05 r05f -- --kv-cache 6GiB
  # issue 17: a new engine process with the compile cache the m15 serve left (same settings), 64 rows
  setsid nohup bash -c "while [ ! -f /tmp/exp/serve-m15.done ]; do sleep 5; done; bash r5/lease.sh warm m15 b15 10GiB" \
    > /tmp/exp/warm-m15.log 2>&1 < /dev/null &
  echo queued
  ;;
warm)
  m=$2 ad=$3 kv=$4 mode=${5:-}
  declare -A MD=([m05]=/tmp/models/qwen2.5-coder-0.5b-instruct [m15]=/tmp/models/qwen2.5-coder-1.5b-instruct)
  SRC=$(scripts/srcview.sh /tmp/srcview)
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  export REPORTMINER_CACHE=/tmp/rmcache VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_USE_FLASHINFER_SAMPLER=0
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  head -64 /tmp/exp/bench/dev.jsonl > /tmp/exp/warm-in.jsonl
  tag=warm-$m${mode:+-$mode}
  du -sh /tmp/rmcache/compile 2>/dev/null
  t0=$(date +%s.%N)
  PYTHONPATH=/tmp/site-vllm:$SRC python3 -m reportminer.engine.cli run --input /tmp/exp/warm-in.jsonl \
    --out /tmp/exp/$tag --overwrite --model "${MD[$m]}" --adapter "$ad=/tmp/exp/$ad/best" --device cuda \
    --gpu-memory-utilization 0.08 --max-num-seqs 256 --max-model-len 4096 --kv-cache "$kv" \
    ${mode:+--set cudagraph_mode=$mode} --json /tmp/exp/$tag.json
  echo "exit $? wall_s $(python3 -c "import time; print(round(time.time() - $t0, 1))")" | tee /tmp/exp/$tag.done
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"
  for f in /tmp/exp/warm-*.done; do [ -e "$f" ] && echo "$f: $(cat "$f")"; done
  tail -c 300 /tmp/exp/warm-m15.log 2>/dev/null | tr '\n\r' '  '; echo
  ;;
pack)
  cd /tmp/repo && scripts/gpu_experiment.sh pack
  cd /tmp/exp && tar czf "${OUT:-/tmp/out}/warm.tar.gz" warm-*.log warm-*.json warm-*.done 2>/dev/null; ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n 2,5p "$0"; exit 2 ;;
esac
