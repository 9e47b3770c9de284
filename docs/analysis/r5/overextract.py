"""Hunt for paragraph kinds where b15 over-extracts more than b05.

Usage: /work/main/.venv/bin/python overextract.py  > (tables go to stdout; REPORT is written by hand from them)
"""
import json, re, itertools, collections, sys
import polars as pl

ROOT = "/work/main/.cache/r5"
BENCH = "/work/main/benchmarks"
RUNS = [("m05", "b05"), ("m05", "r05f"), ("m15", "b15")]
NUM = re.compile(r"\d+(?:[.,]\d+)*")
PERIOD = re.compile(r"(?:19|20)\d{2}\s*(?:H[12]|Q[1-4]|[1-4]Q|1-[3-9]Q|M\d{1,2}|年?前?[一二三四1-4]季度|上半年|下半年|年中)|[1-4]Q(?:19|20)?\d{2}|(?:19|20)\d{2}[A-Z]\b")
COMPACT = re.compile(r"(?:19|20)\d{2}(?:H[12]|Q[1-4]|[1-4]Q)|[1-4]Q(?:19|20)?\d{2}|(?:19|20)\d{2}[AE]\b")
VOICE = re.compile(r"我们认为|预计|有望")
CAUSE = re.compile(r"受益于|受[^，。；]{0,20}影响|由于")


def load_cases():
    rows = []
    for b in ["genbench", "genbench-flat"]:
        for line in open(f"{BENCH}/{b}/cases.jsonl"):
            c = json.loads(line)
            rows.append((b, c["id"], c["input"]["paragraph"]))
    return rows


def feats(b, cid, p, gold_names):
    sents = [s for s in re.split(r"[。！？!?]", p) if s.strip()]
    first_clause = re.split(r"[，,。；]", p, 1)[0]
    nums = NUM.findall(p)
    f = {
        "bench": b,
        "group": cid.rsplit("-", 1)[0],
        "len": len(p),
        "nnum": len(nums),
        "nsent": len(sents),
        "num_per_100c": 100 * len(nums) / max(1, len(p)),
        "compact_period": bool(COMPACT.search(p)),
        "voice": bool(VOICE.search(p)),
        "voice_n": len(VOICE.findall(p)),
        "cause_any": bool(CAUSE.search(p)),
        "cause_open": bool(CAUSE.search(first_clause)) or bool(re.match(r"\s*(受益于|受|由于)", p)),
        "qizhong": "其中" in p,
        "semi_n": p.count("；"),
        "yue_share": p.count("约") / max(1, len(nums)),
        "yue_any": "约" in p,
    }
    # position of gold core: first occurrence of any gold name (exact) in paragraph
    pos = None
    for g in gold_names or []:
        i = p.find(g)
        if i >= 0:
            pos = i if pos is None else min(pos, i)
    if not gold_names:
        f["gold_pos"] = "no_gold"
    elif pos is None:
        f["gold_pos"] = "not_verbatim"
    else:
        r = pos / len(p)
        f["gold_pos"] = "first_third" if r < 1 / 3 else ("mid_third" if r < 2 / 3 else "last_third")
    # is gold core in the first sentence?
    f["gold_in_s1"] = bool(gold_names) and any(g in sents[0] for g in gold_names) if sents else False
    return f


def load():
    cases = {cid: (b, p) for b, cid, p in load_cases()}
    frames = {}
    for b in ["genbench", "genbench-flat"]:
        for m, a in RUNS:
            d = pl.read_parquet(f"{ROOT}/{b}/scores/serve-{m}/{a}.gen.cases.parquet")
            frames[(b, a)] = d
    recs = []
    for b in ["genbench", "genbench-flat"]:
        base = frames[(b, "b05")]
        by = {a: {r["id"]: r for r in frames[(b, a)].iter_rows(named=True)} for _, a in RUNS}
        for r in base.iter_rows(named=True):
            cid = r["id"]
            _, p = cases[cid]
            f = feats(b, cid, p, r["gold_names"])
            f.update(id=cid, scenario=r["scenario"], n_gold=r["n_gold"], gold_names=r["gold_names"], paragraph=p)
            for _, a in RUNS:
                x = by[a][cid]
                f[f"np_{a}"] = x["n_pred"]
                f[f"pass_{a}"] = x["verdict"] != "fail"
                f[f"pred_{a}"] = x["pred_names"]
                f[f"hits_{a}"] = x["n_hits"]
            recs.append(f)
    return pl.DataFrame(recs, infer_schema_length=None)


def summ(d):
    g = d["n_gold"].sum()
    one = d.filter(pl.col("n_gold") == 1)
    out = {"n": d.height, "n1": one.height}
    for a in ["b05", "b15", "r05f"]:
        out[f"pg_{a}"] = d[f"np_{a}"].sum() / g if g else float("nan")
        out[f"pass_{a}"] = d[f"pass_{a}"].mean()
        if a != "r05f":
            out[f"one2_{a}"] = (one[f"np_{a}"] >= 2).mean() if one.height else float("nan")
            out[f"one3_{a}"] = (one[f"np_{a}"] >= 3).mean() if one.height else float("nan")
    out["diff"] = out["pg_b15"] - out["pg_b05"]
    return out


COLS = ["n", "n1", "pg_b05", "pg_b15", "diff", "one2_b05", "one2_b15", "one3_b05", "one3_b15", "pass_b05", "pass_b15", "pass_r05f", "pg_r05f"]


def fmt(v):
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.2f}"
    return str(v)


def table(title, rows):
    print(f"\n### {title}\n")
    print("| subset | " + " | ".join(COLS) + " |")
    print("|---" * (len(COLS) + 1) + "|")
    for name, s in rows:
        print(f"| {name} | " + " | ".join(fmt(s[c]) for c in COLS) + " |")


def binary_features(d):
    """name -> boolean expr"""
    q = lambda c, qs: [float(d[c].quantile(x)) for x in qs]
    B = {}
    for b in ["genbench", "genbench-flat"]:
        B[f"bench={b}"] = pl.col("bench") == b
    for g in sorted(d["group"].unique()):
        B[f"group={g}"] = pl.col("group") == g
    for s in sorted(d["scenario"].unique()):
        B[f"scen={s}"] = pl.col("scenario") == s
    for k in [0, 1, 2, 3]:
        B[f"gold={k}"] = pl.col("n_gold") == k
    B["gold>=2"] = pl.col("n_gold") >= 2
    for lo, hi in [(0, 120), (120, 160), (160, 200), (200, 250), (250, 320), (320, 2000), (150, 260)]:
        B[f"len[{lo},{hi})"] = (pl.col("len") >= lo) & (pl.col("len") < hi)
    for lo, hi in [(0, 8), (8, 11), (11, 14), (14, 18), (18, 24), (24, 200), (10, 20)]:
        B[f"nnum[{lo},{hi})"] = (pl.col("nnum") >= lo) & (pl.col("nnum") < hi)
    for lo, hi in [(0, 5), (5, 7), (7, 9), (9, 100)]:
        B[f"num/100c[{lo},{hi})"] = (pl.col("num_per_100c") >= lo) & (pl.col("num_per_100c") < hi)
    for lo, hi in [(1, 3), (3, 4), (4, 5), (5, 6), (6, 8), (8, 50)]:
        B[f"nsent[{lo},{hi})"] = (pl.col("nsent") >= lo) & (pl.col("nsent") < hi)
    for c in ["compact_period", "voice", "cause_any", "cause_open", "qizhong", "yue_any", "gold_in_s1"]:
        B[f"{c}"] = pl.col(c)
        B[f"!{c}"] = ~pl.col(c)
    B["voice_n>=2"] = pl.col("voice_n") >= 2
    B["semi=0"] = pl.col("semi_n") == 0
    B["semi>=1"] = pl.col("semi_n") >= 1
    B["semi>=2"] = pl.col("semi_n") >= 2
    B["yue_share=0"] = pl.col("yue_share") == 0
    B["yue_share(0,.3)"] = (pl.col("yue_share") > 0) & (pl.col("yue_share") < 0.3)
    B["yue_share>=.3"] = pl.col("yue_share") >= 0.3
    for gp in ["first_third", "mid_third", "last_third", "not_verbatim", "no_gold"]:
        B[f"goldpos={gp}"] = pl.col("gold_pos") == gp
    return B


def main():
    d = load()
    d.drop("paragraph", "gold_names", "pred_b05", "pred_b15", "pred_r05f").write_parquet("/work/stage/r5/analysis/features.parquet")
    B = binary_features(d)
    for scope, dd in [("ALL (genbench+flat)", d), ("genbench", d.filter(pl.col("bench") == "genbench")), ("genbench-flat", d.filter(pl.col("bench") == "genbench-flat"))]:
        rows = [("(all)", summ(dd))]
        for name, e in B.items():
            s = dd.filter(e)
            if s.height >= 5:
                rows.append((name, summ(s)))
        table(f"single features — {scope}", rows)
    # pair search
    names = list(B)
    hits = []
    for a, b in itertools.combinations(names, 2):
        s = d.filter(B[a] & B[b])
        if s.height < 15 or s["n_gold"].sum() == 0:
            continue
        r = summ(s)
        hits.append((f"{a} & {b}", r))
    for name in names:
        s = d.filter(B[name])
        if s.height >= 15 and s["n_gold"].sum() > 0:
            hits.append((name, summ(s)))
    crit = [h for h in hits if h[1]["diff"] >= 0.3 and 0.95 <= h[1]["pg_b05"] <= 1.45]
    crit.sort(key=lambda h: -h[1]["diff"])
    table(f"subsets n>=15 with pg_b15-pg_b05 >= 0.3 and pg_b05 in [0.95,1.45] ({len(crit)} found; top 40)", crit[:40])
    near = sorted(hits, key=lambda h: -h[1]["diff"])[:30]
    table("largest pg_b15-pg_b05 gaps, any pg_b05 (n>=15, top 30)", near)
    # one-metric-only lens: gap in share answered 3+
    one = [h for h in hits if h[1]["n1"] >= 15]
    one.sort(key=lambda h: -(h[1]["one3_b15"] - h[1]["one3_b05"]))
    table("largest gap in one-metric cases answered 3+ (b15 - b05), n1>=15, top 25", one[:25])
    # unseen-set look-alike
    look = d.filter((pl.col("len") >= 150) & (pl.col("len") < 260) & (pl.col("nnum") >= 10) & (pl.col("nnum") < 20))
    rows = [("len150-260 & nnum10-20", summ(look))]
    for b in ["genbench", "genbench-flat"]:
        rows.append((f"  … {b}", summ(look.filter(pl.col("bench") == b))))
    rows.append(("  … gold=1", summ(look.filter(pl.col("n_gold") == 1))))
    table("unseen-set look-alikes", rows)
    d.write_parquet("/work/stage/r5/analysis/features_full.parquet")


if __name__ == "__main__" and "--part2" not in sys.argv:
    main()


# ---------------------------------------------------------------- part 2
GROWTH = re.compile(r"增速|增幅|降幅|增长|下降|同比|环比|变动|变化")
RATIO = re.compile(r"率|占比|比重|份额|比例|渗透|集中度|margin")
MARKET = re.compile(r"全国|行业|市场|全球|LPR|GDP|指数|国债|居民|社零|CPI|PPI|同业|股份行")
STOCK = re.compile(r"产能|员工|人数|经销商|基地|土储|门店|网点|客户数|户数|数量|储备|在手")
SUFFIX = re.compile(r"(同比)?(增速|增幅|降幅|增长率|增长|下降|占比|变动|变化|规模|水平|金额|余额)$")


def sent_index(p, name):
    sents = [s for s in re.split(r"[。！？]", p) if s.strip()]
    cands = [name, SUFFIX.sub("", name)]
    core = SUFFIX.sub("", name)
    if len(core) > 4:
        cands += [core[:4], core[-4:]]
    for c in cands:
        if len(c) < 2:
            continue
        for i, s in enumerate(sents):
            if c in s:
                return i, len(sents)
    return None, len(sents)


def classify_extra(name, golds):
    if any(g in name or name in g for g in golds):
        return "headline-variant"
    if MARKET.search(name):
        return "market/peer context"
    if STOCK.search(name):
        return "capacity/stock background"
    if GROWTH.search(name):
        return "growth-of-part"
    if RATIO.search(name):
        return "rate/share/margin"
    return "part (absolute item)"


def extras_analysis(d, frames_hits):
    print("\n## (a) What b05 and b15 add on flat lists (genbench-flat, unmatched predicted names)\n")
    f = d.filter(pl.col("bench") == "genbench-flat")
    out = {}
    for a in ["b05", "b15", "r05f"]:
        cat = collections.Counter(); pos = collections.Counter(); n_extra = 0; headline_hit = 0; hl_first = 0
        one = 0; examples = []
        for r in f.iter_rows(named=True):
            hits = frames_hits[("genbench-flat", a)][r["id"]]
            matched = {h["pred"] for h in hits}
            extras = [x for x in r[f"pred_{a}"] if x not in matched]
            if r["n_gold"] >= 1:
                one += 1
                headline_hit += len(hits) > 0
                if r[f"pred_{a}"] and r[f"pred_{a}"][0] in matched:
                    hl_first += 1
            for x in extras:
                n_extra += 1
                cat[classify_extra(x, r["gold_names"])] += 1
                i, ns = sent_index(r["paragraph"], x)
                pos["not located" if i is None else ("sentence 1 (headline sentence)" if i == 0 else ("last sentence" if i == ns - 1 else "middle sentences"))] += 1
        out[a] = (n_extra, cat, pos, headline_hit, hl_first, one)
    cats = sorted({c for a in out for c in out[a][1]})
    print("| category of extra name | " + " | ".join(f"{a} n (%)" for a in out) + " |")
    print("|---" * (len(out) + 1) + "|")
    for c in cats:
        print(f"| {c} | " + " | ".join(f"{out[a][1][c]} ({100*out[a][1][c]/max(1,out[a][0]):.0f}%)" for a in out) + " |")
    print(f"| **total extras** | " + " | ".join(str(out[a][0]) for a in out) + " |")
    print("\n| where the extra name sits | " + " | ".join(out) + " |")
    print("|---" * (len(out) + 1) + "|")
    for c in sorted({c for a in out for c in out[a][2]}):
        print(f"| {c} | " + " | ".join(f"{out[a][2][c]} ({100*out[a][2][c]/max(1,out[a][0]):.0f}%)" for a in out) + " |")
    print("\n| headline retrieval (cases with gold>=1) | " + " | ".join(out) + " |")
    print("|---" * (len(out) + 1) + "|")
    print("| any gold matched | " + " | ".join(f"{out[a][3]}/{out[a][5]}" for a in out) + " |")
    print("| first predicted name is a gold hit | " + " | ".join(f"{out[a][4]}/{out[a][5]}" for a in out) + " |")
    # same for genbench (analyst voice) for contrast
    print("\nContrast, genbench (analyst voice), one-metric cases: extras per case and category")
    g = d.filter((pl.col("bench") == "genbench") & (pl.col("n_gold") == 1))
    print("\n| category | b05 | b15 |\n|---|---|---|")
    cc = {}
    for a in ["b05", "b15"]:
        cat = collections.Counter(); n = 0
        for r in g.iter_rows(named=True):
            matched = {h["pred"] for h in frames_hits[("genbench", a)][r["id"]]}
            for x in r[f"pred_{a}"]:
                if x not in matched:
                    n += 1; cat[classify_extra(x, r["gold_names"])] += 1
        cc[a] = (n, cat)
    for c in sorted(set(cc["b05"][1]) | set(cc["b15"][1])):
        print(f"| {c} | " + " | ".join(f"{cc[a][1][c]} ({100*cc[a][1][c]/max(1,cc[a][0]):.0f}%)" for a in cc) + " |")
    print(f"| total extras / {g.height} cases | {cc['b05'][0]} | {cc['b15'][0]} |")
    # examples
    print("\nExamples (flat, one-metric):\n")
    for r in f.filter(pl.col("n_gold") == 1).sample(8, seed=3).iter_rows(named=True):
        print(f"- `{r['id']}` gold {r['gold_names']} · b05 {r['pred_b05']} · b15 {r['pred_b15']} · r05f {r['pred_r05f']}")


def r05f_analysis(d, frames_hits):
    print("\n## (b) r05f on genbench multi-metric cases (gold 2-3) answering exactly 1\n")
    g = d.filter((pl.col("bench") == "genbench") & (pl.col("n_gold") >= 2))
    print("| model | cases gold>=2 | answers 1 | answers 0 | answers >=n_gold | pass |")
    print("|---|---|---|---|---|---|")
    for a in ["b05", "b15", "r05f"]:
        print(f"| {a} | {g.height} | {(g[f'np_{a}']==1).sum()} | {(g[f'np_{a}']==0).sum()} | {(g[f'np_{a}']>=g['n_gold']).sum()} | {g[f'pass_{a}'].mean():.2f} |")
    s = g.filter(pl.col("np_r05f") == 1)
    kept = collections.Counter(); order = collections.Counter(); typ = collections.Counter(); scen = collections.Counter(); ex = []
    for r in s.iter_rows(named=True):
        hits = frames_hits[("genbench", "r05f")][r["id"]]
        scen[r["scenario"]] += 1
        if not hits:
            kept["no gold matched (picked a non-core metric)"] += 1
            ex.append(("miss", r)); continue
        h = hits[0]
        gi = r["gold_names"].index(h["gold"]) if h["gold"] in r["gold_names"] else -1
        kept[f"gold #{gi+1} in label order"] += 1
        # order of golds in paragraph
        p = r["paragraph"]
        posd = {gn: (p.find(gn) if p.find(gn) >= 0 else 10**6) for gn in r["gold_names"]}
        rank = sorted(r["gold_names"], key=lambda x: posd[x]).index(h["gold"])
        order["first-mentioned gold" if rank == 0 else f"gold mentioned #{rank+1}"] += 1
        types = r.get("gold_types")
        ex.append(("hit", r))
    print(f"\nr05f answers 1 on {s.height} of {g.height} multi-metric genbench cases. Scenarios: {dict(scen)}\n")
    print("| which metric r05f keeps | n |\n|---|---|")
    for k, v in kept.most_common():
        print(f"| {k} | {v} |")
    print("\n| kept gold's rank by first mention in paragraph | n |\n|---|---|")
    for k, v in order.most_common():
        print(f"| {k} | {v} |")
    return s, ex


def main2():
    d = pl.read_parquet("/work/stage/r5/analysis/features_full.parquet")
    frames_hits = {}
    for b in ["genbench", "genbench-flat"]:
        for m, a in RUNS:
            x = pl.read_parquet(f"{ROOT}/{b}/scores/serve-{m}/{a}.gen.cases.parquet")
            frames_hits[(b, a)] = {r["id"]: (r["hits"] or []) for r in x.iter_rows(named=True)}
    extras_analysis(d, frames_hits)
    r05f_analysis(d, frames_hits)


if __name__ == "__main__" and "--part2" in sys.argv:
    main2()
