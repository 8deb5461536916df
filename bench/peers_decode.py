"""Decoding peers, side by side with `lacuna bench --q-len 1`: one query row
per (b, h) over N cached keys. PyTorch SDPA (flash, cuDNN, efficient) with
no mask (the last token sees every key: Lacuna's causal-decode), and
FlexAttention on causal-decode and MoA-decode block masks (the same per-head
spans as `lacuna bench`: alpha_h + beta_h*N, 64 sinks), its mask build
timed as a separate row.

Each row: median ms (triton.testing.do_bench, which clears L2 first, as
`lacuna bench` does with its 256 MB fill).

usage: python3 bench/peers_decode.py --ns 4096,16384,32768 --ds 64,128 --out peers_decode.json
"""
import argparse, json, time
import torch, triton, torch._dynamo
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from torch.nn.attention.flex_attention import flex_attention, create_block_mask

ap = argparse.ArgumentParser()
ap.add_argument("--ns", default="4096,16384,32768")
ap.add_argument("--ds", default="64,128")
ap.add_argument("--q-len", type=int, default=1)
ap.add_argument("--batch", type=int, default=0, help="0: 4 for D=64, 2 for D=128 (as lacuna bench)")
ap.add_argument("--heads", type=int, default=16)
ap.add_argument("--out", default="")
args = ap.parse_args()

torch.manual_seed(0)
dev = "cuda"
rows = []
print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
torch._dynamo.config.cache_size_limit = 64


def ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def row(system, pattern, B, H, D, N, t):
    rows.append(dict(system=system, pattern=pattern, B=B, H=H, D=D, N=N, q_len=args.q_len, ms=t))
    print("%-12s %-18s D=%-3d N=%-6d %9.4f ms" % (system, pattern, D, N, t), flush=True)


QL = args.q_len
for D in [int(x) for x in args.ds.split(",")]:
    for N in [int(x) for x in args.ns.split(",")]:
        B = args.batch or (4 if D == 64 else 2)
        H = args.heads
        q = torch.randn(B, H, QL, D, device=dev, dtype=torch.bfloat16)
        k, v = [torch.randn(B, H, N, D, device=dev, dtype=torch.bfloat16) for _ in range(2)]
        past = N - QL
        if QL == 1:
            for name, be in (("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION)):
                try:
                    with sdpa_kernel(be):
                        row(name, "decode", B, H, D, N, ms(lambda: F.scaled_dot_product_attention(q, k, v)))
                except Exception as e:
                    print(name, "FAILED:", type(e).__name__, str(e)[:100], flush=True)
        torch._dynamo.reset()
        flex = torch.compile(flex_attention, dynamic=False)
        spans = torch.tensor([128 * (1 + h % 4) + int([0.0, 0.125, 0.25, 0.5][h % 4] * N) for h in range(H)], device=dev)
        for pat, mask_mod, Hm in (
            ("decode", lambda b, h, i, j: j <= i + past, None),
            ("moa-decode", lambda b, h, i, j: (j <= i + past) & ((i + past - j < spans[h]) | (j < 64)), H),
        ):
            try:
                t0 = time.perf_counter(); bm = create_block_mask(mask_mod, None, Hm, QL, N, device=dev); torch.cuda.synchronize()
                t1 = time.perf_counter(); flex(q, k, v, block_mask=bm); torch.cuda.synchronize(); t2 = time.perf_counter()
                row("flex", pat, B, H, D, N, ms(lambda: flex(q, k, v, block_mask=bm)))
                row("flex-mask", pat + " build", B, H, D, N, ms(lambda: create_block_mask(mask_mod, None, Hm, QL, N, device=dev)))
                print("   first call: block mask %.2f s, compile+run %.2f s" % (t1 - t0, t2 - t1), flush=True)
            except Exception as e:
                rows.append(dict(system="flex", pattern=pat, B=B, H=H, D=D, N=N, q_len=QL, error=type(e).__name__ + ": " + str(e)[:160]))
                print("flex", pat, D, N, "FAILED:", type(e).__name__, str(e)[:120], flush=True)
                torch.cuda.empty_cache()

if args.out:
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), open(args.out, "w"), indent=1)
