#!/usr/bin/env python3
"""Tally `compare-trigger-response` rises by how common the probed value is in the evaluation rows.

    python benches/eval/probe_shares.py DIR [MIN_SEED]

DIR is a directory written by compare_gen.py and gated by `compare_run.py --mode
endpoints-check`; MIN_SEED skips earlier seeds (a held-out check). For each band of the value's
share of the evaluation rows it prints the clean retrains' probe rises (the largest three) and the
planted triggers' rises (the smallest five): where one threshold would and would not separate them.
"""

from __future__ import annotations

import collections
import json
import sys
import pyarrow.parquet as pq
D = sys.argv[1]
MIN_SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 0
cache={}
def shares(ds, seed):
    if (ds,seed) not in cache:
        t=pq.read_table(f'{D}/{ds}/features/{seed}.parquet').to_pydict()
        cache[(ds,seed)]={c:{x:n/len(v) for x,n in collections.Counter(v).items()} for c,v in t.items() if v and isinstance(v[0],str)}
    return cache[(ds,seed)]
man=json.load(open(f'{D}/manifest.json'))
rows=[]
for e in man if isinstance(man,list) else man['files']:
    if e['seed']<MIN_SEED or e['scenario'] not in ('clean','backdoor_segment','backdoor_rare'): continue
    try: r=json.load(open(f'{D}/compare-reports/endpoints-check/'+e['path'].replace('.parquet','.json')))
    except Exception: continue
    sh=shares(e['dataset'],e['seed']); trig=e.get('trigger')
    for t in r['tests']:
        if t['code']!='compare-trigger-response' or not t.get('statistics'): continue
        s=t['subject']; v=t['statistics'][0]['value']
        planted=bool(trig) and s['column']==trig['column'] and s['value']==str(trig['value']) and s['label']==str(trig['target'])
        rows.append((e['scenario'],planted,sh.get(s['column'],{}).get(s['value'],0.0),v))
for lo,hi in [(0,1e-9),(1e-9,0.01),(0.01,1.01)]:
    c=sorted(x[3] for x in rows if x[0]=='clean' and lo<=x[2]<hi)
    p=sorted(x[3] for x in rows if x[1] and lo<=x[2]<hi)
    print(f'eval share [{lo},{hi}): clean probes {len(c)}, top3 {c[-3:]}; planted {len(p)}, bottom5 {p[:5]}')
