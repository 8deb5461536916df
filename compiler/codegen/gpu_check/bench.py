#!/usr/bin/env python3
"""Times plan variants (kernels_bench/index.json, written by `export_bench_variants`)."""
import json, os, sys
sys.argv = sys.argv[:1]
import run

idx = json.load(open(os.path.join(run.HERE, "kernels_bench", "index.json")))
for k in idx:
    mod = run.load_module(os.path.join(run.HERE, "kernels_bench", k["file"]))
    fwd = run.get_fn(mod, k["entry"])
    print(f"{k['file']:48s} regs={run.attr(fwd, 4)} local={run.attr(fwd, 3)}", end="  ", flush=True)
    for n in (1024, 4096, 16384):
        b = max(1, 16384 // n)
        run.bench(k, fwd, b, 16, n, iters=10)
