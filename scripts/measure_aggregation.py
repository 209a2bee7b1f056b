#!/usr/bin/env python3
"""Aggregation figures of issue 14: a `$sort` + `$limit 10` over N documents on
3 shards (router RSS growth, same 10 documents as one unsharded server) and a
`$group` throughput ratio router / unsharded server. Needs `cargo build` and
`scripts/setup.sh`; run with `.venv/bin/python scripts/measure_aggregation.py N`."""
import subprocess, time, threading, os, sys, statistics
from pymongo import MongoClient
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
demo = subprocess.Popen([f"{ROOT}/target/debug/shardgate", "demo", "--port", "28500", "--metrics-port", "28501"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
ref = subprocess.Popen([f"{ROOT}/.venv/bin/secantusd-py", "--port", "28600", "--storage-path", ":memory:"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    r = MongoClient("mongodb://127.0.0.1:28500/", serverSelectionTimeoutMS=60000)
    for _ in range(120):
        try:
            r.admin.command("ping"); break
        except Exception: time.sleep(1)
    time.sleep(5)
    d = MongoClient("mongodb://127.0.0.1:28600/?directConnection=true", serverSelectionTimeoutMS=60000)
    shards = [s["_id"] for s in r.admin.command("listShards")["shards"]]
    r.admin.command("enableSharding", "m", primaryShard=shards[0])
    r.admin.command("shardCollection", "m.big", key={"k": 1})
    third = N // 3
    for i, at in enumerate([third, 2 * third]):
        r.admin.command("split", "m.big", middle={"k": at})
        r.admin.command("moveChunk", "m.big", find={"k": at}, to=shards[i + 1], _waitForDelete=True)
    t = time.time()
    for start in range(0, N, 10000):
        docs = [{"_id": i, "k": (i * 7919) % N, "g": i % 100, "v": i % 1000} for i in range(start, min(N, start + 10000))]
        r.m.big.insert_many(docs, ordered=False)
        d.m.big.insert_many(docs, ordered=False)
    print(f"loaded {N} docs into both in {time.time()-t:.0f} s", flush=True)
    pid = demo.pid
    def rss():
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS"): return int(line.split()[1]) // 1024
    base = rss(); peak = [base]; stop = [False]
    def poll():
        while not stop[0]:
            peak[0] = max(peak[0], rss()); time.sleep(0.02)
    th = threading.Thread(target=poll); th.start()
    p = [{"$sort": {"v": -1, "_id": 1}}, {"$limit": 10}]
    t = time.time(); got = list(r.m.big.aggregate(p)); tr = time.time() - t
    stop[0] = True; th.join()
    want = list(d.m.big.aggregate(p))
    print(f"sort+limit 10: router {tr:.2f} s, same 10 documents: {got == want}, router RSS {base} MB -> peak {peak[0]} MB (+{peak[0]-base} MB)", flush=True)
    g = [{"$group": {"_id": "$g", "n": {"$sum": 1}, "s": {"$sum": "$v"}, "a": {"$avg": "$v"}}}, {"$sort": {"_id": 1}}]
    tr, td = [], []
    for _ in range(3):
        t = time.time(); a = list(r.m.big.aggregate(g)); tr.append(time.time() - t)
        t = time.time(); b = list(d.m.big.aggregate(g)); td.append(time.time() - t)
    mr, md = statistics.median(tr), statistics.median(td)
    print(f"$group over {N}: router {N/mr:,.0f} docs/s, one unsharded server {N/md:,.0f} docs/s, ratio router/unsharded {md/mr:.2f}, same result: {a == b}", flush=True)
finally:
    demo.terminate(); ref.terminate()
    try: demo.wait(20)
    except Exception: demo.kill()
