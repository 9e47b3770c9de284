"""End to end with the real Qwen2.5-Coder-0.5B-Instruct demo model through the real console script.

Slow on two cores (about 2-3 minutes: two engine starts and a few hundred decoded tokens per paragraph),
hence `-m slow`. The model is untuned; guided decoding still has to give contract-valid JSON, and the
metrics it names should be things the paragraph talks about.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reportminer.data.io import jsonl_to_table, read_table, write_parquet
from reportminer.data.parse import parse_output

pytestmark = [pytest.mark.slow, pytest.mark.engine]

REPO = Path(__file__).resolve().parents[1]


def _occurs(name: str, paragraph: str) -> bool:
    """The name, or its head (a name may add a qualifier such as 同比/增速), appears in the paragraph."""
    return name in paragraph or (len(name) >= 3 and name[:3] in paragraph)


def test_engine_run_on_demo_paragraphs(demo_model, tmp_path):
    table = jsonl_to_table(REPO / "data" / "demo" / "demo.jsonl").take([0, 1, 4])
    write_parquet(table, tmp_path / "in" / "demo.parquet")
    out = tmp_path / "out"
    # No --model: the default is the embedded demo model (demo_model made sure it is built).
    p = subprocess.run(
        [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(tmp_path / "in"), "--out", str(out),
         "--max-tokens", "768", "-q", "--json"],
        capture_output=True, text=True, timeout=1200,
    )
    assert p.returncode in (0, 1), p.stderr[-3000:]
    summary = json.loads(p.stdout)
    assert summary["model"] == str(demo_model) and summary["output_rows"] == 3
    rows = read_table(out).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 2, [(r["id"], r["error"]) for r in rows]
    # The untuned base model under prompt v2 and v3 (no worked example) mostly answers an empty metric list; the
    # adapter is what extracts (docs/RESULTS.md). What the real model must do here: a contract-valid
    # answer with an analysis, and no invented metric names.
    for r in ok:
        parsed = parse_output(r["raw"])
        assert parsed.ok, r["raw"]
        assert r["analysis"].strip(), r["raw"]
        names = [m["metric_name"] for m in r["metrics"]]
        assert all(_occurs(n, r["paragraph"]) for n in names), f"{r['id']}: {names} not in the paragraph"


def test_engine_extract_prints_the_json(demo_model):
    text = "2025年前三季度，公司实现归母净利润18.6亿元，同比增长23.4%。销售毛利率为41.2%，同比提升2.3个百分点。"
    p = subprocess.run(
        [sys.executable, "-m", "reportminer.engine.cli", "extract", "--title", "盈利能力分析", "--text", text,
         "--max-tokens", "768"],
        capture_output=True, text=True, timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    parsed = parse_output(p.stdout)
    assert parsed.ok, p.stdout
    assert parsed.extraction.analysis.strip(), p.stdout
    assert all(_occurs(n, text) for n in parsed.extraction.names), p.stdout


DEMO_ADAPTER = REPO / "data" / "demo" / "adapter"


@pytest.mark.skipif(not (DEMO_ADAPTER / "adapter_config.json").exists(),
                    reason="no demo adapter committed at data/demo/adapter (scripts/demo.sh then runs the base model)")
def test_the_demo_adapter_extracts_metrics_on_the_demo_paragraphs(demo_model, tmp_path):
    """What scripts/demo.sh shows with the committed adapter: real extraction, not empty lists (issue 19).

    Three demo paragraphs that each analyse at least one gold metric; the adapter must name metrics in at
    least two of them, every name taken from the paragraph, within the 10 MB the adapter may weigh.
    """
    size = sum(f.stat().st_size for f in DEMO_ADAPTER.rglob("*") if f.is_file())
    assert size <= 10 * 1024 * 1024, f"data/demo/adapter weighs {size} bytes"
    table = jsonl_to_table(REPO / "data" / "demo" / "demo.jsonl").take([0, 1, 4])
    write_parquet(table, tmp_path / "in" / "demo.parquet")
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "reportminer.engine.cli", "run", "--input", str(tmp_path / "in"), "--out", str(out),
         "--adapter", f"demo={DEMO_ADAPTER}", "--max-tokens", "768", "-q", "--json"],
        capture_output=True, text=True, timeout=1200,
    )
    assert p.returncode in (0, 1), p.stderr[-3000:]
    rows = read_table(out).to_pylist()
    assert {r["adapter"] for r in rows} == {"demo"}
    with_metrics = [r for r in rows if r["status"] == "ok" and r["metrics"]]
    assert len(with_metrics) >= 2, [(r["id"], r["status"], r["raw"]) for r in rows]
    for r in with_metrics:
        names = [m["metric_name"] for m in r["metrics"]]
        assert all(_occurs(n, r["paragraph"]) for n in names), f"{r['id']}: {names} not in the paragraph"
