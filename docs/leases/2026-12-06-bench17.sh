#!/usr/bin/env bash
# Issue 17's lease (2026-12-06, fifth session): scripts/bench_gpu.py over the real 0.5B model with its trained
# adapter (round 6's b05a: the 0.5B recipe on the 700 seed rows, the adapter issue 17's table used), 4,096 seed
# rows, engine/configs/gpu.yaml settings, CUDA graphs on; then FP8 weights on the product's default path.
# Rounds 5-7 queued this bench behind the quality work three times and it never ran (device time lost to machines
# that did not start); this lease runs it first and alone on the GPU, so no training or serve shares it.
# On the device, in this order (one call each; the first starts the machine):
#   scripts/gpu_experiment.sh stage m05 .carry-m05/pNN                       (carry it; 11 calls)
#   WHL=.whl-conv scripts/gpu_experiment.sh setup && scripts/gpu_experiment.sh stage vllm .carry-vllm/p02 \
#     && mkdir -p /tmp/exp/b05a && cp -r .carry-ad/b05a/best /tmp/exp/b05a/  (carry .whl-conv .stage .carry-vllm/p02 .carry-ad)
#   scripts/gpu_experiment.sh stage vllm .carry-vllm/pNN                     (the other 8)
#   scripts/gpu_experiment.sh setup-vllm && bash docs/leases/2026-12-06-bench17.sh queue S   (carry .stage alone: it
#     does not fit beside a 46 MiB vllm part, so stage the last part in a call of its own first;
#     PHASES=bare,json-guidance,lora,json-xgrammar ... queue S: the product-setting rerun first)
#   bash docs/leases/2026-12-06-bench17.sh wait S    # poll
#   bash docs/leases/2026-12-06-bench17.sh pack      # both JSONs and their logs into $OUT
#   Compile cache (docs/leases/NEXT.md): where .carry-cc exists, `stage cc .carry-cc/pNN` + `cache-in` before any
#   engine starts; `scripts/gpu_experiment.sh cache-out` before the pack, to carry it into the next lease.
# .whl-conv holds only what setup's GGUF conversion needs (gguf, jsonschema; `cp .whl/{gguf,jsonschema,referencing,
# rpds}* .whl-conv/`): no training runs in this lease, and .whl's bitsandbytes alone (43 MB) would cost a call.
# .carry-ad/b05a/best is .cache/r6/adapters/b05a/best (seed-trained: never committed). S = budget_left_s from `status`.
# Without .carry-ad (a fresh checkout: seed-trained adapters never travel between sessions), ADAPTER=demo benches the
# committed data/demo/adapter (the 0.5B, r 8, team rows only): `mkdir -p /tmp/exp/demo && cp -r data/demo/adapter
# /tmp/exp/demo/best` in the setup call, then `ADAPTER=demo ... queue S`.
# What happened (2026-12-06, 17:41-18:49 here): eight calls found no machine (H100 and H200 alike; 736 s of the
# 1,800); the ninth got an H100 at 18:32 (its start 84 s), 980 s left. Staging took ~3 s a call (20 calls). The bench started 18:35:25 with
# a 779 s budget: bare and merged finished, the third process (json-guidance, engine, lora) finished json-guidance
# before the pack; the FP8 run never started. docs/BENCHMARKS.md has the figures; gpu_bench.sh exported
# VLLM_ENABLE_V1_MULTIPROCESSING=0 then (the engine core in-process), which it no longer does.
# Sixth session (21:57-22:08): fifteen calls found no machine (1,107 s); an H200 came with 693 s left and ran
# `PHASES=bare,json-guidance,lora,json-xgrammar ... queue 618` with the engine core in its own process: bare and
# json-guidance finished (docs/bench/2026-12-06-h200-real05-mp), lora was cut mid-phase at the pack.
# Seventh session: the default phases put json-uncapped (the grammar without the contract's length caps; on the CPU
# guidance's masks cost ~11x less without them, docs/BENCHMARKS.md) right after its baseline json-guidance, in the
# same engine; then lora (its valid share). xgrammar on vLLM 0.27.1 forces ", " and ": " (unlike training): last.
set -uo pipefail
case "${1:-}" in
queue)
  left=${2:?device seconds left to the lease (status: budget_left_s)}
  scripts/gpu_experiment.sh freeze && cd /tmp/repo || exit 1
  deadline=$(( $(date +%s) + left - 100 ))  # the pack call's margin
  echo "$deadline" > /tmp/bench17.deadline
  # Phases in the order the issue needs them (a budget that runs out keeps the first): the ceiling, the merged
  # adapter (the lever that removes LoRA's cost), the default path with its parts (one engine start), the other
  # grammar backend, a new process's start from the compile cache the others left. FP8 after, if >= 330 s are left
  # (round 7: an FP8 engine's cold start took 250 s).
  setsid nohup bash -c "while [ ! -f /tmp/models/qwen2.5-coder-0.5b-instruct/SOURCE.json ]; do sleep 2; done
    BUDGET=\$(( $deadline - \$(date +%s) )) scripts/gpu_bench.sh start m05 ${ADAPTER:-b05a} \
      --phases ${PHASES:-bare,json-guidance,json-uncapped,lora,merged,engine,json-xgrammar,start}
    while kill -0 \$(cat /tmp/bench-m05.pid) 2>/dev/null; do sleep 5; done
    b=\$(( $deadline - \$(date +%s) )); echo \"fp8 budget \$b s\"
    [ \$b -ge 330 ] && TAG=fp8 BUDGET=\$b scripts/gpu_bench.sh start m05 ${ADAPTER:-b05a} --phases json-guidance \
      --set quantization=fp8
    echo done > /tmp/bench17.done" > /tmp/bench17.log 2>&1 < /dev/null &
  echo "queued; pack before $(date -d @"$deadline" +%H:%M:%S)"
  ;;
wait)
  cd /tmp/repo && end=$(( $(date +%s) + ${2:-0} ))
  while [ ! -f /tmp/bench17.done ] && [ "$(date +%s)" -lt "$end" ]; do sleep 15; done
  OUT=/tmp/null scripts/gpu_bench.sh wait m05 0 | grep -v '^-'; cat /tmp/bench17.log
  [ -f /tmp/bench-m05-fp8.pid ] && OUT=/tmp/null TAG=fp8 scripts/gpu_bench.sh wait m05 0 | grep -v '^-'
  ;;
pack)
  cd /tmp/repo && scripts/gpu_bench.sh wait m05 0 > /dev/null
  [ -f /tmp/bench-m05-fp8.pid ] && TAG=fp8 scripts/gpu_bench.sh wait m05 0 > /dev/null
  cp /tmp/bench17.log /tmp/bench-m05.stdout "${OUT:-/tmp/out}"/ 2>/dev/null; ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n 2,18p "$0"; exit 2 ;;
esac
