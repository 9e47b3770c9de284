"""`engine run --backend ray` on a real local Ray instance with the real vLLM CPU engine and the tiny model.

One Ray instance (2 CPUs, no dashboard) for the module; five engine starts in all: the local backend's
reference run in this process, two actors for the in-process Ray run, one actor each for the killed and
the resumed console-script runs (which attach to this module's Ray instance, as `ray job submit` would).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reportminer.data.io import jsonl_to_table, read_table, write_shards
from reportminer.engine import Engine, EngineConfig
from reportminer.engine.run_manifest import MANIFEST_NAME, SUMMARY_NAME
from reportminer.engine.runner import run
from reportminer.engine.summary import EXIT_ROW_ERRORS

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "demo.jsonl"
MAX_TOKENS = 32
SHARDS = 6


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module; its actors compute with this process's thread count.

    Ray sets OMP_NUM_THREADS to an actor's CPUs (1 here) where it is unset, while the reference run in
    this process uses every core; a different thread count sums in another order, and the random model's
    near-tied logits turned that into different text (2 rows of 24 differed). The backend passes the
    driver's OMP_* variables to its actors, so setting it here gives both backends the same arithmetic.
    """
    ray = pytest.importorskip("ray", reason="Ray is not installed (the `ray` extra)")
    import torch

    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


@pytest.fixture(scope="module")
def cfg(tiny_model, tiny_adapter) -> EngineConfig:
    # Eager everywhere: eager and compiled kernels round differently, and the random model's near-tied
    # logits turn that into different text; eager also starts faster.
    return EngineConfig(model=str(tiny_model), adapters={"a": str(tiny_adapter)}, max_model_len=2048,
                        kv_cache_memory_bytes="512MiB", max_num_seqs=8, chunk_size=8, batch_rows=4,
                        max_tokens=MAX_TOKENS, max_loras=2, enforce_eager=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """24 rows (the demo paragraphs twice, fresh ids) in 6 shards of 4."""
    table = jsonl_to_table(DEMO)
    big = pa.concat_tables([table, table])
    big = big.set_column(0, "id", pa.array([f"r{i:03d}" for i in range(big.num_rows)]))
    d = tmp_path_factory.mktemp("ray") / "in"
    write_shards(big, d, rows_per_shard=4)
    assert len(list(d.rglob("*.parquet"))) == SHARDS
    return d


@pytest.fixture(scope="module")
def reference(cfg, shards, tmp_path_factory) -> Path:
    """The local backend's output on the same shards, with its own engine in this process."""
    out = tmp_path_factory.mktemp("ray") / "local"
    eng = Engine.start(cfg)
    try:
        run(cfg, shards, out, engine=eng, progress=False)
    finally:
        eng.close()
    return out


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))


def _key(r: dict) -> tuple:
    return (r["id"], r["adapter"])


def test_ray_backend_writes_what_the_local_backend_writes(cfg, shards, reference, ray_address, tmp_path):
    out = tmp_path / "ray"
    summary = run(cfg.override(backend="ray", ray_actors=2), shards, out, progress=False)
    assert summary.shards_done == SHARDS and summary.settings["backend"] == "ray"
    local = json.loads((reference / SUMMARY_NAME).read_text())
    for k in ("rows", "output_rows", "ok", "error", "errors_by_reason", "by_adapter", "output_tokens", "status",
              "exit_code"):
        assert getattr(summary, k) == local[k], k
    assert _files(out) == _files(reference)
    for rel in _files(out):  # same rows in the same order, same columns and types, per shard file
        got, want = pq.read_table(out / rel), pq.read_table(reference / rel)
        assert got.schema == want.schema, rel
        assert got.equals(want), rel
    ray_m, local_m = (json.loads((d / MANIFEST_NAME).read_text()) for d in (out, reference))
    assert ray_m["identity"] == local_m["identity"]
    drop = ("completed_at",)
    assert {r: {k: v for k, v in e.items() if k not in drop} for r, e in ray_m["shards"].items()} == \
           {r: {k: v for k, v in e.items() if k not in drop} for r, e in local_m["shards"].items()}
    assert not (out / "_engine_ray").exists() or not list((out / "_engine_ray").rglob("*.json"))

    # A rerun with either backend finds everything done.
    again = run(cfg.override(backend="ray"), shards, out, progress=False)
    assert again.status == "nothing_to_do" and again.shards_skipped == SHARDS


def test_killed_ray_driver_then_rerun_completes_every_row_exactly_once(cfg, shards, reference, ray_address, tmp_path):
    """SIGKILL `engine run --backend ray` (attached to this module's Ray, as under `ray job submit`) once a
    shard is committed; the rerun leaves finished shards untouched and writes the rest once."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(shards), "--out", str(out), "-q",
           "--model", cfg.model, "--adapter", f"a={cfg.adapters['a']}", "--max-tokens", str(MAX_TOKENS),
           "--max-model-len", "2048", "--kv-cache", "512MiB", "--max-num-seqs", "8", "--chunk-size", "8",
           "--batch-rows", "4", "--max-loras", "2", "--enforce-eager",
           "--set", "backend=ray", "--set", "ray_actors=1", "--set", f"ray_address={ray_address}"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    manifest = out / MANIFEST_NAME
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if manifest.exists() and json.loads(manifest.read_text()).get("shards"):
                break
            if proc.poll() is not None:
                pytest.fail("engine run ended before it could be killed:\n" + proc.stdout.read().decode()[-3000:])
            time.sleep(0.05)
        else:
            pytest.fail("no shard finished within 300 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = json.loads(manifest.read_text())["shards"]
    assert 1 <= len(done) < SHARDS, "the kill should land mid-run"
    # Shards an actor committed whose summary the killed driver never received: their markers stay.
    markers = {json.loads(p.read_text())["rel"] for p in (out / "_engine_ray").rglob("*.json")} - set(done)
    finished = set(done) | {m for m in markers if (out / m).exists()}
    before = {rel: ((out / rel).stat().st_mtime_ns, (out / rel).read_bytes()) for rel in finished}
    for rel in finished:
        assert pq.read_metadata(out / rel).num_rows == 4

    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode in (0, EXIT_ROW_ERRORS), p.stdout[-2000:] + p.stderr[-3000:]
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["shards_skipped"] == len(finished), (summary, sorted(finished))
    assert summary["shards_done"] == SHARDS - len(finished)
    for rel, (mtime, data) in before.items():  # finished shards untouched
        assert (out / rel).stat().st_mtime_ns == mtime and (out / rel).read_bytes() == data, rel
    assert not list(out.rglob(".*.tmp")), "temporary files of the killed run must be gone"
    assert not list((out / "_engine_ray").rglob("*.json"))
    got = sorted(read_table(out).to_pylist(), key=_key)
    want = sorted(read_table(reference).to_pylist(), key=_key)
    assert [_key(r) for r in got] == [_key(r) for r in want]  # every (row, adapter) exactly once
    assert got == want
