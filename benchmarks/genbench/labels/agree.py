#!/usr/bin/env python
"""Inter-labeller agreement, as the datasheet reports it: labeller B scored against labeller A by the seed's
verdict protocol (evalkit's upstream matcher), plus Cohen's kappa on the metric count, name F1 and type
agreement on matched names. Writes the cases that disagree (not strict, or a type differing) for adjudication.

    python benchmarks/genbench/labels/agree.py benchmarks/genbench/labels/labeller1.jsonl benchmarks/genbench/labels/labeller2.jsonl
    python benchmarks/genbench/labels/agree.py A.jsonl[,A2.jsonl] B.jsonl[,B2.jsonl] --disagreements D.jsonl

labeller1.jsonl holds the writers' labels before adjudication; cases.jsonl holds the adjudicated gold.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from reportminer.evalkit.matchers import upstream_reference, verdict


def load(paths: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for path in paths.split(","):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    rows[r["id"]] = r
    return rows


def agreement(a_rows: dict[str, dict[str, Any]], b_rows: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ids = [i for i in a_rows if i in b_rows]
    n = len(ids)
    verdicts: Counter[str] = Counter()
    hits = n_a = n_b = type_same = type_n = 0
    pairs: list[tuple[int, int]] = []
    disagreements: list[dict[str, Any]] = []
    for i in ids:
        a, b = a_rows[i]["output"]["metrics"], b_rows[i]["output"]["metrics"]
        matched = upstream_reference([m["metric_name"] for m in a], [m["metric_name"] for m in b])
        v = verdict(len(a), len(b), len(matched))
        verdicts[v] += 1
        pairs.append((len(a), len(b)))
        hits, n_a, n_b = hits + len(matched), n_a + len(a), n_b + len(b)
        same_type = [a[g]["metric_type"] == b[p]["metric_type"] for g, p, *_ in matched]
        type_n, type_same = type_n + len(same_type), type_same + sum(same_type)
        if v != "strict" or not all(same_type):
            disagreements.append({"id": i, "scenario": a_rows[i].get("scenario"), "verdict_b_vs_a": v,
                                  "input": a_rows[i]["input"], "labeller_a": a_rows[i]["output"],
                                  "labeller_b": b_rows[i]["output"]})
    observed = sum(x == y for x, y in pairs) / n
    count_a, count_b = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    expected = sum(count_a[c] * count_b[c] for c in set(count_a) | set(count_b)) / (n * n)
    precision, recall = hits / n_b if n_b else 0.0, hits / n_a if n_a else 0.0
    return {
        "cases": n, "missing_in_b": [i for i in a_rows if i not in b_rows],
        "strict_agreement": verdicts["strict"] / n, "pass_agreement": (verdicts["strict"] + verdicts["loose"]) / n,
        "count_exact_agreement": observed, "count_kappa": (observed - expected) / (1 - expected) if expected < 1 else 1.0,
        "name_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "metrics_a": n_a, "metrics_b": n_b, "type_agreement_on_matched": type_same / type_n if type_n else None,
        "count_pairs_a_b": {f"{x}->{y}": c for (x, y), c in sorted(Counter(pairs).items())},
        "disagreements": len(disagreements),
    }, disagreements


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="labeller A's rows (JSONL, comma-separated files)")
    ap.add_argument("b", help="labeller B's rows {id, output} (JSONL, comma-separated files)")
    ap.add_argument("--disagreements", help="write the disagreeing cases here (JSONL)")
    args = ap.parse_args()
    figures, disagreements = agreement(load(args.a), load(args.b))
    print(json.dumps(figures, ensure_ascii=False, indent=1))
    if args.disagreements:
        with open(args.disagreements, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in disagreements)


if __name__ == "__main__":
    main()
