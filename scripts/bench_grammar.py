#!/usr/bin/env python3
"""The CPU cost of guided JSON per output token, measured without a GPU (issue 17).

On the GPU the default path (LoRA + guided JSON) ran at 0.355x bare vLLM with the GPU idle 77 % of the time
(docs/BENCHMARKS.md, "...in its own process"): the host side of each decode step is the bottleneck. vLLM's
scheduler fills one token bitmask per guided sequence per step (`StructuredOutputManager.grammar_bitmask`:
serial up to 128 sequences, above that in batches of 16 on min(cores // 2, 8) threads), then the runner
reorders the [batch, vocab / 32] int32 bitmask to the batch order and copies it to the GPU. This script times
those host steps with the libraries vLLM calls, driven token by token through real answers of the contract
(the gold outputs of a benchmark, serialised as training teaches: `data.schema.to_json`), so the per-token
figure is the one a serve pays:

- `compile`: one request's grammar from OUTPUT_JSON_SCHEMA (vLLM caches xgrammar's compiled grammar per
  schema; llguidance builds a matcher per request);
- `fill`: the bitmask of the next token, per token (the scheduler's share), and `consume`: advancing the
  matcher by the sampled token;
- `-uncapped`: the same grammar compiled from `data.schema.decode_json_schema(length_caps=False)`, the
  contract without its string length caps (the engine's `--no-guided-length-caps`);
- `xgrammar-spaced`: xgrammar as vLLM 0.27.1 compiles the schema with disable_any_whitespace (no
  `separators`, so xgrammar's default ", " and ": "): the compact answers training teaches are rejected at
  their first colon, i.e. on the GPU image that backend forces text unlike training (vLLM 0.32 passes
  (",", ":")). Reported as rejected answers, with the token where each stopped;
- `reorder`: numpy's take of a [B, vocab / 32] bitmask (what the runner does per step, B = the batch);
- the implied ceiling: one core spends fill + consume per token, so tokens/s per core = 1e6 / (fill +
  consume) us; against a card's bare output rate it says how many cores the grammar alone needs.

    .venv/bin/python scripts/bench_grammar.py --tokenizer ~/.cache/reportminer/models/qwen2.5-coder-0.5b-instruct \
        --cases benchmarks/genbench/cases.jsonl --json docs/bench/grammar-cpu.json

The figures above are single-threaded. `--threads 1,4,8` adds vLLM's parallel path for guidance: all answers
decoded in lockstep as one batch, each step's masks filled in tasks of 16 sequences on a pool of W threads
(what `grammar_bitmask` does above 128 sequences), then every matcher advanced serially (the scheduler's
`update_from_output`). It reports the wall time of the fills per token for each W: whether llguidance
releases the GIL, and how far the host's cores take the capped grammar (run it on the GPU host).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BACKENDS = ("guidance", "guidance-uncapped", "xgrammar", "xgrammar-uncapped", "xgrammar-spaced")


def answers(cases: Path, limit: int) -> list[str]:
    """The gold outputs of a benchmark file as the model is taught to write them."""
    from reportminer.data.schema import to_json  # plain json below: no pyarrow, so it runs on a bare GPU image

    out = []
    for line in cases.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line) if line.strip() else {}
        if isinstance(obj.get("output"), dict):
            out.append(to_json(obj["output"]))
        if len(out) >= limit:
            break
    if not out:
        raise SystemExit(f"{cases}: no rows with an `output`")
    return out


def replay(texts: list[list[int]], eos: int, new_matcher: Callable[[], Any], fill: Callable[[Any], None],
           advance: Callable[[Any, int], bool]) -> dict[str, Any]:
    """Each answer through a new matcher: per token, the mask of the next token, then the advance by it (what
    the scheduler does per guided sequence per step); an answer the grammar refuses stops at that token."""
    comp, fills, cons, bad = [], [], [], 0
    for ids in texts:
        t = time.perf_counter()
        m = new_matcher()
        comp.append(time.perf_counter() - t)
        for i in ids + [eos]:
            t = time.perf_counter()
            fill(m)
            t1 = time.perf_counter()
            ok = advance(m, i)
            t2 = time.perf_counter()
            fills.append(t1 - t)
            cons.append(t2 - t1)
            if not ok:
                bad += 1
                break
    return {"compile": comp, "fill": fills, "consume": cons, "rejected_answers": bad}


def run_llguidance(tok: Any, schema: str, texts: list[list[int]], eos: int) -> dict[str, Any]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    t0 = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tok)
    setup = time.perf_counter() - t0
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        schema, defaults={"whitespace_flexible": False})  # vLLM's disable_any_whitespace
    mask = llguidance.torch.allocate_token_bitmask(1, lltok.vocab_size)
    r = replay(texts, eos, lambda: llguidance.LLMatcher(lltok, grammar),
               lambda m: llguidance.torch.fill_next_token_bitmask(m, mask, 0), lambda m, i: m.consume_token(i))
    return {"setup_s": setup, **r}


def run_xgrammar(tok: Any, schema: str, texts: list[list[int]], eos: int, vocab: int,
                 separators: tuple[str, str] | None = (",", ":")) -> dict[str, Any]:
    """`separators=(",", ":")` is vLLM >= 0.32's call with disable_any_whitespace; None is vLLM 0.27.1's
    (the GPU image's), where xgrammar's default (", ", ": ") then forces a space the training target lacks."""
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info)
    compiled = compiler.compile_json_schema(schema, any_whitespace=False, separators=separators)
    setup = time.perf_counter() - t0
    mask = xgr.allocate_token_bitmask(1, vocab)
    # vLLM: one compiled grammar per schema (cached), a matcher per request
    r = replay(texts, eos, lambda: xgr.GrammarMatcher(compiled), lambda m: m.fill_next_token_bitmask(mask, 0),
               lambda m, i: m.accept_token(i))
    return {"setup_s": setup, **r}


def lockstep_llguidance(tok: Any, schema: str, texts: list[list[int]], eos: int, workers: list[int],
                        task: int = 16) -> dict[str, dict[str, float]]:
    """The answers as one batch decoded in lockstep, per step the masks filled as vLLM's
    StructuredOutputManager does above 128 sequences (tasks of `task` sequences on a pool of W threads; W = 1:
    serially), then each matcher advanced. Per W: wall us of the fills per token, and the speed-up over W = 1."""
    from concurrent.futures import ThreadPoolExecutor

    import llguidance
    import llguidance.hf
    import llguidance.torch

    lltok = llguidance.hf.from_tokenizer(tok)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
    mask = llguidance.torch.allocate_token_bitmask(len(texts), lltok.vocab_size)
    seqs = [t + [eos] for t in texts]
    out: dict[str, dict[str, float]] = {}
    for w in workers:
        ms = [llguidance.LLMatcher(lltok, grammar) for _ in seqs]
        pool = ThreadPoolExecutor(w) if w > 1 else None

        def fill(batch: list[int], ms: list[Any] = ms) -> None:
            for i in batch:
                llguidance.torch.fill_next_token_bitmask(ms[i], mask, i)

        spent, n = 0.0, 0
        for step in range(max(map(len, seqs))):
            live = [i for i, q in enumerate(seqs) if step < len(q)]
            t = time.perf_counter()
            if pool is None:
                fill(live)
            else:
                for f in [pool.submit(fill, live[k:k + task]) for k in range(0, len(live), task)]:
                    f.result()
            spent += time.perf_counter() - t
            for i in live:
                ms[i].consume_token(seqs[i][step])
            n += len(live)
        if pool is not None:
            pool.shutdown()
        out[str(w)] = {"fill_wall_us_per_token": round(spent / n * 1e6, 2), "tokens": n}
    base = out[str(workers[0])]["fill_wall_us_per_token"]
    for r in out.values():
        r["speedup_vs_first"] = round(base / r["fill_wall_us_per_token"], 2)
    return out


def reorder_cost(vocab: int, batches: list[int], reps: int = 50) -> dict[str, float]:
    """us per step for the runner's reorder of a [B, ceil(vocab / 32)] int32 bitmask (a numpy take)."""
    import numpy as np

    words = (vocab + 31) // 32
    out = {}
    for b in batches:
        mask = np.random.default_rng(0).integers(-2**31, 2**31 - 1, (b, words), dtype=np.int32)
        order = np.random.default_rng(1).permutation(b)
        t = time.perf_counter()
        for _ in range(reps):
            mask.take(order, axis=0)
        out[str(b)] = (time.perf_counter() - t) / reps * 1e6
    return out


def summary(r: dict[str, Any]) -> dict[str, Any]:
    us = lambda xs: round(statistics.fmean(xs) * 1e6, 2)  # noqa: E731
    p = lambda xs, q: round(sorted(xs)[int(q * (len(xs) - 1))] * 1e6, 2)  # noqa: E731
    per_tok = us(r["fill"]) + us(r["consume"])
    return {"setup_s": round(r["setup_s"], 3), "compile_us_mean": us(r["compile"]), "tokens": len(r["fill"]),
            "fill_us_mean": us(r["fill"]), "fill_us_p50": p(r["fill"], 0.5), "fill_us_p99": p(r["fill"], 0.99),
            "consume_us_mean": us(r["consume"]), "per_token_us": round(per_tok, 2),
            "tokens_per_core_s": round(1e6 / per_tok) if per_tok else None,
            "rejected_answers": r["rejected_answers"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--tokenizer", required=True, help="a folder with the model's tokenizer (tokenizer.json)")
    ap.add_argument("--cases", type=Path, default=Path("benchmarks/genbench/cases.jsonl"),
                    help="JSONL rows whose `output` are the answers to replay")
    ap.add_argument("--limit", type=int, default=200, help="answers to replay (default 200)")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="guidance (llguidance); -uncapped: the grammar without the contract's length caps "
                         "(data.schema.decode_json_schema, the engine's --no-guided-length-caps); "
                         "xgrammar with separators (',', ':') as vLLM >= 0.32 calls it; "
                         "xgrammar-spaced as vLLM 0.27.1 calls it (default separators: it rejects the compact "
                         "answers training teaches, which this script reports and exits 1 on only for the others)")
    ap.add_argument("--bare-tok-s", type=float, default=37069.0,
                    help="a card's bare output tokens/s, to say how many cores the grammar needs at it "
                         "(default: the H200's 37,069 in docs/BENCHMARKS.md)")
    ap.add_argument("--threads", default=None,
                    help="e.g. 1,4,8: also time guidance's masks filled in lockstep on pools of that many threads "
                         "(vLLM's parallel fill; the first is the baseline of the speed-up); capped and uncapped")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    from transformers import AutoTokenizer

    from reportminer.data.schema import OUTPUT_JSON_SCHEMA

    tok = AutoTokenizer.from_pretrained(str(Path(a.tokenizer).expanduser()))
    from reportminer.data.schema import decode_json_schema

    schemas = {False: json.dumps(OUTPUT_JSON_SCHEMA, ensure_ascii=False),
               True: json.dumps(decode_json_schema(length_caps=False), ensure_ascii=False)}
    texts = [tok.encode(t, add_special_tokens=False) for t in answers(a.cases, a.limit)]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    vocab = max(len(tok), tok.vocab_size)
    res: dict[str, Any] = {
        "host": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                 "cores": os.cpu_count(),
                 "python": platform.python_version()},
        "tokenizer": str(a.tokenizer), "cases": str(a.cases), "answers": len(texts),
        "mean_answer_tokens": round(statistics.fmean(len(t) for t in texts), 1), "vocab": vocab, "backends": {}}
    for b in a.backends.split(","):
        name, _, variant = b.partition("-")
        schema = schemas[variant == "uncapped"]
        if name == "guidance" and variant in ("", "uncapped"):
            r = run_llguidance(tok, schema, texts, eos)
        elif name == "xgrammar" and variant in ("", "uncapped", "spaced"):
            r = run_xgrammar(tok, schema, texts, eos, vocab, None if variant == "spaced" else (",", ":"))
        else:
            raise SystemExit(f"--backends: unknown {b!r} ({', '.join(BACKENDS)})")
        s = summary(r)
        s["cores_at_bare_rate"] = round(a.bare_tok_s * s["per_token_us"] / 1e6, 2)
        res["backends"][b] = s
        print(f"{b}: {s}", file=sys.stderr)
    if a.threads:
        workers = [int(x) for x in a.threads.split(",")]
        res["lockstep_guidance"] = {name: lockstep_llguidance(tok, schemas[uncapped], texts, eos, workers)
                                    for name, uncapped in (("capped", False), ("uncapped", True))}
        print(f"lockstep: {res['lockstep_guidance']}", file=sys.stderr)
    res["reorder_us_per_step"] = {k: round(v, 1) for k, v in reorder_cost(vocab, [64, 256, 512]).items()}
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 1 if any(s["rejected_answers"] for b, s in res["backends"].items() if b != "xgrammar-spaced") else 0


if __name__ == "__main__":
    sys.exit(main())
