#!/usr/bin/env bash
# The test command: set up .venv (first run only), build the test models, run the whole suite.
#   scripts/test.sh                # everything, including the real 0.5B model end to end
#   scripts/test.sh -m "not slow"  # skip the 0.5B model (extra pytest args pass through)
#   scripts/test.sh -m "not slow and not engine"  # the fast tier for quick loops: no vLLM engine start
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export VLLM_ENABLE_V1_MULTIPROCESSING=0 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
