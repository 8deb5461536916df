"""Turns one GPU run's JSON (`lacuna bench-methods --json` and
bench/peers_methods.py --out) into markdown tables and a PNG plot.

Speed-ups are over PyTorch SDPA flash dense causal at the same shape (the
issue's baseline: >= 2.0x at 8k and >= 3.3x at 16k for SCFA) unless a column
says "vs Lacuna dense" (our own dense causal kernel, same process).

usage: python3 bench/report_methods.py METHODS.json PEERS_METHODS.json [PLOT.png] > tables.md
"""
import json, sys
from collections import defaultdict

lac = json.load(open(sys.argv[1]))
peers = json.load(open(sys.argv[2])) if len(sys.argv) > 2 and sys.argv[2] != "-" else {"rows": [], "device": "-"}
plot = sys.argv[3] if len(sys.argv) > 3 else None

TARGETS = {8192: 2.0, 16384: 3.3}

rows = defaultdict(dict)  # label -> n -> row
for r in lac["rows"]:
    rows[r["label"]][r["n"]] = r
ns = sorted({r["n"] for r in lac["rows"]})

peer = {}  # (system, pattern, N) -> row (with "ms" or "error")
for r in peers["rows"]:
    peer[(r["system"], r["pattern"], r["N"])] = r


def flash(n):
    r = peer.get(("sdpa-flash", "causal", n))
    return r.get("ms") if r else None


def f3(x):
    return "%.3f" % x if x is not None else "-"


def speed(base, t):
    return "%.2fx" % (base / t) if base and t else "-"


def lac_ms(label, n):
    r = rows.get(label, {}).get(n)
    return r["ms"] if r else None


def table(header, body):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for b in body:
        print("| " + " | ".join(str(x) for x in b) + " |")
    print()


def sweep_table(labels, headers):
    """One row per N, one column per setting (label): ms (speed-up vs SDPA
    flash / vs Lacuna dense, whose time the row carries as a ratio)."""
    body = []
    for n in ns:
        fl = flash(n)
        cells = [n]
        for label in labels:
            r = rows.get(label, {}).get(n)
            cells.append("%.3f (%s / %s)" % (r["ms"], speed(fl, r["ms"]), speed(r["ms"] * r["speedup_vs_dense"], r["ms"])) if r else "-")
        body.append(cells)
    table(["N"] + headers, body)


print("Card: %s (lacuna) / %s (peers, torch %s). bf16 forward, B=%d, H=%d, D=%d; every method end to end "
      "(all its steps); ms = median of >= %d timed calls after warm-up (CUDA events)." % (
          lac["device"], peers.get("device", "-"), peers.get("torch", "-"), lac["batch"], lac["heads"], lac["head_dim"], lac["reps"]))
print()

# ---- headline
print("### Headline: SCFA end to end vs SDPA flash dense causal (targets: >= 2.0x at 8k, >= 3.3x at 16k)")
print()
body = []
for n in ns:
    fl = flash(n)
    cu = peer.get(("sdpa-cudnn", "causal", n), {}).get("ms")
    dense = lac_ms("causal", n)
    cells = [n, f3(fl), f3(cu), f3(dense), speed(fl, dense)]
    for label in ("hash8", "qkdrop50"):
        t = lac_ms(label, n)
        s = fl / t if fl and t else None
        verdict = ""
        if s is not None and n in TARGETS:
            verdict = " (%s %.1fx)" % ("met" if s >= TARGETS[n] else "**missed**", TARGETS[n])
        cells += [f3(t), ("%.2fx" % s if s else "-") + verdict]
    body.append(cells)
table(["N", "SDPA flash causal ms", "SDPA cuDNN causal ms", "Lacuna dense causal ms", "Lacuna dense vs flash",
       "hash-8 ms", "hash-8 vs flash", "QK-drop 50% ms", "QK-drop 50% vs flash"], body)


def stages_text(r):
    return ", ".join("%s %.3f" % (s["name"], s["ms"]) for s in r.get("stages", []))


# ---- hash over buckets
buckets = sorted({r["info"]["buckets"] for r in lac["rows"] if r["method"] == "hash"})
if buckets:
    print("### SCFA hash over the number of buckets: ms (speed-up vs SDPA flash / vs Lacuna dense)")
    print()
    sweep_table(["hash%d" % b for b in buckets], ["%d buckets" % b for b in buckets])
    print("Stages (each timed alone, ms) and the share of causal pairs in one bucket:")
    print()
    body = []
    for n in ns:
        for b in buckets:
            r = rows.get("hash%d" % b, {}).get(n)
            if r:
                body.append([n, b, f3(r["ms"]), stages_text(r), "%.1f%%" % (100 * r["info"]["pair_density"]),
                             "%.2fx" % r["info"]["attention_speedup_vs_dense"]])
    table(["N", "buckets", "total ms", "stages", "pair density", "attention alone vs Lacuna dense"], body)

# ---- QK-drop over drop rates
drops = sorted({round(100 * r["info"]["drop"]) for r in lac["rows"] if r["method"] == "qk-drop"})
if drops:
    print("### SCFA QK-drop over the drop rate: ms (speed-up vs SDPA flash / vs Lacuna dense)")
    print()
    sweep_table(["qkdrop%d" % d for d in drops], ["drop %d%%" % d for d in drops])
    body = []
    for n in ns:
        for d in drops:
            r = rows.get("qkdrop%d" % d, {}).get(n)
            if r:
                i = r["info"]
                # busiest_*: kept tokens of the busiest (b, h); padded_*: the
                # compacted length of pipelines that read the counts back.
                kept = (i.get("busiest_q", i.get("padded_q")), i.get("busiest_k", i.get("padded_k")))
                body.append([n, "%d%%" % d, f3(r["ms"]), stages_text(r), "%d / %d" % kept])
    table(["N", "drop", "total ms", "stages", "busiest (b, h): kept queries / keys"], body)

# ---- MoA
if "moa50" in rows:
    print("### MoA at 50% mean density (one heterogeneous launch)")
    print()
    print("Balance = heterogeneous launch / a launch where every head has one span of the same mean density "
          "(same grid, same total work); per visited = that ratio normalised by the visited tile elements of each "
          "(1.00 = no cost from heterogeneity). The sum of heads timed alone (H=1) is shown for reference only: "
          "one-head launches under-fill the GPU.")
    print()
    body = []
    for n in ns:
        r = rows["moa50"].get(n)
        if not r:
            continue
        i = r["info"]
        body.append([n, "%.1f%%" % (100 * i["mean_density"]), "%d..%d" % (min(i["spans"]), max(i["spans"])), f3(r["ms"]),
                     "%.2fx" % r["speedup_vs_dense"], speed(flash(n), r["ms"]), "%d (%.1f%%)" % (i["uniform_span"], 100 * i["uniform_density"]),
                     f3(i["uniform_ms"]), "%.2f" % i["balance_vs_uniform"], "%.2f" % i["balance_vs_uniform_per_visited"],
                     f3(i["sum_heads_alone_ms"])])
    table(["N", "mean density", "spans", "ms", "vs Lacuna dense", "vs SDPA flash", "uniform span (density)", "uniform ms",
           "balance", "balance per visited", "sum of heads alone ms"], body)

# ---- SparseK
sk = [l for l in rows if l.startswith("sparsek")]
for label in sk:
    print("### SparseK block top-k (%s)" % label)
    print()
    body = []
    for n in ns:
        r = rows[label].get(n)
        if r:
            i = r["info"]
            body.append([n, i["topk"], i["window"], "%.1f%%" % (100 * i["key_block_share"]), f3(r["ms"]), stages_text(r),
                         "%.2fx" % r["speedup_vs_dense"], speed(flash(n), r["ms"])])
    table(["N", "top-k blocks", "window", "causal key blocks visited", "ms", "stages", "vs Lacuna dense", "vs SDPA flash"], body)

# ---- vs FlexAttention
flex_patterns = sorted({r["pattern"] for r in peers["rows"] if r["system"] == "flex"},
                       key=lambda p: (p.rstrip("0123456789"), int(p[len(p.rstrip("0123456789")):] or 0)))
if flex_patterns:
    print("### Against FlexAttention doing the same steps in PyTorch (end to end; Flex builds its block mask every call, the data decides it)")
    print()
    body = []
    for p in flex_patterns:
        for n in ns:
            f = peer.get(("flex", p, n))
            t = lac_ms(p, n)
            if f is None:
                continue
            if "error" in f:
                body.append([p, n, f3(t), f["error"], "-", "-", "-", "-", "Flex failed"])
                continue
            st = f.get("stages", {})
            body.append([p, n, f3(t), f3(f["ms"]), f3(st.get("prep")), f3(st.get("mask build")), f3(st.get("kernel")),
                         f3(st.get("scatter")), "%.1fx" % (f["ms"] / t) if t else "-"])
    table(["pattern", "N", "Lacuna ms", "Flex total ms", "Flex prep ms", "Flex mask build ms", "Flex kernel ms", "Flex scatter ms",
           "Lacuna vs Flex"], body)

if plot:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    for label, color in (("causal", "black"), ("hash8", "tab:red"), ("hash64", "tab:purple"), ("qkdrop50", "tab:orange"),
                         ("qkdrop80", "tab:brown"), ("moa50", "tab:green"), ("sparsek16", "tab:blue")):
        pts = [(n, flash(n) / lac_ms(label, n)) for n in ns if flash(n) and lac_ms(label, n)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=color, label="lacuna " + label, markersize=4)
    for p, color in (("hash8", "tab:red"), ("qkdrop50", "tab:orange")):
        pts = [(n, flash(n) / peer[("flex", p, n)]["ms"]) for n in ns
               if flash(n) and ("flex", p, n) in peer and "ms" in peer[("flex", p, n)]]
        if pts:
            ax.plot([q[0] for q in pts], [q[1] for q in pts], "--x", color=color, label="flex " + p + " (end to end)", markersize=5)
    for n, t in TARGETS.items():
        ax.plot([n], [t], "k*", markersize=12)
        ax.annotate("target %.1fx" % t, (n, t), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("speed-up over SDPA flash dense causal")
    ax.set_title("end to end, bf16, B=%d H=%d D=%d" % (lac["batch"], lac["heads"], lac["head_dim"]))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)

    for ax, xs, key, xlabel in ((axes[1], buckets, "hash%d", "hash buckets"), (axes[2], drops, "qkdrop%d", "% of queries and keys dropped")):
        for n in ns:
            pts = [(x, flash(n) / lac_ms(key % x, n)) for x in xs if flash(n) and lac_ms(key % x, n)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", label="N=%d" % n, markersize=4)
        ax.axhline(1.0, color="grey", lw=0.8)
        if key.startswith("hash"):
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("speed-up over SDPA flash dense causal")
        ax.set_title("SCFA %s (%s)" % ("hash" if key.startswith("hash") else "QK-drop", lac["device"]))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot, dpi=110)
