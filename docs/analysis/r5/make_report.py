"""Assemble REPORT.md from tables.md / part2.md / part3.md (outputs of overextract.py and extra_hunt.py)."""
t = open('tables.md').read(); p2 = open('part2.md').read(); p3 = open('part3.md').read()
NL = "\n"
def sec(text, title):
    i = text.index(title); j = text.find(NL + '### ', i + 5)
    return text[i:j if j > 0 else None].strip()
def body(text, title):
    return sec(text, title).split(NL, 2)[2]
def rows(text, title, keys):
    s = sec(text, title).split(NL); hdr = s[2:4]
    keep = [l for l in s[4:] if any(l.startswith(f'| {k} |') for k in keys)]
    return NL.join(hdr + keep)
allkeys = ['(all)','bench=genbench','bench=genbench-flat','group=gb-w1','group=gb-w2','group=gb-w3','group=gb-f4','group=gb-f5','group=gb-fl6','group=gb-fl7',
 'scen=boundary_many_numbers_one_core','scen=single_metric','scen=multi_metric','scen=financial_vs_business_classification','scen=mixed_financial_business',
 'gold=1','gold=2','gold=3','len[0,120)','len[120,160)','len[160,200)','len[200,250)','len[250,320)','nnum[0,8)','nnum[11,14)','nnum[14,18)','nnum[18,24)',
 'num/100c[0,5)','num/100c[5,7)','num/100c[7,9)','num/100c[9,100)','nsent[1,3)','nsent[3,4)','nsent[4,5)','nsent[5,6)','nsent[6,8)','nsent[8,50)',
 'compact_period','voice','!voice','voice_n>=2','cause_any','cause_open','qizhong','!qizhong','semi>=1','semi>=2','yue_share=0','yue_share(0,.3)','yue_share>=.3',
 'gold_in_s1','!gold_in_s1','goldpos=first_third','goldpos=mid_third','goldpos=not_verbatim']
gbkeys = [k for k in allkeys if not k.startswith('group=gb-f') and k not in ('bench=genbench-flat', 'compact_period', '!voice')]
T_CRIT = body(t, '### subsets n>=15')
T_REV = body(p3, '### pass reversal')
T_ONE3 = body(t, '### largest gap in one-metric')
T_ALL = rows(t, '### single features — ALL', allkeys)
T_GB = rows(t, '### single features — genbench' + NL, gbkeys)
T_FL = body(t, '### single features — genbench-flat')
T_LOOK = body(t, '### unseen-set look-alikes')
T_CASE = p3[p3.index('### case-level'):p3.index('### pass reversal')].split(NL, 1)[1].strip()
T_CASEH = p3[p3.index('### case-level'):].split(NL, 1)[0].replace('### ', '')
T_FLAT = body(p3, '### flat-list subsets')
P2 = p2.strip()
R = open('report_template.md').read().format(**globals())
open('REPORT.md', 'w').write(R)
