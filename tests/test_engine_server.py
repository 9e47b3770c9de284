"""Server mode (`engine run --server`) against a real `vllm serve` (CPU build), started by scripts/serve.sh.

One server for the module (started on 127.0.0.1 on a free port; about 1-2 min on 2 cores), one restart
in the kill test, and one in-process local engine for the reference outputs. The server wants an API key
(VLLM_API_KEY, passed through by scripts/serve.sh), so every run here sends one (`server_api_key_env`,
`--api-key-env`), and the missing / wrong / revoked key cases run against the same server. Both sides run eager with
the same batch size: eager and compiled kernels round differently, and the random tiny model's near-tied
logits turn that into different text (tests/test_engine_run.py says the same of its SIGKILL test).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from reportminer.data.errors import EXIT_FAILED, ConfigError
from reportminer.data.io import jsonl_to_table, read_table, write_parquet, write_shards
from reportminer.engine import Engine, EngineConfig
from reportminer.engine.run_manifest import MANIFEST_NAME
from reportminer.engine.runner import run
from reportminer.engine.server import ServerAuthRefused, ServerUnavailable
from reportminer.engine.shards import stale_temp_files

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "demo.jsonl"
MAX_TOKENS = 32
MAX_NUM_SEQS = 16
KEY_ENV = "RM_TEST_SERVER_KEY"  # the variable the runs name with --api-key-env
API_KEY = f"rm-test-{os.getpid()}-{time.time_ns()}"
WRONG_KEY_ENV = "RM_TEST_WRONG_KEY"
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
               "MAX_NUM_SEQS": str(MAX_NUM_SEQS), "EAGER": "1", "VLLM": str(Path(sys.executable).parent / "vllm"),
               "VLLM_API_KEY": API_KEY}
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
                if httpx.get(f"{self.url}/v1/models", headers=AUTH, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        pytest.fail(f"vllm serve not ready within {timeout} s:\n{self.tail()}")

    def server_pgid(self) -> int | None:
        """The server's own process group (serve.sh starts it under setsid and logs the id)."""
        m = re.search(r"\[serve\] server pid \d+, process group (\d+)", self.log.read_text(errors="replace"))
        return int(m.group(1)) if m else None

    def kill(self) -> None:
        """SIGKILL to the server's group and serve.sh's: an abrupt death, nothing left behind."""
        if self.proc is not None and self.proc.poll() is None:
            for group in (self.server_pgid(), self.proc.pid):
                if group:
                    try:
                        os.killpg(group, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def server(tiny_model, tiny_adapter, tiny_adapter_b, tmp_path_factory):
    s = Server(tiny_model, {"a": tiny_adapter, "b": tiny_adapter_b}, tmp_path_factory.mktemp("server"))
    with pytest.MonkeyPatch.context() as mp:  # the key where the runs (and their subprocesses) read it
        mp.setenv(KEY_ENV, API_KEY)
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
    return cfg.override(server=server.url, server_api_key_env=KEY_ENV, **kw)


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


class Proxy:
    """A forwarding proxy in front of the real server (client headers, the API key among them, passed on);
    subclasses inject faults in `post`, every answer they do not make up comes from the real server."""

    def __init__(self, upstream: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.faults: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def forward(self, method: str, body: bytes | None, auth: str | None = None) -> None:
                headers = {"Content-Type": "application/json"}
                if auth or self.headers.get("Authorization"):
                    headers["Authorization"] = auth or self.headers["Authorization"]
                r = httpx.request(method, upstream + self.path, content=body, timeout=300, headers=headers)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self):
                self.forward("GET", None)

            def do_POST(self):
                proxy.post(self, self.rfile.read(int(self.headers["Content-Length"])))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def post(self, handler, body: bytes) -> None:
        handler.forward("POST", body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FlakyProxy(Proxy):
    """Each distinct request fails once (503 for every other one, a dropped connection for the rest) and is
    forwarded on its retry."""

    def __init__(self, upstream: str):
        self.seen: set[str] = set()
        super().__init__(upstream)

    def post(self, handler, body: bytes) -> None:
        import hashlib

        key = hashlib.sha256(body).hexdigest()
        if key in self.seen:
            return handler.forward("POST", body)
        self.seen.add(key)
        if len(self.seen) % 2:
            self.faults["503"] += 1
            msg = b'{"error": {"message": "injected overload"}}'
            handler.send_response(503)
            handler.send_header("Content-Length", str(len(msg)))
            handler.end_headers()
            handler.wfile.write(msg)
        else:
            self.faults["dropped"] += 1
            handler.close_connection = True  # no answer at all: the client sees the connection end


class KeyRevokingProxy(Proxy):
    """The key is revoked after `keep` completions: later requests reach the real server with another key,
    and the server's own 401 comes back (as when a deployment rotates its key under a running job)."""

    def __init__(self, upstream: str, keep: int):
        import threading

        self.keep, self.lock = keep, threading.Lock()
        super().__init__(upstream)

    def post(self, handler, body: bytes) -> None:
        with self.lock:
            self.faults["posts"] += 1
            revoked = self.faults["posts"] > self.keep
        handler.forward("POST", body, auth="Bearer revoked" if revoked else None)


def test_5xx_and_dropped_connections_are_retried(server, local_engine, base_config, tmp_path):
    write_parquet(jsonl_to_table(DEMO).slice(0, 6), tmp_path / "in.parquet")
    cfg = base_config.override(adapters={"a": base_config.adapters["a"]})
    run(cfg, tmp_path / "in.parquet", tmp_path / "local", engine=local_engine, progress=False)
    proxy = FlakyProxy(server.url)
    try:
        s = run(cfg.override(server=proxy.url, server_api_key_env=KEY_ENV, server_retries=1, server_backoff_s=0.05),
                tmp_path / "in.parquet", tmp_path / "out", progress=False)
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


def _nothing_written(out: Path) -> bool:
    return not list(out.rglob("*.parquet")) and not stale_temp_files(out) and not (out / MANIFEST_NAME).exists()


# Settings under which one retry of a refused key would take 30 s: the refusals below must come at once.
SLOW_RETRIES = ("server_retries=3", "server_backoff_s=30")


def test_a_missing_or_wrong_api_key_is_refused_at_once(server, base_config, tmp_path, monkeypatch):
    """The server wants its key (serve.sh passed VLLM_API_KEY on); without it, or with a wrong one, the run stops
    at the /v1/models check: exit 2, one line naming the variable (never the key), no retry, nothing in --out."""
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # the image's health check needs no key
    write_parquet(jsonl_to_table(DEMO).slice(0, 2), tmp_path / "in.parquet")
    slow = dict(s.split("=") for s in SLOW_RETRIES)
    t0 = time.perf_counter()
    with pytest.raises(ServerAuthRefused, match=r"401 Unauthorized: the server wants an API key: .*--api-key-env NAME") as e:
        run(base_config.override(server=server.url, server_retries=int(slow["server_retries"]),
                                 server_backoff_s=float(slow["server_backoff_s"])),
            tmp_path / "in.parquet", tmp_path / "nokey", progress=False)
    assert e.value.exit_code == 2 and time.perf_counter() - t0 < 25
    assert _nothing_written(tmp_path / "nokey")

    monkeypatch.setenv(WRONG_KEY_ENV, "not-the-key")
    out = tmp_path / "wrongkey"
    cmd = [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(tmp_path / "in.parquet"),
           "--out", str(out), "--model", base_config.model, "--adapter", f"a={base_config.adapters['a']}",
           "--server", server.url, "--api-key-env", WRONG_KEY_ENV, "-q", "--max-model-len", "2048",
           *(a for s in SLOW_RETRIES for a in ("--set", s))]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    refusals = [line for line in p.stderr.splitlines() if "ServerAuthRefused" in line]
    assert refusals == [f"engine: refused, nothing ran: ServerAuthRefused: server {server.url}: 401 Unauthorized: the "
                        f"API key in ${WRONG_KEY_ENV} was refused (wrong or revoked key? the server's is vllm serve "
                        "--api-key / VLLM_API_KEY)"], p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "retry" not in p.stderr and "not-the-key" not in p.stderr
    assert _nothing_written(out)


def test_a_key_revoked_mid_run_stops_the_run_and_a_rerun_finishes(server, base_config, tmp_path):
    """The key stops working after the first shard (the server's own 401 from then on): the run stops at the
    first refused request instead of turning every later row into an error row. The committed shard is
    kept, the shard in progress leaves no file, and a rerun with a good key does the other two, each row once."""
    write_shards(jsonl_to_table(DEMO), tmp_path / "in", rows_per_shard=4)  # 12 distinct paragraphs, 3 shards
    cfg = _server_config(base_config.override(adapters={"a": base_config.adapters["a"]}), server,
                         server_concurrency=1, server_retries=3, server_backoff_s=30.0)
    out = tmp_path / "out"
    proxy = KeyRevokingProxy(server.url, keep=4)  # one request in flight at a time: the first shard's 4 rows pass
    t0 = time.perf_counter()
    try:
        with pytest.raises(ServerAuthRefused, match=rf"401 Unauthorized: the API key in \${KEY_ENV} was refused .*"
                                                    "stopped mid-run: shards committed before are kept") as e:
            run(cfg.override(server=proxy.url), tmp_path / "in", out, progress=False)
    finally:
        proxy.close()
    assert e.value.exit_code == 2 and time.perf_counter() - t0 < 120
    assert proxy.faults["posts"] == 5  # the refused request was not retried, and nothing was sent after it
    first = json.loads((out / MANIFEST_NAME).read_text())["shards"]
    assert len(first) == 1 and sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == \
        [e["output"] for e in first.values()]
    assert not stale_temp_files(out)  # the shard in progress left nothing behind
    assert all(e["errors_by_reason"].get("server_error", 0) == 0 and e["rows"] == 4 for e in first.values())

    s = run(cfg, tmp_path / "in", out, progress=False)  # the right key again: the other two shards
    assert (s.shards_skipped, s.shards_done, s.output_rows) == (1, 2, 8)
    assert "server_error" not in s.errors_by_reason and "rejected" not in s.errors_by_reason
    assert Counter(r["id"] for r in _rows(out)) == Counter(jsonl_to_table(DEMO).column("id").to_pylist())


def test_server_killed_mid_run_stops_the_run_then_a_rerun_finishes_every_row_once(server, local_engine, base_config,
                                                                                  tmp_path, six_shards_of_eight,
                                                                                  wait_for_a_recorded_shard):
    """SIGKILL the server once the client's first shard is committed. Issue 19: with nothing reachable for
    server_unreachable_s the run stops (exit 4), keeps its committed shards and writes no error row for the rows
    it never got answered (it used to write server_error rows for all of them and exit 1); after a restart a
    rerun does the rest, and every row is the local backend's, once."""
    # 48 rows, distinct paragraphs: the row cache (engine/row_cache.py) would otherwise answer the repeats at once.
    six_shards_of_eight(tmp_path / "in", distinct=True)
    cfg = base_config.override(adapters={"a": base_config.adapters["a"]})
    run(cfg, tmp_path / "in", tmp_path / "reference", engine=local_engine, progress=False)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(tmp_path / "in"), "--out", str(out),
           "--model", cfg.model, "--adapter", f"a={cfg.adapters['a']}", "--server", server.url, "-q",
           "--api-key-env", KEY_ENV,
           "--max-tokens", str(MAX_TOKENS), "--max-model-len", "2048", "--batch-rows", "4",
           "--set", "server_concurrency=2", "--set", "server_unreachable_s=5", "--set", "server_backoff_s=0.2",
           "--enforce-eager"]  # what the server runs (EAGER=1), as the rerun's config says: one identity
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    manifest = out / MANIFEST_NAME
    try:
        wait_for_a_recorded_shard(proc, lambda: manifest.exists() and json.loads(manifest.read_text()).get("shards"),
                                  300, lambda: proc.stdout.read().decode())
        server.kill()
        t_kill = time.time()
        log = proc.communicate(timeout=300)[0].decode()
        stopped_s = time.time() - t_kill
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_FAILED, log[-3000:]
    assert "unreachable for 5 s" in log and "finished shards are kept" in log and "Traceback" not in log, log[-3000:]
    assert stopped_s < 60, stopped_s  # the breaker's window and a backoff, not hours of error rows
    first = json.loads(manifest.read_text())["shards"]
    assert 1 <= len(first) < 6, first
    assert not any(e["errors_by_reason"].get("server_error") for e in first.values()), first
    assert not [r for r in _rows(out) if (r["error"] or "").startswith("server_error")]
    assert not list(out.rglob(".*.tmp"))  # the shards in flight left no temporary file

    server.start()  # same port; the rerun (the next night) does the shards the stopped run did not commit
    s = run(_server_config(cfg, server), tmp_path / "in", out, progress=False)
    assert (s.shards_skipped, s.shards_done) == (len(first), 6 - len(first))
    assert "server_error" not in s.errors_by_reason
    got, want = _rows(out), _rows(tmp_path / "reference")
    assert [(r["id"], r["adapter"]) for r in got] == [(r["id"], r["adapter"]) for r in want]  # each row once
    assert [{k: r[k] for k in RESULT} for r in got] == [{k: r[k] for k in RESULT} for r in want]

def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (children's children too), from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_to_serve_sh_stops_the_whole_server_group(tiny_model, tmp_path):
    """Issue 19: killing serve.sh left an orphaned VLLM::EngineCore (~2 GB) that ignored SIGTERM. Started the way a
    user's script starts it (no session of its own), stopped with SIGTERM to serve.sh alone."""
    s = Server(tiny_model, {}, tmp_path)
    env = {**os.environ, "PORT": str(s.port), "KV_CACHE": "256MiB", "MAX_MODEL_LEN": "2048", "EAGER": "1",
           "VLLM": str(Path(sys.executable).parent / "vllm"), "VLLM_API_KEY": API_KEY, "STOP_GRACE_S": "30"}
    s.log = tmp_path / "server.log"
    s.proc = subprocess.Popen([str(REPO / "scripts" / "serve.sh"), str(tiny_model)], stdout=open(s.log, "wb"),
                              stderr=subprocess.STDOUT, env=env)
    try:
        s.wait_ready()
        below = _descendants(s.proc.pid)
        assert below, "the server runs below serve.sh"
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=60) == 143
        left = [p for p in below if _alive(p)]
        assert left == [], f"still running after serve.sh stopped ({time.time() - t0:.1f} s): {left}\n{s.tail()}"
        assert "stopping process group" in s.log.read_text(errors="replace")
    finally:
        s.kill()
