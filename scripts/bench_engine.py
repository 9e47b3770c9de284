#!/usr/bin/env python
"""Benchmark of the engine on CPU with the tiny model: overhead against bare vLLM, and memory vs input size.

  ratio   one process, one started engine: `engine.run` end to end (Parquet in, prompts, tokenising,
          guided decoding, parsing, Parquet out, manifest) against a bare `LLM.generate` over the same
          rendered prompts and sampling settings; passes alternate, prefix cache reset before each.
          ratio = generate time / engine time (1.0 = no overhead; target >= 0.95).
  rss     `engine run` as a subprocess under /usr/bin/time -v at several input sizes and layouts;
          peak RSS should stay flat (target: within 10 % from 1k to 20k rows).

  .venv/bin/python scripts/bench_engine.py ratio --rows 1000
  .venv/bin/python scripts/bench_engine.py rss --layout 1x1000 --layout 20x1000 --layout 1x20000
  .venv/bin/python scripts/bench_engine.py all --json-out /tmp/bench.json

The tiny model (scripts/make_tiny_model.py) is built into the reportminer cache on first use.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]


def tiny_model_dir() -> Path:
    from reportminer.data.models.demo import cache_root
    from reportminer.data.models.tiny import make_tiny_model

    out = cache_root() / "test-models" / "tiny-qwen3-v1" / "model"  # the tests' cached model
    if not (out / "SOURCE.json").exists():
        make_tiny_model(out)
    return out


def make_shards(out_dir: Path, n_shards: int, rows_per_shard: int) -> Path:
    """Demo paragraphs made unique per row (so the prefix cache cannot reuse whole prompts)."""
    import pyarrow as pa

    from reportminer.data.io import jsonl_to_table, write_parquet

    demo = jsonl_to_table(REPO / "data" / "demo" / "demo.jsonl").to_pylist()
    i = 0
    for s in range(n_shards):
        rows = []
        for _ in range(rows_per_shard):
            d = demo[i % len(demo)]
            rows.append({"id": f"b{i:07d}", "chapter_title": d["chapter_title"],
                         "paragraph": f"{d['paragraph']}（样本{i}）", "type": d["type"]})
            i += 1
        write_parquet(pa.Table.from_pylist(rows), out_dir / f"shard-{s:04d}.parquet")
    return out_dir


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def engine_settings(max_tokens: int, max_num_seqs: int) -> dict:
    return dict(max_model_len=2048, kv_cache_memory_bytes="1GiB", max_num_seqs=max_num_seqs, max_tokens=max_tokens)


# ---- ratio -----------------------------------------------------------------------------------------------


def bench_ratio(rows: int, max_tokens: int, max_num_seqs: int, repeats: int, adapter: str | None) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from reportminer.data.io import read_table
    from reportminer.data.prompt import render_prompt
    from reportminer.engine import Engine, EngineConfig
    from reportminer.engine.adapters import load_adapters
    from reportminer.engine.runner import run

    model = tiny_model_dir()
    adapters = {"a": adapter} if adapter else {}
    cfg = EngineConfig(model=str(model), adapters=adapters, **engine_settings(max_tokens, max_num_seqs))
    eng = Engine.start(cfg)
    llm = eng.llm
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp) / "in", 1, rows)
        table = read_table(shards)
        prompts = [render_prompt(eng.tokenizer, t, p) for t, p in
                   zip(table.column("chapter_title").to_pylist(), table.column("paragraph").to_pylist())]
        sp = eng.sampling_params(eng.config)
        lora = eng.lora_request(load_adapters(eng.config.adapters, eng.config.model)[0][0]) if adapters else None

        def bare() -> tuple[float, int]:
            llm.reset_prefix_cache()
            t = time.perf_counter()
            outs = llm.generate(prompts, sp, use_tqdm=False, lora_request=lora)
            return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in outs)

        def engine_run(k: int) -> tuple[float, int]:
            llm.reset_prefix_cache()
            t = time.perf_counter()
            s = run(cfg, shards, Path(tmp) / f"out{k}", engine=eng, progress=False)
            dt = time.perf_counter() - t
            assert s.output_rows == rows, s.render()
            return dt, s.output_tokens

        # Warm-up: first calls compile kernels and build the grammar cache.
        llm.generate(prompts[: min(64, rows)], sp, use_tqdm=False, lora_request=lora)
        results: dict[str, list] = {"bare": [], "engine": []}
        for k in range(repeats):
            for name, fn in (("bare", bare), ("engine", lambda k=k: engine_run(k))):
                dt, toks = fn()
                results[name].append({"s": round(dt, 2), "output_tokens": toks})
                print(f"[bench] {name:6s} pass {k + 1}: {dt:7.1f} s, {rows / dt:6.1f} rows/s, {toks / dt:7.1f} tok/s", flush=True)
    eng.close()
    best = {n: min(r["s"] for r in v) for n, v in results.items()}
    median = {n: statistics.median(r["s"] for r in v) for n, v in results.items()}
    return {
        "rows": rows, "max_tokens": max_tokens, "max_num_seqs": max_num_seqs, "adapter": bool(adapter),
        "passes": results, "bare_s": best["bare"], "engine_s": best["engine"],
        "ratio": round(best["bare"] / best["engine"], 3),  # best pass each: least disturbed by other load
        "ratio_median": round(median["bare"] / median["engine"], 3),
        "engine_rows_per_s": round(rows / best["engine"], 1), "bare_rows_per_s": round(rows / best["bare"], 1),
    }


# ---- rss -------------------------------------------------------------------------------------------------


def bench_rss(layout: str, max_tokens: int, max_num_seqs: int) -> dict:
    n_shards, per = (int(x) for x in layout.split("x"))
    model = tiny_model_dir()
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp) / "in", n_shards, per)
        s = engine_settings(max_tokens, max_num_seqs)
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(shards),
               "--out", str(Path(tmp) / "out"), "--model", str(model), "--max-tokens", str(max_tokens),
               "--max-model-len", str(s["max_model_len"]), "--kv-cache", s["kv_cache_memory_bytes"],
               "--max-num-seqs", str(max_num_seqs), "-q", "--json"]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
        wall = time.perf_counter() - t
        if p.returncode not in (0, 1):
            raise SystemExit(f"engine run failed ({p.returncode}):\n{p.stderr[-4000:]}")
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        summary = json.loads(p.stdout)
    rss = int(m.group(1)) / 1024 if m else float("nan")
    print(f"[bench] rss {layout:>8s}: {rss:7.0f} MiB peak, {summary['output_rows']} rows in {wall:.0f} s "
          f"({summary['rows_per_s']:.1f} rows/s after start)", flush=True)
    return {"layout": layout, "rows": n_shards * per, "shards": n_shards, "peak_rss_mib": round(rss),
            "wall_s": round(wall, 1), "rows_per_s": round(summary["rows_per_s"], 1), "max_tokens": max_tokens}


@click.group()
def main() -> None:
    """Engine benchmarks (CPU, tiny model)."""


def _emit(result: dict, json_out: Path | None) -> None:
    result = {"machine": machine(), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), **result}
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False))


@main.command("ratio")
@click.option("--rows", default=1000, show_default=True)
@click.option("--max-tokens", default=16, show_default=True)
@click.option("--max-num-seqs", default=256, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--adapter", help="LoRA folder to run every row under (default: base model).")
@click.option("--json-out", type=click.Path(path_type=Path))
def ratio_cmd(rows, max_tokens, max_num_seqs, repeats, adapter, json_out):
    _emit({"ratio": bench_ratio(rows, max_tokens, max_num_seqs, repeats, adapter)}, json_out)


@main.command("rss")
@click.option("--layout", "layouts", multiple=True, default=("1x1000", "20x1000"), show_default=True,
              help="SHARDSxROWS_PER_SHARD; repeat.")
@click.option("--max-tokens", default=8, show_default=True)
@click.option("--max-num-seqs", default=256, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path))
def rss_cmd(layouts, max_tokens, max_num_seqs, json_out):
    _emit({"rss": [bench_rss(lay, max_tokens, max_num_seqs) for lay in layouts]}, json_out)


@main.command("all")
@click.option("--rows", default=1000, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path))
def all_cmd(rows, json_out):
    r = bench_ratio(rows, 16, 256, 3, None)
    m = [bench_rss(lay, 8, 256) for lay in ("1x1000", "20x1000", "1x20000")]
    _emit({"ratio": r, "rss": m}, json_out)


if __name__ == "__main__":
    main()
