#!/usr/bin/env bash
# Round 9 (issues 16 and 17, written 2026-12-07 in the tenth session after round 8). Round 8 made r05fm (the 0.5B
# recipe + every team set including benchmarks/multi-train, seed 42) the recommended training on one seed; this
# lease buys a second seed of it and one lever (graft_share 0.6, against the perturbation share), then measures the
# one issue-17 lever that could reach 0.95x bare: the adapter merged into the weights on the default (uncapped)
# grammar, against the LoRA engine and bare, with the merged rows' quality. The eleventh session trained both
# adapters but lost their serve (docs/leases/NEXT.md); they are in .cache/r9 here, for the `carried` mode.
# On the device, in this order (the staging of docs/leases/2026-12-06-round8.sh's small mode; one call each, the
# first starts the machine, and keep a call in flight the whole lease: the machine goes back after 30 s idle):
#   scripts/gpu_experiment.sh stage m05 .carry-m05/pNN                    (11 calls)
#   ls .stage                                                              (carry .stage alone: it does not fit beside .whl)
#   scripts/gpu_experiment.sh setup && bash docs/leases/2026-12-07-round9.sh queue S [MODE]   (carry .whl; S = budget_left_s)
#   scripts/gpu_experiment.sh stage vllm .carry-vllm/pNN                   (9 calls; setup-vllm with the last)
#   bash docs/leases/2026-12-07-round9.sh wait 450                         (poll; timeout 540)
#   bash docs/leases/2026-12-07-round9.sh pack                             (results.tar.gz + the bench's JSON and logs)
# Then here: bash docs/analysis/r8/score.sh with R=.cache/r9 (its serves), and evalkit compare against the committed
# round-8 cases (docs/analysis/r8/cases/{union,genbench}/serve-m05/r05fm.gen.cases.parquet) for the arm of r05fm.
# MODE (what the budget at the machine's arrival holds; round 8's small mode took ~1,450 s with staging):
#   full  (>= ~1,500 s): r05fm7 (seed 7) + r05fg (graft_share=0.6, seed 42), one serve of both; then the bench (bare,
#         engine, engine-merged, merged; 2,048 seed rows, adapter r05fm7); then serve-m05mg (r05fm7 merged, for quality),
#         then serve-m05sc (r05fm7 with --samples 5) if time is left
#   seeds (>= ~1,000 s): the two trainings and their serve only (side by side they took 598 and 738 s in round 9)
#   carried (>= ~900 s): no training: the two adapters the eleventh session brought back, then as full. The setup
#         call carries them beside the conversion wheels instead of .whl (which does not fit beside them):
#         WHL=.whl-conv scripts/gpu_experiment.sh setup && for a in r05fm7 r05fg; do mkdir -p /tmp/exp/$a &&
#         cp -r .cache/r9/$a/best /tmp/exp/$a/; done && bash docs/leases/2026-12-07-round9.sh queue S carried
#         (carry .whl-conv .cache/r9/r05fm7/best .cache/r9/r05fg/best)
#   bench (<  ~1,000 s, no training): the bench on the committed demo adapter (ADAPTER=demo: copy data/demo/adapter
#         to /tmp/exp/demo/best in the setup call) and its merged serve
set -uo pipefail
case "${1:-}" in
queue)
  left=${2:?device seconds left to the lease (status: budget_left_s)}; mode=${3:-full}
  scripts/gpu_experiment.sh freeze && cd /tmp/repo || exit 1
  G=scripts/gpu_experiment.sh ES='early_stop_patience=1'
  XR='extra_data=[benchmarks/restraint-train/rows.jsonl,benchmarks/flat-train/rows.jsonl,benchmarks/root-train/rows.jsonl,benchmarks/multi-train/rows.jsonl]'
  export BENCH=/tmp/exp/bench700 GENBENCH=/tmp/exp/serve-gen.jsonl EAGER=0
  deadline=$(( $(date +%s) + left - 90 )); echo "$deadline" > /tmp/exp/deadline
  A=r05fm7
  vllm_ready() {  # vLLM is staged after the queue: $1.done appears once it imports and the 0.5B is converted
    setsid nohup bash -c "until [ -f /tmp/models/qwen2.5-coder-0.5b-instruct/SOURCE.json ] &&
        PYTHONPATH=/tmp/site-vllm python3 -c 'import vllm' 2> /dev/null; do sleep 10; done
      sleep 10; echo 'exit 0' > /tmp/exp/$1.done" > /dev/null 2>&1 < /dev/null &
  }
  if [ "$mode" = carried ]; then
    for a in r05fm7 r05fg; do [ -f /tmp/exp/$a/best/adapter_config.json ] || { echo "no /tmp/exp/$a/best" >&2; exit 2; }; done
    vllm_ready vllm
    AFTER=vllm $G serve m05 m05 r05fm7 r05fg
  elif [ "$mode" != bench ]; then
    $G train r05fm7 m05 --set "$XR" --set graft_share=0.3 --set seed=7 --set "$ES"
    # The perturbation lever (count moved 27.9 % for r05fm): twice the grafted share, r05fm's seed, so it pairs with
    # round 8's committed r05fm cases on the one setting it changes.
    $G train r05fg m05 --set "$XR" --set graft_share=0.6 --set seed=42 --set "$ES"
    AFTER="r05fm7 r05fg" $G serve m05 m05 r05fm7 r05fg
  else
    # No serve to wait for: the bench starts once vLLM imports.
    A=${ADAPTER:-demo}; vllm_ready serve-m05
  fi
  if [ "$mode" != seeds ]; then
    # The bench alone on the GPU once the serve has ended (a serve beside it would share the GPU): bare, the LoRA
    # engine (today's default), engine-merged (the candidate default for one adapter) and merged (its raw pass
    # with the capped grammar). No process starts with less than a minute of its budget left.
    setsid nohup bash -c "while [ ! -f /tmp/exp/serve-m05.done ]; do sleep 5; done
      BUDGET=\$(( $deadline - 240 - \$(date +%s) )) ROWS=2048 scripts/gpu_bench.sh start m05 $A \
        --phases bare,engine,engine-merged,merged
      sleep 5; while kill -0 \$(cat /tmp/bench-m05.pid) 2>/dev/null; do sleep 5; done
      echo \"exit 0\" > /tmp/exp/bench.done" > /tmp/exp/bench.log 2>&1 < /dev/null &
    # The merged rows' quality on the benchmarks, paired with serve-m05's LoRA rows of the same adapter.
    AFTER=bench $G serve m05mg m05 $A -- --merge-adapter
    # Last, if time is left: self-consistency on the recommended recipe (round 8 measured it on r05fr7: +7.1).
    [ "$mode" = full ] && AFTER=serve-m05mg $G serve m05sc m05 $A -- --samples 5
  fi
  echo "queued ($mode); pack before $(date -d @"$deadline" +%H:%M:%S)"
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"
  [ -f /tmp/bench-m05.pid ] && OUT=/tmp/null scripts/gpu_bench.sh wait m05 0 | grep -v '^-' | tail -12
  ;;
pack)
  cd /tmp/repo && KEEP= scripts/gpu_experiment.sh pack
  [ -f /tmp/bench-m05.pid ] && scripts/gpu_bench.sh wait m05 0 > /dev/null
  ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n "2,/^set -uo/p" "$0" | sed "\$d"; exit 2 ;;
esac
