"""Peers on the GPU, side by side with `lacuna bench`: PyTorch SDPA (flash,
cuDNN) and FlexAttention on the same masks. Adapted from the workplace's
shared/bench/peers.py (which produced docs/anchors there); this copy travels
with the repository to the GPU machine and writes JSON.

Each row: median ms (triton.testing.do_bench) and causal-equivalent TFLOP/s
(4*B*H*N*N*D/2 / t). FlexAttention's block-mask build time is a separate row.

usage: python3 bench/peers.py --ns 4096,8192,16384 --ds 64,128 --out peers.json
"""
import argparse, json, time
import torch, triton, torch._dynamo
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from torch.nn.attention.flex_attention import flex_attention, create_block_mask

ap = argparse.ArgumentParser()
ap.add_argument("--ns", default="4096,8192,16384")
ap.add_argument("--ds", default="64,128")
ap.add_argument("--batch", type=int, default=0, help="0: 4 for D=64, 2 for D=128")
ap.add_argument("--heads", type=int, default=16)
ap.add_argument("--no-flex", action="store_true")
ap.add_argument("--out", default="")
args = ap.parse_args()

torch.manual_seed(0)
dev = "cuda"
rows = []
print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
torch._dynamo.config.cache_size_limit = 64


def ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def row(system, pattern, B, H, D, N, t, flops):
    tf = flops / t / 1e9 if flops else 0.0
    rows.append(dict(system=system, pattern=pattern, B=B, H=H, D=D, N=N, ms=t, tflops_causal_equiv=tf))
    print("%-11s %-22s D=%-3d N=%-5d %9.3f ms %8.1f TFLOP/s" % (system, pattern, D, N, t, tf), flush=True)


for D in [int(x) for x in args.ds.split(",")]:
    for N in [int(x) for x in args.ns.split(",")]:
        B = args.batch or (4 if D == 64 else 2)
        H = args.heads
        q, k, v = [torch.randn(B, H, N, D, device=dev, dtype=torch.bfloat16) for _ in range(3)]
        cf = 4 * B * H * N * N * D / 2
        for name, be in (("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel(be):
                    row(name, "causal", B, H, D, N, ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)), cf)
            except Exception as e:
                print(name, "FAILED:", type(e).__name__, str(e)[:100], flush=True)
        if args.no_flex:
            continue
        torch._dynamo.reset()
        flex = torch.compile(flex_attention, dynamic=False)

        def run(pat, mask_mod, Bm=None, Hm=None):
            try:
                t0 = time.perf_counter(); bm = create_block_mask(mask_mod, Bm, Hm, N, N, device=dev); torch.cuda.synchronize()
                t1 = time.perf_counter(); flex(q, k, v, block_mask=bm); torch.cuda.synchronize(); t2 = time.perf_counter()
                row("flex", pat, B, H, D, N, ms(lambda: flex(q, k, v, block_mask=bm)), cf)
                row("flex-mask", pat + " build", B, H, D, N, ms(lambda: create_block_mask(mask_mod, Bm, Hm, N, N, device=dev)), 0)
                print("   first call: block mask %.2f s, compile+run %.2f s, sparsity %.1f%%" % (t1 - t0, t2 - t1, bm.sparsity()), flush=True)
            except Exception as e:
                rows.append(dict(system="flex", pattern=pat, B=B, H=H, D=D, N=N, error=type(e).__name__ + ": " + str(e)[:160]))
                print("flex", pat, D, N, "FAILED:", type(e).__name__, str(e)[:120], flush=True)
                torch.cuda.empty_cache()

        run("causal", lambda b, h, i, j: i >= j)
        W = 1024
        run("window1024", lambda b, h, i, j: (i >= j) & (i - j < W))
        # MoA-like: the same per-head spans as `lacuna bench` (alpha_h + beta_h*N, 64 sinks).
        spans = torch.tensor([128 * (1 + h % 4) + int([0.0, 0.125, 0.25, 0.5][h % 4] * N) for h in range(H)], device=dev)
        run("moa", lambda b, h, i, j: (i >= j) & ((i - j < spans[h]) | (j < 64)), None, H)
        for nb in (8, 32):
            buckets = torch.randint(0, nb, (B, H, N), device=dev)
            key = buckets * N + torch.arange(N, device=dev)
            order = torch.argsort(key, dim=-1)
            sb = torch.gather(buckets, -1, order).contiguous(); pos = order.contiguous()
            run("hash%d" % nb, lambda b, h, i, j: (sb[b, h, i] == sb[b, h, j]) & (pos[b, h, i] >= pos[b, h, j]), B, H)
        del q, k, v

if args.out:
    with open(args.out, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)
