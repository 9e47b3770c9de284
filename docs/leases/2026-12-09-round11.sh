#!/usr/bin/env bash
# Round 11 (issues 17 and 16, written 2026-12-07 in the fourteenth session after round 10's run; docs/RESULTS.md
# "Round 10, run"). No training: it needs the two adapters of the recommended command on today's tree, r05fn
# (seed 42) and r05fn7 (seed 7), which this checkout keeps (.cache/r10/{r05fn,r05fn7}/best, not in git: trained
# on seed rows). In this order, because three leases in a row ran out of budget before the bench's merged phase:
#   1. issue 17's bench on r05fn, alone on the GPU: engine-merged first (the merged adapter on the default grammar,
#      the one candidate for 0.95x bare; never measured), then bare (the ratio's denominator on this card), then
#      the LoRA engine (round 9: 0.426x on an H200);
#   2. issue 16's decoding lever on both seeds: one serve of r05fn + r05fn7 with `--samples 5 --vote-threshold
#      0.2` (self-consistency: +7.1 beyond noise on r05fr7 in round 8). Every metric keeps its `agreement`, so the
#      majority (0.5) and every other threshold are re-voted here by dropping metrics below it (`evalkit
#      calibrate`), without decoding again. Calibrate on genbench, report on the validated union (and the
#      reverse), never choose and report on the same cases;
#   3. the compile cache home (`scripts/gpu_experiment.sh cache-out`, 7 chunks a call): the next lease starts warm
#      and measures issue 17 item 3 (a fresh container with a warm cache volume, <= 60 s to the first row).
# On the device, one call each (the first starts the machine; keep a call in flight the whole lease):
#   scripts/gpu_experiment.sh stage m05 .carry-m05/p11 && ls .stage           (carry .carry-m05/p11 .stage)
#   scripts/gpu_experiment.sh stage m05 .carry-m05/pNN                        (p01-p10: 10 calls)
#   for a in r05fn r05fn7; do mkdir -p /tmp/exp/$a && cp -r .cache/r10/$a/best /tmp/exp/$a/; done
#                                                        (carry .cache/r10/r05fn/best .cache/r10/r05fn7/best: 50 MiB with the tree)
#   WHL=.whl-conv scripts/gpu_experiment.sh setup && bash docs/leases/2026-12-09-round11.sh queue S [MODE]
#                                                        (carry .whl-conv; S = budget_left_s less ~20 s)
#   scripts/gpu_experiment.sh stage vllm .carry-vllm/p01, p02 with p09 in one call, p03-p07, then
#   scripts/gpu_experiment.sh stage vllm .carry-vllm/p08 && scripts/gpu_experiment.sh setup-vllm   (8 calls)
#   bash docs/leases/2026-12-09-round11.sh wait 450                           (poll; timeout 540)
#   bash docs/leases/2026-12-09-round11.sh pack                               (results.tar.gz + the bench's JSON and logs)
#   scripts/gpu_experiment.sh cache-out, then cache-out 7, ... while it says so  (with >= 60 s left)
# Then here: R=.cache/r11 bash docs/analysis/r8/score.sh; `evalkit calibrate` on the m05sc rows; `evalkit compare`
#   against round 10's greedy r05fn / r05fn7 (docs/analysis/r10/run/newgold/, another engine: say so), and
#   `--arm` over the two seeds. The bench's JSON goes to docs/bench/, its table to docs/BENCHMARKS.md.
# MODE (what the budget at queue time holds; round 10 on an H100: staging ~100 s, serve cold start 399 s, 3
# adapters x 1,400 rows in 147 s; round 9 on an H200: bare 56.85 rows/s, LoRA engine 24.23, its start 94.5 s warm):
#   full  (>= ~1,250 s): bench engine-merged,bare,engine, then the samples serve, then cache-out
#   bench (>= ~650 s):   bench engine-merged,bare only (MARGIN=60 for a short lease)
#   sc    (>= ~700 s):   the samples serve only
#   b15   (>= ~1,100 s after staging; a lease of its own): the 1.5B's second seed, owed since round 6 (issue 16's
#         validation: the 0.5B clearly ahead of the 1.5B rests on b15a alone): b15s2 = the 1.5B recipe as the
#         README says (700 seed rows, nothing else), seed 7, served alone. Staging differs: `stage m15
#         .carry-m15/pNN` (24 calls, before the setup: it converts what is staged), `.whl` instead of `.whl-conv`
#         (it trains), no adapters to carry. Then b15s2 against the 0.5B's r05fn arm on the validated union
#         (today's gold), and against round 6's b15a as docs/RESULTS.md prints it (its rows were not kept: 20.0 %
#         of 240 on the gold of the day, pred/gold 2.05, three or more metrics on 89 of 130 one-metric cases).
set -uo pipefail
case "${1:-}" in
queue)
  left=${2:?device seconds left to the lease (status: budget_left_s)}; mode=${3:-full}
  [ "$mode" = b15 ] || for a in r05fn r05fn7; do
    [ -f /tmp/exp/$a/best/adapter_config.json ] || { echo "no /tmp/exp/$a/best: carry it first" >&2; exit 2; }
  done
  scripts/gpu_experiment.sh freeze && cd /tmp/repo || exit 1
  G=scripts/gpu_experiment.sh
  export BENCH=/tmp/exp/bench700 GENBENCH=/tmp/exp/serve-gen.jsonl EAGER=0
  deadline=$(( $(date +%s) + left - 90 )); echo "$deadline" > /tmp/exp/deadline
  # vLLM is staged after the queue: vllm.done appears once it imports and the model is converted
  m=m05; [ "$mode" = b15 ] && m=m15
  $G ready vllm $m
  case "$mode" in
  full|bench)
    phases=${PHASES:-engine-merged,bare,engine}; [ "$mode" = bench ] && phases=${PHASES:-engine-merged,bare}
    # The bench alone on the GPU. It stops what runs at its budget's end and keeps the finished phases; in `full`
    # it leaves the samples serve ~420 s (a warm LoRA start ~95 s + 2 x 1,400 rows x 5 samples).
    keep=${MARGIN:-200}; [ "$mode" = full ] && keep=$(( ${MARGIN:-200} + 420 ))
    setsid nohup bash -c "while [ ! -f /tmp/exp/vllm.done ]; do sleep 5; done
      BUDGET=\$(( $deadline - $keep - \$(date +%s) )) ROWS=2048 scripts/gpu_bench.sh start m05 r05fn --phases $phases
      sleep 5; while kill -0 \$(cat /tmp/bench-m05.pid) 2>/dev/null; do sleep 5; done
      echo \"exit 0\" > /tmp/exp/bench.done" > /tmp/exp/bench.log 2>&1 < /dev/null &
    [ "$mode" = full ] && AFTER=bench $G serve m05sc m05 r05fn r05fn7 -- --samples 5 --vote-threshold 0.2 ;;
  sc) AFTER=vllm $G serve m05sc m05 r05fn r05fn7 -- --samples 5 --vote-threshold 0.2 ;;
  b15)
    $G train b15s2 m15 --set seed=7 --set early_stop_patience=1
    AFTER="b15s2 vllm" $G serve m15b m15 b15s2 ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  echo "queued ($mode); pack before $(date -d @"$deadline" +%H:%M:%S)"
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"
  [ -f /tmp/bench-m05.pid ] && OUT=/tmp/null scripts/gpu_bench.sh wait m05 0 | grep -v '^-' | tail -12
  ;;
pack)
  cd /tmp/repo && scripts/gpu_experiment.sh pack
  [ -f /tmp/bench-m05.pid ] && scripts/gpu_bench.sh wait m05 0 > /dev/null
  ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n "2,/^set -uo/p" "$0" | sed "\$d"; exit 2 ;;
esac
