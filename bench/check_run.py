"""Checks `lacuna run` the way an outside tool would: .npy files in, .npy out,
compared with PyTorch SDPA (float64 math on the same bf16-rounded inputs).

usage: python3 bench/check_run.py .gpu/lacuna OUTDIR
"""
import subprocess, sys, os
import numpy as np
import torch
import torch.nn.functional as F

lacuna, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
B, H, HKV, NQ, NK, D = 2, 4, 2, 333, 333, 64
ok = True


def save(name, x):
    path = os.path.join(out, name)
    np.save(path, x)
    return path


def reference(q, k, v, mask):
    qt, kt, vt = (torch.from_numpy(x.astype(np.float64)) for x in (q, k, v))
    kt = kt.repeat_interleave(H // HKV, dim=1)
    vt = vt.repeat_interleave(H // HKV, dim=1)
    s = qt @ kt.transpose(-1, -2) / np.sqrt(D)
    s = s.masked_fill(~torch.from_numpy(mask), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    o = torch.softmax(s, dim=-1) @ vt
    return o.numpy(), lse.numpy()


def bf16_round(x):
    return torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()


# Decoding: 3 new tokens over a 2500-token cache, bottom-right aligned; the
# runtime splits the keys among CTAs (split-KV) on its own.
DQ, DK = 3, 2500
for pattern, params, mask in [
    ("causal", [], np.tril(np.ones((NQ, NK), dtype=bool))),
    ("sliding-window", ["--param", "W=50", "--param", "sink=4"],
     np.fromfunction(lambda i, j: (j <= i) & ((i - j < 50) | (j < 4)), (NQ, NK), dtype=int)),
    ("causal-decode", ["--param", "past=%d" % (DK - DQ)], np.fromfunction(lambda i, j: j <= i + DK - DQ, (DQ, DK), dtype=int)),
]:
    nq, nk = mask.shape
    q = rng.standard_normal((B, H, nq, D), dtype=np.float32)
    k = rng.standard_normal((B, HKV, nk, D), dtype=np.float32)
    v = rng.standard_normal((B, HKV, nk, D), dtype=np.float32)
    args = [lacuna, "run", pattern, "--q", save("q.npy", q), "--k", save("k.npy", k), "--v", save("v.npy", v),
            "--out", os.path.join(out, "o.npy"), "--lse", os.path.join(out, "lse.npy")] + params
    r = subprocess.run(args, capture_output=True, text=True)
    print(" ".join(args[1:3]), "->", r.returncode, r.stdout.strip(), r.stderr.strip())
    if r.returncode != 0:
        ok = False
        continue
    o = np.load(os.path.join(out, "o.npy"))
    lse = np.load(os.path.join(out, "lse.npy"))
    o_ref, lse_ref = reference(bf16_round(q), bf16_round(k), bf16_round(v), mask)
    rel = np.linalg.norm(o - o_ref) / np.linalg.norm(o_ref)
    lse_err = np.abs(lse - lse_ref).max()
    good = o.dtype == np.float32 and o.shape == q.shape and rel < 1e-2 and lse_err < 2e-2
    print("  %s: out %s %s, rel err %.2e, lse err %.2e -> %s" % (pattern, o.dtype, o.shape, rel, lse_err, "ok" if good else "FAIL"))
    ok &= bool(good)

# A wrong input must be a clear error, not a crash.
bad = subprocess.run([lacuna, "run", "causal", "--q", save("q3.npy", np.zeros((2, 3, 4), np.float32)), "--k", os.path.join(out, "k.npy"),
                      "--v", os.path.join(out, "v.npy"), "--out", os.path.join(out, "x.npy")], capture_output=True, text=True)
print("misshaped q ->", bad.returncode, bad.stderr.strip())
ok &= bad.returncode == 2 and "4-d" in bad.stderr
sys.exit(0 if ok else 1)
