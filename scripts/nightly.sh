#!/usr/bin/env bash
# Nightly extraction over a growing folder of Parquet shards into a fixed output folder.
#
#   scripts/nightly.sh                                  # settings from the environment below
#   INPUT=/data/shards OUT=/data/metrics CONFIG=/etc/reportminer/engine.yaml scripts/nightly.sh
#
# Each night only shards that are new (or whose content changed) run; finished shards are skipped by
# the run manifest in $OUT, so a night that was killed halfway just continues the next night. A second
# copy started while one is still running is refused by the lock on $OUT (exit 2) instead of racing it.
#
# cron (every night at 01:30; the log keeps one line-oriented summary per run):
#   30 1 * * * cd /opt/reportminer && INPUT=/data/shards OUT=/data/metrics CONFIG=/etc/reportminer/engine.yaml scripts/nightly.sh >> /var/log/reportminer-nightly.log 2>&1
#
# Exit status is engine run's: 0 all rows ok, 1 some rows errored (counted by reason in
# $OUT/_engine_summary.json; an exit 1 that wrote no summary is a crash and is logged as CRASHED), 2 refused (bad settings or adapter, OUT not writable, settings changed: use a
# new OUT or OVERWRITE=1), 3 a data error (no input shards found, or a shard could not be read; named in
# the log), 4 failed (e.g. disk full), 130 interrupted.
set -uo pipefail
cd "$(dirname "$0")/.."

INPUT=${INPUT:?set INPUT to the folder of input shards}
OUT=${OUT:?set OUT to the output folder}
CONFIG=${CONFIG:-}
ADAPTERS=${ADAPTERS:-}          # space-separated NAME=PATH list, e.g. "prod=/adapters/v4"
EXTRA_ARGS=${EXTRA_ARGS:-}      # any other `engine run` flags
ENGINE=${ENGINE:-.venv/bin/engine}

args=(run --input "$INPUT" --out "$OUT" --quiet)
[ -n "$CONFIG" ] && args+=(--config "$CONFIG")
for a in $ADAPTERS; do args+=(--adapter "$a"); done
[ "${OVERWRITE:-0}" = 1 ] && args+=(--overwrite)
# shellcheck disable=SC2206
[ -n "$EXTRA_ARGS" ] && args+=($EXTRA_ARGS)

# The run summary is pointed at only when this run wrote it: after a crash (a traceback, the OOM killer) the
# file in $OUT is last night's or none at all (issue 19). Its stat before and after the run tells; on
# s3:// or gs:// it cannot be checked here and is named as "if written".
SUMMARY=${SUMMARY:-$OUT/_engine_summary.json}
summary_stamp() { stat -c '%y %s %i' "$SUMMARY" 2>/dev/null || echo none; }
before=$(summary_stamp)

# Compiled kernels (vLLM, Triton, inductor, flashinfer) are kept in one folder between nights, so only the
# first night after a model, adapter rank or vLLM change pays the compile (minutes on a fresh GPU; the engine
# prints "compile cache warm" or what it compiled). Default $REPORTMINER_CACHE/compile; COMPILE_CACHE=DIR to
# put it elsewhere (a volume of its own in a container).
[ -n "${COMPILE_CACHE:-}" ] && export REPORTMINER_COMPILE_CACHE="$COMPILE_CACHE"
echo "[nightly] $(date -Is) start: $ENGINE ${args[*]}${REPORTMINER_COMPILE_CACHE:+ (compile cache $REPORTMINER_COMPILE_CACHE)}"
"$ENGINE" "${args[@]}"
rc=$?
case $OUT in
  *://*) written=maybe; see="see $SUMMARY, if this run wrote it" ;;
  *) after=$(summary_stamp)
     if [ "$after" != none ] && [ "$after" != "$before" ]; then written=yes; see="see $SUMMARY"
     else written=no; see="this run wrote no summary"; fi ;;
esac
case $rc in
  0) echo "[nightly] $(date -Is) done: every row ok ($see)" ;;
  1) if [ "$written" = no ]; then
       echo "[nightly] $(date -Is) CRASHED: exit 1 without a run summary (the traceback above is a bug: report it); finished shards are kept, the next run continues"
     else
       echo "[nightly] $(date -Is) done: some rows errored ($see)"
     fi ;;
  2) echo "[nightly] $(date -Is) REFUSED: nothing ran (bad settings or adapter, $OUT not writable or holding results of other settings, or another run holds it; named above)" ;;
  3) echo "[nightly] $(date -Is) DATA ERROR: no input shards found (empty or unmounted INPUT?) or shards that could not be read (named above); the readable ones were written" ;;
  4) echo "[nightly] $(date -Is) FAILED: the run started and could not finish, e.g. disk full (file named above); finished shards are kept ($see)" ;;
  *) echo "[nightly] $(date -Is) stopped with exit $rc; finished shards are kept, the next run continues ($see)" ;;
esac
exit $rc
