#!/usr/bin/env python
"""Incremental nightly by content (issue 9, item 5): add one report to a corpus, rerun, count model calls.

  1. writes REPORTS Markdown reports of PARAGRAPHS paragraphs each (synthetic Chinese research text);
  2. `datakit ingest` (data.ingest.ingest_to_shards) into shards, `engine run` over them (tiny model);
  3. adds one report whose name sorts before every other one, re-ingests, reruns into the same --out;
  4. prints which shards changed and how many paragraphs reached the model on the rerun; exits 1 unless
     that number is exactly the new report's paragraph count.

The model is the tests' tiny random Qwen3 under its "closing" adapter (data.models.tiny:
make_closing_adapter), so every row is ok: error rows are retried by design and would blur the count.
One engine is started and used for both runs (a nightly job would start one per run; that start is
not what is measured here).

  .venv/bin/python scripts/bench_incremental.py                    # 200 reports x 3 paragraphs
  .venv/bin/python scripts/bench_incremental.py --reports 50 --json-out /tmp/inc.json
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = ("营业收入", "归母净利润", "毛利率", "经营性现金流", "研发投入", "海外收入", "资本开支", "存货周转天数")


def write_report(root: Path, name: str, paragraphs: int, seed: int) -> None:
    lines = [f"# {name} 公司点评", ""]
    for k in range(paragraphs):
        t = TOPICS[(seed + k) % len(TOPICS)]
        lines += [f"{name}：2025年前三季度公司{t}为{(seed * 7 + k * 13) % 90 + 10}.{k}亿元，"
                  f"同比增长{(seed + k * 5) % 40 + 1}%，主要得益于产品结构优化与产能释放。", ""]
    (root / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")


def closing_adapter(model: Path) -> Path:
    from reportminer.data.models.tiny import make_closing_adapter

    out = model.parent / "adapter-closing"  # the tests' cached adapter (tests/conftest.py)
    if not out.exists():
        tmp = out.parent / f".{out.name}.{os.getpid()}"
        make_closing_adapter(model, tmp)
        os.replace(tmp, out)
    return out


@click.command()
@click.option("--reports", default=200, show_default=True)
@click.option("--paragraphs", default=3, show_default=True, help="Paragraphs per report.")
@click.option("--rows-per-shard", default=50, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path))
def main(reports: int, paragraphs: int, rows_per_shard: int, json_out: Path | None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engine import tiny_model_dir

    from reportminer.data.ingest import ingest_to_shards
    from reportminer.engine import Engine, EngineConfig
    from reportminer.engine.runner import run

    model = tiny_model_dir()
    cfg = EngineConfig(model=str(model), adapters={"c": str(closing_adapter(model))}, max_model_len=2048,
                       kv_cache_memory_bytes="512MiB", max_num_seqs=128, max_tokens=32, max_loras=2)
    result: dict = {"reports": reports, "paragraphs_per_report": paragraphs, "rows_per_shard": rows_per_shard}
    with tempfile.TemporaryDirectory(prefix="bench-inc-") as tmp:
        d = Path(tmp)
        (d / "reports").mkdir()
        for i in range(reports):
            write_report(d / "reports", f"r{i:04d}", paragraphs, i)
        ing1 = ingest_to_shards(d / "reports", d / "shards", rows_per_shard)
        before = {p.name: p.read_bytes() for p in ing1.shards}

        eng = Engine.start(cfg)
        t = time.perf_counter()
        s1 = run(cfg, d / "shards", d / "out", engine=eng, progress=False)
        first_s = time.perf_counter() - t

        write_report(d / "reports", "a0000-new", paragraphs, 10_000)  # sorts before every other report
        ing2 = ingest_to_shards(d / "reports", d / "shards", rows_per_shard)
        changed = sorted(p.name for p in ing2.shards if before.get(p.name) != p.read_bytes())
        t = time.perf_counter()
        s2 = run(cfg, d / "shards", d / "out", engine=eng, progress=False)
        rerun_s = time.perf_counter() - t
        eng.close()

    new_rows = ing2.paragraphs - ing1.paragraphs
    result.update(
        first_run={"paragraphs": ing1.paragraphs, "shards": len(ing1.shards), "ok": s1.ok, "error": s1.error,
                   "sent_to_model": s1.row_cache["computed"], "wall_s": round(first_s, 1)},
        reingest={"shards": len(ing2.shards), "unchanged": ing2.unchanged, "changed_or_new": changed,
                  "removed": [p.name for p in ing2.removed_stale]},
        rerun={"shards_redone": s2.shards_done, "shards_skipped": s2.shards_skipped, "rows_read": s2.rows,
               "served_from_cache": s2.row_cache["served"], "sent_to_model": s2.row_cache["computed"],
               "new_report_paragraphs": new_rows, "ok": s2.ok, "error": s2.error, "wall_s": round(rerun_s, 1)},
    )
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    click.echo(f"rerun: {s2.row_cache['computed']} paragraph(s) reached the model (the new report has {new_rows}); "
               f"{s2.row_cache['served']} served from the row cache, {s2.shards_skipped} of "
               f"{s2.shards_total} shards skipped unchanged")
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if s2.row_cache["computed"] != new_rows or s1.error:
        sys.exit(1)


if __name__ == "__main__":
    main()
