#!/usr/bin/env python3
"""Turns bench/results.jsonl into the results table (markdown): medians over rounds."""
import json
import random
import statistics
import sys

every = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# The TLS pass has its own table (below); the plain tables never see its rows.
rows = [r for r in every if not r.get("tls")]
tls_rows = [r for r in every if r.get("tls") and not r["tls"].startswith("h2-")]
h2_rows = [r for r in every if r.get("tls", "").startswith("h2-")]
MODES = ["handshake", "rtt", "bulk", "reject", "first_message", "plain", "idle"]
TARGETS = ["direct", "nginx-stock", "nginx-tuned", "gatewarden", "gatewarden-splice"]


def config(r):
    """A pass of the run: its worker count, and whether the proxies were pinned to a core."""
    return r["workers"], r.get("pinned", False)


def in_pass(r, cfg):
    """Direct runs belong to every unpinned pass (they do not depend on the proxy's workers)."""
    return config(r) == cfg or (r["target"] == "direct" and not cfg[1])


def runs(target, cfg, mode):
    return [r for r in rows if r["target"] == target and r["mode"] == mode and in_pass(r, cfg)]


def median_run(target, cfg, mode):
    rs = sorted(runs(target, cfg, mode), key=lambda r: r["rate"])
    return rs[len(rs) // 2] if rs else None


def ratio_ci(g, n, reps=4000):
    """90 % bootstrap interval of median(g) / median(n), rounds resampled with replacement
    (fixed seed: the same results file always prints the same interval). With a single
    round's spread of ±15-30 % on this VM, an interval that contains 1.0 means the run cannot
    tell the two apart, whatever the point ratio says."""
    rng = random.Random(1)
    rs = sorted(statistics.median(rng.choices(g, k=len(g)))
                / statistics.median(rng.choices(n, k=len(n))) for _ in range(reps))
    return rs[int(0.05 * reps)], rs[int(0.95 * reps) - 1]


def paired_ci(g, n, reps=4000):
    """Median over rounds of the per-round ratio gatewarden / nginx, with its 90 % bootstrap
    interval (rounds resampled). Each round runs every target back to back, so a round's
    ratio cancels this VM's minute-to-minute drift (±15 %), which the unpaired interval
    above counts as noise. `g` and `n` are runs (gatewarden's, the other side's)."""
    g, n = by_round(g), by_round(n)
    # A round where the other side moved nothing (a broken mode) has no ratio.
    ratios = [g[k][0] / statistics.median(n[k]) for k in sorted(g)
              if k in n and statistics.median(n[k]) > 0]
    if len(ratios) < 3:
        return None
    rng = random.Random(1)
    rs = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(reps))
    return statistics.median(ratios), rs[int(0.05 * reps)], rs[int(0.95 * reps) - 1]


def by_round(rs):
    out = {}
    for r in rs:
        out.setdefault(r["round"], []).append(r["rate"])
    return out


def interval(lo, hi):
    """The interval, with a third decimal when two would print it as one number."""
    d = 3 if hi - lo < 0.02 else 2
    return f"[{lo:.{d}f}–{hi:.{d}f}]"


def verdict(lo, hi, want_above=True):
    """✓ when the whole interval is on the wanted side of 1.0, ✗ when all of it is on the
    other, ≈ when the run cannot tell."""
    if (lo >= 1.0) if want_above else (hi <= 1.0):
        return "✓"
    if (hi < 1.0) if want_above else (lo > 1.0):
        return "✗"
    return "≈"


def fmt(v):
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:,.1f}")


out = []
for cfg in sorted({config(r) for r in rows if r["target"] != "direct"}):
    workers, pinned = cfg
    out.append(f"\n### {workers} worker{'s' if workers > 1 else ''} "
               f"(nginx `worker_processes {workers}`, gatewarden `workers = {workers}`)"
               + (", pinned: each proxy alone on CPU 1, the load generator and the echo "
                  "server on CPU 0 (no direct runs: their placement differs)" if pinned else "")
               + "\n")
    out.append("| mode | unit | direct | nginx stock | nginx tuned | gatewarden | gatewarden splice(2) "
               "| gatewarden / better nginx | gatewarden / direct | CPU % gatewarden / nginx / echo |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for mode in MODES:
        m = {t: median_run(t, cfg, mode) for t in TARGETS}
        g = m["gatewarden"]
        if g is None:
            continue
        rate = lambda r: r["rate"] if r else None
        nginx = [r for r in (m["nginx-stock"], m["nginx-tuned"]) if r]
        if mode == "idle":
            best = min(nginx, key=rate) if nginx else None
            vs_n = f"{best['rate'] / g['rate']:.2f}× less" if best and g["rate"] else "—"
            vs_d = "—"
        else:
            best = max(nginx, key=rate) if nginx else None
            vs_n = f"**{g['rate'] / best['rate']:.2f}×**" if best else "—"
            vs_d = f"{g['rate'] / m['direct']['rate']:.2f}×" if m["direct"] else "—"
        cpu = f"{g['proxy_cpu_pct']} / {best['proxy_cpu_pct'] if best else '—'} / {g['echo_cpu_pct']}"
        cells = " | ".join(fmt(rate(m[t])) for t in TARGETS)
        out.append(f"| {mode} | {g['unit']} | {cells} | {vs_n} | {vs_d} | {cpu} |")
        if g.get("p99_us") is not None:
            lat = lambda r: f"{r['p50_us']}/{r['p99_us']}/{r['p999_us']}" if r and r.get("p99_us") is not None else "—"
            out.append(f"| {mode} latency | p50/p99/p999 µs | " + " | ".join(lat(m[t]) for t in TARGETS) + " | | | |")
    # For these modes stock and tuned nginx are one configuration (the buffers only matter
    # for large messages), so "better nginx" is the larger of two draws of the same thing.
    pooled, paired = [], []
    for mode in ("handshake", "rtt", "reject"):
        g = [r["rate"] for r in runs("gatewarden", cfg, mode)]
        n = [r["rate"] for t in ("nginx-stock", "nginx-tuned") for r in runs(t, cfg, mode)]
        if g and n:
            lo, hi = ratio_ci(g, n)
            pooled.append(f"{mode} {statistics.median(g) / statistics.median(n):.2f}× "
                          f"{interval(lo, hi)} {verdict(lo, hi)} ({len(g)} vs {len(n)} runs)")
            pr = paired_ci(runs("gatewarden", cfg, mode),
                           [r for t in ("nginx-stock", "nginx-tuned") for r in runs(t, cfg, mode)])
            if pr:
                paired.append(f"{mode} {pr[0]:.2f}× {interval(pr[1], pr[2])} {verdict(pr[1], pr[2])}")
    # bulk: the buffers do matter, so against each nginx configuration on its own.
    for flavour in ("stock", "tuned"):
        g = [r["rate"] for r in runs("gatewarden", cfg, "bulk")]
        n = [r["rate"] for r in runs(f"nginx-{flavour}", cfg, "bulk")]
        if g and n:
            lo, hi = ratio_ci(g, n)
            pooled.append(f"bulk vs {flavour} {statistics.median(g) / statistics.median(n):.2f}× "
                          f"{interval(lo, hi)} {verdict(lo, hi)}")
            pr = paired_ci(runs("gatewarden", cfg, "bulk"), runs(f"nginx-{flavour}", cfg, "bulk"))
            if pr:
                paired.append(f"bulk vs {flavour} {pr[0]:.2f}× {interval(pr[1], pr[2])} "
                              f"{verdict(pr[1], pr[2])}")
    if pooled:
        out.append("\ngatewarden against both nginx pooled (the same configuration for these "
                   "modes), median over median, [90 % bootstrap interval] and whether the run "
                   "shows ≥ 1.0× (✓ yes, ✗ no, ≈ cannot tell): " + ", ".join(pooled))
    # bulk against direct, paired only in the pass the direct runs were made in.
    d = [r for r in runs("direct", cfg, "bulk") if r["workers"] == workers]
    pr = paired_ci(runs("gatewarden", cfg, "bulk"), d) if d else None
    if pr:
        paired.append(f"bulk vs direct {pr[0]:.2f}× {interval(pr[1], pr[2])} (target ≥ 0.8×)")
    if paired:
        out.append("\npaired by round (each round runs the targets back to back): median of "
                   "the rounds' gatewarden / nginx, [90 % bootstrap interval]: "
                   + ", ".join(paired))
    # p99 of every round, pooled: with 2 workers four busy threads (2 workers, the echo server,
    # the load generator) share 2 cores, and a round's rtt p99 is either ~1 ms or a scheduler
    # time slice (~4.3 ms), for nginx as for gatewarden; the median run's figure is a coin
    # flip, the median over all rounds and the count of such rounds are not.
    tails = []
    for mode in ("handshake", "rtt", "first_message"):
        p99 = lambda ts: [r["p99_us"] for t in ts for r in runs(t, cfg, mode)
                          if r.get("p99_us") is not None]
        g, n = p99(["gatewarden"]), p99(["nginx-stock", "nginx-tuned"])
        if g and n:
            lo, hi = ratio_ci(g, n)
            ci = f" (ratio {interval(lo, hi)} {verdict(lo, hi, want_above=False)})"
            slow = lambda xs: sum(x >= 3000 for x in xs)
            stalls = (f" (rounds with p99 ≥ 3 ms: {slow(g)}/{len(g)} vs {slow(n)}/{len(n)})"
                      if mode == "rtt" else "")
            tails.append(f"{mode} {statistics.median(g):,.0f} vs {statistics.median(n):,.0f} µs"
                         + ci + stalls)
    if tails:
        out.append("\np99 over all rounds (median), gatewarden vs both nginx pooled: "
                   + ", ".join(tails))
    # CPU time per operation: what each proxy spends, without the time the VM's neighbours
    # took (steal). It still moves with them (caches, frequency): stock and tuned nginx,
    # the same configuration for a handshake, measured 109 and 160 µs in one run.
    # bulk: per 64 KiB message echoed.
    per_op = []
    for mode in ("handshake", "rtt", "bulk", "reject", "first_message", "plain"):
        cost = lambda t: [r["proxy_cpu_us_per_op"] for r in runs(t, cfg, mode)
                          if r.get("proxy_cpu_us_per_op")]
        g, n = cost("gatewarden"), cost("nginx-stock") + cost("nginx-tuned")
        if g and n:
            gm, nm = statistics.median(g), statistics.median(n)
            per_op.append(f"{mode} {gm:.1f} vs {nm:.1f} µs ({nm / gm:.2f}×)")
    if per_op:
        out.append("\nproxy CPU per operation (user + system, medians), gatewarden vs nginx "
                   "(both runs; > 1× = gatewarden spends less): " + ", ".join(per_op))
    errs = [f"{r['target']} {r['mode']}: {r['errors']}" for r in rows
            if r.get("errors") and in_pass(r, cfg)]
    if errs:
        out.append("\nerrors (failed sessions or connections): " + ", ".join(sorted(set(errs))))
# A change measured against the build before it (GW_BEFORE): after / before per mode, paired
# by round like the nginx ratios.
before_cfgs = sorted({config(r) for r in rows if r["target"] == "gatewarden-before"})
if before_cfgs:
    out.append("\n## gatewarden after / before (the same rounds)\n")
    out.append("| workers | pinned | mode | after / before, per-round median [90 % interval] | verdict |")
    out.append("|---|---|---|---|---|")
    for cfg in before_cfgs:
        for mode in MODES:
            pr = paired_ci(runs("gatewarden", cfg, mode), runs("gatewarden-before", cfg, mode))
            if pr:
                m, lo, hi = pr
                out.append(f"| {cfg[0]} | {'yes' if cfg[1] else 'no'} | {mode} | {m:.3f} "
                           f"{interval(lo, hi)} | {verdict(lo, hi)} |")
# TLS termination: gatewarden (rustls) against nginx (OpenSSL), and against plain gatewarden,
# per certificate kind; ratios paired by round.
for kind, workers in sorted({(r["tls"], r["workers"]) for r in tls_rows}):
    kr = [r for r in tls_rows if r["tls"] == kind and r["workers"] == workers]
    def trun(target, mode):
        return [r for r in kr if r["target"] == target and r["mode"] == mode]
    def med(rs):
        return statistics.median(r["rate"] for r in rs) if rs else None
    each = "1 worker" if workers == 1 else f"{workers} workers"
    out.append(f"\n## TLS, {kind} certificate ({each} each)\n")
    out.append("| mode | unit | nginx TLS | gatewarden TLS | gatewarden plain | gatewarden TLS / nginx TLS "
               "[90 % paired] | gatewarden TLS / plain | proxy CPU µs per op, gatewarden / nginx |")
    out.append("|---|---|---|---|---|---|---|---|")
    for mode in ["handshake", "resume", "rtt", "bulk", "idle"]:
        n, g, p = trun("nginx-tls", mode), trun("gatewarden-tls", mode), trun("gatewarden", mode)
        if not (n and g):
            continue
        unit = g[0]["unit"]
        mn, mg, mp = med(n), med(g), med(p)
        if mode == "idle":
            vs = f"{mn / mg:.2f}× less" if mg else "—"
            out.append(f"| {mode} | {unit} | {mn:,.0f} | {mg:,.0f} | {mp:,.0f} | {vs} | — | — |"
                       if mp else f"| {mode} | {unit} | {mn:,.0f} | {mg:,.0f} | — | {vs} | — | — |")
            continue
        pr = paired_ci(g, n)
        ratio = (f"**{pr[0]:.2f}×** {interval(pr[1], pr[2])} {verdict(pr[1], pr[2])}"
                 if pr else f"{mg / mn:.2f}×")
        vs_plain = f"{mg / mp:.2f}×" if mp else "—"
        cost = lambda rs: [r["proxy_cpu_us_per_op"] for r in rs if r.get("proxy_cpu_us_per_op")]
        cg, cn = cost(g), cost(n)
        cpu = (f"{statistics.median(cg):.1f} / {statistics.median(cn):.1f}" if cg and cn else "—")
        out.append(f"| {mode} | {unit} | {mn:,.0f} | {mg:,.0f} | "
                   f"{'—' if mp is None else f'{mp:,.0f}'} | {ratio} | {vs_plain} | {cpu} |")
    # The TLS path before the change (GW_BEFORE), paired by round like the rest.
    before = [(mode, paired_ci(trun("gatewarden-tls", mode), trun("gatewarden-before-tls", mode)))
              for mode in ["handshake", "resume", "rtt", "bulk"]]
    before = [(m, pr) for m, pr in before if pr]
    if before:
        out.append("\nTLS, after / before (the same rounds): " + ", ".join(
            f"{m} {pr[0]:.3f} {interval(pr[1], pr[2])}" for m, pr in before))
# WebSockets over HTTP/2 streams against wss over HTTP/1.1, the same gatewarden.
if h2_rows:
    def hrun(target, mode):
        return [r for r in h2_rows if r["target"] == target and r["mode"] == mode]
    out.append("\n## wss over HTTP/2 (RFC 8441) and over HTTP/1.1, gatewarden, 1 worker\n")
    out.append("| mode | unit | over HTTP/1.1 | over HTTP/2 | HTTP/2 / HTTP/1.1 [90 % paired] | "
               "proxy CPU µs per op, HTTP/2 / HTTP/1.1 |")
    out.append("|---|---|---|---|---|---|")
    for mode in ["rtt", "bulk", "idle"]:
        h1, h2 = hrun("gatewarden-tls", mode), hrun("gatewarden-h2", mode)
        if not (h1 and h2):
            continue
        m1 = statistics.median(r["rate"] for r in h1)
        m2 = statistics.median(r["rate"] for r in h2)
        if mode == "idle":
            out.append(f"| {mode} | {h1[0]['unit']} | {m1:,.0f} | {m2:,.0f} | {m2 / m1:.2f}× | — |")
            continue
        pr = paired_ci(h2, h1)
        ratio = f"**{pr[0]:.2f}×** {interval(pr[1], pr[2])}" if pr else f"{m2 / m1:.2f}×"
        cost = lambda rs: [r["proxy_cpu_us_per_op"] for r in rs if r.get("proxy_cpu_us_per_op")]
        c1, c2 = cost(h1), cost(h2)
        cpu = (f"{statistics.median(c2):.1f} / {statistics.median(c1):.1f}" if c1 and c2 else "—")
        out.append(f"| {mode} | {h1[0]['unit']} | {m1:,.0f} | {m2:,.0f} | {ratio} | {cpu} |")
print("\n".join(out))
