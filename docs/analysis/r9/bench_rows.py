"""Score a `scripts/bench_gpu.py` run's row texts against the seed's labels (ninth session, 2026-12-07).

bench_gpu.py cycles the seed rows up to --rows, each paragraph made unique by a "（样本N）" suffix, and keeps every
phase's texts in WORK/texts-PHASE.json. This maps each bench row back to its seed row and writes, for the k-th
occurrence of every seed paragraph (cycle k), a gold file and one prediction file per phase, aligned by id, for
`evalkit compare`. Cycle 1 against cycle 0 is the same phase on the same rows again (another suffix, another batch
position): a floor for the comparisons between phases. Writes outside the repository only (seed-derived).

    PYTHONPATH=$(scripts/srcview.sh) .venv/bin/python docs/analysis/r9/bench_rows.py /tmp/b34/bench-m05 ../shared/seed /tmp/q9
    evalkit compare --gold /tmp/q9/gold-c0.jsonl --matcher upstream capped=/tmp/q9/json-guidance-c0.jsonl \\
        uncapped=/tmp/q9/json-uncapped-c0.jsonl default=/tmp/q9/engine-c0.jsonl
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq

from reportminer.data.io import iter_jsonl


def main(work: Path, seed_dir: Path, out: Path, cycles: int = 2) -> None:
    seed: dict[str, dict] = {}
    for row in iter_jsonl(seed_dir / "data"):
        seed.setdefault(row.obj["input"]["paragraph"], row.obj)
    rows = [r for f in sorted((work / "input").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    occurrences: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: r["id"]):
        para = re.sub(r"（样本\d+）$", "", r["paragraph"])
        if para not in seed:
            raise SystemExit(f"{r['id']}: no seed row has this paragraph")
        occurrences.setdefault(para, []).append(r["id"])
    texts = {p.name[len("texts-"):-len(".json")]: json.loads(p.read_text()) for p in sorted(work.glob("texts-*.json"))}
    out.mkdir(parents=True, exist_ok=True)
    for k in range(cycles):
        gold = []
        preds: dict[str, list[str]] = {name: [] for name in texts}
        for n, (para, ids) in enumerate(occurrences.items()):
            if len(ids) <= k:
                continue
            case = f"seed{n:04d}"
            gold.append(json.dumps({**seed[para], "id": case}, ensure_ascii=False))
            for name, t in texts.items():
                preds[name].append(json.dumps({"id": case, "output": t.get(ids[k])}, ensure_ascii=False))
        (out / f"gold-c{k}.jsonl").write_text("\n".join(gold) + "\n", encoding="utf-8")
        for name, lines in preds.items():
            (out / f"{name}-c{k}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"cycle {k}: {len(gold)} cases; phases {', '.join(texts)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
