"""The vLLM engine: started once, reused across runs, fed continuously.

`LLM.generate` takes a list and returns when the last request of it finishes, so calling it per chunk
lets the batch drain at the end of every chunk (the slowest request holds up the next chunk). Instead
`Feeder` keeps a window of requests queued in the engine and tops it up after every engine step, the way
vLLM's own server feeds it: the batch stays full across chunk and shard boundaries, while only the
window (not the shard) is ever held in memory.

Prompts are rendered by data.prompt.render_prompt with the model's own tokenizer and tokenised here, so
the engine knows every prompt's length before it is submitted (too long -> a row error, not a failed
batch) and vLLM does not tokenise twice.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from reportminer.data.schema import decode_json_schema

from .adapters import Adapter
from .compile_cache import CacheState, CompileEnv, apply_env, cache_folders, describe_start
from .config import ENGINE_LEVEL, ConfigError, EngineConfig
from .decoding import sampling_temperature
from .seam import Completion, Request, Sample, encode_prompts, needs_capped_retry
from .stall import ActivityProbe

log = logging.getLogger("engine")

# vLLM warnings that are expected here and say nothing to an operator: we pass token ids (counted
# before submission) rather than text, adapters use the base model's tokenizer by design, and the CPU
# worker repeats a thread-binding notice on every compile step.
_QUIET = (
    "Passing raw prompts to InputProcessor is deprecated",
    "vLLM has deprecated support for supporting different tokenizers for different LoRAs",
    "CPU backend doesn't allow to use `torch.set_num_threads`",
)


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not any(msg.startswith(q) for q in _QUIET)


def _quiet_vllm_logs() -> None:
    f = _QuietFilter()
    for name in ("vllm", "vllm.v1.engine.input_processor", "vllm.v1.worker.cpu_worker"):
        lg = logging.getLogger(name)
        lg.addFilter(f)
        for h in lg.handlers:
            h.addFilter(f)


def prepare_process_env(device: str) -> CompileEnv:
    """Environment vLLM reads at import: the CPU build runs its engine core in-process (two cores do not
    gain from a second process, and a SIGKILL then leaves no orphan behind); every compile cache under one
    folder (engine/compile_cache.py), unless the user placed one."""
    if device == "cpu":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return apply_env()


def warmup_wanted(config: EngineConfig) -> bool:
    """`warmup` when set, else on for CUDA (where first-request compiles cost minutes) and off on CPU."""
    value = getattr(config, "warmup", None)
    return config.device == "cuda" if value is None else bool(value)


class Engine:
    """One vLLM `LLM` plus what the runner needs around it. Build with `Engine.start(config)`."""

    def __init__(self, config: EngineConfig):
        self.config = dataclasses.replace(config, enforce_eager=bool(config.enforce_eager))
        config = self.config
        self.compile_env = prepare_process_env(config.device)
        # the folders as they are now: vLLM re-points TORCHINDUCTOR_CACHE_DIR (inside VLLM_CACHE_ROOT) when its
        # engine core runs in this process, and the second snapshot must walk what the first one walked
        folders = cache_folders()
        cache_before = CacheState.snapshot(folders)
        t_start = time.perf_counter()
        from vllm import LLM

        kwargs = config.vllm_kwargs()  # derived from the fields (EngineConfig.vllm_kwargs)
        log.info("starting vLLM: %s", {k: v for k, v in kwargs.items() if k != "structured_outputs_config"})
        _quiet_vllm_logs()
        self.llm = LLM(**kwargs)
        _quiet_vllm_logs()
        self.tokenizer = self.llm.get_tokenizer()
        self._lora_ids: dict[tuple[str, str], int] = {}
        self._request_seq = itertools.count()
        self.start_s = time.perf_counter() - t_start  # vLLM's own start (load, compile, CUDA graphs)
        self.warmup_s: float | None = None
        if warmup_wanted(config):
            from .warmup import warm_up

            self.warmup_s = warm_up(self).seconds
        self.reset_loras()  # the warm-up's adapters leave their slots (see reset_loras)
        self.start_line = describe_start(cache_before, CacheState.snapshot(folders),
                                         time.perf_counter() - t_start, self.compile_env.root)
        log.info(self.start_line)

    @classmethod
    def start(cls, config: EngineConfig) -> "Engine":
        return cls(config.resolve())

    # ---- compatibility ----------------------------------------------------------------------------------

    def check_compatible(self, run: EngineConfig, adapters: list[Adapter]) -> None:
        """Refuse a run whose engine-level settings differ from the started engine's."""
        # None in the run's settings means "no preference" (e.g. enforce_eager chosen by run size).
        diff = [k for k in ENGINE_LEVEL if getattr(run, k) is not None and getattr(run, k) != getattr(self.config, k)]
        if diff:
            raise ConfigError(
                "this engine was started with other settings: "
                + ", ".join(f"{k}={getattr(self.config, k)!r} (run wants {getattr(run, k)!r})" for k in diff)
            )
        if adapters:
            cap = self.config.max_loras or 0
            if cap == 0:
                raise ConfigError("this engine was started without LoRA; start it with adapters (or max_loras)")
            need = len(adapters) + (1 if (run.include_base and self.config.device == "cpu") else 0)
            if need > cap:
                raise ConfigError(
                    f"{len(adapters)} adapter(s){' + base rows' if need > len(adapters) else ''} need "
                    f"max_loras >= {need}; the engine has {cap}"
                )
            rank = max(a.rank for a in adapters)
            if rank > (self.config.max_lora_rank or 16):
                raise ConfigError(f"adapter rank {rank} exceeds the engine's max_lora_rank {self.config.max_lora_rank}")

    # ---- prompts ----------------------------------------------------------------------------------------

    def encode_prompts(self, titles: Iterable[str | None], paragraphs: Iterable[str | None]) -> list[list[int]]:
        """Token ids of the served prompt for each row (the chat template already holds any BOS)."""
        return encode_prompts(self.tokenizer, titles, paragraphs)

    def sampling_params(self, config: EngineConfig):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        temperature = sampling_temperature(config)  # config.temperature, or sample_temperature for samples > 1
        sp = SamplingParams(
            n=config.samples,  # > 1: N answers from one request (one prompt, vLLM fans out the samples)
            temperature=temperature,
            top_p=config.top_p,
            # A per-request seed keeps sampled runs reproducible whatever the batch around a request. Not on
            # CPU: vLLM 0.32.0 rewinds a request's generator after a partial prefill chunk, which a CPU torch
            # Generator cannot do ("CPU Generator does not use offset", crashed `--samples 5` on the 0.5B
            # model, 2026-11-30); there sampling follows the engine-wide seed.
            seed=config.seed if temperature > 0 and config.device != "cpu" else None,
            max_tokens=config.max_tokens,
            structured_outputs=(StructuredOutputsParams(json=decode_json_schema(config.guided_length_caps))
                                if config.guided else None),
        )
        sp.output_kind = RequestOutputKind.FINAL_ONLY
        return sp

    # ---- LoRA -------------------------------------------------------------------------------------------

    def lora_request(self, adapter: Adapter | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        # vLLM caches adapters by integer id: one id per (folder, content), never reused for other weights.
        key = (str(adapter.path), adapter.sha256)
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        return LoRARequest(adapter.name, self._lora_ids[key], str(adapter.path))

    def reset_loras(self) -> None:
        """Unload every adapter so a run's adapters take the lowest LoRA slots.

        vLLM's CPU LoRA kernels (vllm/lora/ops/torch_ops) index the stacked adapter weights with the
        row's slot, and a row without adapter has slot -1, which Python reads as the LAST slot. Rows on
        the base model that share a batch with adapter rows therefore get whatever adapter sits in the
        last slot. The engine keeps that slot empty (max_loras = adapters + 1, slots filled from 0), so
        -1 lands on zero weights. Verified by
        tests/test_engine_run.py::test_lora_changes_outputs_and_base_rows_ignore_batch_neighbours.
        """
        if not self.config.max_loras:
            return
        engine = self.llm.llm_engine
        for lora_id in list(engine.list_loras()):
            engine.remove_lora(lora_id)

    # ---- generation -------------------------------------------------------------------------------------

    @property
    def max_num_seqs(self) -> int:
        """The scheduler's batch size as vLLM settled it (its own default when none was given)."""
        try:
            return int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        except AttributeError:
            return self.config.max_num_seqs or 256

    def feeder(self, sampling_params, window: int, may_submit: Callable[[], bool] | None = None,
               stall_timeout_s: Any = "engine", retry_params: Any = None) -> "Feeder":
        """stall_timeout_s: the run's watchdog (EngineConfig.stall_timeout_s, None = off); default this engine's.
        retry_params: see seam.GenerationEngine.feeder."""
        timeout = self.config.stall_timeout_s if stall_timeout_s == "engine" else stall_timeout_s
        return Feeder(self, sampling_params, window, may_submit, stall_timeout_s=timeout, retry_params=retry_params)

    def next_request_id(self) -> str:
        return f"rm-{next(self._request_seq)}"

    def close(self) -> None:
        """Shut the engine down and free its memory, so another Engine can start in this process."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # best effort: the process may be exiting anyway
            log.debug("engine core shutdown: %s", e)
        del self.llm
        import gc

        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        gc.collect()
        cleanup_dist_env_and_memory()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Feeder:
    """Submits requests from an iterator while fewer than `window` are unfinished; yields completions.

    `may_submit` lets the caller pause submission while its own buffer of finished-but-unwritten rows is
    full (a slow request at the head of a shard holds up writing; this bounds what waits behind it).
    """

    def __init__(self, engine: Engine, sampling_params, window: int, may_submit: Callable[[], bool] | None = None,
                 stall_timeout_s: float | None = None, retry_params: Any = None):
        self.engine = engine
        # The capped grammar's settings, for answers decoded without the length caps that need it
        # (seam.needs_capped_retry); request ids of those retries, whose completions say so.
        self.retry_params = retry_params
        self._retries: set[str] = set()
        # Watchdog: no request finishing for this long (outputs are FINAL_ONLY: a step returns only finished
        # requests) means vLLM holds requests it no longer advances. Seen on the H200 (vLLM 0.27.1 CUDA, guided JSON + LoRA, 2026-11-30):
        # three engines sat at 100 % CPU, GPU idle, 99 of 600 rows unfinished, for minutes. Those requests are
        # aborted and become `aborted` error rows (named in the log), so a nightly run ends instead of hanging.
        self.stall_timeout_s = stall_timeout_s
        # What the watchdog saw when it fires (GPU idle or busy, CPU, compile-cache writes: engine/stall.py),
        # so a cold Triton cache mid-run is told apart from a hang.
        self.probe = ActivityProbe(engine.config.device)
        self.core = engine.llm.llm_engine
        self.sampling_params = sampling_params
        self.window = max(1, window)
        self.may_submit = may_submit or (lambda: True)
        self.in_flight: dict[str, Request] = {}
        self._rejected: list[Completion] = []

    def _submit(self, req: Request, retry: bool = False) -> None:
        rid = self.engine.next_request_id()
        try:
            self.core.add_request(
                rid,
                {"prompt_token_ids": req.prompt_token_ids},
                self.retry_params if retry else self.sampling_params,
                lora_request=self.engine.lora_request(req.adapter),
            )
        except Exception as e:  # vLLM validates each request; one bad row must not stop the run
            self._rejected.append(Completion(req.key, None, None, len(req.prompt_token_ids), 0, rejected=str(e)))
            return
        self.in_flight[rid] = req
        if retry:
            self._retries.add(rid)

    def abort(self, predicate: Callable[[Any], bool]) -> int:
        """Drop unfinished requests whose key matches (their shard failed); returns how many."""
        rids = [rid for rid, req in self.in_flight.items() if predicate(req.key)]
        if rids:
            self.core.abort_request(rids)
            for rid in rids:
                del self.in_flight[rid]
                self._retries.discard(rid)
        return len(rids)

    def _stalled(self, why: str | None = None) -> Iterator[Completion]:
        """Abort every in-flight request (no progress for stall_timeout_s); each ends as an aborted row."""
        stuck = list(self.in_flight.items())
        log.error("%s; aborting the %d request(s) in flight as error rows (keys %s)",
                  why or self.probe.explain(len(stuck)), len(stuck), [req.key for _, req in stuck][:20])
        self.core.abort_request([rid for rid, _ in stuck])
        for rid, req in stuck:
            del self.in_flight[rid]
            self._retries.discard(rid)
            yield Completion(req.key, None, "abort", len(req.prompt_token_ids), 0)

    def run(self, requests: Iterator[Request]) -> Iterator[Completion]:
        exhausted = False
        last_progress = time.monotonic()
        self.probe.mark()
        while True:
            while not exhausted and len(self.in_flight) < self.window and (self.may_submit() or not self.in_flight):
                req = next(requests, None)
                if req is None:
                    exhausted = True
                else:
                    self._submit(req)
            while self._rejected:
                yield self._rejected.pop(0)
            if not self.in_flight:
                if exhausted:
                    return
                continue
            outputs = self.core.step()
            if outputs:
                last_progress = time.monotonic()
                self.probe.mark()
            elif not self.core.has_unfinished_requests():
                # vLLM holds none of our in-flight requests, so no step will ever finish them: without this
                # check the loop spins at 100 % CPU with the GPU idle (the H200 stall's signature) until the
                # watchdog fires. Ends them at once as aborted rows instead.
                yield from self._stalled("vLLM reports no unfinished request")
                continue
            elif self.stall_timeout_s and time.monotonic() - last_progress > self.stall_timeout_s:
                yield from self._stalled()
                last_progress = time.monotonic()
                continue
            for out in outputs:
                if not out.finished:
                    continue
                req = self.in_flight.pop(out.request_id, None)
                if req is None:  # aborted meanwhile
                    continue
                o = out.outputs[0]
                retried = out.request_id in self._retries
                self._retries.discard(out.request_id)
                c = Completion(
                    key=req.key,
                    text=o.text,
                    finish_reason=o.finish_reason,
                    prompt_tokens=len(out.prompt_token_ids or req.prompt_token_ids),
                    output_tokens=len(o.token_ids),
                    samples=[Sample(x.text, x.finish_reason, len(x.token_ids)) for x in out.outputs]
                    if len(out.outputs) > 1 else None,
                    retried=retried,
                )
                if self.retry_params is not None and not retried and needs_capped_retry(c):
                    self._submit(req, retry=True)  # in flight again (a rejection comes out as its row)
                    continue
                yield c

    def close(self) -> None:
        """Abort whatever is still unfinished (interrupt or error), leaving the engine reusable."""
        self.abort(lambda key: True)


# Request, Completion and Sample live in engine/seam.py (shared with server mode); ENGINE_LEVEL in config.py.
__all__ = ["ENGINE_LEVEL", "Completion", "Engine", "Feeder", "Request", "Sample", "prepare_process_env"]
