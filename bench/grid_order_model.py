#!/usr/bin/env python3
"""Tail of a launch under different grid orders: a model with no memory system.

CTAs go out in launch order (grid x fastest, as the hardware hands them out)
onto the first free slot of `slots` (SMs x CTAs per SM); a CTA costs its key
blocks plus a fixed per-CTA overhead. Prints how far each order's makespan is
over the ideal (total work / slots). Used for perf log v4.9, which also says
where the model is wrong: it ignores L2, and head-major orders keep a head's
K/V in L2 where query-major ones spread over every head.

    python3 bench/grid_order_model.py            # the v4.9 table
    python3 bench/grid_order_model.py --n 3277 --block-q 64 --slots 528
"""
import argparse
import heapq


def makespan(costs, slots):
    free = [0.0] * slots
    for c in costs:
        t = heapq.heappop(free)
        heapq.heappush(free, t + c)
    return max(free)


def causal_orders(n, block_q, block_k, heads, fixed):
    blocks = (n + block_q - 1) // block_q
    cost = lambda qb: (qb + 1) * block_q / block_k + fixed
    head_major = [cost(blocks - 1 - x) for _ in range(heads) for x in range(blocks)]
    heaviest_first = [cost(blocks - 1 - y) for y in range(blocks) for _ in range(heads)]
    return {"head-major": head_major, "heaviest first": heaviest_first}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="sequence length (repeatable)")
    ap.add_argument("--block-q", type=int, default=64)
    ap.add_argument("--block-k", type=int, default=64)
    ap.add_argument("--heads", type=int, default=64, help="B·H")
    ap.add_argument("--slots", type=int, default=528, help="SMs x CTAs per SM (H100/H200, 4 CTAs: 528)")
    ap.add_argument("--fixed", type=float, default=2.0, help="per-CTA cost, in key blocks")
    a = ap.parse_args()
    for n in a.n or [3277, 4096, 8192, 16384]:
        for name, costs in causal_orders(n, a.block_q, a.block_k, a.heads, a.fixed).items():
            ideal = sum(costs) / a.slots
            over = makespan(costs, a.slots) / ideal - 1
            print(f"N={n:6d} {name:15s} {100 * over:5.1f}% over ideal")


if __name__ == "__main__":
    main()
