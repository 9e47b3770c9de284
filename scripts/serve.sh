#!/usr/bin/env bash
# Start `vllm serve` with LoRA adapters and the settings `engine run` uses locally, for `engine run --server`.
# The command comes from `engine serve-args` (engine/serving.py: EngineConfig's fields -> vLLM flags); this
# script only maps its arguments and environment onto that command's flags, runs it, and stops the server's
# process group with it.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/serve.sh MODEL [NAME=ADAPTER_DIR ...] [-- EXTRA_VLLM_SERVE_ARGS ...]
       MODEL=... ADAPTER="NAME=ADAPTER_DIR ..." scripts/serve.sh     (the same from the environment: images)

Starts an OpenAI-compatible vLLM server for `engine run --server URL` with the settings the engine uses
when it starts vLLM itself (`engine serve-args` prints the command without running it): LoRA on (each
adapter served under NAME, which becomes the request's `model`), one LoRA slot more than adapters (vLLM's
CPU kernels read "no adapter" as the last slot: engine/generate.py reset_loras), max-lora-rank from the
adapters' ranks, guided decoding with the guidance backend and compact JSON (no free whitespace, as the
trainer writes answers), prefix caching, seed 0, the engine's device defaults (CPU: 2 GiB KV cache, 128
sequences per step), and `--generation-config vllm` (the model's generation_config.json must not change
sampling). Binds 127.0.0.1 unless HOST says otherwise. Runs in the foreground; Ctrl-C or SIGTERM stops
the server's whole process group (its engine-core child included; what remains after STOP_GRACE_S,
default 20, is killed).

Environment (all optional; MODEL and ADAPTER are read only when no MODEL argument is given):
  MODEL             model folder (with config.json, as `engine run` wants)
  ADAPTER           NAME=ADAPTER_DIR, or several separated by spaces (ADAPTERS is read too)
  HOST              address to bind (default 127.0.0.1; 0.0.0.0 to serve other machines)
  PORT              default 8000
  CONFIG            an engine config (a YAML path, or cpu / gpu): its settings, overridden by the variables
  MAX_MODEL_LEN     default min(4096, the model's own), as the engine's (must be >= the run's)
  MAX_NUM_SEQS      sequences per step (default 128 on CPU, vLLM's on GPU, as the engine's)
  KV_CACHE          KV-cache size, e.g. 2GiB (default 2GiB on the CPU build, vLLM's own on GPU)
  GPU_MEMORY_UTILIZATION  GPU share for weights + KV cache (vLLM's default 0.9)
  TENSOR_PARALLEL_SIZE    GPUs per model (default 1)
  DTYPE             auto (default), bfloat16, float16, float32
  BACKEND           guided-decoding backend (default guidance)
  EAGER             1: --enforce-eager (starts faster; compiled kernels can round differently)
  VLLM_API_KEY      when set, vLLM (which reads it itself) requires it as a Bearer token on /v1/* (not on
                    /health); clients: engine run --api-key-env VLLM_API_KEY. `-- --api-key KEY` works too
                    (the key is not echoed), but puts the key in the process list: prefer the variable.
  VLLM              the vllm command of a GPU build (default: next to the engine's python, else on PATH)
  ENGINE            the engine command (default: this repo's .venv/bin/engine, else on PATH)

Examples:
  # the adapter v4 on a local Qwen3-14B, on this machine only
  scripts/serve.sh /models/Qwen3-14B v4=runs/v4/best
  engine run --model /models/Qwen3-14B --adapter v4=runs/v4/best --server http://127.0.0.1:8000 \
      --input shards/ --out results/
  # two adapters for an A/B run, served to other machines with a key, on port 9000
  HOST=0.0.0.0 PORT=9000 VLLM_API_KEY=secret scripts/serve.sh /models/Qwen3-14B v3=adapters/v3 v4=adapters/v4
  # CPU build, small KV cache, extra vLLM flags after --
  KV_CACHE=512MiB MAX_MODEL_LEN=2048 scripts/serve.sh tiny-model a=adapter-a -- --max-num-batched-tokens 2048
EOF
}

if [ $# -ge 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; }; then usage; exit 0; fi
adapters=(); extra=()
if [ $# -ge 1 ] && [ "$1" != "--" ]; then
  model="$1"; shift
elif [ -n "${MODEL:-}" ]; then
  model="$MODEL"
  read -r -a adapters <<< "${ADAPTER:-} ${ADAPTERS:-}"
else
  usage >&2; exit 2
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    *=*) adapters+=("$1"); shift ;;
    *) echo "serve.sh: expected NAME=ADAPTER_DIR, got '$1' (see --help)" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${ENGINE:-}" ]; then
  if [ -x "$here/.venv/bin/engine" ]; then ENGINE="$here/.venv/bin/engine"; else ENGINE="$(command -v engine || true)"; fi
fi
[ -n "$ENGINE" ] || { echo "serve.sh: no engine command found (install reportminer, or set ENGINE=/path/to/engine)" >&2; exit 2; }

flags=(--model "$model" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}")
for a in "${adapters[@]}"; do flags+=(--adapter "$a"); done
[ -n "${CONFIG:-}" ] && flags+=(--config "$CONFIG")
[ -n "${MAX_MODEL_LEN:-}" ] && flags+=(--max-model-len "$MAX_MODEL_LEN")
[ -n "${MAX_NUM_SEQS:-}" ] && flags+=(--max-num-seqs "$MAX_NUM_SEQS")
[ -n "${KV_CACHE:-}" ] && flags+=(--kv-cache "$KV_CACHE")
[ -n "${GPU_MEMORY_UTILIZATION:-}" ] && flags+=(--gpu-memory-utilization "$GPU_MEMORY_UTILIZATION")
[ -n "${TENSOR_PARALLEL_SIZE:-}" ] && flags+=(--tensor-parallel-size "$TENSOR_PARALLEL_SIZE")
[ -n "${DTYPE:-}" ] && flags+=(--dtype "$DTYPE")
[ -n "${BACKEND:-}" ] && flags+=(--structured-output-backend "$BACKEND")
[ "${EAGER:-0}" = 1 ] && flags+=(--enforce-eager)
[ -n "${VLLM:-}" ] && flags+=(--vllm "$VLLM")
# The server runs in a process group of its own, and a stop signal to this script stops that whole group:
# vLLM's API server starts an engine-core child (VLLM::EngineCore, ~2 GB on the CPU build) that ignored
# SIGTERM and outlived an `exec`ed server killed alone (issue 19). TERM/INT/HUP go to the group; what is
# still there after STOP_GRACE_S seconds (default 20) is killed. (SIGKILL of this script cannot be caught:
# stop the group then, `kill -- -PGID`; the group id is printed below.)
setsid "$ENGINE" serve-args --exec "${flags[@]}" -- "${extra[@]}" &  # the engine process becomes the server
server=$!
pgid=$(ps -o pgid= -p "$server" 2>/dev/null | tr -d ' '); pgid=${pgid:-$server}
echo "[serve] server pid $server, process group $pgid" >&2
group_alive() { kill -0 -- "-$pgid" 2>/dev/null; }
stop_group() {
  trap - TERM INT HUP
  echo "[serve] stopping process group $pgid (SIG$1)" >&2
  kill -"$1" -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 1 $(( ${STOP_GRACE_S:-20} * 10 ))); do group_alive || break; sleep 0.1; done
  if group_alive; then
    echo "[serve] still running after ${STOP_GRACE_S:-20} s: SIGKILL to group $pgid" >&2
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  wait "$server" 2>/dev/null || true
}
trap 'stop_group TERM; exit 143' TERM
trap 'stop_group INT; exit 130' INT
trap 'stop_group HUP; exit 129' HUP
rc=0
wait "$server" || rc=$?
# The server ended by itself: leave no child of it behind either.
if group_alive; then kill -TERM -- "-$pgid" 2>/dev/null || true; sleep 2; kill -KILL -- "-$pgid" 2>/dev/null || true; fi
exit "$rc"
