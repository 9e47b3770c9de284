"""scripts/demo.sh picks the demo adapter when the checkout has one and runs the base model when it has none
(issue 19: the demo must show real extraction, and keep working without the adapter).

The commands are stand-ins that record their arguments (datakit, engine, evalkit, python in a copy's .venv):
what is checked is the script's choice and the `engine run` line it builds; the real demo model's run is
tests/test_engine_demo_model.py (slow).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def demo_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "demo.sh").write_text((REPO / "scripts" / "demo.sh").read_text())
    (root / "scripts" / "setup.sh").write_text("#!/bin/sh\nexit 0\n")
    bindir = root / ".venv" / "bin"
    bindir.mkdir(parents=True)
    for tool in ("datakit", "engine", "evalkit", "python"):
        (bindir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{root}/calls.log"\ncat > /dev/null 2>&1 <&0 || true\nexit 0\n')
    for f in [*bindir.iterdir(), root / "scripts" / "setup.sh"]:
        f.chmod(0o755)
    return root


def demo(root: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    (root / "calls.log").unlink(missing_ok=True)
    r = subprocess.run(["bash", str(root / "scripts" / "demo.sh")], cwd=root, capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", **env})
    calls = (root / "calls.log").read_text().splitlines() if (root / "calls.log").exists() else []
    return r, calls


def engine_line(calls: list[str]) -> str:
    return next(c for c in calls if c.startswith("engine run"))


def test_without_an_adapter_the_base_model_runs(demo_copy: Path):
    r, calls = demo(demo_copy)
    assert r.returncode == 0, r.stderr
    assert "no demo adapter (data/demo/adapter): the base model" in r.stdout
    assert engine_line(calls) == "engine run --input parquet_out/demo/shards --out parquet_out/demo/results --overwrite"


def test_the_committed_adapter_is_used_when_present(demo_copy: Path):
    ad = demo_copy / "data" / "demo" / "adapter"
    ad.mkdir(parents=True)
    (ad / "adapter_config.json").write_text(json.dumps({"r": 8}))
    r, calls = demo(demo_copy)
    assert r.returncode == 0 and "== the demo adapter: data/demo/adapter" in r.stdout, r.stderr
    assert engine_line(calls).endswith("--overwrite --adapter demo=data/demo/adapter")
    r, calls = demo(demo_copy, DEMO_ADAPTER="")  # asked for the base model alone
    assert engine_line(calls).endswith("--overwrite")


def test_a_named_adapter_that_is_not_there_is_refused(demo_copy: Path):
    r, calls = demo(demo_copy, DEMO_ADAPTER="runs/nothing")
    assert r.returncode == 2 and "no adapter at DEMO_ADAPTER=runs/nothing" in r.stderr
    assert not any(c.startswith("engine") for c in calls)
