"""Turns one GPU run's JSON (lacuna bench + bench/peers.py) into the tables
and the plot of docs/benchmarks.md.

usage: python3 bench/report.py LACUNA.json PEERS.json PLOT.png > tables.md
"""
import json, sys
from collections import defaultdict

lac = json.load(open(sys.argv[1]))
peers = json.load(open(sys.argv[2]))
plot = sys.argv[3] if len(sys.argv) > 3 else None

peer = {}
for r in peers["rows"]:
    if "ms" in r:
        peer[(r["system"], r["pattern"], r["D"], r["N"])] = r["ms"]
    else:
        peer[(r["system"], r["pattern"], r["D"], r["N"])] = None  # failed (e.g. out of memory)

flex_name = {"causal": "causal", "window1024": "window1024", "moa": "moa", "hash8": "hash8", "hash32": "hash32"}

print("Card: %s (lacuna) / %s (peers), one run. bf16 forward. ms = median." % (lac["device"], peers["device"]))
print()
print("| pattern | D | N | Lacuna ms (summaries + kernel) | visited | TFLOP/s on visited tiles | causal-eq TFLOP/s | SDPA flash causal ms | SDPA cuDNN causal ms | Flex kernel ms | Flex mask build ms | Lacuna vs Flex end to end |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in lac["rows"]:
    D, N, p = r["head_dim"], r["n"], r["pattern"]
    fl = flex_name.get(p)
    fk = peer.get(("flex", fl, D, N)) if fl else None
    fm = peer.get(("flex-mask", fl + " build", D, N)) if fl else None
    failed = fl and ("flex", fl, D, N) in peer and fk is None
    sf = peer.get(("sdpa-flash", "causal", D, N))
    sc = peer.get(("sdpa-cudnn", "causal", D, N))
    f = lambda x: "%.3f" % x if x is not None else "-"
    if fk is not None and fm is not None:
        vs = "%.1fx" % ((fk + fm) / r["ms"])
    elif failed:
        vs = "Flex out of memory"
    else:
        vs = "-"
    print("| %s | %d | %d | %.3f | %.1f%% | %.1f | %.1f | %s | %s | %s | %s | %s |" % (
        p, D, N, r["ms"], 100 * r["visited_fraction"], r["tflops_visited"], r["tflops_causal_equiv"],
        f(sf), f(sc), f(fk), f(fm), vs))

if plot:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, D in zip(axes, (64, 128)):
        series = defaultdict(list)
        for r in lac["rows"]:
            if r["head_dim"] == D:
                series["lacuna " + r["pattern"]].append((r["n"], r["tflops_causal_equiv"]))
        for r in peers["rows"]:
            if r["D"] == D and r.get("ms") and r["system"] != "flex-mask":
                series["%s %s" % (r["system"], r["pattern"])].append((r["N"], r["tflops_causal_equiv"]))
        colors = {"causal": "black", "window1024": "tab:blue", "moa": "tab:green", "hash8": "tab:red",
                  "hash32": "tab:purple", "qkdrop50": "tab:orange", "qkdrop80": "tab:brown"}
        styles = {"lacuna": "-o", "flex": "--x", "sdpa-flash": ":s", "sdpa-cudnn": "-.^"}
        for name, pts in sorted(series.items()):
            system, pattern = name.split(" ", 1)
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(system, "-"), color=colors.get(pattern, "grey"),
                    label=name, markersize=4, alpha=0.6 if system.startswith("sdpa") else 1.0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title("D=%d, bf16 forward (%s)" % (D, lac["device"]))
        ax.set_xlabel("sequence length N")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("causal-equivalent TFLOP/s (higher is faster)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(plot, dpi=110)
