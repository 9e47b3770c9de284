#!/usr/bin/env bash
# The next quality lease (issue 16, written after round 6; NOT RUN YET: rename to the date it runs). On the device after
# `scripts/gpu_experiment.sh stage m15 ...` (first), `setup` + `bash docs/leases/round7.sh queue` in one call,
# then `stage m05 ...` + `convert m05`, then `stage vllm ...` + `setup-vllm` (docs/leases/NEXT.md has the order).
# Needs .stage/bench700 here first: evalkit bench build-dev --seed-dir ../shared/seed --out .stage/bench700 --all-rows
#   bash docs/leases/round7.sh queue     # freeze the tree in /tmp/repo, queue trainings and serves (detached)
#   bash docs/leases/round7.sh wait S    # poll
#   bash docs/leases/round7.sh pack      # results (+ the 0.5B adapters) into $OUT
# What it measures (docs/leases/NEXT.md): a second training seed of both recipes on 700 rows (does the round-6
# ranking on genbench-flat + genbench-cause hold?), and the team-rows lever on 700 rows for both models.
set -uo pipefail
case "${1:-}" in
queue)
  mkdir -p /tmp/repo /tmp/exp
  tar c --exclude='./.carry*' --exclude=./.whl --exclude=./.git --exclude=./.venv . | tar x -C /tmp/repo
  cd /tmp/repo
  cat benchmarks/genbench/cases.jsonl benchmarks/genbench-flat/cases.jsonl benchmarks/genbench-cause/cases.jsonl \
    > /tmp/exp/serve-gen.jsonl  # all three, served once; scored per file (docs/analysis/r6/score.sh)
  G=scripts/gpu_experiment.sh
  X='extra_data=[benchmarks/restraint-train/rows.jsonl,benchmarks/flat-train/rows.jsonl]'
  export BENCH=/tmp/exp/bench700 GENBENCH=/tmp/exp/serve-gen.jsonl EAGER=0
  # Memory (round 6, H100 80 GB): a 0.5B training ~23 GB, a 1.5B one ~25-40 GB; two 1.5B and a 0.5B did not fit.
  big=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  $G train b15s2 m15 --set seed=7
  AFTER=b15s2 $G train r15fa m15 --set "$X" --set graft_share=0.3
  $G train b05s2 m05 --set seed=7
  if [ "${big:-0}" -gt 100000 ]; then $G train r05fa m05 --set "$X" --set graft_share=0.3
  else AFTER=b05s2 $G train r05fa m05 --set "$X" --set graft_share=0.3; fi
  AFTER="b05s2 r05fa" $G serve m05 m05 b05s2 r05fa
  AFTER=b15s2 $G serve m15a m15 b15s2
  AFTER="r15fa serve-m15a" $G serve m15b m15 r15fa
  echo queued
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"
  ;;
pack)
  cd /tmp/repo && KEEP="${KEEP-b05s2 r05fa}" scripts/gpu_experiment.sh pack
  ;;
*) sed -n 2,10p "$0"; exit 2 ;;
esac
