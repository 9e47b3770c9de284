#!/usr/bin/env bash
# The next quality lease (issue 16, written after round 7; NOT RUN YET: rename to the date it runs). Round 7 found the
# training seed moves the 0.5B recipe as much as any lever, so this lease buys seeds: two more of the plain recipe
# and of the recommended one (the team's rows), the 1.5B's second seed, and one self-consistency serve.
# On the device, in this order (docs/leases/NEXT.md):
#   scripts/gpu_experiment.sh stage m15 .carry-m15/pNN      (24 calls; the first starts the machine)
#   scripts/gpu_experiment.sh setup && bash docs/leases/round8.sh queue S    (carry .whl .stage; S = budget_left_s)
#   scripts/gpu_experiment.sh stage m05 .carry-m05/pNN      (11 calls), then scripts/gpu_experiment.sh convert m05
#   scripts/gpu_experiment.sh stage vllm .carry-vllm/pNN    (9 calls), then scripts/gpu_experiment.sh setup-vllm
#   bash docs/leases/round8.sh wait S       # poll
#   bash docs/leases/round8.sh pack         # results (one call), then `adapters` in a call of its own
# Needs .stage/bench700 (evalkit bench build-dev --seed-dir ../shared/seed --out .stage/bench700 --all-rows) and
# evalkit.experiment's per-process shard folder (round 7's race is fixed in this tree).
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
  # Memory: a 0.5B training ~23 GB, a 1.5B one ~25-40 GB. H100 (80 GB): the 1.5B and two 0.5B at once, the third
  # 0.5B after the first; H200: all four at once.
  $G train b15s2 m15 --set seed=7 --set "$ES"
  $G train r05fr7 m05 --set "$XR" --set graft_share=0.3 --set seed=7 --set "$ES"
  $G train b05s3 m05 --set seed=1234 --set "$ES"
  w=b05s3; [ "${big:-0}" -gt 120000 ] && w=""
  AFTER="$w" $G train r05fr3 m05 --set "$XR" --set graft_share=0.3 --set seed=1234 --set "$ES"
  # One engine for the three 0.5B adapters (the first 0.5B start compiles ~5-6 min on a fresh machine); the
  # self-consistency serve of r05fr7 (5 samples at 0.7, metric kept by half of them) from the cache it leaves.
  AFTER="b05s3 r05fr7 r05fr3" $G serve m05 m05 b05s3 r05fr7 r05fr3
  AFTER="serve-m05" $G serve m05sc m05 r05fr7 -- --samples 5
  AFTER=b15s2 $G serve m15 m15 b15s2
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
  cd /tmp/repo && KEEP="${KEEP-r05fr7 r05fr3}" scripts/gpu_experiment.sh pack > /dev/null
  rm -f "${OUT:-/tmp/out}"/results.tar.gz*; ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n 2,16p "$0"; exit 2 ;;
esac
