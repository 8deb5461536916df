"""Where a kernel spends its warps' time, by region: groups the per-SASS-
instruction rows of an ncu source export into runs of equal execution count
(a run is a straight stretch of code: the prologue, one loop body, a rare
branch) and prints each run's share of the stall samples, its first
instruction and its commonest opcodes. How the perf log's "where hash-32
spends its time" was made.

usage: python3 bench/ncu_regions.py SOURCE.csv [MIN_PERCENT]
  SOURCE.csv: `ncu -i REPORT --page source --csv --print-source sass`
  (`bash bench/gpu.sh profile` writes it); MIN_PERCENT: hide runs below it
  in both samples and instructions (0.5).
Execution counts are read per warp: the entry instruction runs once in every
warp launched, so "per warp" divides by its count (a prologue or epilogue
run shows 1.00, the loop body the key blocks per CTA). Each run also shows
its share of all instructions executed; where every kernel issues at the
same rate (perf log "Where the per-visited misses come from") time follows
instructions, and that column is the budget to cut.
"""
import csv
import sys
from collections import Counter

rows = list(csv.reader(open(sys.argv[1])))[1:]  # line 0 names the kernel
header, rows = rows[0], rows[1:]
samples_col = header.index("Warp Stall Sampling (All Samples)")
exec_col = header.index("Instructions Executed")
source_col = header.index("Source")
min_percent = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5

total = sum(int(r[samples_col]) for r in rows) or 1
executed = sum(int(r[exec_col]) for r in rows) or 1
warps = max(int(rows[0][exec_col]), 1) if rows else 1  # the entry instruction: once per warp
runs = []
for i, r in enumerate(rows):
    count, samples, text = int(r[exec_col]), int(r[samples_col]), r[source_col].strip()
    opcode = text.split()[0].split(".")[0] if text else ""
    if runs and runs[-1]["count"] == count:
        run = runs[-1]
        run["samples"] += samples
        run["opcodes"][opcode] += 1
        run["length"] += 1
    else:
        runs.append({"start": i, "count": count, "samples": samples, "first": text, "opcodes": Counter([opcode]), "length": 1})

print(f"{len(rows)} instructions in the code, {executed / warps:.0f} executed per warp over {warps} warps, {total} stall samples")
print(f"{'at':>6} {'instrs':>6} {'per warp':>9} {'executed':>9} {'samples':>8}  first instruction / commonest opcodes")
for run in runs:
    share = 100 * run["samples"] / total
    instr_share = 100 * run["count"] * run["length"] / executed
    if share >= min_percent or instr_share >= min_percent:
        common = ", ".join(f"{op} {n}" for op, n in run["opcodes"].most_common(5))
        print(f"{run['start']:>6} {run['length']:>6} {run['count'] / warps:>9.2f} {instr_share:>8.1f}% {share:>7.1f}%  {run['first'][:40]:<40} {common}")
