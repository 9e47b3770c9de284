"""The naming lever (2026-12-07, docs/analysis/r9/NAMING_LEVER.md): rename the revenue metric `营业收入` to `营收`
in committed team sets, in place, and restamp each set's stats.json.

    PYTHONPATH=$(scripts/srcview.sh) .venv/bin/python docs/analysis/r9/rename_revenue.py benchmarks/root-train ...
    PYTHONPATH=$(scripts/srcview.sh) .venv/bin/python docs/analysis/r9/rename_revenue.py --dry-run benchmarks/genbench

Only `output.metrics[].metric_name` changes: a name equal to `营业收入` becomes `营收`, and a name beginning with
`营业收入` keeps its tail (`营业收入增速` -> `营收增速`). Names that merely contain it (`境外业务营业收入`) are left as
they are, and so are paragraphs, analyses and reasons (a reason such as "营业收入353.9亿元同比增长11.6%" quotes the
paragraph's figure, not the metric's name). Ids, key order and the file's bytes otherwise are unchanged: rows are
written back with the builder's own writer (evalkit.genbench.write: one `json.dumps(row, ensure_ascii=False)` a
line), which also sets stats.json's "sha256" to the new file's. Composition figures do not depend on names and are
kept; an "edits" entry records the rename, because a rebuild from the writers' sources (`stats.json` "sources")
would bring `营业收入` back. Afterwards every folder is re-checked (`evalkit bench check`'s function). Idempotent.

Why: the seed's rows name revenue `营收增速` and never `营业收入`, and the seed protocol's matcher (shared bigram or
containment) cannot match `营业收入` to `营收增速`, while `营收` matches it by containment (docs/analysis/r9/naming.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reportminer.evalkit import genbench as bg

OLD, NEW = "营业收入", "营收"
EDIT = {"date": "2026-12-07", "by": "docs/analysis/r9/rename_revenue.py",
        "what": "metric_name 营业收入* -> 营收* (the seed's revenue naming; docs/analysis/r9/naming.py)"}


def rename(name: str) -> str:
    return NEW + name[len(OLD):] if name.startswith(OLD) else name


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="built set folders (rows.jsonl or cases.jsonl + stats.json)")
    ap.add_argument("--dry-run", action="store_true", help="count only, write nothing")
    a = ap.parse_args(argv)
    failed = False
    for out in a.folders:
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        kind = bg.KINDS[stats["set"]]
        f = out / kind.file
        if bg._sha256(f) != stats.get("sha256"):
            sys.exit(f"{f}: sha256 already differs from stats.json before the rename: not touching it")
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        changed: dict[str, int] = {}
        for r in rows:
            for m in r["output"]["metrics"]:
                new = rename(m["metric_name"])
                if new != m["metric_name"]:
                    changed[f"{m['metric_name']} -> {new}"] = changed.get(f"{m['metric_name']} -> {new}", 0) + 1
                    m["metric_name"] = new
        n = sum(changed.values())
        print(f"{f}: {n} metric name(s) renamed {changed}" if n else f"{f}: nothing to rename")
        if not n or a.dry_run:
            continue
        if not any(e.get("by") == EDIT["by"] for e in stats.get("edits", [])):
            stats["edits"] = [*stats.get("edits", []), {**EDIT, "renamed": n}]
        bg.write(bg.Built(rows=rows, stats=stats), stats["set"], out)
        problems = bg.check(stats["set"], out)
        for p in problems:
            print(f"  problem: {p}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
