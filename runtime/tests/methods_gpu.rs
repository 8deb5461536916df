//! The seed methods on the GPU: every helper op against its CPU twin
//! (`ops::cpu`), and every pipeline (with the `jit` feature) against the CPU
//! reference attention with the explicit equivalent mask in ORIGINAL order.
//! Outputs are poisoned where the op writes into caller memory. Skips with a
//! note on a machine without libcuda (or without libnvrtc for the ops).

use std::collections::BTreeMap;

use lacuna_runtime::half::{bf16, f16};
use lacuna_runtime::ops::{cpu, BlockReduce, GpuOps, KeepMask};
use lacuna_runtime::{DeviceTensor, ElemType, Gpu};

/// xorshift noise in [-1, 1).
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn next(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The GPU and its ops, or None (with a note) when this machine cannot run them.
fn setup(test: &str) -> Option<(Gpu, std::sync::Arc<GpuOps>)> {
    if !lacuna_runtime::gpu::driver_present() {
        eprintln!("note: no libcuda on this machine; {test} skipped");
        return None;
    }
    if !lacuna_runtime::ops::nvrtc_present() {
        eprintln!("note: no libnvrtc on this machine; {test} skipped");
        return None;
    }
    let gpu = ok(Gpu::new(0));
    let ops = ok(GpuOps::for_gpu(&gpu));
    Some((gpu, ops))
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dt {
    Bf16,
    F16,
}

/// Uploads (B, H, N, D) values in `dt`, optionally as a (B, N, H, D) buffer
/// viewed back; returns the tensor and the rounded values (B, H, N, D).
fn upload(gpu: &Gpu, x: &[f32], shape: [usize; 4], dt: Dt, bnhd: bool) -> (DeviceTensor, Vec<f32>) {
    let [b, h, n, d] = shape;
    let rounded: Vec<f32> = match dt {
        Dt::Bf16 => x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
        Dt::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
    };
    let (data, dev_shape) = if bnhd {
        let mut t = vec![0f32; x.len()];
        for bi in 0..b {
            for hi in 0..h {
                for ni in 0..n {
                    let src = ((bi * h + hi) * n + ni) * d;
                    let dst = ((bi * n + ni) * h + hi) * d;
                    t[dst..dst + d].copy_from_slice(&rounded[src..src + d]);
                }
            }
        }
        (t, [b, n, h, d])
    } else {
        (rounded.clone(), shape)
    };
    let t = match dt {
        Dt::Bf16 => ok(DeviceTensor::from_host_bf16(gpu, &data.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(), &dev_shape)),
        Dt::F16 => ok(DeviceTensor::from_host_f16(gpu, &data.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(), &dev_shape)),
    };
    let t = if bnhd { ok(t.transpose(1, 2)) } else { t };
    (t, rounded)
}

// ---------------------------------------------------------------------------
// Ops against their CPU twins.
// ---------------------------------------------------------------------------

#[test]
fn lsh_buckets_match_the_cpu_bit_for_bit() {
    let Some((gpu, ops)) = setup("lsh_buckets_match_the_cpu_bit_for_bit") else { return };
    let mut noise = Noise::new(11);
    for (shape, dt, bnhd, nb) in [
        ([2, 3, 333, 64], Dt::Bf16, false, 16),
        ([1, 2, 200, 128], Dt::F16, true, 8),
        ([1, 2, 150, 256], Dt::Bf16, false, 1024),
        ([1, 1, 70, 48], Dt::Bf16, false, 2),
        // 16-column passes (D <= 128, more than 8 columns): 16 then 4.
        ([1, 2, 130, 128], Dt::Bf16, false, 40),
        // Two 16-column passes, a D that is not a power of two.
        ([1, 1, 90, 72], Dt::F16, true, 64),
        // A D that is not a multiple of 4 (or 8): the staged kernel with
        // 2-byte staging, the scalar tail of the projection.
        ([1, 1, 40, 50], Dt::Bf16, false, 20),
        // D = 64 with 16 columns per pass and 16-byte staging: one pass
        // (hash-32), two passes (hash-64, fp16, strided).
        ([2, 2, 300, 64], Dt::Bf16, false, 32),
        ([1, 2, 257, 64], Dt::F16, true, 64),
        // Rows read directly (16-byte aligned, 9 to 16 columns; the
        // [2, 2, 300, 64] hash-32 case above too): fp16 through a strided
        // view with 6 zero columns in the pass, and D = 48 at 9 columns.
        ([1, 2, 200, 128], Dt::F16, true, 20),
        ([1, 1, 77, 48], Dt::Bf16, false, 18),
        // A hash-32-sized pass on rows off 16-byte boundaries: staged.
        ([1, 2, 150, 100], Dt::Bf16, false, 32),
    ] {
        let [b, h, n, d] = shape;
        let (x, xr) = upload(&gpu, &noise.vec(b * h * n * d), shape, dt, bnhd);
        let r = cpu::projection_from_seed(5, d, nb);
        let rd = ok(ops.upload_projection(&r, d, nb));
        let got = ok(ok(ops.lsh_buckets(&x, &rd, nb)).to_host_i32());
        let want = cpu::lsh_buckets(&xr, d, &r, nb);
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let used = want.iter().collect::<std::collections::BTreeSet<_>>().len();
        eprintln!("lsh {shape:?} {dt:?} bnhd={bnhd} nb={nb}: {diff} of {} differ, {used} buckets used", want.len());
        assert_eq!(diff, 0, "GPU and CPU buckets differ");
    }
    // Shape errors are values.
    let (x, _) = upload(&gpu, &[0.0; 64], [1, 1, 1, 64], Dt::Bf16, false);
    let rd = ok(ops.upload_projection(&cpu::projection_from_seed(1, 32, 8), 32, 8));
    let err = ops.lsh_buckets(&x, &rd, 8).expect_err("R is for D = 32");
    assert!(err.to_string().contains("the projection R has shape [32, 4], expected [64, 4]"), "{err}");
    assert!(ops.upload_projection(&[0.0; 10], 5, 3).is_err(), "odd bucket count");
}

#[test]
fn bucket_sort_is_stable_and_matches_the_cpu() {
    let Some((gpu, ops)) = setup("bucket_sort_is_stable_and_matches_the_cpu") else { return };
    let mut noise = Noise::new(12);
    for (b, h, n, nb) in [(2, 3, 1000, 4), (1, 2, 5000, 64), (1, 1, 777, 1024), (1, 1, 1, 2), (1, 2, 300, 1)] {
        let mut buckets: Vec<i32> = (0..b * h * n).map(|_| noise.below(nb as u64) as i32).collect();
        if nb > 2 {
            // Out-of-range values are clamped, like the CPU twin.
            buckets[0] = -7;
            buckets[n - 1] = nb as i32 + 5;
        }
        let t = ok(DeviceTensor::from_host_i32(&gpu, &buckets, &[b, h, n]));
        let order = ok(ops.sort_by_bucket(&t, nb));
        let (perm, sorted) = (ok(order.perm.to_host_i32()), ok(order.buckets.to_host_i32()));
        let (want_perm, want_sorted) = cpu::stable_sort_by_bucket(&buckets, n, nb);
        assert_eq!(sorted, want_sorted, "sorted buckets, B{b} H{h} N{n} nb{nb}");
        assert_eq!(perm, want_perm, "permutation (stability), B{b} H{h} N{n} nb{nb}");
        eprintln!("sort B{b} H{h} N{n} nb{nb}: identical to the CPU's stable sort");
    }
}

#[test]
fn gather_and_scatter_move_rows_and_pad() {
    let Some((gpu, ops)) = setup("gather_and_scatter_move_rows_and_pad") else { return };
    let mut noise = Noise::new(13);
    for (dt, bnhd, d) in [(Dt::Bf16, false, 64), (Dt::F16, true, 128), (Dt::Bf16, false, 40)] {
        let (b, hx, h, n, m) = (2, 2, 4, 150, 170);
        let (x, xr) = upload(&gpu, &noise.vec(b * hx * n * d), [b, hx, n, d], dt, bnhd);
        // A permutation per (b, h) for the first n slots, then padding (-1, n, i32::MAX).
        let mut idx = Vec::new();
        for _ in 0..b * h {
            let mut p: Vec<i32> = (0..n as i32).collect();
            for i in (1..n).rev() {
                p.swap(i, noise.below(i as u64 + 1) as usize);
            }
            p.extend((0..m - n).map(|j| [-1, n as i32, i32::MAX][j % 3]));
            idx.extend(p);
        }
        let it = ok(DeviceTensor::from_host_i32(&gpu, &idx, &[b, h, m]));
        let g = ok(ops.gather_rows(&x, &it));
        let got = ok(g.to_host_as_f32());
        assert_eq!(got, cpu::gather_rows(&xr, [b, hx, n, d], &idx, h, m), "gather {dt:?} bnhd={bnhd} d={d}");
        // Scatter back: every original row of each query head comes back; padding is skipped.
        let lse_src: Vec<f32> = (0..b * h * m).map(|i| i as f32).collect();
        let lse_t = ok(DeviceTensor::from_host_f32(&gpu, &lse_src, &[b, h, m]));
        let elem = if dt == Dt::Bf16 { ElemType::Bf16 } else { ElemType::F16 };
        let mut o = ok(DeviceTensor::zeros(&gpu, elem, &[b, h, n, d]));
        let mut lse = ok(DeviceTensor::zeros(&gpu, ElemType::F32, &[b, h, n]));
        ok(o.poison());
        ok(lse.poison());
        ok(ops.scatter_rows(&g, &lse_t, &it, &mut o, &mut lse));
        let back = ok(o.to_host_as_f32());
        let lse_back = ok(lse.to_host_f32());
        for bh in 0..b * h {
            let (bi, hi) = (bh / h, bh % h);
            for i in 0..n {
                let src = &xr[((bi * hx + hi / (h / hx)) * n + i) * d..][..d];
                assert_eq!(&back[(bh * n + i) * d..][..d], src, "row {i} of (b {bi}, h {hi})");
                let slot = (0..m).find(|&j| idx[bh * m + j] == i as i32).unwrap_or(usize::MAX);
                assert_eq!(lse_back[bh * n + i], lse_src[bh * m + slot]);
            }
        }
        eprintln!("gather/scatter {dt:?} bnhd={bnhd} d={d}: exact, padding rows zero");
    }
}

#[test]
fn compaction_is_stable_and_pads() {
    let Some((gpu, ops)) = setup("compaction_is_stable_and_pads") else { return };
    let mut noise = Noise::new(14);
    // 9001 tokens: three chunks of 4096, the last ragged.
    for (b, h, n, keep_pct, bytes) in [(2, 3, 2500, 50, true), (1, 4, 1000, 20, false), (1, 2, 3000, 0, true), (1, 1, 5, 100, false), (1, 2, 9001, 30, true)] {
        let mut keep: Vec<bool> = (0..b * h * n).map(|_| noise.below(100) < keep_pct).collect();
        if keep_pct > 0 && keep_pct < 100 {
            // One row all dropped, one all kept.
            keep[..n].iter_mut().for_each(|k| *k = false);
            keep[n..2 * n].iter_mut().for_each(|k| *k = true);
        }
        let mask = if bytes {
            ok(KeepMask::from_host_bool(&gpu, &keep, [b, h, n]))
        } else {
            let ints: Vec<i32> = keep.iter().map(|&k| if k { 7 } else { 0 }).collect();
            ok(KeepMask::from_i32(ok(DeviceTensor::from_host_i32(&gpu, &ints, &[b, h, n]))))
        };
        let c = ok(ops.compact(&mask, i32::MAX));
        let m = c.padded_len();
        let (want_pos, want_counts) = cpu::compact(&keep, n, m, i32::MAX);
        assert_eq!(c.counts, want_counts);
        assert_eq!(m, want_counts.iter().copied().max().unwrap_or(0).max(1) as usize);
        assert_eq!(ok(c.pos.to_host_i32()), want_pos, "B{b} H{h} N{n} keep {keep_pct}% bytes={bytes}");
        // Into the full length (what the QK-drop pipeline does), and cut short.
        let full = ok(ops.compact_into(&mask, n, -1));
        assert_eq!(ok(full.to_host_i32()), cpu::compact(&keep, n, n, -1).0, "full length, B{b} H{h} N{n}");
        let cut = (n / 3).max(1);
        let short = ok(ops.compact_into(&mask, cut, -1));
        assert_eq!(ok(short.to_host_i32()), cpu::compact(&keep, n, cut, -1).0, "cut to {cut}, B{b} H{h} N{n}");
        eprintln!("compact B{b} H{h} N{n} keep {keep_pct}% bytes={bytes}: padded to {m}, identical");
    }
}

#[test]
fn sparsek_scores_and_topk_match_the_cpu() {
    let Some((gpu, ops)) = setup("sparsek_scores_and_topk_match_the_cpu") else { return };
    let mut noise = Noise::new(15);
    // Token scores off the 16-byte path: D = 200 (more than 64 values, in
    // two load rounds), fp16 through a strided view, and D = 50 (2-byte loads).
    for (shape, dt, bnhd) in [([1, 2, 300, 200], Dt::Bf16, false), ([1, 2, 129, 72], Dt::F16, true), ([1, 1, 100, 50], Dt::Bf16, false)] {
        let [b, hkv, n, d] = shape;
        let (k, kr) = upload(&gpu, &noise.vec(b * hkv * n * d), shape, dt, bnhd);
        let w = noise.vec(d);
        let u = ok(ops.token_scores(&k, &ok(DeviceTensor::from_host_f32(&gpu, &w, &[d]))));
        assert_eq!(ok(u.to_host_f32()), cpu::token_scores(&kr, d, &w), "token scores {shape:?} {dt:?} bnhd={bnhd}");
    }
    for (b, h, hkv, n, nq, d, topk, window) in
        [(2, 4, 2, 1000, 1000, 64, 4, 0), (1, 2, 1, 700, 500, 128, 3, 100), (1, 1, 1, 64, 64, 64, 2, 0), (1, 3, 3, 2100, 2100, 64, 40, 256)]
    {
        let (k, kr) = upload(&gpu, &noise.vec(b * hkv * n * d), [b, hkv, n, d], Dt::Bf16, false);
        let w = noise.vec(d);
        let wd = ok(DeviceTensor::from_host_f32(&gpu, &w, &[d]));
        let u = ok(ops.token_scores(&k, &wd));
        let u_host = ok(u.to_host_f32());
        assert_eq!(u_host, cpu::token_scores(&kr, d, &w), "token scores");
        for reduce in [BlockReduce::Max, BlockReduce::Mean] {
            let bs = ok(ops.block_scores(&u, reduce));
            let bs_host = ok(bs.to_host_f32());
            assert_eq!(bs_host, cpu::block_scores(&u_host, n, reduce), "block scores {reduce:?}");
            let sel = ok(ops.topk_blocks(&bs, h, nq, topk, window));
            let want = cpu::topk_blocks(&bs_host, b, h, hkv, n.div_ceil(64), nq, topk, window);
            assert_eq!(ok(sel.to_host_i32()), want, "top-k {reduce:?}");
        }
        // Quantized scores: many ties, broken by the lower block index.
        let tied: Vec<f32> = (0..b * hkv * n.div_ceil(64)).map(|_| noise.below(3) as f32).collect();
        let tt = ok(DeviceTensor::from_host_f32(&gpu, &tied, &[b, hkv, n.div_ceil(64)]));
        let sel = ok(ops.topk_blocks(&tt, h, nq, topk, window));
        assert_eq!(ok(sel.to_host_i32()), cpu::topk_blocks(&tied, b, h, hkv, n.div_ceil(64), nq, topk, window), "ties");
        eprintln!("scores/top-k B{b} H{h}/{hkv} N{n} Nq{nq} D{d} topk {topk} W {window}: identical");
    }
}

/// Both top-k paths against the CPU: one sorted order per (b, hk) row for
/// k <= 32 and up to 4096 key blocks, the scan per query block past either
/// limit. Block scores made directly, with NaN, -inf, -0 and +0 among
/// ties, at and just past each limit, and query lengths shorter than the keys.
#[test]
fn topk_paths_match_the_cpu() {
    let Some((gpu, ops)) = setup("topk_paths_match_the_cpu") else { return };
    let mut noise = Noise::new(17);
    for (b, h, hkv, nkb, nq, topk, window) in [
        (1, 2, 1, 4096, 38_400, 32, 0),
        (1, 1, 1, 4097, 38_400, 16, 512),
        (2, 4, 2, 300, 300 * 64, 1, 0),
        (1, 2, 2, 77, 5000, 33, 128),
        (1, 3, 1, 1000, 64_000, 17, 1000),
        (1, 2, 1, 64, 4000, 31, 65),
    ] {
        let scores: Vec<f32> = (0..b * hkv * nkb)
            .map(|_| match noise.below(12) {
                0 => f32::NAN,
                1 => -0.0,
                2 => 0.0,
                3 => f32::NEG_INFINITY,
                _ => noise.below(6) as f32 - 2.5,
            })
            .collect();
        let bs = ok(DeviceTensor::from_host_f32(&gpu, &scores, &[b, hkv, nkb]));
        let sel = ok(ops.topk_blocks(&bs, h, nq, topk, window));
        let want = cpu::topk_blocks(&scores, b, h, hkv, nkb, nq, topk, window);
        assert_eq!(ok(sel.to_host_i32()), want, "top-k B{b} H{h}/{hkv} nkb {nkb} Nq {nq} k {topk} W {window}");
        eprintln!("top-k B{b} H{h}/{hkv} nkb {nkb} Nq {nq} k {topk} W {window}: identical");
    }
}

#[test]
fn sparsek_tau_matches_the_cpu() {
    let Some((gpu, ops)) = setup("sparsek_tau_matches_the_cpu") else { return };
    let mut noise = Noise::new(16);
    for (rows, n, k, spread) in [(7, 1000, 16.0f32, 3.0f32), (3, 64, 1.0, 1.0), (5, 4000, 100.5, 10.0), (2, 10, 10.0, 1.0), (4, 300, 3.0, 0.01)] {
        let u: Vec<f32> = noise.vec(rows * n).into_iter().map(|x| x * spread).collect();
        let ut = ok(DeviceTensor::from_host_f32(&gpu, &u, &[rows, n]));
        let (tau, mask) = ok(ops.sparsek(&ut, k));
        let (tau, mask) = (ok(tau.to_host_f32()), ok(mask.to_host_f32()));
        let (want_tau, want_mask) = cpu::sparsek_tau(&u, n, k);
        let mask_err = mask.iter().zip(&want_mask).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let sum_err = mask.chunks(n).map(|r| (r.iter().map(|&x| x as f64).sum::<f64>() - k as f64).abs()).fold(0f64, f64::max);
        let tau_err = tau.iter().zip(&want_tau).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let nonzero = mask.iter().filter(|&&x| x > 0.0).count() as f64 / rows as f64;
        eprintln!("sparsek rows {rows} n {n} k {k}: max |mask - cpu| {mask_err:.2e}, |sum - k| {sum_err:.2e}, |tau - cpu| {tau_err:.2e}, {nonzero:.1} nonzero per row");
        assert!(mask_err < 1e-4 && sum_err < 1e-3, "SPARSEK mask differs");
    }
    let ut = ok(DeviceTensor::from_host_f32(&gpu, &[0.0; 8], &[2, 4]));
    assert!(ops.sparsek(&ut, 5.0).is_err(), "k above n");
    assert!(ops.sparsek(&ut, 0.0).is_err(), "k = 0");
}

// ---------------------------------------------------------------------------
// Pipelines against the CPU reference, in original order.
// ---------------------------------------------------------------------------

#[cfg(feature = "jit")]
mod pipelines {
    use super::*;
    use lacuna_ir::reference::{attention, AttentionShape, Precision};
    use lacuna_ir::{Bindings, Dims, Dtype, InputValue};
    use lacuna_runtime::methods::{
        Causal, HashConfig, MethodPattern, MoaPlan, Projection, SparseKConfig, TokenScores,
    };
    use lacuna_runtime::{moa_attention, scfa_hash_attention, scfa_qk_drop_attention, sparsek_attention, OpError};

    struct Problem {
        b: usize,
        h: usize,
        hkv: usize,
        nq: usize,
        nk: usize,
        d: usize,
        dt: Dt,
    }

    struct Inputs {
        q: DeviceTensor,
        k: DeviceTensor,
        v: DeviceTensor,
        qr: Vec<f32>,
        kr: Vec<f32>,
        vr: Vec<f32>,
    }

    fn inputs(gpu: &Gpu, p: &Problem, seed: u64, bnhd: bool) -> Inputs {
        let mut noise = Noise::new(seed);
        let (q, qr) = upload(gpu, &noise.vec(p.b * p.h * p.nq * p.d), [p.b, p.h, p.nq, p.d], p.dt, bnhd);
        let (k, kr) = upload(gpu, &noise.vec(p.b * p.hkv * p.nk * p.d), [p.b, p.hkv, p.nk, p.d], p.dt, bnhd);
        let (v, vr) = upload(gpu, &noise.vec(p.b * p.hkv * p.nk * p.d), [p.b, p.hkv, p.nk, p.d], p.dt, bnhd);
        Inputs { q, k, v, qr, kr, vr }
    }

    fn kernel(gpu: &Gpu, pat: MethodPattern, p: &Problem) -> lacuna_runtime::AttentionKernel {
        let dtype = if p.dt == Dt::Bf16 { Dtype::Bf16 } else { Dtype::F16 };
        ok(pat.compile(gpu, p.d as u32, dtype))
    }

    /// Compares a method's output with the reference under `pat` and `values`.
    fn compare(
        name: &str,
        pat: MethodPattern,
        values: BTreeMap<String, InputValue>,
        p: &Problem,
        x: &Inputs,
        o: &DeviceTensor,
        lse: &DeviceTensor,
    ) {
        let ir = pat.ir();
        let bindings = ok(Bindings::new(&ir, Dims::new(p.b, p.h, p.nq, p.nk), values));
        let shape = AttentionShape { batch: p.b, heads: p.h, kv_heads: p.hkv, q_len: p.nq, kv_len: p.nk, head_dim: p.d };
        let scale = 1.0 / (p.d as f32).sqrt();
        let want = ok(attention(&ir, &bindings, shape, &x.qr, &x.kr, &x.vr, scale, Precision::F64));
        assert_eq!(o.shape(), &[p.b, p.h, p.nq, p.d][..]);
        let got = ok(o.to_host_as_f32());
        let got_lse = ok(lse.to_host_f32());
        let d = p.d;
        let (mut num, mut den, mut lse_err) = (0f64, 0f64, 0f64);
        let (mut masked, mut bad_masked) = (0, 0);
        for row in 0..p.b * p.h * p.nq {
            let (g, w) = (&got[row * d..][..d], &want.out[row * d..][..d]);
            if want.lse[row] == f32::NEG_INFINITY {
                masked += 1;
                if got_lse[row] != f32::NEG_INFINITY || g.iter().any(|&x| x != 0.0) {
                    bad_masked += 1;
                }
                continue;
            }
            lse_err = lse_err.max((got_lse[row] as f64 - want.lse[row] as f64).abs());
            for t in 0..d {
                num += ((g[t] - w[t]) as f64).powi(2);
                den += (w[t] as f64).powi(2);
            }
        }
        let nan = got.iter().chain(&got_lse).filter(|x| x.is_nan()).count();
        let rel = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
        eprintln!("{name}: rel err {rel:.2e}, lse err {lse_err:.2e}, masked rows {masked} (bad {bad_masked}), NaN {nan}");
        assert!(nan == 0 && bad_masked == 0 && rel < 1e-2 && lse_err < 2e-2, "{name} differs from the reference");
    }

    fn iota(b: usize, h: usize, n: usize) -> InputValue {
        InputValue::I32Array { shape: vec![b, h, n], data: (0..b * h).flat_map(|_| 0..n as i32).collect() }
    }

    /// Per-query-head values (B, H, N) from per-source-head values (B, Hs, N).
    fn per_query_head(src: &[i32], b: usize, hs: usize, h: usize, n: usize) -> Vec<i32> {
        let mut out = Vec::with_capacity(b * h * n);
        for bi in 0..b {
            for hi in 0..h {
                out.extend_from_slice(&src[(bi * hs + hi / (h / hs)) * n..][..n]);
            }
        }
        out
    }

    #[test]
    fn hash_attention_matches_the_reference_in_original_order() {
        let Some((gpu, _)) = setup("hash_attention_matches_the_reference_in_original_order") else { return };
        let cases = [
            ("inclusive, separate hashing, GQA", Problem { b: 2, h: 4, hkv: 2, nq: 300, nk: 300, d: 64, dt: Dt::Bf16 }, 8, false, Causal::Inclusive, false),
            ("strict, shared QK", Problem { b: 1, h: 2, hkv: 2, nq: 257, nk: 257, d: 64, dt: Dt::Bf16 }, 4, true, Causal::Strict, false),
            ("inclusive, shared QK, GQA, fp16 bnhd", Problem { b: 1, h: 4, hkv: 1, nq: 200, nk: 200, d: 128, dt: Dt::F16 }, 16, true, Causal::Inclusive, true),
            ("strict, separate, Nq != Nk", Problem { b: 1, h: 2, hkv: 2, nq: 150, nk: 333, d: 64, dt: Dt::Bf16 }, 2, false, Causal::Strict, false),
        ];
        for (i, (name, p, nb, shared, causal, bnhd)) in cases.into_iter().enumerate() {
            let cfg = HashConfig { buckets: nb, projection: Projection::Seed(100 + i as u64), shared_qk: shared, causal };
            let kernel = kernel(&gpu, cfg.pattern(), &p);
            let x = inputs(&gpu, &p, 40 + i as u64, bnhd);
            let out = ok(scfa_hash_attention(&gpu, &kernel, &x.q, &x.k, &x.v, &cfg));
            // Buckets on the CPU from the same R, in original order.
            let r = cfg.projection.matrix(p.d, nb);
            let qb = cpu::lsh_buckets(&x.qr, p.d, &r, nb);
            let kb = if shared { qb.clone() } else { per_query_head(&cpu::lsh_buckets(&x.kr, p.d, &r, nb), p.b, p.hkv, p.h, p.nk) };
            let mut values = BTreeMap::new();
            values.insert("q_bucket".to_string(), InputValue::I32Array { shape: vec![p.b, p.h, p.nq], data: qb });
            values.insert("k_bucket".to_string(), InputValue::I32Array { shape: vec![p.b, p.h, p.nk], data: kb });
            values.insert("q_pos".to_string(), iota(p.b, p.h, p.nq));
            values.insert("k_pos".to_string(), iota(p.b, p.h, p.nk));
            compare(&format!("hash {name} nb={nb}"), cfg.pattern(), values, &p, &x, &out.o, &out.lse);
        }
        // A kernel for the wrong pattern is refused before anything runs.
        let p = Problem { b: 1, h: 2, hkv: 2, nq: 64, nk: 64, d: 64, dt: Dt::Bf16 };
        let strict = kernel(&gpu, MethodPattern::HashBucketStrict, &p);
        let x = inputs(&gpu, &p, 1, false);
        let cfg = HashConfig { buckets: 4, projection: Projection::Seed(1), shared_qk: false, causal: Causal::Inclusive };
        let err = scfa_hash_attention(&gpu, &strict, &x.q, &x.k, &x.v, &cfg).expect_err("wrong pattern");
        assert!(matches!(err, OpError::WrongKernel { .. }), "{err}");
    }

    #[test]
    fn qk_drop_attention_matches_the_reference_in_original_order() {
        let Some((gpu, _)) = setup("qk_drop_attention_matches_the_reference_in_original_order") else { return };
        let cases = [
            ("u8 masks, keys per kv head, GQA", Problem { b: 2, h: 4, hkv: 2, nq: 300, nk: 300, d: 64, dt: Dt::Bf16 }, true, false),
            ("i32 masks, keys per query head, Nq != Nk", Problem { b: 1, h: 2, hkv: 1, nq: 200, nk: 517, d: 128, dt: Dt::Bf16 }, false, true),
        ];
        for (i, (name, p, bytes, key_per_query_head)) in cases.into_iter().enumerate() {
            let kernel = kernel(&gpu, MethodPattern::QkDrop, &p);
            let x = inputs(&gpu, &p, 60 + i as u64, false);
            let mut noise = Noise::new(70 + i as u64);
            let kh = if key_per_query_head { p.h } else { p.hkv };
            let mut q_keep: Vec<bool> = (0..p.b * p.h * p.nq).map(|_| noise.below(100) < 50).collect();
            let k_keep: Vec<bool> = (0..p.b * kh * p.nk).map(|_| noise.below(100) < 40).collect();
            // One query head drops everything: zero rows, lse -inf.
            q_keep[..p.nq].iter_mut().for_each(|k| *k = false);
            let mask = |keep: &[bool], heads: usize, n: usize| {
                if bytes {
                    ok(KeepMask::from_host_bool(&gpu, keep, [p.b, heads, n]))
                } else {
                    let ints: Vec<i32> = keep.iter().map(|&k| k as i32).collect();
                    ok(KeepMask::from_i32(ok(DeviceTensor::from_host_i32(&gpu, &ints, &[p.b, heads, n]))))
                }
            };
            let (qm, km) = (mask(&q_keep, p.h, p.nq), mask(&k_keep, kh, p.nk));
            let out = ok(scfa_qk_drop_attention(&gpu, &kernel, &x.q, &x.k, &x.v, &qm, &km));
            // A kernel per length class (short-row tiles at these lengths)
            // gives the same rows as the one long-row kernel.
            let dtype = if p.dt == Dt::Bf16 { Dtype::Bf16 } else { Dtype::F16 };
            let classes = ok(MethodPattern::QkDrop.compile_by_length(&gpu, p.d as u32, dtype));
            let picked = ok(scfa_qk_drop_attention(&gpu, &classes, &x.q, &x.k, &x.v, &qm, &km));
            let rel = |a: &DeviceTensor, b: &DeviceTensor| {
                let (a, b) = (ok(a.to_host_as_f32()), ok(b.to_host_as_f32()));
                let num: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
                let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
                (num / den.max(1e-30)).sqrt()
            };
            assert!(rel(&picked.o, &out.o) < 1e-2, "qk-drop {name}: by-length output differs");
            let q_pos: Vec<i32> = q_keep.iter().enumerate().map(|(j, &k)| if k { (j % p.nq) as i32 } else { -1 }).collect();
            let k_src: Vec<i32> = k_keep.iter().enumerate().map(|(j, &k)| if k { (j % p.nk) as i32 } else { i32::MAX }).collect();
            let mut values = BTreeMap::new();
            values.insert("q_pos".to_string(), InputValue::I32Array { shape: vec![p.b, p.h, p.nq], data: q_pos });
            values.insert(
                "k_pos".to_string(),
                InputValue::I32Array { shape: vec![p.b, p.h, p.nk], data: per_query_head(&k_src, p.b, kh, p.h, p.nk) },
            );
            compare(&format!("qk-drop {name}"), MethodPattern::QkDrop, values, &p, &x, &out.o, &out.lse);
        }
    }

    #[test]
    fn moa_attention_matches_the_reference() {
        let Some((gpu, _)) = setup("moa_attention_matches_the_reference") else { return };
        let plan = ok(MoaPlan::from_json(
            r#"{"layers": [{"heads": [
                {"alpha": 64, "beta": 0.0, "sink": 16},
                {"alpha": 0, "beta": 0.25, "sink": 0},
                {"alpha": 128, "beta": 0.125, "sink": 64},
                {"alpha": 0, "beta": 1.0, "sink": 0}
            ]}]}"#,
        ));
        let layer = ok(plan.layer(0));
        for (i, p) in [
            Problem { b: 2, h: 4, hkv: 2, nq: 500, nk: 500, d: 64, dt: Dt::Bf16 },
            Problem { b: 1, h: 4, hkv: 4, nq: 333, nk: 333, d: 128, dt: Dt::F16 },
        ]
        .into_iter()
        .enumerate()
        {
            let kernel = kernel(&gpu, MethodPattern::Moa, &p);
            let x = inputs(&gpu, &p, 80 + i as u64, false);
            let out = ok(moa_attention(&gpu, &kernel, &x.q, &x.k, &x.v, layer, p.nk));
            let mut values = BTreeMap::new();
            let h = p.h;
            values.insert("alpha".to_string(), InputValue::I32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.alpha as i32).collect() });
            values.insert("beta".to_string(), InputValue::F32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.beta as f32).collect() });
            values.insert("sink".to_string(), InputValue::I32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.sink as i32).collect() });
            values.insert("N".to_string(), InputValue::I32(p.nk as i32));
            compare(&format!("moa spans {:?}", ok(layer.spans(p.nk))), MethodPattern::Moa, values, &p, &x, &out.o, &out.lse);
        }
        // Wrong head count: a clear error, nothing launched.
        let p = Problem { b: 1, h: 2, hkv: 2, nq: 64, nk: 64, d: 64, dt: Dt::Bf16 };
        let kernel = kernel(&gpu, MethodPattern::Moa, &p);
        let x = inputs(&gpu, &p, 1, false);
        let err = moa_attention(&gpu, &kernel, &x.q, &x.k, &x.v, layer, 64).expect_err("4 heads in the plan, 2 in q");
        assert!(err.to_string().contains("4 head(s) but q has 2"), "{err}");
    }

    #[test]
    fn sparsek_attention_matches_the_reference() {
        let Some((gpu, _)) = setup("sparsek_attention_matches_the_reference") else { return };
        for (i, (p, topk, window, reduce)) in [
            (Problem { b: 2, h: 4, hkv: 2, nq: 700, nk: 700, d: 64, dt: Dt::Bf16 }, 3, 64, BlockReduce::Max),
            (Problem { b: 1, h: 2, hkv: 2, nq: 400, nk: 400, d: 128, dt: Dt::Bf16 }, 2, 0, BlockReduce::Mean),
        ]
        .into_iter()
        .enumerate()
        {
            let kernel = kernel(&gpu, MethodPattern::TopK, &p);
            let x = inputs(&gpu, &p, 90 + i as u64, false);
            let w = Noise::new(95 + i as u64).vec(p.d);
            let cfg = SparseKConfig { topk, window, reduce };
            let out = ok(sparsek_attention(&gpu, &kernel, &x.q, &x.k, &x.v, TokenScores::Weights(&w), &cfg));
            let u = cpu::token_scores(&x.kr, p.d, &w);
            let nkb = p.nk.div_ceil(64);
            let sel = cpu::topk_blocks(&cpu::block_scores(&u, p.nk, reduce), p.b, p.h, p.hkv, nkb, p.nq, topk, window);
            assert_eq!(ok(out.sel.to_host_i32()), sel, "selection");
            let mut values = BTreeMap::new();
            values.insert("sel".to_string(), InputValue::I32Array { shape: vec![p.b, p.h, p.nq.div_ceil(64), topk], data: sel });
            values.insert("W".to_string(), InputValue::I32(window));
            compare(&format!("sparsek topk {topk} W {window} {reduce:?}"), MethodPattern::TopK, values.clone(), &p, &x, &out.o, &out.lse);
            // Given scores (per key/value head) take the same path.
            let ut = ok(DeviceTensor::from_host_f32(&gpu, &u, &[p.b, p.hkv, p.nk]));
            let again = ok(sparsek_attention(&gpu, &kernel, &x.q, &x.k, &x.v, TokenScores::Given(&ut), &cfg));
            assert_eq!(ok(again.o.to_host_as_f32()), ok(out.o.to_host_as_f32()), "given scores = computed scores");
        }
    }
}
