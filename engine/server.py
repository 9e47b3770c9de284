"""Server mode: the same run against an OpenAI-compatible vLLM server (`engine run --server URL`).

Teams already run `vllm serve` deployments (scripts/serve.sh starts one with an adapter); this sends the
rows there instead of starting vLLM in the run's process. Everything around generation stays the runner's:
shards, output columns, run manifest, resume, per-row errors.

`ServerEngine` implements the engine seam (seam.GenerationEngine) as `generate.Engine` does; the backend
around it is the local one (backends.LocalBackend), chosen by `engines.open_engine` when `server` is set:
- prompts are rendered and tokenised here by `seam.encode_prompts` (data.prompt.render_prompt with the model
  folder's own tokenizer, as the local engine does), then sent as token ids to `/v1/completions`. The server thus sees
  exactly the tokens the local engine would, applies no chat template of its own, and too-long rows are
  found before anything is sent;
- each request carries the contract's JSON schema as vLLM's `structured_outputs: {"json": ...}` (the
  guided-decoding backend and compact whitespace are server-level settings: scripts/serve.sh), the
  adapter's name (or the base model's) as `model`, every sampling parameter explicitly (a server started
  with `--generation-config auto` would otherwise fill in the model's own top_k / repetition_penalty), and
  `return_token_ids` for per-answer token counts;
- `ServerFeeder` has `generate.Feeder`'s interface (seam.RequestFeeder) (run, abort, close): an asyncio loop with one
  `httpx.AsyncClient` in a background thread keeps at most `server_concurrency` requests in flight.
  Timeouts and 408 / 429 / 500 answers are retried with exponential backoff; a request that still fails
  becomes a `server_error` row, and the run manifest records it per shard so that a rerun redoes those
  shards (plan.select). A 4xx answer is the server refusing that request: a `rejected` row.
- a server that cannot be reached (connection refused or reset, 502/503/504 from a proxy) is not a row's
  failure: the requests wait for it with jittered backoff, and once none has reached it for
  `server_unreachable_s` the circuit breaker (engine/breaker.py) stops the run with ServerUnreachable
  (exit 4): committed shards are kept, rows in flight are not written, the rerun does the rest (issue 19:
  a dead server used to turn every remaining row into a `server_error` row, for hours on a large input).
- 401 / 403 is the server refusing the API key, not a row: a configuration error (ServerAuthRefused, exit 2),
  never retried. At start (the /v1/models check) nothing is written; mid-run (a key revoked or rotated
  under a running job) the run stops at the first such answer: shards already committed are kept, the
  shards in progress leave no file (pipeline.process_shards removes their temporary files), so a rerun with
  the right key does the rest. Rows are not turned into error rows one by one: every row would fail the
  same way, and a run "finished with row errors" would hide that the key is wrong.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from reportminer.data.errors import ConfigError, RunFailed
from reportminer.data.schema import SERVER_ERROR, decode_json_schema

from .adapters import Adapter
from .breaker import CircuitBreaker, ServerUnreachable
from .config import EngineConfig, check_server_config
from .decoding import sampling_temperature
from .seam import Completion, Request, Sample, encode_prompts, needs_capped_retry

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("engine")

MAX_BACKOFF_S = 60.0
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
GATEWAY_STATUS = frozenset({502, 503, 504})  # what a proxy or load balancer answers for a server that is gone
UNREACHABLE_TRIES = 1000  # per row: only a request that alone cannot get through while others do ever gets here
AUTH_STATUS = frozenset({401, 403})


class ServerUnavailable(RunFailed):
    """The server did not answer at start (exit 4): nothing ran, the output folder is unchanged."""


class ServerAuthRefused(ConfigError):
    """The server answered 401/403: the API key is missing, wrong or revoked (exit 2, never retried)."""


def auth_refused(c: EngineConfig, url: str, r: "httpx.Response", mid_run: bool = False) -> ServerAuthRefused:
    """One line naming the variable the key came from (never the key), and what to do."""
    status = f"server {url}: {r.status_code} {r.reason_phrase}"
    if c.server_api_key_env:
        what = (f"the API key in ${c.server_api_key_env} was refused (wrong or revoked key? the server's is "
                "vllm serve --api-key / VLLM_API_KEY)")
    else:
        what = "the server wants an API key: put it in an environment variable and pass --api-key-env NAME"
    if mid_run:
        what += "; stopped mid-run: shards committed before are kept, rerun with the right key to do the rest"
    return ServerAuthRefused(f"{status}: {what}")


def base_url(url: str) -> str:
    """`http://host:port` from `http://host:port`, `.../` or `.../v1`."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def backoff_s(c: EngineConfig, attempt: int) -> float:
    """Wait before retry number `attempt` (0-based): server_backoff_s doubled each time, at most 60 s."""
    return float(min(MAX_BACKOFF_S, c.server_backoff_s * 2**attempt))


def _headers(c: EngineConfig) -> dict[str, str]:
    if c.server_api_key_env:
        return {"Authorization": f"Bearer {os.environ[c.server_api_key_env]}"}
    return {}


def _timeout(c: EngineConfig) -> "httpx.Timeout":
    import httpx

    return httpx.Timeout(c.server_timeout_s, connect=min(10.0, c.server_timeout_s))


class ServerEngine:
    """The engine seam (seam.GenerationEngine) over a vLLM server: prompts rendered here, generation there.

    Start checks (before any row is sent): the server answers /v1/models (retried like a request; else
    ServerUnavailable, exit 4), serves every adapter under its name and the base model, and its
    max_model_len is not below the run's (else rows the run counts as fitting would be refused): ConfigError.
    """

    def __init__(self, config: EngineConfig):
        from transformers import AutoTokenizer

        self.config = config
        self.url = base_url(config.server or "")
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        self.base_name, self.served = self._preflight()
        self._request_seq = itertools.count()

    def _preflight(self) -> tuple[str, dict[str, dict[str, Any]]]:
        import httpx

        c = self.config
        last: str = ""
        for attempt in range(c.server_retries + 1):
            try:
                r = httpx.get(f"{self.url}/v1/models", headers=_headers(c), timeout=_timeout(c))
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code in AUTH_STATUS:
                    raise auth_refused(c, self.url, r)
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code} {r.text[:200]}"
                if r.status_code not in RETRY_STATUS:
                    raise ConfigError(f"server {self.url}/v1/models: {last} (is it an OpenAI-compatible vLLM server?)")
            if attempt < c.server_retries:
                log.warning("server %s not answering (%s); retry %d/%d", self.url, last, attempt + 1, c.server_retries)
                time.sleep(backoff_s(c, attempt))
        else:
            raise ServerUnavailable(f"server {self.url}: no answer after {c.server_retries + 1} tries ({last}); "
                                    "is it running? (scripts/serve.sh starts one)")
        served = {m["id"]: m for m in r.json().get("data", [])}
        bases = [m for m in served.values() if not m.get("parent")]
        if len(bases) != 1:
            model_name = os.path.basename(str(c.model).rstrip("/"))
            bases = [m for m in bases if os.path.basename(str(m.get("root") or m["id"]).rstrip("/")) == model_name]
        if len(bases) != 1:
            raise ConfigError(f"server {self.url}: cannot tell which served model is {c.model} (serves {sorted(served)})")
        base = bases[0]
        served_as = os.path.basename(str(base.get("root") or base["id"]).rstrip("/"))
        if served_as != os.path.basename(str(c.model).rstrip("/")):
            log.warning("server %s serves %s, the run's model folder is %s: the prompts are tokenised with the "
                        "latter, so it must be the same model", self.url, base.get("root") or base["id"], c.model)
        missing = [n for n in c.adapters if n not in served or served[n].get("parent") != base["id"]]
        if missing:
            raise ConfigError(
                f"server {self.url} does not serve adapter(s) {missing} on {base['id']} (it serves {sorted(served)}); "
                "start it with --enable-lora --lora-modules NAME=PATH (scripts/serve.sh)")
        server_len = base.get("max_model_len")
        if server_len is not None and c.max_model_len is not None and int(server_len) < c.max_model_len:
            raise ConfigError(f"max_model_len {c.max_model_len} is above the server's {server_len}: set max_model_len "
                              f"to {server_len} (or start the server with --max-model-len {c.max_model_len})")
        log.info("server %s: model %s, adapters %s", self.url, base["id"], list(c.adapters))
        return str(base["id"]), served

    # ---- the engine seam ------------------------------------------------------------------------------

    def encode_prompts(self, titles: Iterable[str | None], paragraphs: Iterable[str | None]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, titles, paragraphs)

    def check_compatible(self, run: EngineConfig, adapters: list[Adapter]) -> None:
        if base_url(run.server or "") != self.url:
            raise ConfigError(f"this engine talks to {self.url}; the run wants server {run.server!r}")
        missing = [a.name for a in adapters if a.name not in self.served]
        if missing:
            raise ConfigError(f"server {self.url} does not serve adapter(s) {missing}")

    def sampling_params(self, config: EngineConfig) -> dict[str, Any]:
        """The request body's sampling part: what Engine.sampling_params sets, every field explicit."""
        temperature = sampling_temperature(config)
        body: dict[str, Any] = {
            "n": config.samples, "temperature": temperature, "top_p": config.top_p, "max_tokens": config.max_tokens,
            # The server fills unset fields from the model's generation_config.json (e.g. Qwen's top_k 20,
            # repetition_penalty 1.05): the local engine uses none of them.
            "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "return_token_ids": True,
        }
        # Per-request seed as in Engine.sampling_params: only where the server is declared a GPU one
        # (device: cuda); the CPU build crashes on seeded requests after a partial prefill chunk.
        if temperature > 0 and config.device == "cuda":
            body["seed"] = config.seed
        if config.guided:
            body["structured_outputs"] = {"json": decode_json_schema(config.guided_length_caps)}
        return body

    def model_name(self, adapter: Adapter | None) -> str:
        return self.base_name if adapter is None else adapter.name

    @property
    def max_num_seqs(self) -> int:
        return self.config.server_concurrency

    def feeder(self, sampling_params, window: int, may_submit: Callable[[], bool] | None = None,
               stall_timeout_s: Any = "engine", retry_params: Any = None) -> "ServerFeeder":
        """At most server_concurrency requests in flight (the runner's window is for a local vLLM queue).
        retry_params: see seam.GenerationEngine.feeder."""
        return ServerFeeder(self, sampling_params, self.config.server_concurrency, may_submit, retry_params)

    def lora_request(self, adapter: Adapter | None):
        return None

    def reset_loras(self) -> None:
        """The server keeps its adapters in its own slots (scripts/serve.sh leaves one empty on CPU)."""

    def close(self) -> None:
        pass


class ServerFeeder:
    """The feeder seam (seam.RequestFeeder, as generate.Feeder) over HTTP: the runner's thread submits and consumes; an event loop thread does the I/O."""

    def __init__(self, engine: ServerEngine, body: dict[str, Any], window: int,
                 may_submit: Callable[[], bool] | None = None, retry_body: dict[str, Any] | None = None):
        self.engine = self.server = engine
        self.config = engine.config
        self.body = body
        self.retry_body = retry_body  # the capped grammar's body, for answers that need it (seam.needs_capped_retry)
        self.window = max(1, window)
        self.may_submit = may_submit or (lambda: True)
        self.pending: dict[int, tuple[Request, Future]] = {}
        self._seq = itertools.count()
        self._done: queue.Queue[int] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine-server-io", daemon=True)
        self._thread.start()
        self._client: httpx.AsyncClient | None = None
        # One breaker for all requests of the run: the server is down when none of them reaches it.
        self.breaker = CircuitBreaker(self.config.server_unreachable_s, backoff_s=max(self.config.server_backoff_s, 0.05),
                                      max_backoff_s=MAX_BACKOFF_S)

    async def _get_client(self) -> "httpx.AsyncClient":
        import httpx

        if self._client is None:
            limits = httpx.Limits(max_connections=self.window, max_keepalive_connections=self.window)
            self._client = httpx.AsyncClient(base_url=self.server.url, headers=_headers(self.config),
                                             timeout=_timeout(self.config), limits=limits)
        return self._client

    async def _one(self, req: Request) -> Completion:
        """One row's answer: its request, and once more under the capped grammar where that is wanted."""
        c = await self._attempt(req, self.body)
        if self.retry_body is not None and needs_capped_retry(c):
            c = await self._attempt(req, self.retry_body)
            c.retried = True
        return c

    async def _attempt(self, req: Request, body: dict[str, Any]) -> Completion:
        """One request; never raises for a row's failure. Raises ServerAuthRefused on 401/403, and
        ServerUnreachable (exit 4) once the circuit breaker opens.

        Not reaching the server (connection refused or reset, a 502/503/504 from what stands in front of it)
        does not use the row's retries: the request waits, with full jitter (breaker.wait_s), with every other
        request, until an answer comes back from anyone or the breaker opens (`server_unreachable_s`); a
        per-row cap of UNREACHABLE_TRIES keeps one request that alone cannot get through from looping. A
        timeout, a 408/429/500 or an unreadable answer uses one of the row's `server_retries`; then the row is
        a `server_error` row. (httpx's own transport retries cover connection failures only, without jitter
        or a run-wide view; tenacity is not installed here: the loop below is the retry policy.)
        """
        import httpx

        c = self.config
        client = await self._get_client()
        body = {**body, "model": self.server.model_name(req.adapter), "prompt": req.prompt_token_ids}
        n_prompt = len(req.prompt_token_ids)
        last = ""
        tries = unreachable = 0
        while True:
            down = False  # this attempt did not reach the server
            self.breaker.check(self.server.url)
            try:
                r = await client.post("/v1/completions", json=body)
            except httpx.TimeoutException as e:  # the server may be there but slow: a try of the row's own
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                if isinstance(e, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                    self.breaker.unreachable(last)
                    unreachable, down = unreachable + 1, True
                else:
                    tries += 1
            except httpx.TransportError as e:  # refused, reset, closed: the server is not there (now)
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                self.breaker.unreachable(last)
                unreachable, down = unreachable + 1, True
            else:
                if r.status_code in GATEWAY_STATUS:  # a proxy answering for a server that is gone
                    last = f"HTTP {r.status_code}: {_message(r)}"
                    self.breaker.unreachable(last)
                    unreachable, down = unreachable + 1, True
                else:
                    self.breaker.reachable()
                    if r.status_code == 200:
                        try:
                            return self._completion(req, r.json())
                        except ValueError as e:  # not JSON: a proxy's page, a cut answer; try again
                            last = f"unreadable answer: {e}"
                            tries += 1
                    else:
                        if r.status_code in AUTH_STATUS:  # the key, not this row: stop the run (fut.result() raises it)
                            raise auth_refused(c, self.server.url, r, mid_run=True)
                        last = f"HTTP {r.status_code}: {_message(r)}"
                        if r.status_code not in RETRY_STATUS:  # the server refuses this request: retrying will not help
                            return Completion(req.key, None, None, n_prompt, 0, rejected=last)
                        tries += 1
            if tries > c.server_retries or unreachable > UNREACHABLE_TRIES:
                break
            self.breaker.check(self.server.url)
            await asyncio.sleep(self.breaker.wait_s() if down else backoff_s(c, tries - 1))
        n = tries + unreachable
        log.warning("row gave up after %d tries: %s", n, last)
        return Completion(req.key, None, None, n_prompt, 0, rejected=f"{n} tries, last: {last}", reason=SERVER_ERROR)

    def _completion(self, req: Request, data: dict[str, Any]) -> Completion:
        choices = sorted(data.get("choices") or [], key=lambda ch: ch.get("index", 0))
        if not choices:
            return Completion(req.key, None, None, len(req.prompt_token_ids), 0,
                              rejected=f"the server answered without choices: {str(data)[:200]}", reason=SERVER_ERROR)

        def n_tokens(ch: dict[str, Any]) -> int:
            ids = ch.get("token_ids")
            return len(ids) if ids is not None else int((data.get("usage") or {}).get("completion_tokens") or 0)

        first = choices[0]
        return Completion(
            key=req.key, text=first.get("text"), finish_reason=first.get("finish_reason"),
            prompt_tokens=len(req.prompt_token_ids), output_tokens=n_tokens(first),
            samples=[Sample(ch.get("text"), ch.get("finish_reason"), n_tokens(ch)) for ch in choices]
            if len(choices) > 1 else None,
        )

    def _submit(self, req: Request) -> None:
        i = next(self._seq)
        fut = asyncio.run_coroutine_threadsafe(self._one(req), self._loop)
        self.pending[i] = (req, fut)
        fut.add_done_callback(lambda _f: self._done.put(i))

    def run(self, requests: Iterator[Request]) -> Iterator[Completion]:
        try:
            yield from self._run(requests)
        finally:
            self.close()

    def _run(self, requests: Iterator[Request]) -> Iterator[Completion]:
        exhausted = False
        while True:
            while not exhausted and len(self.pending) < self.window and (self.may_submit() or not self.pending):
                req = next(requests, None)
                if req is None:
                    exhausted = True
                else:
                    self._submit(req)
            if not self.pending:
                if exhausted:
                    return
                continue
            i = self._done.get()
            entry = self.pending.pop(i, None)
            if entry is None:  # aborted meanwhile
                continue
            _req, fut = entry
            yield fut.result()  # a Completion for every failure of the row; ServerAuthRefused stops the run

    def abort(self, predicate: Callable[[Any], bool]) -> int:
        """Cancel unfinished requests whose key matches; the closed connection makes vLLM abort them too."""
        ids = [i for i, (req, _f) in self.pending.items() if predicate(req.key)]
        for i in ids:
            self.pending.pop(i)[1].cancel()
        return len(ids)

    def close(self) -> None:
        """Cancel whatever is in flight and stop the I/O thread."""
        self.abort(lambda key: True)
        if self._loop.is_running():
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=10)
                self._client = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()


def _message(r: "httpx.Response") -> str:
    """vLLM's error message from an error answer ({"error": {"message": ...}}), else the start of the body."""
    try:
        err = r.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:500]
    except Exception:
        pass
    return r.text[:500]


__all__ = ["ServerAuthRefused", "ServerEngine", "ServerFeeder", "ServerUnavailable", "ServerUnreachable", "base_url",
           "check_server_config"]
