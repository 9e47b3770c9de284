#!/usr/bin/env bash
# Round 7 (2026-12-06, fourth session): issue 16's second seeds and levers on 700 rows, plus issue 17's FP8 quality
# serve, fresh-container start and bench phases on the idle GPU at the end. On the device, after
# `scripts/gpu_experiment.sh stage m15 ...` (first), `setup` + `bash docs/leases/2026-12-06-round7.sh queue S` in one
# call (S = device seconds left to the lease, from `status`), then `stage m05 ...` + `convert m05`, then
# `stage vllm ...` + `setup-vllm` (docs/leases/NEXT.md has the order).
# Needs .stage/bench700 here first: evalkit bench build-dev --seed-dir ../shared/seed --out .stage/bench700 --all-rows
#   bash docs/leases/2026-12-06-round7.sh queue S   # freeze the tree in /tmp/repo, queue everything (detached)
#   bash docs/leases/2026-12-06-round7.sh wait S    # poll
#   bash docs/leases/2026-12-06-round7.sh pack      # results and the bench JSON into $OUT
#   bash docs/leases/2026-12-06-round7.sh adapters  # the 0.5B adapters into $OUT (a call of its own: 8 files a call)
# What it measures:
# - issue 16: a second training seed (seed=7) of the 0.5B recipe on 700 rows (does round 6's ranking on the union
#   genbench-flat + genbench-cause hold?), the team-rows lever on 700 rows with root-train added (r05fr); the
#   1.5B's second seed was planned and cut (see below);
# - issue 17: the 0.5B seed-7 adapter served with --quantization fp8 over the same rows (quality against bf16),
#   then, once every serve is done, `coldstart` (a new engine process with only the compile cache kept) and
#   bench_gpu.py over 4,096 seed rows (bare, LoRA + guidance JSON, engine.run, LoRA alone, xgrammar, merged) for
#   the device time that is left.
# What happened (2026-12-06, 15:17-15:35 on the machine's clock; docs/RESULTS.md round 7):
# - Six calls found no machine (736 s of device time); the queue below is the cut-down plan that was run.
# - r05fr was stopped by hand after epoch 3 (dev loss rose; best epoch 2 kept) to leave time for its serve.
# - serve-m05 and serve-m05f8 started together and both built /tmp/exp/bench700/shards-* under one temporary
#   name: the folder published had 1 of 23 shards, so serve-m05, serve-m05f8 and serve-m05r each served 6 rows.
#   Fixed since in evalkit.experiment.serve_input. The lead deleted the folder and served b05s2 + r05fr again
#   (tag m05all, by hand: `serve m05all m05 b05s2 r05fr`); the device time ran out with 34 of genbench-cause's
#   80 cases left to serve, and the results were packed part-way. The tail (coldstart, bench) never ran, and a
#   `pkill -f` whose pattern matched its own command line ended one call early.
set -uo pipefail
case "${1:-}" in
queue)
  left=${2:?device seconds left to the lease (status: budget_left_s)}
  mkdir -p /tmp/repo /tmp/exp
  tar c --exclude='./.carry*' --exclude=./.whl --exclude=./.git --exclude=./.venv . | tar x -C /tmp/repo
  cd /tmp/repo
  cat benchmarks/genbench/cases.jsonl benchmarks/genbench-flat/cases.jsonl benchmarks/genbench-cause/cases.jsonl \
    > /tmp/exp/serve-gen.jsonl  # all three, served once; scored per file (docs/analysis/r7/score.sh)
  G=scripts/gpu_experiment.sh
  XR='extra_data=[benchmarks/restraint-train/rows.jsonl,benchmarks/flat-train/rows.jsonl,benchmarks/root-train/rows.jsonl]'
  export BENCH=/tmp/exp/bench700 GENBENCH=/tmp/exp/serve-gen.jsonl EAGER=0
  # What fits the 1,169 s left after four machines that did not start (631 s lost): the 0.5B only (no 1.5B staging,
  # no second 1.5B seed, no r05fa). Two 0.5B trainings (~23 GB each) and the engines fit an 80 GB H100.
  $G train b05s2 m05 --set seed=7
  $G train r05fr m05 --set "$XR" --set graft_share=0.3
  # The 0.5B's first engine compiles (~5 min on a fresh machine): b05s2 alone as soon as it is trained, r05fr from
  # the compile cache it leaves; the FP8 engine (another compile) beside it.
  AFTER=b05s2 $G serve m05 m05 b05s2
  AFTER=b05s2 $G serve m05f8 m05 b05s2 -- --quantization fp8
  AFTER="r05fr serve-m05" $G serve m05r m05 r05fr
  # The tail on an idle GPU: once every job is done, a fresh-container start, then the bench until 90 s before
  # the lease's device time runs out (the JSON keeps the phases that finished).
  deadline=$(( $(date +%s) + left - 90 ))
  echo "$deadline" > /tmp/exp/deadline
  setsid nohup bash -c "for j in b05s2 r05fr serve-m05 serve-m05f8 serve-m05r; do
      while [ ! -f /tmp/exp/\$j.done ]; do sleep 5; done; done
    scripts/gpu_experiment.sh coldstart m05 b05s2
    b=\$(( \$(cat /tmp/exp/deadline) - \$(date +%s) ))
    echo \"bench budget \$b s\"
    [ \$b -gt 150 ] && BUDGET=\$b scripts/gpu_bench.sh start m05 b05s2 \
      --phases bare,json-guidance,engine,lora,json-xgrammar,merged
    echo done > /tmp/exp/tail.done" > /tmp/exp/tail.log 2>&1 < /dev/null &
  echo "queued; tail deadline $(date -d @"$deadline" +%H:%M:%S)"
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"; cat /tmp/exp/tail.log 2>/dev/null | tail -5
  ;;
pack)
  # At most 8 files come back from a call: the results and the bench here, the adapters with `adapters`.
  cd /tmp/repo && KEEP= scripts/gpu_experiment.sh pack > /dev/null
  tar czf "${OUT:-/tmp/out}/bench.tar.gz" /tmp/bench-m05.json /tmp/exp/tail.log /tmp/bench-m05/proc-*.log \
    /tmp/bench-m05.stdout /tmp/bench-m05.err 2>/dev/null
  ls -la "${OUT:-/tmp/out}"
  ;;
adapters)
  cd /tmp/repo && KEEP="${KEEP-b05s2 r05fr}" scripts/gpu_experiment.sh pack > /dev/null
  rm -f "${OUT:-/tmp/out}"/results.tar.gz*; ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n 2,19p "$0"; exit 2 ;;
esac
