"""`engine run --backend ray` on a real local Ray instance with the real vLLM CPU engine and the tiny model.

One Ray instance (2 CPUs, no dashboard) for the module; five engine starts in all: the local backend's
reference run in this process, two actors for the in-process Ray run, one actor each for the killed and
the resumed console-script runs (which attach to this module's Ray instance, as `ray job submit` would).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reportminer.data.io import jsonl_to_table, read_table, write_shards
from reportminer.engine import Engine, EngineConfig
from reportminer.engine.ray_backend import MARKER_DIR, _adopt_markers
from reportminer.engine.run_manifest import MANIFEST_NAME, SUMMARY_NAME, RunManifest
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
    this process uses every core. The backend passes the driver's OMP_* variables on to its actors, so
    setting it here gives both backends the same thread count, one difference fewer in the arithmetic.
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
    # The same arithmetic for every row in both backends, so that their files must be equal byte for byte:
    # - eager everywhere: eager and compiled kernels round differently (and eager starts faster);
    # - one sequence per engine step and no prefix cache: on CPU a row's logits depend on its batch
    #   neighbours in the last bits, and the random model's near-tied logits turn that into other text.
    #   Measured with max_num_seqs 8: row r009 ran alone (its shard as the whole input) differed from the
    #   same row batched with the next shard's rows from token 14 on. The local backend batches across
    #   shard boundaries and each actor only within its shard, so with batches > 1 the two backends
    #   differ where the local backend would differ from itself with other neighbours.
    return EngineConfig(model=str(tiny_model), adapters={"a": str(tiny_adapter)}, max_model_len=2048,
                        kv_cache_memory_bytes="512MiB", max_num_seqs=1, chunk_size=8, batch_rows=4,
                        enable_prefix_caching=False, max_tokens=MAX_TOKENS, max_loras=2, enforce_eager=True)


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
    assert not (out / MARKER_DIR).exists(), "markers are removed once the driver has recorded their shards"

    # A rerun with either backend finds everything done.
    again = run(cfg.override(backend="ray"), shards, out, progress=False)
    assert again.status == "nothing_to_do" and again.shards_skipped == SHARDS


def test_killed_ray_driver_then_rerun_completes_every_row_exactly_once(cfg, shards, reference, ray_address, tmp_path,
                                                                     kill_once_a_shard_is_recorded):
    """SIGKILL `engine run --backend ray` (attached to this module's Ray, as under `ray job submit`) once a
    shard is committed; the rerun leaves finished shards untouched and writes the rest once."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(shards), "--out", str(out), "-q",
           "--model", cfg.model, "--adapter", f"a={cfg.adapters['a']}", "--max-tokens", str(MAX_TOKENS),
           "--max-model-len", "2048", "--kv-cache", "512MiB", "--max-num-seqs", "1", "--chunk-size", "8",
           "--batch-rows", "4", "--max-loras", "2", "--enforce-eager", "--no-prefix-caching",
           "--set", "backend=ray", "--set", "ray_actors=1", "--set", f"ray_address={ray_address}"]
    manifest = out / MANIFEST_NAME
    kill_once_a_shard_is_recorded(cmd, lambda: manifest.exists() and json.loads(manifest.read_text()).get("shards"))
    done = json.loads(manifest.read_text())["shards"]
    assert 1 <= len(done) < SHARDS, "the kill should land mid-run"
    # Shards an actor committed whose summary the killed driver never received: their markers stay.
    markers = {json.loads(p.read_text())["rel"] for p in (out / MARKER_DIR).rglob("*.json")} - set(done)
    finished = set(done) | {m for m in markers if (out / m).exists()}
    before = {rel: ((out / rel).stat().st_mtime_ns, (out / rel).read_bytes()) for rel in finished}
    for rel in finished:
        assert pq.read_metadata(out / rel).num_rows == 4

    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode in (0, EXIT_ROW_ERRORS), p.stdout[-2000:] + p.stderr[-3000:]
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["shards_skipped"] == len(finished), (summary, sorted(finished))
    assert summary["shards_done"] == SHARDS - len(finished)
    for rel, (mtime, data) in before.items():  # finished shards untouched
        assert (out / rel).stat().st_mtime_ns == mtime and (out / rel).read_bytes() == data, rel
    assert not list(out.rglob(".*.tmp")), "temporary files of the killed run must be gone"
    assert not (out / MARKER_DIR).exists()
    got = sorted(read_table(out).to_pylist(), key=_key)
    want = sorted(read_table(reference).to_pylist(), key=_key)
    assert [_key(r) for r in got] == [_key(r) for r in want]  # every (row, adapter) exactly once
    assert got == want


def test_markers_of_committed_shards_are_adopted_only_when_their_output_is_whole(tmp_path):
    """What a rerun makes of markers a killed driver left: the file an actor committed is recorded (not
    redone); a marker whose output is missing or of another size is dropped, so that shard is redone."""
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    for rel in ("a/x.parquet", "y.parquet", "z.parquet"):
        entry = {"input": {"sha256": "00"}, "output": rel, "output_size": 10, "rows": 1}
        (out / MARKER_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / MARKER_DIR / f"{rel}.json").write_text(json.dumps({"rel": rel, "entry": entry}))
    (out / "a" / "x.parquet").write_bytes(b"0" * 10)  # whole: adopted
    (out / "y.parquet").write_bytes(b"0" * 7)  # not the size the actor recorded: redone
    manifest = RunManifest(identity={})  # z.parquet: no output at all: redone
    _adopt_markers(out, manifest, discard=False)
    assert list(manifest.shards) == ["a/x.parquet"]
    assert not (out / MARKER_DIR).exists()

    (out / MARKER_DIR).mkdir()  # --overwrite: every marker is dropped, nothing adopted
    (out / MARKER_DIR / "a" / "x.parquet.json").parent.mkdir()
    (out / MARKER_DIR / "a" / "x.parquet.json").write_text(json.dumps({"rel": "a/x.parquet", "entry": {
        "output": "a/x.parquet", "output_size": 10}}))
    manifest = RunManifest(identity={})
    _adopt_markers(out, manifest, discard=True)
    assert manifest.shards == {} and not (out / MARKER_DIR).exists()
