"""scripts/nightly.sh's log line after each way a night can end: it names the run summary only when this
run wrote it (issue 19: after a crash it pointed at a file that was never written, or at last night's).

The engine is a stand-in script here (ENGINE is the wrapper's own switch for that): a crash with a traceback
or a kill by the OOM killer cannot be produced on cue by the real engine; the real engine's refusals and
data errors through nightly.sh are tested in test_engine_hardening.py.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def nightly(tmp_path: Path, engine_body: str, out: str | None = None) -> subprocess.CompletedProcess:
    engine = tmp_path / "engine"
    engine.write_text("#!/bin/sh\n" + engine_body + "\n")
    engine.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "ENGINE": str(engine), "INPUT": str(tmp_path / "in"),
           "OUT": out or str(tmp_path / "out")}
    return subprocess.run(["bash", str(REPO / "scripts" / "nightly.sh")], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def last_night(tmp_path: Path) -> Path:
    """OUT holding the summary of an earlier night."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "_engine_summary.json").write_text(json.dumps({"status": "ok", "night": "yesterday"}))
    os.utime(out / "_engine_summary.json", (1_700_000_000, 1_700_000_000))
    return out


WRITE = ('OUT=""; while [ $# -gt 0 ]; do [ "$1" = --out ] && OUT="$2"; shift; done; '
         'printf \'{"status": "row_errors"}\' > "$OUT/.s.tmp" && mv "$OUT/.s.tmp" "$OUT/_engine_summary.json"; ')


def last_line(r: subprocess.CompletedProcess) -> str:
    return r.stdout.strip().splitlines()[-1]


def test_a_crash_with_exit_1_is_not_sent_to_last_nights_summary(tmp_path: Path, last_night: Path):
    before = (last_night / "_engine_summary.json").read_bytes()
    r = nightly(tmp_path, 'echo "Traceback (most recent call last):" >&2; exit 1')
    assert r.returncode == 1
    line = last_line(r)
    assert "CRASHED: exit 1 without a run summary (the traceback above is a bug: report it)" in line
    assert "_engine_summary.json" not in r.stdout
    assert (last_night / "_engine_summary.json").read_bytes() == before  # the wrapper touched nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine", "out"]


def test_row_errors_point_at_the_summary_this_run_wrote(tmp_path: Path, last_night: Path):
    r = nightly(tmp_path, WRITE + "exit 1")
    assert r.returncode == 1
    assert last_line(r).endswith(f"done: some rows errored (see {last_night}/_engine_summary.json)")


def test_a_first_night_that_wrote_it_in_the_same_second_is_seen(tmp_path: Path):
    (tmp_path / "out").mkdir()
    r = nightly(tmp_path, WRITE + "exit 0")
    assert r.returncode == 0 and last_line(r).endswith(f"done: every row ok (see {tmp_path}/out/_engine_summary.json)")


def test_killed_by_the_oom_killer_says_no_summary(tmp_path: Path, last_night: Path):
    r = nightly(tmp_path, "kill -9 $$")
    assert r.returncode == 137
    assert last_line(r).endswith("stopped with exit 137; finished shards are kept, the next run continues (this run wrote no summary)")


def test_object_storage_names_the_summary_as_if_written(tmp_path: Path):
    r = nightly(tmp_path, "exit 1", out="s3://bucket/nightly")
    assert last_line(r).endswith("done: some rows errored (see s3://bucket/nightly/_engine_summary.json, if this run wrote it)")
