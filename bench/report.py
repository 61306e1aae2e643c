#!/usr/bin/env python3
"""Turns bench/results.jsonl into the results table (markdown) on stdout."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
MODES = ["handshake", "rtt", "bulk", "reject", "first_message", "idle"]
LOWER_IS_BETTER = {"idle"}


def get(target, workers, mode):
    for r in rows:
        if r["target"] == target and r["mode"] == mode and (target == "direct" or r["workers"] == workers):
            return r
    return None


def fmt(v):
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:,.1f}")


out = []
for workers in (1, 2):
    out.append(f"\n### {workers} worker{'s' if workers > 1 else ''} (nginx `worker_processes {workers}`, gatewarden `workers = {workers}`)\n")
    out.append("| mode | unit | direct | nginx stock | nginx tuned | gatewarden | gatewarden / best nginx | gatewarden / direct | CPU% gatewarden / nginx(best) / echo |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for mode in MODES:
        d, s, t, g = (get(x, workers, mode) for x in ("direct", "nginx-stock", "nginx-tuned", "gatewarden"))
        if g is None:
            continue
        rate = lambda r: r["rate"] if r else None
        nginx = [r for r in (s, t) if r]
        if mode in LOWER_IS_BETTER:
            best = min(nginx, key=rate) if nginx else None
            vs_n = f"{best['rate'] / g['rate']:.2f}× less" if best and g["rate"] else "—"
            vs_d = "—"
        else:
            best = max(nginx, key=rate) if nginx else None
            vs_n = f"{g['rate'] / best['rate']:.2f}×" if best else "—"
            vs_d = f"{g['rate'] / d['rate']:.2f}×" if d else "—"
        cpu = f"{g['proxy_cpu_pct']} / {best['proxy_cpu_pct'] if best else '—'} / {g['echo_cpu_pct']}"
        out.append(f"| {mode} | {g['unit']} | {fmt(rate(d))} | {fmt(rate(s))} | {fmt(rate(t))} | {fmt(rate(g))} | {vs_n} | {vs_d} | {cpu} |")
        if g.get("p99_us") is not None:
            lat = lambda r: f"{r['p50_us']}/{r['p99_us']}/{r['p999_us']}" if r and r.get("p99_us") is not None else "—"
            out.append(f"| {mode} latency | p50/p99/p999 µs | {lat(d)} | {lat(s)} | {lat(t)} | {lat(g)} | | | |")
    errs = [f"{r['target']} {r['mode']}: {r['errors']}" for r in rows if r.get("errors") and (r["target"] == "direct" or r["workers"] == workers)]
    if errs:
        out.append("\nerrors: " + ", ".join(errs))
print("\n".join(out))
