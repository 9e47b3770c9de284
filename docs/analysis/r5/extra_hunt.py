"""Case-level signature + pass-reversal + within-flat searches (uses features_full.parquet from overextract.py)."""
import itertools, polars as pl, sys
sys.path.insert(0, "/work/stage/r5/analysis")
from overextract import binary_features, summ, table
d = pl.read_parquet("/work/stage/r5/analysis/features_full.parquet")
B = binary_features(d)
# case-level: b15 answers >= b05+2 (or b15>=3 while b05<=1)
sig = d.filter(pl.col("np_b15") - pl.col("np_b05") >= 1)
print(f"\n### case-level: b15 predicts more names than b05 on {sig.height}/{d.height} cases; by >=2: {(d['np_b15']-d['np_b05']>=2).sum()}; b05 more on {(d['np_b05']>d['np_b15']).sum()}\n")
cols = ["len", "nnum", "num_per_100c", "nsent", "voice", "cause_any", "qizhong", "semi_n", "yue_share", "compact_period", "n_gold"]
for bench in ["genbench", "genbench-flat"]:
    dd = d.filter(pl.col("bench") == bench)
    a = dd.filter(pl.col("np_b15") > pl.col("np_b05")); b = dd.filter(pl.col("np_b15") < pl.col("np_b05")); c = dd.filter(pl.col("np_b15") == pl.col("np_b05"))
    print(f"\n{bench}: b15>b05 n={a.height}, equal n={c.height}, b15<b05 n={b.height}\n")
    print("| feature (mean) | b15>b05 | equal | b15<b05 |\n|---|---|---|---|")
    for col in cols:
        f = lambda x: f"{x[col].cast(pl.Float64).mean():.2f}" if x.height else "-"
        print(f"| {col} | {f(a)} | {f(c)} | {f(b)} |")
    print("\nscenario counts (b15>b05 / equal / b15<b05):", {s: (a.filter(pl.col('scenario')==s).height, c.filter(pl.col('scenario')==s).height, b.filter(pl.col('scenario')==s).height) for s in sorted(dd['scenario'].unique())})
# pass reversal: b05 passes more than b15
hits = []
names = list(B)
for x, y in itertools.combinations(names, 2):
    s = d.filter(B[x] & B[y])
    if s.height >= 15 and s["n_gold"].sum() > 0:
        hits.append((f"{x} & {y}", summ(s)))
for x in names:
    s = d.filter(B[x])
    if s.height >= 15 and s["n_gold"].sum() > 0:
        hits.append((x, summ(s)))
rev = [h for h in hits if h[1]["pass_b05"] - h[1]["pass_b15"] >= 0.1]
rev.sort(key=lambda h: -(h[1]["pass_b05"] - h[1]["pass_b15"]))
table(f"pass reversal (pass_b05 - pass_b15 >= 0.10), n>=15: {len(rev)} subsets, top 25", rev[:25])
# within flat
fl = [h for h in hits if "bench=genbench-flat" in h[0] or "compact_period" in h[0] and "!compact" not in h[0] or "group=gb-f" in h[0]]
fl.sort(key=lambda h: -h[1]["diff"])
table("flat-list subsets, largest pg_b15 - pg_b05 (top 12)", fl[:12])
