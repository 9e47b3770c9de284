#!/usr/bin/env bash
# Runs ON the device machine, in a lease that scripts/gpu_experiment.sh set up (vLLM in /tmp/site-vllm, the
# converted models in /tmp/models, trained adapters in /tmp/exp/NAME/best, seed rows in .stage/seed):
# scripts/bench_gpu.py over the real model with its trained adapter (issue 17), detached, one command to
# start it and one to poll it. Each call of the device tool lasts 10 minutes at most; the run goes on
# between calls while the machine stays warm.
#
#   scripts/gpu_bench.sh start m05 NAME [bench_gpu.py flags]   # detached; adapter /tmp/exp/NAME/best
#   scripts/gpu_bench.sh wait m05 [SECONDS]                     # progress until done or SECONDS; copies to $OUT
#   scripts/gpu_bench.sh stop m05                                # stop it (the finished phases stay in the JSON)
#
# MODEL m05 | m15. Defaults: 4096 rows cycled from .stage/seed, the gpu.yaml settings, every phase but ray,
# BUDGET seconds of wall time (default 480: no process starts with less than a minute left, the running one
# is stopped at the end, the JSON keeps what finished). Results: /tmp/bench-MODEL.json (written after every
# process), logs in /tmp/bench-MODEL/proc-*.log; `wait` copies both into $OUT (default /tmp/out).
# Every compile cache (vLLM, Triton, inductor, flashinfer) goes to /tmp/rmcache/compile (engine/compile_cache.py),
# so the second model's run and any later engine on this machine start from what the first compiled.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE_V=/tmp/site-vllm EXP=/tmp/exp OUT=${OUT:-/tmp/out}
SRC=$(scripts/srcview.sh /tmp/srcview)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export REPORTMINER_CACHE=${REPORTMINER_CACHE:-/tmp/rmcache}
# The engine core runs in its own process on CUDA, as `engine run` starts it (engine/generate.py keeps it in-process
# on CPU only). Until 2026-12-06 this script exported VLLM_ENABLE_V1_MULTIPROCESSING=0, so that day's real-model
# figures (docs/BENCHMARKS.md) ran scheduler, grammar and detokenizer in one Python process: not the product's
# setting, and the guided phases were CPU-bound (GPU 17-24 % busy). bench_gpu.py records the variable in its JSON.
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0}
declare -A MODEL_DIR=([m05]=/tmp/models/qwen2.5-coder-0.5b-instruct [m15]=/tmp/models/qwen2.5-coder-1.5b-instruct)
mkdir -p "$OUT"

cmd=${1:-}; m=${2:-}
[ -n "$m" ] && [ -n "${MODEL_DIR[$m]:-}" ] || { sed -n 2,18p "$0"; exit 2; }
# TAG=fp8 keeps a second run beside the first (/tmp/bench-m05-fp8.json): e.g. `--set quantization=fp8`.
id=$m${TAG:+-$TAG}
work=/tmp/bench-$id json=/tmp/bench-$id.json pidf=/tmp/bench-$id.pid

case "$cmd" in
start)
  name=${3:?adapter NAME: /tmp/exp/NAME/best}; shift 3
  [ -f "$EXP/$name/best/adapter_config.json" ] || { echo "no adapter at $EXP/$name/best" >&2; exit 2; }
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then echo "already running: pid $(cat "$pidf")"; exit 0; fi
  rm -f "$json"
  setsid nohup env PYTHONPATH="$SITE_V:$SRC" python3 scripts/bench_gpu.py --model "${MODEL_DIR[$m]}" \
      --adapter "$name=$EXP/$name/best" --input .stage/seed --rows "${ROWS:-4096}" --work "$work" \
      --json-out "$json" --budget-s "${BUDGET:-480}" "$@" > "$work.stdout" 2> "$work.err" < /dev/null &
  echo $! > "$pidf"
  echo "bench $m started (pid $!): $json, logs $work/proc-*.log"
  ;;
wait)
  end=$(( $(date +%s) + ${3:-0} ))
  while :; do
    grep -h '^\[bench\]' "$work.err" 2>/dev/null | tail -1
    for l in "$work"/proc-*.log; do
      [ -e "$l" ] && echo "$(basename "$l"): $(grep -c BENCH_PHASE_RESULT "$l") phase(s) done | $(grep -v BENCH_PHASE_RESULT "$l" | tail -c 240 | tr '\n\r' '  ')"
    done
    if ! { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }; then echo done; break; fi
    [ "$(date +%s)" -ge "$end" ] && break
    sleep 15; echo ---
  done
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
  [ -s "$json" ] && python3 - "$json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k, v in d["results"].items():
    print(f"{k:14s}", {x: v.get(x) for x in ("rows_per_s", "output_tok_per_s", "first_row_s", "valid_share",
                                                 "engine_start_s", "warmup_s", "wall_s", "phase_failed", "skipped")
                       if v.get(x) is not None}, (v.get("steady") or {}).get("gpu_util_pct"),
          (v.get("steady") or {}).get("cpu_cores"))
print("vs bare:", d.get("vs_bare"), "\ntarget:", d.get("target"), "\nbackends:", d.get("backends"))
PY
  cp "$json" "$work.err" "$OUT"/ 2>/dev/null
  [ -d "$work" ] && tar czf "$OUT/bench-$id-logs.tar.gz" -C "$work" plan.json $(cd "$work" && ls proc-*.log 2>/dev/null)
  ls -la "$OUT"
  ;;
stop)
  # SIGTERM to bench_gpu.py: it kills the process it runs (and what that started), keeps the JSON
  [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null && echo "stopped $(cat "$pidf")"
  ;;
*) sed -n 2,18p "$0"; exit 2 ;;
esac
