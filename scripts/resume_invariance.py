"""How many rows does a resumed run write differently from an uninterrupted one? (issue 19 item 2)

    PYTHONPATH=$(scripts/srcview.sh) python scripts/resume_invariance.py --model TINY_MODEL [--rows-per-shard 8]

One started engine, the distinct-paragraph input of the kill-and-rerun tests (the 12 demo paragraphs x 4,
each made unique, as 6 shards), the row cache off. Reference: one run over all shards. Resume: an OUT holding
the reference's first half (its manifest and shards, as after a crash there), then a run that does the rest;
its rows were batched with other neighbours than in the reference. Then the same with the other eager
setting, and an uninterrupted run with another max_num_seqs. Prints the rows whose output text (`raw`)
differs from the reference's, for each; eager/compiled is fixed per run (the rule engine run now follows).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa

from reportminer.data.io import jsonl_to_table, read_table, write_shards
from reportminer.engine import Engine, EngineConfig
from reportminer.engine.run_manifest import MANIFEST_NAME
from reportminer.engine.runner import run

REPO = Path(__file__).resolve().parents[1]


def _input(folder: Path, per_shard: int) -> Path:
    big = pa.concat_tables([jsonl_to_table(REPO / "data" / "demo" / "demo.jsonl")] * 4)
    big = big.set_column(0, "id", pa.array([f"r{i:03d}" for i in range(big.num_rows)]))
    paragraphs = [f"{p}（{i}）" for i, p in enumerate(big.column("paragraph").to_pylist())]
    big = big.set_column(big.schema.get_field_index("paragraph"), "paragraph", pa.array(paragraphs))
    write_shards(big, folder, rows_per_shard=per_shard)
    return folder


def _raw(out: Path) -> dict[str, str | None]:
    return {r["id"]: r["raw"] for r in read_table(out).to_pylist()}


def _resumed(cfg: EngineConfig, eng: Engine, inp: Path, ref: Path, work: Path) -> dict[str, str | None]:
    out = work / "resumed"
    shutil.copytree(ref, out)
    m = json.loads((out / MANIFEST_NAME).read_text())
    done = sorted(m["shards"])
    for rel in done[len(done) // 2:]:  # forget the second half: as if the run had died there
        (out / m["shards"][rel]["output"]).unlink()
        del m["shards"][rel]
    (out / MANIFEST_NAME).write_text(json.dumps(m))
    s = run(cfg, inp, out, engine=eng, progress=False)
    assert s.shards_done == len(done) - len(done) // 2
    return _raw(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--rows-per-shard", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resume-invariance-"))
    inp = _input(work / "in", a.rows_per_shard)
    report = {}
    for eager in (True, False):
        base = EngineConfig(model=a.model, max_model_len=1024, kv_cache_memory_bytes="512MiB", max_num_seqs=32,
                            max_tokens=a.max_tokens, enforce_eager=eager, row_cache=False)
        eng = Engine.start(base)
        try:
            ref = work / f"ref-{eager}"
            run(base, inp, ref, engine=eng, progress=False)
            want = _raw(ref)
            got = _resumed(base, eng, inp, ref, work / f"r-{eager}")
            report[f"eager={eager}: resumed after half the shards"] = sum(got[k] != want[k] for k in want)
            one = base.override(chunk_size=1)  # one request in flight: no batch neighbours at all
            run(one, inp, work / f"one-{eager}", engine=eng, progress=False)
            report[f"eager={eager}: one request at a time"] = sum(v != want[k] for k, v in _raw(work / f"one-{eager}").items())
        finally:
            eng.close()
        report[f"rows (eager={eager})"] = len(want)
    for k, v in report.items():
        print(f"{k}: {v}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
