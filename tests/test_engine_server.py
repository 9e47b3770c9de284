"""Server mode (`engine run --server`) against a real `vllm serve` (CPU build), started by scripts/serve.sh.

One server for the module (started on 127.0.0.1 on a free port; about 1-2 min on 2 cores), one restart
in the kill test, and one in-process local engine for the reference outputs. Both sides run eager with
the same batch size: eager and compiled kernels round differently, and the random tiny model's near-tied
logits turn that into different text (tests/test_engine_run.py says the same of its SIGKILL test).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from reportminer.data.errors import ConfigError
from reportminer.data.io import jsonl_to_table, read_table, write_parquet, write_shards
from reportminer.engine import Engine, EngineConfig
from reportminer.engine.run_manifest import MANIFEST_NAME
from reportminer.engine.runner import run
from reportminer.engine.server import ServerUnavailable
from reportminer.engine.summary import EXIT_ROW_ERRORS

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "demo.jsonl"
MAX_TOKENS = 32
MAX_NUM_SEQS = 16
# Columns the server must reproduce exactly: everything the engine derives from the model's answer.
RESULT = ("adapter", "analysis", "metrics", "raw", "status", "error", "finish_reason", "prompt_tokens",
          "output_tokens", "samples", "dropped_metrics")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """scripts/serve.sh in its own process group (the API server may start an engine-core child)."""

    def __init__(self, model: Path, adapters: dict[str, Path], log_dir: Path):
        self.model, self.adapters, self.log_dir = model, adapters, log_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        env = {**os.environ, "PORT": str(self.port), "KV_CACHE": "512MiB", "MAX_MODEL_LEN": "2048",
               "MAX_NUM_SEQS": str(MAX_NUM_SEQS), "EAGER": "1", "VLLM": str(Path(sys.executable).parent / "vllm")}
        self.log = self.log_dir / f"server-{self.starts}.log"
        cmd = [str(REPO / "scripts" / "serve.sh"), str(self.model), *(f"{n}={p}" for n, p in self.adapters.items())]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        pytest.fail(f"vllm serve not ready within {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def server(tiny_model, tiny_adapter, tiny_adapter_b, tmp_path_factory):
    s = Server(tiny_model, {"a": tiny_adapter, "b": tiny_adapter_b}, tmp_path_factory.mktemp("server"))
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def base_config(tiny_model, tiny_adapter, tiny_adapter_b) -> EngineConfig:
    return EngineConfig(
        model=str(tiny_model), adapters={"a": str(tiny_adapter), "b": str(tiny_adapter_b)}, max_model_len=2048,
        kv_cache_memory_bytes="512MiB", max_num_seqs=MAX_NUM_SEQS, max_tokens=MAX_TOKENS, enforce_eager=True,
    )


@pytest.fixture(scope="module")
def local_engine(base_config):
    e = Engine.start(base_config)
    yield e
    e.close()


def _server_config(cfg: EngineConfig, server: Server, **kw) -> EngineConfig:
    return cfg.override(server=server.url, **kw)


def _rows(out: Path) -> list[dict]:
    return sorted(read_table(out).to_pylist(), key=lambda r: (r["id"], r["adapter"]))


def test_server_run_equals_the_local_backend(server, local_engine, base_config, tmp_path):
    table = jsonl_to_table(DEMO)
    write_shards(table.slice(0, 10), tmp_path / "in" / "2025", rows_per_shard=5)
    write_parquet(table.slice(10), tmp_path / "in" / "late.parquet")
    cfg = base_config.override(include_base=True)
    local = run(cfg, tmp_path / "in", tmp_path / "local", engine=local_engine, progress=False)
    remote = run(_server_config(cfg, server), tmp_path / "in", tmp_path / "remote", progress=False)

    want, got = _rows(tmp_path / "local"), _rows(tmp_path / "remote")
    assert len(got) == 36 and Counter(r["adapter"] for r in got) == {"base": 12, "a": 12, "b": 12}
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for w, g in zip(want, got):
        assert {k: g[k] for k in RESULT} == {k: w[k] for k in RESULT}, (w["id"], w["adapter"])
    # The adapters really ran on the server: a and b answer differently from the base model.
    raw = {(r["id"], r["adapter"]): r["raw"] for r in got}
    assert sum(raw[(i, "a")] != raw[(i, "base")] for i in {r["id"] for r in got}) >= 10
    assert {r["status"] for r in got} == {"ok", "error"}  # both kinds of row came back the same
    # Same files, same per-shard layout, same summary counts and the same run identity as the local run.
    assert sorted(p.relative_to(tmp_path / "remote") for p in (tmp_path / "remote").rglob("*.parquet")) == \
        sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.parquet"))
    assert (remote.ok, remote.error, remote.errors_by_reason, remote.exit_code) == \
        (local.ok, local.error, local.errors_by_reason, local.exit_code)
    m_local = json.loads((tmp_path / "local" / MANIFEST_NAME).read_text())
    m_remote = json.loads((tmp_path / "remote" / MANIFEST_NAME).read_text())
    assert m_remote["identity"] == m_local["identity"]
    # ... so a server run over the local run's folder has nothing left to do (and the reverse holds too).
    again = run(_server_config(cfg, server), tmp_path / "in", tmp_path / "local", progress=False)
    assert again.status == "nothing_to_do" and again.shards_skipped == 3


def test_samples_vote_over_the_server(server, base_config, tmp_path):
    """n > 1 goes to the server as one request with n answers; the vote and its columns are the local path's."""
    write_parquet(jsonl_to_table(DEMO).slice(0, 3), tmp_path / "in.parquet")
    cfg = _server_config(base_config.override(adapters={"b": base_config.adapters["b"]}), server, samples=3)
    s = run(cfg, tmp_path / "in.parquet", tmp_path / "out", progress=False)
    rows = read_table(tmp_path / "out").to_pylist()
    assert len(rows) == 3 and s.output_rows == 3
    for r in rows:
        assert r["samples"]["total"] == 3 and len(r["raw_samples"]) == 3
        assert r["status"] == ("ok" if r["samples"]["valid"] else "error")


class FlakyProxy:
    """A fault injector in front of the real server: each distinct request fails once (503 for every other
    one, a dropped connection for the rest) and is forwarded on its retry."""

    def __init__(self, upstream: str):
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen: set[str] = set()
        self.faults = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _forward(self, method: str, body: bytes | None) -> None:
                r = httpx.request(method, upstream + self.path, content=body, timeout=300,
                                  headers={"Content-Type": "application/json"})
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self):
                self._forward("GET", None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = hashlib.sha256(body).hexdigest()
                if key not in seen:
                    seen.add(key)
                    if len(seen) % 2:
                        proxy.faults["503"] += 1
                        msg = b'{"error": {"message": "injected overload"}}'
                        self.send_response(503)
                        self.send_header("Content-Length", str(len(msg)))
                        self.end_headers()
                        self.wfile.write(msg)
                    else:
                        proxy.faults["dropped"] += 1
                        self.close_connection = True  # no answer at all: the client sees the connection end
                    return
                self._forward("POST", body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_5xx_and_dropped_connections_are_retried(server, local_engine, base_config, tmp_path):
    write_parquet(jsonl_to_table(DEMO).slice(0, 6), tmp_path / "in.parquet")
    cfg = base_config.override(adapters={"a": base_config.adapters["a"]})
    run(cfg, tmp_path / "in.parquet", tmp_path / "local", engine=local_engine, progress=False)
    proxy = FlakyProxy(server.url)
    try:
        s = run(cfg.override(server=proxy.url, server_retries=1, server_backoff_s=0.05), tmp_path / "in.parquet",
                tmp_path / "out", progress=False)
    finally:
        proxy.close()
    assert proxy.faults["503"] == 3 and proxy.faults["dropped"] == 3  # every row failed once
    assert "server_error" not in s.errors_by_reason and s.output_rows == 6
    got, want = _rows(tmp_path / "out"), _rows(tmp_path / "local")
    assert [{k: r[k] for k in RESULT} for r in got] == [{k: r[k] for k in RESULT} for r in want]


def test_server_settings_are_checked_before_anything_starts(base_config):
    """No server needed: these refusals come from the settings alone (exit 2)."""
    import dataclasses

    with pytest.raises(ConfigError, match="give --model too"):
        dataclasses.replace(base_config, model=None, server="http://127.0.0.1:1").resolve()
    with pytest.raises(ConfigError, match="expected an http"):
        base_config.override(server="127.0.0.1:8000").resolve()
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        base_config.override(server="http://127.0.0.1:1", server_api_key_env="NO_SUCH_KEY_VAR").resolve()
    with pytest.raises(ConfigError, match="backend ray: not with server"):
        base_config.override(server="http://127.0.0.1:1", backend="ray").resolve()
    with pytest.raises(ConfigError, match="server_concurrency"):
        base_config.override(server="http://127.0.0.1:1", server_concurrency=0).resolve()
    r = base_config.override(server="http://127.0.0.1:1/v1/").resolve()  # no vLLM imported or started for this
    assert r.max_model_len == 2048 and r.stall_timeout_s == 0.0 and r.max_loras is None


def test_refusals_before_any_row_is_sent(server, base_config, tiny_adapter, tmp_path):
    write_parquet(jsonl_to_table(DEMO).slice(0, 2), tmp_path / "in.parquet")
    with pytest.raises(ConfigError, match=r"does not serve adapter\(s\) \['c'\]"):
        run(_server_config(base_config.override(adapters={"c": str(tiny_adapter)}), server), tmp_path / "in.parquet",
            tmp_path / "out1", progress=False)
    with pytest.raises(ConfigError, match="above the server's 2048"):
        run(_server_config(base_config, server, max_model_len=4096), tmp_path / "in.parquet", tmp_path / "out2",
            progress=False)
    dead = base_config.override(server=f"http://127.0.0.1:{_free_port()}", server_retries=1, server_backoff_s=0.1)
    with pytest.raises(ServerUnavailable, match="no answer after 2 tries") as e:
        run(dead, tmp_path / "in.parquet", tmp_path / "out3", progress=False)
    assert e.value.exit_code == 4
    with pytest.raises(ConfigError, match="merge_adapter"):
        run(_server_config(base_config.override(adapters={"a": base_config.adapters["a"]}), server, merge_adapter=True),
            tmp_path / "in.parquet", tmp_path / "out4", progress=False)
    for out in ("out1", "out2", "out3", "out4"):
        assert not list((tmp_path / out).rglob("*.parquet"))


def test_server_killed_mid_run_then_restarted_every_row_exactly_once(server, local_engine, base_config, tmp_path,
                                                                    wait_for_a_recorded_shard):
    """SIGKILL the server once the client's first shard is committed: the rows it can no longer answer become
    server_error rows (run exit 1); after a restart, a rerun redoes exactly the shards holding them."""
    table = jsonl_to_table(DEMO)
    big = pa.concat_tables([table] * 4)  # 48 rows in 6 shards of 8
    big = big.set_column(0, "id", pa.array([f"r{i:03d}" for i in range(big.num_rows)]))
    # Distinct paragraphs: the row cache (engine/rowcache.py) would otherwise answer the repeats at once.
    paragraphs = [f"{p}（{i}）" for i, p in enumerate(big.column("paragraph").to_pylist())]
    big = big.set_column(big.schema.get_field_index("paragraph"), "paragraph", pa.array(paragraphs))
    write_shards(big, tmp_path / "in", rows_per_shard=8)
    cfg = base_config.override(adapters={"a": base_config.adapters["a"]})
    run(cfg, tmp_path / "in", tmp_path / "reference", engine=local_engine, progress=False)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(tmp_path / "in"), "--out", str(out),
           "--model", cfg.model, "--adapter", f"a={cfg.adapters['a']}", "--server", server.url, "-q",
           "--max-tokens", str(MAX_TOKENS), "--max-model-len", "2048", "--batch-rows", "4",
           "--set", "server_concurrency=2", "--set", "server_retries=2", "--set", "server_backoff_s=0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    manifest = out / MANIFEST_NAME
    try:
        wait_for_a_recorded_shard(proc, lambda: manifest.exists() and json.loads(manifest.read_text()).get("shards"),
                                  300, lambda: proc.stdout.read().decode())
        server.kill()
        log = proc.communicate(timeout=300)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_ROW_ERRORS, log[-3000:]
    first = json.loads(manifest.read_text())["shards"]
    assert len(first) == 6, "every shard is written: the rows the server could not answer are error rows"
    lost = {rel: e["errors_by_reason"].get("server_error", 0) for rel, e in first.items()}
    assert 0 < sum(lost.values()) and sum(1 for n in lost.values() if n) < 6, lost
    rows = _rows(out)
    assert Counter(r["id"] for r in rows) == Counter(f"r{i:03d}" for i in range(48))
    for r in rows:
        if r["error"] and r["error"].startswith("server_error"):
            assert "3 tries, last:" in r["error"] and r["raw"] is None

    server.start()  # same port; a rerun (the next night) redoes the shards holding server_error rows
    s = run(_server_config(cfg, server), tmp_path / "in", out, progress=False)
    assert s.shards_skipped == sum(1 for n in lost.values() if not n)
    assert s.shards_done == sum(1 for n in lost.values() if n)
    assert "server_error" not in s.errors_by_reason
    assert not any(e["errors_by_reason"].get("server_error") for e in json.loads(manifest.read_text())["shards"].values())
    got, want = _rows(out), _rows(tmp_path / "reference")
    assert [(r["id"], r["adapter"]) for r in got] == [(r["id"], r["adapter"]) for r in want]  # each row once
    assert [{k: r[k] for k in RESULT} for r in got] == [{k: r[k] for k in RESULT} for r in want]
