"""Load a trained adapter in the real vLLM (CPU build here) with its base model and extract a JSONL set.

It talks to vLLM directly (LLM.generate over the whole set), started with the engine's own vLLM settings
(EngineConfig.vllm_kwargs), with the served prompt from data.render_prompt and guided JSON decoding on
the contract's schema, the way the engine serves. It reports what an adapter is for: valid JSON, rows cut by max_tokens, metric counts and
exact name matches against gold labels, and the wall time.

    .venv/bin/python scripts/check_adapter_vllm.py --model ~/.cache/reportminer/models/qwen2.5-coder-0.5b-instruct \
        --adapter adapters/demo-h200/run/best --data ../shared/seed/sample_data.jsonl --out adapters/demo-h200/vllm_check.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", default=None, help="LoRA folder; omit to run the base model alone")
    ap.add_argument("--data", required=True, help="seed-format JSONL (gold labels optional)")
    ap.add_argument("--out", default=None, help="write the summary and every answer here (JSON)")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=768)
    args = ap.parse_args()

    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import StructuredOutputsParams

    from reportminer.data import OUTPUT_JSON_SCHEMA, parse_output, render_prompt
    from reportminer.data.io import iter_jsonl
    from reportminer.data.manifest import check_adapter
    from reportminer.engine.config import EngineConfig

    if args.adapter:
        for w in check_adapter(args.adapter, args.model):  # raises AdapterMismatch on a wrong base/schema/prompt
            print("warning:", w)
    rows = [r.obj for r in iter_jsonl(args.data)]
    if args.limit:
        rows = rows[: args.limit]
    tok = AutoTokenizer.from_pretrained(args.model)
    prompts = [render_prompt(tok, r["input"]["chapter_title"], r["input"]["paragraph"]) for r in rows]

    t0 = time.time()
    # vLLM started the way the engine starts it (EngineConfig.vllm_kwargs: guidance, compact JSON, seed 0, LoRA).
    settings = EngineConfig(model=args.model, kv_cache_memory_bytes=1 << 30, max_model_len=2048,
                            max_loras=1 if args.adapter else None, max_lora_rank=16)
    llm = LLM(**settings.vllm_kwargs())
    t_load = time.time() - t0
    sp = SamplingParams(temperature=0, max_tokens=args.max_tokens,
                        structured_outputs=StructuredOutputsParams(json=OUTPUT_JSON_SCHEMA))
    lora = LoRARequest("adapter", 1, str(Path(args.adapter).resolve())) if args.adapter else None
    t1 = time.time()
    outs = llm.generate(prompts, sp, lora_request=lora)
    t_gen = time.time() - t1

    answers, valid, cut, n_pred, n_gold, n_hit, tokens = [], 0, 0, 0, 0, 0, 0
    for r, o in zip(rows, outs):
        c = o.outputs[0]
        tokens += len(c.token_ids)
        p = parse_output(c.text)
        ok = p.ok and c.finish_reason != "length"
        valid += ok
        cut += c.finish_reason == "length"
        pred = p.extraction.names if p.extraction else []
        gold = [m["metric_name"] for m in (r.get("output") or {}).get("metrics", [])]
        n_pred += len(pred)
        n_gold += len(gold)
        n_hit += len(set(pred) & set(gold))
        answers.append({"input": r["input"], "type": r.get("type"), "text": c.text, "ok": ok,
                        "finish_reason": c.finish_reason, "pred": pred, "gold": gold})
    summary = {
        "model": args.model, "adapter": args.adapter, "data": args.data, "rows": len(rows),
        "valid_json": valid, "cut_by_max_tokens": cut, "output_tokens": tokens,
        "engine_start_s": round(t_load, 1), "generate_s": round(t_gen, 1),
        "output_tok_per_s": round(tokens / t_gen, 1) if t_gen else None,
        "metrics_predicted": n_pred, "metrics_gold": n_gold, "exact_name_hits": n_hit,
        "name_precision": round(n_hit / n_pred, 3) if n_pred else None,
        "name_recall": round(n_hit / n_gold, 3) if n_gold else None,
        "machine": f"{os.cpu_count()} CPU cores (vLLM CPU build)",
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "answers": answers}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
