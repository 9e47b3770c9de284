#!/usr/bin/env bash
# Round 8 (issue 16, sixth session, 2026-12-06). Round 7 found the training seed moves the 0.5B recipe as much as
# any lever, so this lease buys seeds (the 1.5B's second, the recommended recipe's second, the plain recipe's
# third) and one lever never measured: the 1.5B with the team's rows (r15fr; round 6's r15fa was stopped for
# memory). Plus one self-consistency serve, and an FP8 serve of the same adapter for issue 17 if time is left.
# On the device, in this order (docs/leases/NEXT.md):
#   (small: skip m15; stage m05 first, then `setup && ... queue S small`, then vllm)
#   scripts/gpu_experiment.sh stage m15 .carry-m15/pNN      (24 calls; the first starts the machine)
#   scripts/gpu_experiment.sh setup && bash docs/leases/2026-12-06-round8.sh queue S   (carry .whl .stage; S = budget_left_s)
#   scripts/gpu_experiment.sh stage m05 .carry-m05/pNN      (11 calls), then scripts/gpu_experiment.sh convert m05
#   scripts/gpu_experiment.sh stage vllm .carry-vllm/pNN    (9 calls), then scripts/gpu_experiment.sh setup-vllm
#   bash docs/leases/2026-12-06-round8.sh wait S       # poll
#   bash docs/leases/2026-12-06-round8.sh pack         # results (one call)
#   Compile cache (docs/leases/NEXT.md): where .carry-cc exists, `stage cc .carry-cc/pNN` + `cache-in` before any
#   engine starts; `scripts/gpu_experiment.sh cache-out` before the pack, to carry it into the next lease.
# Needs .stage/bench700 (evalkit bench build-dev --seed-dir ../shared/seed --out .stage/bench700 --all-rows).
# Every training stops after the first epoch without a lower dev loss (--early-stop-patience 1: best/ as the full
# run keeps it; rounds 5-7 never improved after a worse epoch): ~25 % less time per run.
set -uo pipefail
case "${1:-}" in
queue)
  left=${2:?device seconds left to the lease (status: budget_left_s)}
  scripts/gpu_experiment.sh freeze && cd /tmp/repo || exit 1
  G=scripts/gpu_experiment.sh ES='early_stop_patience=1'
  XR='extra_data=[benchmarks/restraint-train/rows.jsonl,benchmarks/flat-train/rows.jsonl,benchmarks/root-train/rows.jsonl]'
  export BENCH=/tmp/exp/bench700 GENBENCH=/tmp/exp/serve-gen.jsonl EAGER=0
  big=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  # Memory (rounds 2-6): a 0.5B training ~22 GB, a 1.5B one ~37 GB, r15fa 40 GB. H200 (139 GB): all four at once
  # (~121 GB; the 0.5B serve starts once the 0.5B trainings have freed theirs). H100 (80 GB): two at a time
  # (b15a ran out of memory beside r15fa and b05a in round 6), and the lease lost 466 s to failed starts: r15fr
  # and r05fr7 only.
  # `queue S small` (the lease lost more than half its device time to failed starts; m15 not staged): r05fr's
  # second seed and one lever on the 0.5B (r05fm), in one engine.
  # `queue S tiny` (under ~850 s left): r05fm alone, the lever, in one engine.
  # `queue S lever` (a full lease on an H100, seventh session): the two levers never measured, r15fr and r05fm,
  # side by side (~62 GB), each served in its own engine; no seed replicate.
  case ${3:-} in small|tiny) ;; *) $G train r15fr m15 --set "$XR" --set graft_share=0.3 --set "$ES" ;; esac
  case ${3:-} in tiny|lever) ;; *) $G train r05fr7 m05 --set "$XR" --set graft_share=0.3 --set seed=7 --set "$ES" ;; esac
  if [ "${3:-}" = tiny ] || [ "${3:-}" = lever ]; then
    $G train r05fm m05 --set "${XR%]},benchmarks/multi-train/rows.jsonl]" --set graft_share=0.3 --set "$ES"
    AFTER=r05fm $G serve m05 m05 r05fm
  elif [ "${3:-}" = small ]; then
    # r05fm: r05fr (round 7, seed 42) + benchmarks/multi-train (190 rows with two or three independent roots,
    # written this session against r05fr's misses: one core of two), the same seed: the lever alone.
    $G train r05fm m05 --set "${XR%]},benchmarks/multi-train/rows.jsonl]" --set graft_share=0.3 --set "$ES"
    AFTER="r05fr7 r05fm" $G serve m05 m05 r05fr7 r05fm
  elif [ "${big:-0}" -gt 120000 ]; then
    $G train b15s2 m15 --set seed=7 --set "$ES"
    $G train b05s3 m05 --set seed=1234 --set "$ES"
    AFTER="r05fr7 b05s3" $G serve m05 m05 r05fr7 b05s3
    AFTER=b15s2 $G serve m15b m15 b15s2   # ~6 min before r15fr: its start compiles for both
  else
    AFTER=r05fr7 $G serve m05 m05 r05fr7
  fi
  # The lever first: r15fr in an engine of its own as soon as it has trained.
  case ${3:-} in small|tiny) ;; *) AFTER=r15fr $G serve m15 m15 r15fr ;; esac
  # Then, on one adapter (A1: r05fr7, or r05fm in tiny mode), from the compile cache serve-m05 left: issue 17 item 3
  # first (`coldstart`, 64 rows, ~1 min: a new engine process as a fresh container with the compile-cache volume
  # would start it, the other caches removed; trainings may still run beside it, its log says what ran), then
  # self-consistency (5 samples at 0.7, a metric kept by half of them), then FP8 (issue 17 item 5: its quality
  # against serve-m05's bf16 rows of the same adapter).
  A1=r05fr7; case ${3:-} in tiny|lever) A1=r05fm ;; esac
  setsid nohup bash -c "while [ ! -f /tmp/exp/serve-m05.done ]; do sleep 5; done; nvidia-smi > /tmp/exp/coldstart.log; \
    $G coldstart m05 $A1 >> /tmp/exp/coldstart.log 2>&1; echo \"exit \$?\" > /tmp/exp/coldstart.done" > /dev/null 2>&1 < /dev/null &
  # m05cap (issue 17; eighth session: the engine now compiles the grammar without the contract's length caps by
  # default and decodes answers that miss them once more under the caps): the same adapter and rows with the caps
  # in the grammar, as before. Its rows/s against serve-m05's on the same rows is the default's gain on the
  # product path; its answers must equal serve-m05's (greedy: engine.seam.needs_capped_retry).
  AFTER="coldstart" $G serve m05cap m05 $A1 -- --guided-length-caps
  AFTER="serve-m05cap" $G serve m05sc m05 $A1 -- --samples 5
  AFTER="serve-m05sc" $G serve m05fp8 m05 $A1 -- --quantization fp8
  echo "$(( $(date +%s) + left - 90 ))" > /tmp/exp/deadline
  echo "queued; pack before $(date -d @"$(cat /tmp/exp/deadline)" +%H:%M:%S)"
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"
  ;;
pack)
  cd /tmp/repo && KEEP= scripts/gpu_experiment.sh pack
  ;;
adapters)
  cd /tmp/repo && KEEP="${KEEP-r05fr7 r15fr}" scripts/gpu_experiment.sh pack > /dev/null
  rm -f "${OUT:-/tmp/out}"/results.tar.gz*; ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n 2,16p "$0"; exit 2 ;;
esac
