#!/usr/bin/env python3
"""GPU check of generated kernels against a float64 numpy reference.

Generate the bundle first (on the build machine):
    cargo test -p lacuna-codegen --test export_gpu_bundle -- --ignored
then, on a GPU machine with numpy:  python3 compiler/codegen/gpu_check/run.py [FILTER...]

Loads every PTX listed in kernels/index.json through the CUDA driver API
(ctypes; no cupy/torch needed), runs block_minmax for the tensor summaries
(checked against numpy), runs the forward kernel on ragged shapes with GQA,
strided Q/O and poisoned outputs, and compares O and lse with a float64
reference whose mask was written by the IR's own element semantics. Prints
one line per (kernel, case) and a summary; `BENCH=0` skips the timings.
"""
import ctypes, json, os, sys, time, math
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
cuda = ctypes.CDLL("libcuda.so.1")
c = ctypes


def check(r, what):
    if r != 0:
        s = c.c_char_p()
        cuda.cuGetErrorName(r, c.byref(s))
        raise RuntimeError(f"{what}: {s.value.decode() if s.value else r}")


check(cuda.cuInit(0), "cuInit")
dev = c.c_int()
check(cuda.cuDeviceGet(c.byref(dev), 0), "cuDeviceGet")
ctx = c.c_void_p()
check(cuda.cuDevicePrimaryCtxRetain(c.byref(ctx), dev), "retain")
check(cuda.cuCtxSetCurrent(ctx), "setcurrent")
name = c.create_string_buffer(256)
cuda.cuDeviceGetName(name, 256, dev)
print("device:", name.value.decode(), flush=True)


class Buf:
    def __init__(self, arr):
        self.arr = np.ascontiguousarray(arr)
        self.ptr = c.c_uint64()
        n = max(self.arr.nbytes, 4)
        check(cuda.cuMemAlloc_v2(c.byref(self.ptr), c.c_size_t(n)), "alloc")
        check(cuda.cuMemcpyHtoD_v2(self.ptr, self.arr.ctypes.data_as(c.c_void_p), c.c_size_t(self.arr.nbytes)), "htod")

    def get(self):
        out = np.empty_like(self.arr)
        check(cuda.cuMemcpyDtoH_v2(out.ctypes.data_as(c.c_void_p), self.ptr, c.c_size_t(out.nbytes)), "dtoh")
        return out

    def free(self):
        cuda.cuMemFree_v2(self.ptr)


def load_module(path):
    data = open(path, "rb").read() + b"\0"
    mod = c.c_void_p()
    logsz = 1 << 16
    errlog = c.create_string_buffer(logsz)
    opts = (c.c_int * 2)(5, 6)  # CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
    vals = (c.c_void_p * 2)(c.cast(errlog, c.c_void_p), c.c_void_p(logsz))
    r = cuda.cuModuleLoadDataEx(c.byref(mod), data, 2, opts, vals)
    if r != 0:
        raise RuntimeError(f"module load failed ({r}): {errlog.value.decode(errors='replace')}")
    return mod


def get_fn(mod, entry):
    fn = c.c_void_p()
    check(cuda.cuModuleGetFunction(c.byref(fn), mod, entry.encode()), "getfn " + entry)
    return fn


def launch(fn, grid, block, shared, args, sync=True):
    holders = []
    for kind, v in args:
        if kind == "p":
            holders.append(c.c_uint64(v.ptr.value if isinstance(v, Buf) else v))
        elif kind == "i64":
            holders.append(c.c_int64(int(v)))
        elif kind == "i32":
            holders.append(c.c_int32(int(v)))
        elif kind == "f32":
            holders.append(c.c_float(float(v)))
        else:
            raise ValueError(kind)
    params = (c.c_void_p * len(holders))(*[c.cast(c.pointer(h), c.c_void_p) for h in holders])
    if shared > 48 * 1024:
        check(cuda.cuFuncSetAttribute(fn, 8, shared), "set smem")
    check(cuda.cuLaunchKernel(fn, grid[0], grid[1], grid[2], block, 1, 1, shared, None, params, None), "launch")
    if sync:
        check(cuda.cuCtxSynchronize(), "sync")


def attr(fn, a):
    v = c.c_int()
    cuda.cuFuncGetAttribute(c.byref(v), a, fn)
    return v.value


# ---- dtype helpers ----
def to_bf16_bits(x):
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def quant(x, dtype):
    if dtype == "bf16":
        bits = to_bf16_bits(x)
        return bits, from_bf16_bits(bits).astype(np.float64)
    h = np.asarray(x, np.float32).astype(np.float16)
    return h.view(np.uint16), h.astype(np.float64)


def dequant(bits, dtype):
    if dtype == "bf16":
        return from_bf16_bits(bits).astype(np.float64)
    return bits.view(np.float16).astype(np.float64)


# ---- test cases: inputs and masks written by tests/export_gpu_bundle.rs ----
def load_case(case):
    meta = json.load(open(os.path.join(HERE, "kernels", case + ".json")))
    B, H, Nq, Nk = meta["batch"], meta["heads"], meta["q_len"], meta["kv_len"]
    bits = np.unpackbits(np.fromfile(os.path.join(HERE, "kernels", case + ".mask"), np.uint8))
    mask = bits[: B * H * Nq * Nk].reshape(B, H, Nq, Nk).astype(bool)
    return meta, mask


def reference(q, k, v, mask_fn, scale, B, H, KVH):
    Nq, Nk = q.shape[2], k.shape[2]
    O = np.zeros(q.shape, np.float64)
    L = np.full((B, H, Nq), -np.inf)
    g = H // KVH
    for b in range(B):
        for h in range(H):
            s = q[b, h] @ k[b, h // g].T * scale
            m = mask_fn(b, h)
            s = np.where(m, s, -np.inf)
            mx = s.max(axis=1)
            ok = np.isfinite(mx)
            mx = np.where(ok, mx, 0)
            p = np.exp(s - mx[:, None])
            l = p.sum(axis=1)
            O[b, h] = np.where(ok[:, None], (p @ v[b, h // g]) / np.where(l > 0, l, 1)[:, None], 0)
            L[b, h] = np.where(ok, mx + np.log(np.where(l > 0, l, 1)), -np.inf)
    return O, L


def run_case(kern, mod, fwd, summ, case, results):
    meta, mask = load_case(case)
    B, H, KVH, Nq, Nk = meta["batch"], meta["heads"], meta["kv_heads"], meta["q_len"], meta["kv_len"]
    rng = np.random.default_rng(meta["seed"])
    D, dt = kern["head_dim"], kern["dtype"]
    BQ, BK = kern["block_q"], kern["block_k"]
    mask_fn = lambda b, h: mask[b, h]
    vals = {}
    for nm, v in meta["inputs"].items():
        if "scalar" in v:
            vals[nm] = v["scalar"]
        else:
            isf = any(isinstance(x, float) for x in v["data"])
            vals[nm] = np.array(v["data"], np.float32 if isf else np.int32).reshape(v["shape"])
    # Q and O laid out (B, N, H, D): strides exercise the ABI. K, V are (B, KVH, N, D).
    qf = rng.standard_normal((B, Nq, H, D)).astype(np.float32)
    kf = rng.standard_normal((B, KVH, Nk, D)).astype(np.float32)
    vf = rng.standard_normal((B, KVH, Nk, D)).astype(np.float32)
    qb, q64 = quant(qf, dt)
    kb, k64 = quant(kf, dt)
    vb, v64 = quant(vf, dt)
    scale = 1.0 / math.sqrt(D)
    guard = 4096
    bufs = []
    Q = Buf(qb); K = Buf(kb); V = Buf(vb)
    Obits = np.full(B * Nq * H * D + guard, 0xFFFF, np.uint16)  # NaN poison, plus a guard tail
    O = Buf(Obits)
    LSE = Buf(np.full(B * H * Nq + guard, np.nan, np.float32))
    bufs += [Q, K, V, O, LSE]
    args = [("p", Q), ("p", K), ("p", V), ("p", O), ("p", LSE)]
    qs = (Nq * H * D, D, H * D)
    ks = (KVH * Nk * D, Nk * D, D)
    args += [("i64", x) for x in qs + ks + ks + qs]
    args += [("i32", B), ("i32", H), ("i32", KVH), ("i32", Nq), ("i32", Nk), ("f32", scale * math.log2(math.e))]
    for inp in kern["inputs"]:
        spec, nm = inp["spec"], inp["name"]
        if spec["kind"] in ("q", "k"):
            arr = vals[nm].astype(np.int32)
            T = Buf(arr)
            blk = BQ if spec["kind"] == "q" else BK
            N = arr.shape[2]
            nb = -(-N // blk)
            S = Buf(np.full(B * H * nb * 2, 0x7777, np.int32))
            launch(summ, (nb, B * H, 1), 128, 0, [("p", T), ("p", S), ("i32", B * H), ("i32", N), ("i32", blk)])
            got = S.get().reshape(B, H, nb, 2)
            pad = np.pad(arr, ((0, 0), (0, 0), (0, nb * blk - N)), constant_values=0).reshape(B, H, nb, blk)
            valid = (np.arange(nb * blk) < N).reshape(nb, blk)
            mn = np.where(valid, pad, np.iinfo(np.int32).max).min(axis=3)
            mx = np.where(valid, pad, np.iinfo(np.int32).min).max(axis=3)
            if not (np.array_equal(got[..., 0], mn) and np.array_equal(got[..., 1], mx)):
                results.append(("FAIL", f"{kern['file']}: block_minmax mismatch for {nm}"))
            bufs += [T, S]
            args += [("p", T), ("p", S)]
        elif spec["kind"] == "head":
            arr = vals[nm]
            T = Buf(np.asarray(arr).astype(np.float32 if spec["ty"] == "f32" else np.int32))
            bufs.append(T)
            args.append(("p", T))
        elif spec["kind"] == "launch":
            args.append(("f32" if spec["ty"] == "f32" else "i32", vals[nm]))
        elif spec["kind"] == "list":
            T = Buf(vals[nm])
            bufs.append(T)
            args += [("p", T), ("i32", vals[nm].shape[3])]
    grid = (-(-Nq // BQ), H, B)
    launch(fwd, grid, kern["threads"], kern["shared"], args)
    ob = O.get()
    lse = LSE.get()
    for bb in bufs:
        bb.free()
    tail_ok = np.all(ob[B * Nq * H * D:] == 0xFFFF) and np.all(np.isnan(lse[B * H * Nq:]))
    out = dequant(ob[: B * Nq * H * D].reshape(B, Nq, H, D), dt).transpose(0, 2, 1, 3)
    lse = lse[: B * H * Nq].reshape(B, H, Nq).astype(np.float64)
    Oref, Lref = reference(q64.transpose(0, 2, 1, 3), k64, v64, mask_fn, scale, B, H, KVH)
    masked_rows = ~np.isfinite(Lref)
    nan = np.isnan(out).sum() + np.isnan(lse).sum()
    err = np.abs(out - Oref).max()
    lerr = np.abs(np.where(masked_rows, 0, lse - Lref)).max() if (~masked_rows).any() else 0.0
    lse_masked_ok = np.all(np.isneginf(lse[masked_rows])) and np.all(out[np.broadcast_to(masked_rows[..., None], out.shape)] == 0)
    tol = 2.5e-2 if dt == "bf16" else 4e-3
    ok = nan == 0 and err < tol and lerr < 2e-3 and tail_ok and lse_masked_ok
    line = f"{'ok  ' if ok else 'FAIL'} {kern['file']:40s} {case[-1]} B{B} H{H}/{KVH} Nq{Nq} Nk{Nk}: max|dO|={err:.2e} max|dlse|={lerr:.2e} nan={nan} tail={'ok' if tail_ok else 'WRITTEN'} masked_rows={int(masked_rows.sum())}/{'ok' if lse_masked_ok else 'BAD'}"
    print(line, flush=True)
    results.append(("ok" if ok else "FAIL", line))


def bench(kern, fwd, B, H, N, iters=20):
    D = kern["head_dim"]
    rng = np.random.default_rng(0)
    qb, _ = quant(rng.standard_normal((B, H, N, D)).astype(np.float32), kern["dtype"])
    Q = Buf(qb); K = Buf(qb); V = Buf(qb); O = Buf(np.zeros_like(qb)); L = Buf(np.zeros(B * H * N, np.float32))
    s = (H * N * D, N * D, D)
    args = [("p", Q), ("p", K), ("p", V), ("p", O), ("p", L)] + [("i64", x) for x in s * 4]
    args += [("i32", B), ("i32", H), ("i32", H), ("i32", N), ("i32", N), ("f32", 0.125 * 1.4427)]
    grid = (-(-N // kern["block_q"]), H, B)
    launch(fwd, grid, kern["threads"], kern["shared"], args)
    e0, e1 = c.c_void_p(), c.c_void_p()
    check(cuda.cuEventCreate(c.byref(e0), 0), "event")
    check(cuda.cuEventCreate(c.byref(e1), 0), "event")
    check(cuda.cuEventRecord(e0, None), "record")
    for _ in range(iters):
        launch(fwd, grid, kern["threads"], kern["shared"], args, sync=False)
    check(cuda.cuEventRecord(e1, None), "record")
    check(cuda.cuEventSynchronize(e1), "esync")
    ms = c.c_float()
    check(cuda.cuEventElapsedTime(c.byref(ms), e0, e1), "elapsed")
    dt = ms.value / 1e3 / iters
    flops = 4 * D * B * H * N * N * (0.5 if kern["pattern"] == "causal" else 1.0)
    print(f"bench {kern['file']:40s} B{B} H{H} N{N}: {dt*1e3:.3f} ms  {flops/dt/1e12:.1f} TFLOP/s (events)", flush=True)
    for x in (Q, K, V, O, L):
        x.free()


def main():
    index = json.load(open(os.path.join(HERE, "kernels", "index.json")))
    only = sys.argv[1:]
    results = []
    for kern in index:
        if only and not any(o in kern["file"] for o in only):
            continue
        try:
            mod = load_module(os.path.join(HERE, "kernels", kern["file"]))
            fwd = get_fn(mod, kern["entry"])
            summ = get_fn(mod, "block_minmax")
            print(f"-- {kern['file']}: regs={attr(fwd, 4)} local={attr(fwd, 3)} maxthreads={attr(fwd, 0)}", flush=True)
            for case in kern["cases"]:
                run_case(kern, mod, fwd, summ, case, results)
            if kern["file"] in ("fwd_causal_d64_bf16.ptx", "fwd_causal_d128_bf16.ptx", "fwd_dense_d64_bf16.ptx", "fwd_dense_d128_bf16.ptx") and os.environ.get("BENCH", "1") == "1":
                bench(kern, fwd, 4, 16, 4096)
        except Exception as e:  # keep going: one broken kernel must not hide the others
            print(f"FAIL {kern['file']}: {e}", flush=True)
            results.append(("FAIL", f"{kern['file']}: {e}"))
    bad = [r for r in results if r[0] != "ok"]
    print(f"\n{len(results) - len(bad)} ok, {len(bad)} failed")
    for _, l in bad:
        print("  ", l)


if __name__ == "__main__":
    main()
