"""Peers for `lacuna bench-methods`, in the same GPU session: PyTorch SDPA
(flash backend: the baseline of the issue's 2.0x / 3.3x targets; cuDNN for
reference) on dense causal attention, and FlexAttention doing the same SCFA
computations end to end where it can run:

- hash<b>: LSH buckets in torch (x @ R, argmax over concat(xR, -xR)), stable
  sort by bucket per (b, h), gather of Q/K/V, create_block_mask with a
  per-(b, h) mask_mod (same bucket and q_pos >= k_pos), the flex kernel, and
  the scatter of O back to original order.
- qkdrop<p>: random keep masks (p% of queries and of keys dropped,
  independently per (b, h, token)), stable compaction in torch (padded to the
  busiest (b, h); padding queries at -1, padding keys at a huge position),
  gather, create_block_mask (q_pos >= k_pos), flex, scatter.

Each Flex row gives the total (every step, median) and the stages timed alone
(prep = hashing/sorting or compaction + gather, mask build, flex kernel,
scatter); a failure (typically OUT OF MEMORY in create_block_mask, which
materialises B*H*N*N) is caught and recorded. Shapes as `lacuna bench-methods`:
bf16, B=4, H=16, D=64.

Timing, the same as the Lacuna side: CUDA events around each call, 3 warm-up
calls, then at least 10 timed calls (more, up to 100, while under ~0.3 s),
median; no L2 flush between calls.

usage: python3 bench/peers_methods.py [--ns 4096,8192,16384,32768] [--no-flex] --out peers_methods.json
       python3 bench/peers_methods.py --check-run .gpu/lacuna OUTDIR
         (checks `lacuna run hash-bucket` / `qk-drop` pipelines, raw Q/K/V in,
          against a float64 reference; exit 1 on a mismatch)
"""
import argparse, json, os, subprocess, sys, time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--ns", default="4096,8192,16384,32768")
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--heads", type=int, default=16)
ap.add_argument("--d", type=int, default=64)
ap.add_argument("--buckets", default="2,4,8,16,32,64")
ap.add_argument("--drops", default="20,50,80", help="percent of queries and keys dropped")
ap.add_argument("--no-flex", action="store_true")
ap.add_argument("--min-reps", type=int, default=10)
ap.add_argument("--out", default="")
ap.add_argument("--check-run", nargs=2, metavar=("LACUNA", "OUTDIR"), help="check the `lacuna run` pipelines and exit")
args = ap.parse_args()

import torch  # noqa: E402  (after argparse so --help works without a GPU)
import torch.nn.functional as F  # noqa: E402


# ----------------------------------------------------------------- check-run
def splitmix_projection(seed, d, buckets):
    """runtime::ops::cpu::projection_from_seed, bit for bit (splitmix64 + Box-Muller)."""
    mask = (1 << 64) - 1
    state = seed
    def nxt():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)
    n = d * (buckets // 2)
    out = []
    while len(out) < n:
        u1 = ((nxt() >> 11) + 1.0) / float(1 << 53)
        u2 = (nxt() >> 11) / float(1 << 53)
        r = np.sqrt(-2.0 * np.log(u1))
        t = 2.0 * np.pi * u2
        out += [np.float32(r * np.cos(t)), np.float32(r * np.sin(t))]
    return np.array(out[:n], dtype=np.float32).reshape(d, buckets // 2)


def lsh(x, r):
    """argmax(concat(xR, -xR)), ties to the lower index; also the top-2 margin."""
    p = x.astype(np.float64) @ r.astype(np.float64)
    s = np.concatenate([p, -p], axis=-1)
    srt = np.sort(s, axis=-1)
    return s.argmax(-1), srt[..., -1] - srt[..., -2]


def reference(q, k, v, mask):
    """float64 attention; mask (B, H, Nq, Nk) bool; k, v already per query head."""
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1])
    s = np.where(mask, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    has = np.isfinite(mx)
    e = np.where(mask, np.exp(s - np.where(has, mx, 0)), 0.0)
    l = e.sum(-1, keepdims=True)
    o = np.where(has, e @ v / np.where(l > 0, l, 1), 0.0)
    lse = np.where(has[..., 0], np.log(np.where(l > 0, l, 1))[..., 0] + np.where(has, mx, 0)[..., 0], -np.inf)
    return o, lse


def check_run(lacuna, out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1)
    B, H, HKV, N, D = 2, 4, 2, 200, 64
    g = H // HKV
    bf = lambda x: torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    q = rng.standard_normal((B, H, N, D), dtype=np.float32)
    k = rng.standard_normal((B, HKV, N, D), dtype=np.float32)
    v = rng.standard_normal((B, HKV, N, D), dtype=np.float32)
    paths = {}
    for name, x in (("q", q), ("k", k), ("v", v)):
        paths[name] = os.path.join(out, name + ".npy")
        np.save(paths[name], x)
    qr, kr, vr = bf(q), bf(k), bf(v)
    kh, vh = np.repeat(kr, g, axis=1), np.repeat(vr, g, axis=1)
    i = np.arange(N)[:, None]
    j = np.arange(N)[None, :]
    ok = True

    def run(pattern, extra, mask, what):
        nonlocal ok
        o_path, l_path = os.path.join(out, "o.npy"), os.path.join(out, "lse.npy")
        cmd = [lacuna, "run", pattern, "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--out", o_path, "--lse", l_path] + extra
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(pattern, " ".join(extra), "->", r.returncode, r.stdout.strip(), r.stderr.strip(), flush=True)
        if r.returncode != 0:
            ok = False
            return
        o, lse = np.load(o_path), np.load(l_path)
        o_ref, lse_ref = reference(qr.astype(np.float64), kh.astype(np.float64), vh.astype(np.float64), mask)
        masked = ~np.isfinite(lse_ref)
        rel = np.linalg.norm((o - o_ref)[~masked]) / max(np.linalg.norm(o_ref[~masked]), 1e-30)
        lse_err = np.abs(lse[~masked] - lse_ref[~masked]).max() if (~masked).any() else 0.0
        masked_ok = bool(np.all(o[masked] == 0) and np.all(np.isneginf(lse[masked])))
        good = o.shape == q.shape and rel < 1e-2 and lse_err < 2e-2 and masked_ok
        print("  %s: rel err %.2e, lse err %.2e, masked rows %d (%s) -> %s" % (
            what, rel, lse_err, int(masked.sum()), "ok" if masked_ok else "WRONG", "ok" if good else "FAIL"), flush=True)
        ok &= bool(good)

    for nb, seed, strict, shared in ((8, 5, False, False), (4, 0, True, False), (16, 9, False, True)):
        r = splitmix_projection(seed, D, nb)
        qb, qm = lsh(qr, r)
        kb, km = lsh(kr, r)
        near = int((qm < 1e-4).sum() + (km < 1e-4).sum())
        kb_h = qb if shared else np.repeat(kb, g, axis=1)
        causal = (i > j) if strict else (i >= j)
        mask = (qb[..., :, None] == kb_h[..., None, :]) & causal
        extra = ["--param", "buckets=%d" % nb, "--param", "seed=%d" % seed]
        if strict:
            extra += ["--param", "strict=1"]
        if shared:
            extra += ["--param", "shared_qk=1"]
        run("hash-bucket", extra, mask, "hash %d buckets%s%s (near-ties: %d)" % (nb, " strict" if strict else "", " shared-QK" if shared else "", near))

    qk = rng.random((B, H, N)) >= 0.5
    kk = rng.random((B, HKV, N)) >= 0.3
    np.save(os.path.join(out, "q_keep.npy"), qk.astype(np.uint8))
    np.save(os.path.join(out, "k_keep.npy"), kk.astype(np.int32))
    mask = qk[..., :, None] & np.repeat(kk, g, axis=1)[..., None, :] & (i >= j)
    run("qk-drop", ["--input", "q_keep=" + os.path.join(out, "q_keep.npy"), "--input", "k_keep=" + os.path.join(out, "k_keep.npy")],
        mask, "qk-drop (u8 q_keep, i32 k_keep per kv head)")
    np.save(os.path.join(out, "q_keep_b.npy"), qk)
    np.save(os.path.join(out, "k_keep_b.npy"), np.repeat(kk, g, axis=1))
    run("qk-drop", ["--input", "q_keep=" + os.path.join(out, "q_keep_b.npy"), "--input", "k_keep=" + os.path.join(out, "k_keep_b.npy")],
        mask, "qk-drop (bool masks, per query head)")
    return ok


if args.check_run:
    sys.exit(0 if check_run(*args.check_run) else 1)

# ------------------------------------------------------------------- timing
import torch._dynamo  # noqa: E402
from torch.nn.attention import sdpa_kernel, SDPBackend  # noqa: E402

dev = "cuda"
torch.manual_seed(0)
torch._dynamo.config.cache_size_limit = 256
print(torch.__version__, torch.cuda.get_device_name(), flush=True)
rows = []


def bench(fn, warmup=3, budget_ms=300.0, max_reps=100):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    while len(times) < args.min_reps or (sum(times) < budget_ms and len(times) < max_reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times)), len(times)


def is_oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def save():
    """Rewrites the JSON after every row, so a run cut short keeps what it measured."""
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, B=args.batch, H=args.heads, D=args.d,
                           rows=rows), f, indent=1)


def record_failure(system, pattern, B, H, D, N, e):
    err = "OUT OF MEMORY" if is_oom(e) else type(e).__name__ + ": " + str(e)[:200]
    rows.append(dict(system=system, pattern=pattern, B=B, H=H, D=D, N=N, error=err))
    print("%-11s %-10s N=%-6d FAILED: %s" % (system, pattern, N, err), flush=True)
    save()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def row(system, pattern, B, H, D, N, ms, reps, stages=None, **info):
    r = dict(system=system, pattern=pattern, B=B, H=H, D=D, N=N, ms=ms, reps=reps)
    if stages:
        r["stages"] = stages
    r.update(info)
    rows.append(r)
    st = ", ".join("%s %.3f" % kv for kv in (stages or {}).items())
    print("%-11s %-10s N=%-6d %9.3f ms  %s" % (system, pattern, N, ms, st), flush=True)
    save()


def gather_rows(x, idx):
    return torch.gather(x, 2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))


def time_flex(pattern, B, H, D, N, prep, build, scatter, **extra):
    """Times one method through FlexAttention end to end (prep: hash or
    compact and gather; build: its block mask; the kernel; scatter back),
    then each stage alone, and records the row with the mask's sparsity."""
    def total():
        qs, ks, vs = prep()
        return scatter(flex(qs, ks, vs, block_mask=build()))

    t0 = time.perf_counter(); total(); torch.cuda.synchronize(); first = time.perf_counter() - t0
    ms, reps = bench(total)
    qs, ks, vs = prep()
    bm = build()
    os_ = flex(qs, ks, vs, block_mask=bm)
    stages = {"prep": bench(prep)[0], "mask build": bench(build)[0],
              "kernel": bench(lambda: flex(qs, ks, vs, block_mask=bm))[0], "scatter": bench(lambda: scatter(os_))[0]}
    row("flex", pattern, B, H, D, N, ms, reps, stages, first_call_s=first, sparsity=float(bm.sparsity()), **extra)


if not args.no_flex:
    from torch.nn.attention.flex_attention import flex_attention, create_block_mask  # noqa: E402
    flex = torch.compile(flex_attention, dynamic=False)

B, H, D = args.batch, args.heads, args.d
for N in [int(x) for x in args.ns.split(",")]:
    q, k, v = [torch.randn(B, H, N, D, device=dev, dtype=torch.bfloat16) for _ in range(3)]
    for name, be in (("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel(be):
                ms, reps = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            row(name, "causal", B, H, D, N, ms, reps)
        except Exception as e:
            record_failure(name, "causal", B, H, D, N, e)
    if args.no_flex:
        del q, k, v
        continue

    # ---- SCFA hash through FlexAttention
    for nb in [int(x) for x in args.buckets.split(",")]:
        pattern = "hash%d" % nb
        try:
            gen = torch.Generator(device=dev).manual_seed(7)
            R = torch.randn(D, nb // 2, device=dev, generator=gen)
            # Fixed buffers the mask_mod reads, so that it (and the compiled
            # kernel) stay the same objects from call to call.
            qb_s = torch.empty(B, H, N, dtype=torch.int64, device=dev)
            kb_s = torch.empty_like(qb_s)
            qp = torch.empty_like(qb_s)
            kp = torch.empty_like(qb_s)

            def mask_mod(b, h, i, j):
                return (qb_s[b, h, i] == kb_s[b, h, j]) & (qp[b, h, i] >= kp[b, h, j])

            def prep():
                xq = q.float() @ R
                xk = k.float() @ R
                bq = torch.cat([xq, -xq], -1).argmax(-1)
                bk = torch.cat([xk, -xk], -1).argmax(-1)
                sq, pq = torch.sort(bq, dim=-1, stable=True)
                sk, pk = torch.sort(bk, dim=-1, stable=True)
                qb_s.copy_(sq); kb_s.copy_(sk); qp.copy_(pq); kp.copy_(pk)
                return gather_rows(q, pq), gather_rows(k, pk), gather_rows(v, pk)

            def build():
                return create_block_mask(mask_mod, B, H, N, N, device=dev)

            def scatter(os_):
                out = torch.empty_like(os_)
                out.scatter_(2, qp[..., None].expand(-1, -1, -1, D), os_)
                return out

            time_flex(pattern, B, H, D, N, prep, build, scatter)
        except Exception as e:
            record_failure("flex", pattern, B, H, D, N, e)
        finally:
            qb_s = kb_s = qp = kp = None
            torch.cuda.empty_cache()

    # ---- SCFA QK-drop through FlexAttention
    for pct in [int(x) for x in args.drops.split(",")]:
        pattern = "qkdrop%d" % pct
        try:
            gen = torch.Generator(device=dev).manual_seed(pct)
            q_keep = torch.rand(B, H, N, device=dev, generator=gen) >= pct / 100.0
            k_keep = torch.rand(B, H, N, device=dev, generator=gen) >= pct / 100.0
            MQ = max(int(q_keep.sum(-1).max()), 1)
            MK = max(int(k_keep.sum(-1).max()), 1)
            qpos = torch.empty(B, H, MQ, dtype=torch.int64, device=dev)
            kpos = torch.empty(B, H, MK, dtype=torch.int64, device=dev)
            qidx = torch.empty_like(qpos)

            def mask_mod(b, h, i, j):
                return qpos[b, h, i] >= kpos[b, h, j]

            def compact(keep, pad):
                cnt = keep.sum(-1)
                m = max(int(cnt.max()), 1)  # host sync, as in Lacuna's pipeline
                order = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices[..., :m]
                valid = torch.arange(m, device=dev) < cnt[..., None]
                return torch.where(valid, order, pad), order, valid

            def prep():
                qp_, qo, qv = compact(q_keep, -1)
                kp_, ko, _ = compact(k_keep, 2**40)
                qpos.copy_(qp_); kpos.copy_(kp_)
                qidx.copy_(torch.where(qv, qo, N))
                return gather_rows(q, qo), gather_rows(k, ko), gather_rows(v, ko)

            def build():
                return create_block_mask(mask_mod, B, H, MQ, MK, device=dev)

            def scatter(os_):
                out = torch.zeros(B, H, N + 1, D, device=dev, dtype=os_.dtype)
                out.scatter_(2, qidx[..., None].expand(-1, -1, -1, D), os_)
                return out[:, :, :N]

            time_flex(pattern, B, H, D, N, prep, build, scatter, padded_q=MQ, padded_k=MK)
        except Exception as e:
            record_failure("flex", pattern, B, H, D, N, e)
        finally:
            qpos = kpos = qidx = None
            torch.cuda.empty_cache()
    del q, k, v
    torch.cuda.empty_cache()

save()
if args.out:
    print("wrote", args.out, flush=True)
