#!/usr/bin/env bash
# Runs ON the device (H200) machine: quality experiments (train several variants at once on one GPU, serve
# them all in one engine pass, bring the results back). One step per call, calls back to back while the
# machine is warm (/tmp lives with it). A machine idle for 30 s is given back with /tmp: score results here only
# after the last call that needs the machine (a 5-sample run was lost that way on 2026-11-30). Prepared here by:
#   scripts/gpu_prepare.sh                  # .whl (train wheels), .stage (seed), .carry-* sets
#   python scripts/build_dev_benchmark.py --out .stage/bench
#
#   scripts/gpu_experiment.sh stage SET DIR   # carry DIR (e.g. .carry-vllm/p03): its files into /tmp/stage/SET
#                                          # SET ray: .carry-ray/p01..p03 (ray[data] 2.60.0 wheels, for bench_gpu.py's Ray phases)
#   scripts/gpu_experiment.sh setup           # carry .whl .stage: rebuild + check every set, install, convert models
#                                          # (WHL=.whl-conv: a lease that trains nothing carries only what the GGUF
#                                          # conversion needs, gguf + jsonschema, 0.6 MB instead of 44: one call fewer)
#   scripts/gpu_experiment.sh convert m05     # a model staged after setup: rebuild, convert (queued trainings wait)
#   scripts/gpu_experiment.sh setup-vllm      # later, once vllm (and ray) are staged: rebuild + check, install them
#   scripts/gpu_experiment.sh ready NAME m05  # detached: NAME.done once vLLM imports and the model is converted (AFTER=NAME)
#   GPU=1 scripts/gpu_experiment.sh train|serve ...  # pin one GPU of a several-GPU machine (CUDA_VISIBLE_DEVICES)
#   scripts/gpu_experiment.sh bench [bench_gpu.py flags]  # detached bench_gpu.py (14B shape) -> /tmp/bench.json
#   scripts/gpu_experiment.sh train NAME MODEL [--set k=v ...]   # detached; MODEL = m05 | m15
#   scripts/gpu_experiment.sh wait [SECONDS]  # poll the detached trainings, print progress
#   scripts/gpu_experiment.sh stop NAME...    # end trainings now, keeping best/ (saved at each new best epoch): their
#                                          # .done files are written, so serves queued AFTER them start
#   scripts/gpu_experiment.sh serve TAG MODEL NAME... [-- engine flags]  # one engine pass, every NAME's best adapter
#   scripts/gpu_experiment.sh coldstart m05 NAME  # issue 17: a fresh-container start with the cache volume (64 rows)
#   scripts/gpu_experiment.sh cache-out [FIRST]   # the compile cache into $OUT (7 chunks a call) for the next lease
#   scripts/gpu_experiment.sh cache-in            # one carried from an earlier lease (stage cc .carry-cc/pNN first)
#   scripts/gpu_experiment.sh pack            # results, manifests, logs (+ adapters of $KEEP) into $OUT
#   scripts/gpu_experiment.sh freeze          # this call's tree into /tmp/repo (a lease's detached jobs outlive the
#                                          # call that queued them) + the three genbench files as /tmp/exp/serve-gen.jsonl
# Environment for train and serve (issue 16):
#   AFTER="a b"   start only once the detached jobs a and b have finished (their .done files), or a glob under
#                 /tmp/exp matches ("serve-m05/*.parquet": that serve's engine is up): one call can queue a
#                 lease's trainings and serves. With KV_CACHE=none, on one GPU start a vLLM engine only when no
#                 other process will free GPU memory during its start (vLLM's memory profiling fails when free
#                 memory grows); the default fixed KV cache skips that profiling
#   BENCH=DIR     train on DIR/train.jsonl, serve DIR/dev.jsonl (default /tmp/exp/bench, the dev benchmark's
#                 583-row split; setup copies every .stage/bench*/ there, e.g. bench700 = all 700 seed rows with the
#                 50 sample_data rows as dev: the issue-16 validation protocol, round 6)
#   GENBENCH=PATH serve: the generalisation benchmark served beside dev with its perturbation variants
#                 (default genbench-flat + genbench-cause, the union validated in round 6; several paths
#                 comma-separated; none = dev only)
#   EAGER=0       serve with CUDA graphs (vLLM captures them at start, ~1 min; the LoRA path runs ~4x faster:
#                 docs/BENCHMARKS.md); default 1 = --enforce-eager as in rounds 1-3
#   KV_CACHE=6GiB serve: a fixed KV cache (engine --kv-cache), so vLLM skips its memory profiling, which fails
#                 when another process frees GPU memory during the start: serves can start while trainings
#                 run (round 5, one H100: both serves started beside trainings this way). Default per model:
#                 m05 6GiB, m15 10GiB (~500k / ~370k tokens of KV; 256 rows of ~900 tokens need ~230k);
#                 KV_CACHE=none: vLLM sizes the KV cache from GPU_MEM after profiling (rounds 1-4)
#   GPU_MEM=0.2   serve: with a fixed KV cache, the share of the GPU's memory that must be free when the
#                 engine starts (default 0.08; weights, activations and CUDA graphs come on top of the KV
#                 cache); with KV_CACHE=none, the share vLLM takes (default 0.40; less while trainings run)
set -uo pipefail
STAGE=/tmp/stage EXP=/tmp/exp OUT=${OUT:-/tmp/out}
BENCH=${BENCH:-$EXP/bench}  # train on its train.jsonl, serve its dev.jsonl (BENCH=/tmp/exp/bench700: all seed rows)
SITE_T=/tmp/site-train SITE_V=/tmp/site-vllm
SRC=$(scripts/srcview.sh /tmp/srcview)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export REPORTMINER_CACHE=/tmp/rmcache VLLM_ENABLE_V1_MULTIPROCESSING=0
# On a fresh machine vLLM JIT-compiled flashinfer's sampling kernels (nvcc + ptxas) for about 3 minutes
# before the first row (2026-11-30); vLLM's own sampler needs no compile.
export VLLM_USE_FLASHINFER_SAMPLER=0
# Several trainings and serves share one GPU: fewer fragments in the caching allocator.
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$STAGE" "$EXP" "$OUT"
# GPU=N pins a detached job to one GPU of a several-GPU machine (two trainings or serves side by side).
PIN=${GPU:+CUDA_VISIBLE_DEVICES=$GPU}
declare -A MODEL_DIR=([m05]=/tmp/models/qwen2.5-coder-0.5b-instruct [m15]=/tmp/models/qwen2.5-coder-1.5b-instruct)
declare -A RECIPE=([m05]=qwen2.5-0.5b-lora [m15]=qwen2.5-1.5b-lora)
declare -A PKG=([m05]=DEMO [m15]=CODER_1_5B)
declare -A KV=([m05]=6GiB [m15]=10GiB)  # serve's fixed KV cache (KV_CACHE): what round 5 served with beside trainings
# AFTER="a b serve-x/*.parquet": a shell loop that waits for those jobs' .done files, or for a glob under $EXP
# to match (a serve's first result shard: its engine has started), as a detached job's first step.
after() {
  local w="" j
  for j in ${AFTER:-}; do
    case $j in
      *[*/]*) w+="until compgen -G '$EXP/$j' > /dev/null; do sleep 5; done; " ;;
      *) w+="while [ ! -f '$EXP/$j.done' ]; do sleep 5; done; " ;;
    esac
  done
  printf '%s' "$w"
}

rebuild() {  # $1 = set folder: join chunk files, check the MANIFEST of whole-file sha256s
  (cd "$1" && for f in *.chunk000; do [ -e "$f" ] || continue; b=${f%.chunk000}; cat "$b".chunk* > "$b" && rm "$b".chunk*; done \
    && sha256sum -c --quiet MANIFEST)
}

install_serving() {  # vLLM (and Ray) beside the training wheels, where staged and not installed yet
  if [ -d "$STAGE/vllm" ] && [ ! -d "$SITE_V/vllm" ]; then  # a training-only lease stages no vLLM
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE_V" "$STAGE"/vllm/*.whl
    PYTHONPATH=$SITE_V:$SRC python3 -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)' 2>&1 | tail -1
  fi
  if [ -d "$STAGE/ray" ] && [ ! -d "$SITE_V/ray" ]; then  # ray[data]==2.60.0 + msgpack for Python 3.12
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE_V" "$STAGE"/ray/*.whl
    PYTHONPATH=$SITE_V python3 -c 'import ray; print("ray", ray.__version__)' 2>&1 | tail -1
  fi
}

convert() {  # $1 = m05 | m15: GGUF -> HF folder in the background (about a minute); `wait` reports it
  local g
  g=$(ls "$STAGE/$1"/*.gguf 2>/dev/null | head -1) || true
  [ -n "$g" ] || return 0
  setsid nohup env PYTHONPATH=$SITE_T:$SRC python3 -c "from pathlib import Path; from reportminer.data.models.demo import convert_gguf, ${PKG[$1]}; convert_gguf(Path('$g'), Path('${MODEL_DIR[$1]}'), ${PKG[$1]})" \
    > "$EXP/convert-$1.log" 2>&1 < /dev/null &
  echo "converting $1"
}

case "${1:-}" in
freeze)
  # Each call gets a fresh copy of the tree; a lease's queue runs from a frozen one. The union served once, scored
  # per file (docs/analysis/r7/score.sh): genbench, genbench-flat, genbench-cause. Copied over, never removed first:
  # detached jobs of an earlier queue may be running from /tmp/repo.
  mkdir -p /tmp/repo
  tar c --exclude='./.carry*' --exclude='./.whl*' --exclude=./.git --exclude=./.venv --exclude=./.cache . | tar x -C /tmp/repo
  cat benchmarks/genbench/cases.jsonl benchmarks/genbench-flat/cases.jsonl benchmarks/genbench-cause/cases.jsonl \
    > "$EXP/serve-gen.jsonl"
  echo "froze $(du -sh /tmp/repo | cut -f1) into /tmp/repo; $(wc -l < "$EXP/serve-gen.jsonl") genbench cases"
  ;;
stage)
  mkdir -p "$STAGE/$2" && cp "$3"/* "$STAGE/$2"/ && du -sh "$STAGE/$2"
  ;;
setup)
  set -e
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  for s in "$STAGE"/*/; do rebuild "$s" && echo "ok: $s"; done
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE_T" "${WHL:-.whl}"/*.whl
  install_serving
  for b in .stage/bench*/; do cp -r "$b" "$EXP/$(basename "$b")"; done  # bench (583-row split), bench700, ...
  for m in m05 m15; do convert "$m"; done
  echo "setup done; conversions started"
  ;;
convert)
  # a model staged after setup (its trainings may already be queued: they wait for the converted model)
  set -e
  rebuild "$STAGE/$2" && echo "ok: $STAGE/$2"
  convert "$2"
  ;;
ready)
  # `ready NAME [m05|m15]`, detached: $EXP/NAME.done appears once vLLM (staged after the queue) imports and the model
  # is converted, so that `AFTER=NAME` starts a bench or serve no sooner. The lease scripts queue before vLLM is staged.
  m=${3:-m05}
  setsid nohup bash -c "until [ -f '${MODEL_DIR[$m]}/SOURCE.json' ] &&
      PYTHONPATH=$SITE_V python3 -c 'import vllm' 2> /dev/null; do sleep 10; done
    sleep 10; echo 'exit 0' > '$EXP/$2.done'" > /dev/null 2>&1 < /dev/null &
  echo "$2.done once vLLM imports and $m is converted"
  ;;
setup-vllm)
  set -e
  for s in "$STAGE"/vllm/ "$STAGE"/ray/; do [ -d "$s" ] && rebuild "$s" && echo "ok: $s"; done
  install_serving
  ;;
bench)
  # bench_gpu.py detached (each phase starts vLLM; a call lasts 10 minutes at most); `bench-wait` polls it
  shift
  setsid nohup env PYTHONPATH=$SITE_V:$SRC python3 scripts/bench_gpu.py "$@" > /tmp/bench.json 2> /tmp/bench.err < /dev/null &
  echo "bench started"
  ;;
bench-wait)
  end=$(( $(date +%s) + ${2:-0} ))
  while :; do
    for l in /tmp/bench-gpu/phase-*.log; do [ -e "$l" ] && echo "$(basename "$l"): $(tail -c 200 "$l" | tr '\n\r' '  ')"; done
    if [ -s /tmp/bench.json ] && ! pgrep -f bench_gpu.py > /dev/null; then echo done; break; fi
    [ "$(date +%s)" -ge "$end" ] && break
    sleep 15; echo ---
  done
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
  cp /tmp/bench.json /tmp/bench.err "$OUT"/ 2>/dev/null
  [ -d /tmp/bench-gpu ] && tar czf "$OUT/bench-logs.tar.gz" -C /tmp/bench-gpu plan.json $(cd /tmp/bench-gpu && ls phase-*.log 2>/dev/null)
  ls -la "$OUT"
  ;;
train)
  name=$2 m=$3; shift 3
  model=${MODEL_DIR[$m]}
  # waits for its model's conversion, then trains; detached so a call's 10-minute limit cannot kill it
  setsid nohup bash -c "$(after)while [ ! -f '$model/SOURCE.json' ]; do sleep 2; done; \
    $PIN PYTHONPATH=$SITE_T:$SRC python3 scripts/experiment.py --bench $BENCH --work $EXP train --name $name \
      --model $model --recipe ${RECIPE[$m]} ${*:+$(printf '%q ' "$@")}; echo \"exit \$?\" >> $EXP/$name.done" \
    > "$EXP/$name.log" 2>&1 < /dev/null &
  echo "started $name on $m${GPU:+ (GPU $GPU)}${AFTER:+ (after $AFTER)}"
  ;;
wait)
  end=$(( $(date +%s) + ${2:-0} ))
  while :; do
    running=0
    for l in "$EXP"/*.log; do
      n=$(basename "$l" .log)
      case $n in convert-*) continue ;; esac
      if [ -f "$EXP/$n.done" ]; then st=$(cat "$EXP/$n.done"); else st=running; running=$((running + 1)); fi
      echo "$n: $st | $(grep -o "'epoch': '\\?[0-9.]*" "$l" | tail -1) $(grep -o "'eval_loss': '\\?[0-9.]*" "$l" | tail -1) $(tail -c 160 "$l" | tr '\n\r' '  ')"
    done
    [ "$running" = 0 ] || [ "$(date +%s)" -ge "$end" ] && break
    sleep 15; echo ---
  done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ;;
stop)
  # Ends the trainings' python processes only. Their `bash -c` wrappers write the .done files that queued serves
  # wait for: round 9 (2026-12-07) ran `pkill -f "experiment.py .*train --name ..."`, which matched the wrappers'
  # command lines too and killed them instead. The trainings ran on, and no .done file was ever written, so the
  # serve never started and the lease ended without it. The pattern is anchored at the interpreter, so it cannot
  # match a wrapper or this shell.
  shift
  for name in "$@"; do
    if pkill -TERM -f "^python3 scripts/experiment[.]py .* train --name $name( |\$)"; then echo "stopped $name"
    else echo "not running: $name"; fi
  done
  sleep 3
  for name in "$@"; do ls "$EXP/$name/best/adapter_config.json" 2>&1; cat "$EXP/$name.done" 2>/dev/null; done
  ;;
serve)
  # detached like train (engine start + generation); `wait` polls it. Two serves (m05, m15) can share the GPU.
  tag=$2 m=$3; shift 3
  args=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=(--adapter "$1=$EXP/$1/best"); shift; done
  [ "${1:-}" = "--" ] && shift
  eager=--enforce-eager; [ "${EAGER:-1}" = 0 ] && eager=
  gb=${GENBENCH:-benchmarks/genbench-flat/cases.jsonl,benchmarks/genbench-cause/cases.jsonl}
  kv=${KV_CACHE:-${KV[$m]}}  # flags after `--` come later on the command line and win
  if [ "$kv" = none ]; then mem=(--gpu-memory-utilization "${GPU_MEM:-0.40}")
  else mem=(--kv-cache "$kv" --gpu-memory-utilization "${GPU_MEM:-0.08}"); fi
  setsid nohup bash -c "$(after)$PIN PYTHONPATH=$SITE_V:$SRC python3 scripts/experiment.py --bench $BENCH --work $EXP \
      --genbench $gb serve --tag $tag --model ${MODEL_DIR[$m]} $(printf '%q ' "${args[@]}") -- --device cuda $eager \
      ${mem[*]} --max-num-seqs 256 --max-model-len 4096 ${*:+$(printf '%q ' "$@")}; \
    echo \"exit \$?\" >> $EXP/serve-$tag.done" > "$EXP/serve-$tag.log" 2>&1 < /dev/null &
  echo "serving $tag on $m${GPU:+ (GPU $GPU)}${AFTER:+ (after $AFTER)}; genbench $gb; ${mem[*]}${eager:+; eager}"
  ;;
cache-out)
  # The compile cache this machine's engines wrote ($REPORTMINER_CACHE/compile: vLLM's, Triton's, inductor's), to
  # carry into the next lease with `cache-in`: a fresh machine then starts its first engine as a container with a
  # warm cache volume would (issue 17 item 3), not with the ~230-250 s cold compile every lease has paid so far
  # (H100 and H200 are both sm_90). Files back are limited to 8 a call, 16 MiB each: 7 chunks of 15 MiB + the sum.
  #   scripts/gpu_experiment.sh cache-out [FIRST]   # FIRST = the first chunk to copy (0, then 7, ... while left)
  # Here: cat compile.tgz.chunk* > .cache/compile.tgz && sha256sum -c compile.tgz.sha256 (in that folder), then
  #   CARRY=.carry-cc scripts/chunk_carry.sh .cache/compile.tgz
  d=/tmp/ccout first=${2:-0}
  if [ ! -f "$d/compile.tgz.sha256" ]; then
    [ -d "$REPORTMINER_CACHE/compile" ] || { echo "no compile cache at $REPORTMINER_CACHE/compile" >&2; exit 2; }
    rm -rf "$d" && mkdir -p "$d" && tar czf "$d/compile.tgz" -C "$REPORTMINER_CACHE" compile \
      && (cd "$d" && sha256sum compile.tgz > compile.tgz.sha256 && split -d -a 3 -b 15M compile.tgz compile.tgz.chunk \
      && rm compile.tgz) || exit 1
  fi
  n=$(ls "$d"/compile.tgz.chunk* | wc -l)
  ls "$d"/compile.tgz.chunk* | tail -n +$((first + 1)) | head -7 | xargs -r cp -t "$OUT"
  cp "$d/compile.tgz.sha256" "$OUT"/
  if [ $((first + 7)) -lt "$n" ]; then left="again with FIRST=$((first + 7))"; else left="all copied"; fi
  echo "compile cache $(du -sh "$REPORTMINER_CACHE/compile" | cut -f1): $n chunks of 15 MiB; copied from $first; $left"
  ;;
cache-in)
  # A compile cache carried from an earlier lease (`stage cc .carry-cc/pNN` first): joined, checked against its
  # MANIFEST and unpacked into $REPORTMINER_CACHE before any engine starts. The start line of the first engine says
  # how many files it still had to compile.
  rebuild "$STAGE/cc" && mkdir -p "$REPORTMINER_CACHE" && tar xzf "$STAGE/cc/compile.tgz" -C "$REPORTMINER_CACHE" \
    && echo "compile cache in: $(du -sh "$REPORTMINER_CACHE/compile" | cut -f1), $(find "$REPORTMINER_CACHE/compile" -type f | wc -l) files"
  ;;
coldstart)
  # issue 17 item 3: a start as a fresh container with a warm cache volume would make it. The compile cache this
  # machine's engines left (the "volume") is kept; every other cache a first start writes is removed (~/.cache,
  # ~/.triton, /tmp/torchinductor_*: the engine points vLLM, Triton, inductor and flashinfer at the volume, so
  # they should be empty), the page cache is dropped where the kernel lets a container (recorded), and a new
  # `engine run` process reads 64 dev rows into a fresh --out. The time to its first row is the figure.
  #   scripts/gpu_experiment.sh coldstart m05 b05a [--set k=v ...]
  m=$2 ad=$3; shift 3
  [ -f "$EXP/$ad/best/adapter_config.json" ] || { echo "no adapter at $EXP/$ad/best" >&2; exit 2; }
  rm -rf ~/.cache/vllm ~/.cache/flashinfer ~/.triton /tmp/torchinductor_* 2>/dev/null
  sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then dropped=yes; else dropped=no; fi
  head -64 "$BENCH/dev.jsonl" > "$EXP/cold-in.jsonl"
  tag=cold-$m-$(date +%H%M%S)
  echo "$tag: compile cache $(du -sh "$REPORTMINER_CACHE/compile" 2>/dev/null | cut -f1), page cache dropped: $dropped"
  t0=$(date +%s.%N)
  PYTHONPATH=$SITE_V:$SRC python3 -m reportminer.engine.cli run --input "$EXP/cold-in.jsonl" --out "$EXP/$tag" \
    --model "${MODEL_DIR[$m]}" --adapter "$ad=$EXP/$ad/best" --device cuda --gpu-memory-utilization "${GPU_MEM:-0.08}" \
    --max-num-seqs 256 --max-model-len 4096 --kv-cache "${KV_CACHE:-${KV[$m]}}" "$@" --json "$EXP/$tag.json" \
    > "$EXP/$tag.log" 2>&1
  rc=$?
  echo "$tag exit $rc wall_s $(python3 -c "import time; print(round(time.time() - $t0, 1))") page_cache_dropped $dropped" \
    | tee "$EXP/$tag.done"
  grep -ho "compile cache [a-z]*[^;]*; engine start and warm-up [0-9.]* s" "$EXP/$tag.log" | tail -1
  ;;
pack)
  # serve-*/ holds the engine results (every adapter over dev + genbench + variants: ~4 MB for four
  # adapters); a tarball over 15 MB comes back in 15 MB parts (cat results.tar.gz.part* > results.tar.gz).
  cd "$EXP" && tar czf "$OUT/results.tar.gz" --exclude='serve-*/_rowcache' serve-*/ cold-*.json cold-*.log cold-*.done */experiment.json \
    */best/reportminer_adapter.json */best/type_prior.json */metrics.json */run.json *.log *.done 2>/dev/null
  if [ "$(stat -c %s "$OUT/results.tar.gz")" -gt 15728640 ]; then
    split -b 15M -d -a 1 "$OUT/results.tar.gz" "$OUT/results.tar.gz.part" && rm "$OUT/results.tar.gz"
  fi
  for k in ${KEEP:-}; do
    split -b 15M -d -a 1 "$EXP/$k/best/adapter_model.safetensors" "$OUT/$k.best.safetensors.part"
    tar czf "$OUT/$k.best.tar.gz" --exclude=adapter_model.safetensors -C "$EXP/$k" best
  done
  ls -la "$OUT"
  ;;
*)
  sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 2 ;;
esac
