#!/usr/bin/env bash
# Round 10 (issues 16 and 17, written 2026-12-07 in the twelfth session after round 9's serve; docs/RESULTS.md
# "Round 9"). Round 9 found the recommended recipe's lead to be one seed's, and the twelfth session merged the naming
# lever (docs/analysis/r9/NAMING_LEVER.md: the team's rows and gold name revenue 营收, as the seed does). This lease
# trains r05fm's recipe on the renamed rows, seed 7 (r05fn7) and seed 42 (r05fn), and serves them in one engine
# beside r05fm7, the same recipe on the old names, seed 7, which the eleventh session trained and this checkout keeps
# (.cache/r9/r05fm7/best, not in git): r05fn7 − r05fm7 is the lever alone at one seed, on one engine. Then issue 17's
# merged-adapter bench, which round 9 ran out of budget for.
# On the device, in this order (one call each; the first starts the machine; keep a call in flight the whole lease:
# the machine goes back after 30 s idle):
#   scripts/gpu_experiment.sh stage m05 .carry-m05/pNN                    (11 calls)
#   ls .stage                                                              (carry .stage alone)
#   mkdir -p /tmp/exp/r05fm7 && cp -r .cache/r9/r05fm7/best /tmp/exp/r05fm7/       (carry .cache/r9/r05fm7/best)
#   scripts/gpu_experiment.sh setup && bash docs/leases/2026-12-08-round10.sh queue S [MODE]   (carry .whl; S = budget_left_s)
#   scripts/gpu_experiment.sh stage vllm .carry-vllm/pNN                   (9 calls; setup-vllm with the last)
#   bash docs/leases/2026-12-08-round10.sh wait 450                        (poll; timeout 540)
#   bash docs/leases/2026-12-08-round10.sh pack                            (results.tar.gz + the bench's JSON and logs)
# Then here: R=.cache/r10 bash docs/analysis/r8/score.sh (it scores on the tree's benchmarks: the renamed gold), and
#   evalkit compare r05fm7=... r05fn7=... r05fn=... on union, genbench and the sample rows (the seed's own gold,
#   untouched by the rename: where the lever is meant to show). Score r05fm7 and r05fn7 on the old gold too
#   (git show 7c242b9:benchmarks/...): each gold favours the model trained on its own convention.
# MODE (what the budget at the machine's arrival holds; round 9 on an H200: serve cold start 391 s, 2 adapters x
# 1,400 rows in 97 s; trainings side by side 598-738 s):
#   naming  (>= ~1,450 s): r05fn7 + r05fn side by side, one serve of r05fm7 + r05fn7 + r05fn; then the merged bench
#   naming1 (>= ~1,200 s): r05fn7 alone, one serve of r05fm7 + r05fn7; then the merged bench
#   naming-fresh (>= ~1,450 s; a checkout without .cache/r9/r05fm7, skip its carry call): r05fn7 beside r05fo7, the
#           same recipe and seed on the old names (7c242b9's rows, rebuilt from the tree's), one serve of both; then
#           the merged bench on r05fo7
#   merged  (>= ~700 s, no training): issue 17's bench on r05fm7: bare, engine-merged (a new compile key: budget
#           it ~250 s to start), the LoRA engine; then serve-m05mg (its rows' quality). Short of budget:
#           MARGIN=60 (seconds kept for pack; default 200), PHASES=engine-merged,bare, NOSERVE=1.
#   invariant (>= ~1,000 s, no training): r05fm7 served twice with VLLM_BATCH_INVARIANT=1 (vLLM's batch-invariant
#           kernels, LoRA's shrink with one K split; Hopper only), tags m05bi and m05bj. Do the two passes agree row
#           for row, what does it cost in rows/s (against round 9's serve-m05), and what is the perturbation share
#           without the GPU's noise? docs/analysis/r9/perturb_floor.py puts that noise at ~13 points of the share.
#           Exploratory: the variable may refuse this attention backend at start; the serve's log says so.
set -uo pipefail
case "${1:-}" in
queue)
  left=${2:?device seconds left to the lease (status: budget_left_s)}; mode=${3:-naming}
  A=r05fm7
  if [ "$mode" = naming-fresh ]; then A=r05fo7
  elif [ ! -f /tmp/exp/r05fm7/best/adapter_config.json ]; then echo "no /tmp/exp/r05fm7/best: carry it first" >&2; exit 2; fi
  scripts/gpu_experiment.sh freeze && cd /tmp/repo || exit 1
  grep -q '"营业收入"' benchmarks/restraint-train/rows.jsonl && { echo "the tree has the old names" >&2; exit 2; }
  G=scripts/gpu_experiment.sh ES='early_stop_patience=1'
  XR='extra_data=[benchmarks/restraint-train/rows.jsonl,benchmarks/flat-train/rows.jsonl,benchmarks/root-train/rows.jsonl,benchmarks/multi-train/rows.jsonl]'
  export BENCH=/tmp/exp/bench700 GENBENCH=/tmp/exp/serve-gen.jsonl EAGER=0
  deadline=$(( $(date +%s) + left - 90 )); echo "$deadline" > /tmp/exp/deadline
  vllm_ready() { scripts/gpu_experiment.sh ready "$1" m05; }  # $1.done once vLLM imports and the 0.5B is converted
  case "$mode" in
  naming|naming1)
    # r05fm's recipe (docs/RESULTS.md round 8) on the renamed rows; only the names differ from r05fm7 at seed 7.
    $G train r05fn7 m05 --set "$XR" --set graft_share=0.3 --set seed=7 --set "$ES"
    if [ "$mode" = naming ]; then
      $G train r05fn m05 --set "$XR" --set graft_share=0.3 --set seed=42 --set "$ES"
      AFTER="r05fn7 r05fn" $G serve m05 m05 r05fm7 r05fn7 r05fn
    else
      AFTER=r05fn7 $G serve m05 m05 r05fm7 r05fn7
    fi ;;
  naming-fresh)
    # No r05fm7 here (a fresh checkout): train the old-names baseline beside the lever. The old rows are the
    # renamed ones with 营收 named 营业收入 again: the team's rows had no 营收 before the rename, so this gives
    # 7c242b9's files byte for byte (checked in the twelfth session).
    mkdir -p /tmp/exp/oldrows && python3 -c '
import json
for s in ("restraint-train", "flat-train", "root-train", "multi-train"):
    with open(f"benchmarks/{s}/rows.jsonl", encoding="utf-8") as f, open(f"/tmp/exp/oldrows/{s}.jsonl", "w", encoding="utf-8") as g:
        for line in f:
            o = json.loads(line)
            for m in (o.get("output") or {}).get("metrics") or []:
                m["metric_name"] = "营业收入" if m["metric_name"] == "营收" else m["metric_name"]
            g.write(json.dumps(o, ensure_ascii=False) + "\n")' || exit 1
    XO='extra_data=[/tmp/exp/oldrows/restraint-train.jsonl,/tmp/exp/oldrows/flat-train.jsonl,/tmp/exp/oldrows/root-train.jsonl,/tmp/exp/oldrows/multi-train.jsonl]'
    $G train r05fn7 m05 --set "$XR" --set graft_share=0.3 --set seed=7 --set "$ES"
    $G train r05fo7 m05 --set "$XO" --set graft_share=0.3 --set seed=7 --set "$ES"
    AFTER="r05fn7 r05fo7" $G serve m05 m05 r05fo7 r05fn7 ;;
  merged) vllm_ready serve-m05 ;;  # no serve to wait for: the bench starts once vLLM imports
  invariant)
    vllm_ready vllm
    VLLM_BATCH_INVARIANT=1 AFTER=vllm $G serve m05bi m05 r05fm7
    VLLM_BATCH_INVARIANT=1 AFTER=serve-m05bi $G serve m05bj m05 r05fm7
    echo "queued (invariant); pack before $(date -d @"$deadline" +%H:%M:%S)"; exit 0 ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  # The bench alone on the GPU once the serve has ended. bare first (~75 s on round 9's H200: the ratio's
  # denominator on this card), then engine-merged, never measured (round 9's budget ran out while its new compile key
  # started), then the LoRA engine. No process starts with less than a minute of its budget left.
  setsid nohup bash -c "while [ ! -f /tmp/exp/serve-m05.done ]; do sleep 5; done
    BUDGET=\$(( $deadline - ${MARGIN:-200} - \$(date +%s) )) ROWS=2048 scripts/gpu_bench.sh start m05 $A \
      --phases ${PHASES:-bare,engine-merged,engine}
    sleep 5; while kill -0 \$(cat /tmp/bench-m05.pid) 2>/dev/null; do sleep 5; done
    echo \"exit 0\" > /tmp/exp/bench.done" > /tmp/exp/bench.log 2>&1 < /dev/null &
  [ "$mode" = merged ] && [ -z "${NOSERVE:-}" ] && AFTER=bench $G serve m05mg m05 $A -- --merge-adapter
  echo "queued ($mode); pack before $(date -d @"$deadline" +%H:%M:%S)"
  ;;
wait)
  cd /tmp/repo && scripts/gpu_experiment.sh wait "${2:-0}"
  [ -f /tmp/bench-m05.pid ] && OUT=/tmp/null scripts/gpu_bench.sh wait m05 0 | grep -v '^-' | tail -12
  ;;
pack)
  cd /tmp/repo && KEEP="${KEEP:-r05fn7}" scripts/gpu_experiment.sh pack
  [ -f /tmp/bench-m05.pid ] && scripts/gpu_bench.sh wait m05 0 > /dev/null
  ls -la "${OUT:-/tmp/out}"
  ;;
*) sed -n "2,/^set -uo/p" "$0" | sed "\$d"; exit 2 ;;
esac
