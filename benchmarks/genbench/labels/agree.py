#!/usr/bin/env python3
"""Inter-labeller agreement between labeller 1 (the writers' labels) and labeller 2 (blind), by the seed's
verdict protocol (evalkit's upstream matcher), plus Cohen's kappa on the metric count and type agreement.

    PYTHONPATH=... python agree.py L1.jsonl[,L1b...] L2.jsonl[,...] [--disagreements OUT.jsonl]
"""
import json, sys
from collections import Counter
from reportminer.evalkit.matchers import upstream_reference, verdict

def load(paths):
    out = {}
    for p in paths.split(","):
        for l in open(p, encoding="utf-8"):
            if l.strip():
                r = json.loads(l); out[r["id"]] = r
    return out

l1 = load(sys.argv[1]); l2 = load(sys.argv[2])
dis_out = sys.argv[sys.argv.index("--disagreements") + 1] if "--disagreements" in sys.argv else None
ids = [i for i in l1 if i in l2]
missing = [i for i in l1 if i not in l2]
n = len(ids); strict = loose = cnt_eq = 0; tp = n1 = n2 = 0; ty_eq = ty_n = 0
pairs = []; per_scen = Counter(); per_scen_strict = Counter(); dis = []
for i in ids:
    a = l1[i]["output"]["metrics"]; b = l2[i]["output"]["metrics"]
    an = [m["metric_name"] for m in a]; bn = [m["metric_name"] for m in b]
    hits = upstream_reference(an, bn)
    v = verdict(len(an), len(bn), len(hits))
    sc = l1[i].get("scenario", "?"); per_scen[sc] += 1
    if v == "strict": strict += 1; per_scen_strict[sc] += 1
    elif v == "loose": loose += 1
    cnt_eq += len(an) == len(bn); pairs.append((len(an), len(bn)))
    tp += len(hits); n1 += len(an); n2 += len(bn)
    for gi, pi, *_ in hits:
        ty_n += 1; ty_eq += a[gi]["metric_type"] == b[pi]["metric_type"]
    types_differ = any(a[gi]["metric_type"] != b[pi]["metric_type"] for gi, pi, *_ in hits)
    if v != "strict" or types_differ:
        dis.append({"id": i, "scenario": sc, "verdict_l2_vs_l1": v, "types_differ": types_differ})
# Cohen's kappa on count categories
cats = sorted({c for p in pairs for c in p})
po = sum(x == y for x, y in pairs) / n
ca = Counter(x for x, _ in pairs); cb = Counter(y for _, y in pairs)
pe = sum(ca[c] * cb[c] for c in cats) / (n * n)
kappa = (po - pe) / (1 - pe) if pe < 1 else 1.0
p = tp / n2 if n2 else 0; r = tp / n1 if n1 else 0; f1 = 2 * p * r / (p + r) if p + r else 0
res = {"cases": n, "missing_in_l2": missing, "strict_agreement": strict / n, "pass_agreement": (strict + loose) / n,
       "count_exact_agreement": cnt_eq / n, "count_kappa": kappa, "name_f1": f1, "l1_metrics": n1, "l2_metrics": n2,
       "type_agreement_on_matched": ty_eq / ty_n if ty_n else None,
       "strict_by_scenario": {s: f"{per_scen_strict[s]}/{per_scen[s]}" for s in per_scen},
       "count_pairs_l1_l2": {f"{x}->{y}": c for (x, y), c in sorted(Counter(pairs).items())},
       "disagreements": len(dis)}
print(json.dumps(res, ensure_ascii=False, indent=1))
if dis_out:
    with open(dis_out, "w", encoding="utf-8") as f:
        for d in dis:
            r1 = l1[d["id"]]; r2 = l2[d["id"]]
            f.write(json.dumps({**d, "input": r1["input"], "labeller_1": r1["output"], "labeller_2": r2["output"]}, ensure_ascii=False) + "\n")
