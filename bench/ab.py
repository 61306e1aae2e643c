#!/usr/bin/env python3
"""Interleaved A/B of already running targets: one mode, ROUNDS rounds of SECS seconds, each
round in a rotated order; medians of rate, p99 and the target's CPU time per operation
(user + system of the given pids, from /proc).

usage: bench/ab.py MODE ROUNDS SECS name=port:pid,pid ...   (env TOKEN, CONNS, THREADS=1)
e.g.   bench/ab.py rtt 10 1 gw=28789:$(pgrep -f 'gatewarden -c') nginx=28796:$(pgrep -d, nginx)
The targets (and the echo upstream) are started by hand, each with `setsid` (see run.sh).
THREADS=1 also prints the CPU ticks of each worker thread per run (how evenly they work).
"""
import glob
import json
import os
import statistics
import subprocess
import sys

LOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "target/release/bench-load")
mode, rounds, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conns = int(os.environ.get("CONNS", {"rtt": 32, "bulk": 4}.get(mode, 16)))
token = os.environ.get("TOKEN", "benchtoken1234567890abcdef")
targets = []
for a in sys.argv[4:]:
    name, rest = a.split("=")
    port, _, pids = rest.partition(":")
    targets.append((name, port, [p for p in pids.split(",") if p]))


def stat(path):
    f = open(path).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def ticks(pids):
    t = 0
    for p in pids:
        try:
            t += stat(f"/proc/{p}/stat")
        except OSError:
            pass
    return t


def thread_ticks(pids):
    out = {}
    for p in pids:
        for t in glob.glob(f"/proc/{p}/task/*"):
            try:
                if open(t + "/comm").read().startswith(("gatewarden-wor", "nginx")):
                    out[t] = stat(t + "/stat")
            except OSError:
                pass
    return out


res = {n: [] for n, _, _ in targets}
for r in range(rounds):
    k = r % len(targets)
    for name, port, pids in targets[k:] + targets[:k]:
        t0, w0 = ticks(pids), thread_ticks(pids)
        out = subprocess.run([LOAD, mode, f"127.0.0.1:{port}", "--token", token, "--conns",
                              str(conns), "--secs", secs], capture_output=True, text=True).stdout
        t1, w1 = ticks(pids), thread_ticks(pids)
        j = json.loads(out.strip().splitlines()[-1])
        count = j["count"] // 65536 if mode == "bulk" else j["count"]
        cpu = (t1 - t0) * 10000 / max(count, 1) if pids else 0
        res[name].append((j["rate"], j.get("p99_us") or 0, cpu))
        if os.environ.get("THREADS"):
            print(name, sorted(w1[t] - w0.get(t, 0) for t in w1), file=sys.stderr)
for name, _, _ in targets:
    v = res[name]
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"{name:10} rate {med(0):10.0f}  p99 {med(1):6.0f} µs  cpu/op {med(2):6.1f} µs  "
          f"rates {[round(x[0]) for x in v]}")
base = statistics.median(x[0] for x in res[targets[0][0]])
for name, _, _ in targets[1:]:
    print(f"{name}/{targets[0][0]} = {statistics.median(x[0] for x in res[name]) / base:.3f}")
