//! End to end with the code generator (`--features jit`): compile on first
//! use through the cache, launch, compare with the CPU reference. Skips with
//! a note on a machine without libcuda.
#![cfg(feature = "jit")]

use std::collections::BTreeMap;

use lacuna_ir::reference::{attention, AttentionShape, Precision};
use lacuna_ir::{pattern, Bindings, Dims, Dtype, Pattern};
use lacuna_runtime::half::bf16;
use lacuna_runtime::jit::cache_dir;
use lacuna_runtime::{AttentionKernel, DeviceTensor, ForwardOptions, Gpu, PatternArgs};

pattern! {
    /// Plain causal.
    pub Causal() = q >= k;
}

fn values(n: usize, seed: u64) -> Vec<bf16> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bf16::from_f32((x % 2001) as f32 / 1000.0 - 1.0)
        })
        .collect()
}

#[test]
fn compile_cache_launch_and_match_the_reference() {
    if !lacuna_runtime::gpu::driver_present() {
        eprintln!("note: no libcuda on this machine; GPU test skipped");
        return;
    }
    let gpu = Gpu::new(0).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("lacuna-jit-test-{}", std::process::id()));
    std::env::set_var("LACUNA_CACHE", &dir);
    assert_eq!(cache_dir().as_deref(), Some(dir.as_path()));

    let p = Causal::ir();
    let (b, h, hkv, nq, nk, d) = (1, 4, 2, 200, 200, 64);
    let t0 = std::time::Instant::now();
    let kernel = AttentionKernel::compile(&gpu, &p, d as u32, Dtype::Bf16).unwrap_or_else(|e| panic!("{e}"));
    let cold = t0.elapsed();
    let files: Vec<_> = std::fs::read_dir(&dir).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert_eq!(files.len(), 1, "one cache file: {files:?}");
    let t1 = std::time::Instant::now();
    let again = AttentionKernel::compile(&gpu, &p, d as u32, Dtype::Bf16).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("compile: cold {cold:?}, from cache {:?}; {}", t1.elapsed(), again.manifest());
    // A damaged cache file is recompiled, not an error.
    std::fs::write(&files[0], "garbage").expect("writable");
    AttentionKernel::compile(&gpu, &p, d as u32, Dtype::Bf16).unwrap_or_else(|e| panic!("recompile: {e}"));
    assert!(std::fs::read_to_string(&files[0]).is_ok_and(|s| s.starts_with("// lacuna-manifest: ")));
    // A short problem's kernel: short-row tiles, cached beside the other.
    let short = AttentionKernel::compile_for_length(&gpu, &p, d as u32, Dtype::Bf16, nk).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((short.manifest().block_q, kernel.manifest().block_q), (64, 128), "tiles by length");

    let (qh, kh, vh) = (values(b * h * nq * d, 1), values(b * hkv * nk * d, 2), values(b * hkv * nk * d, 3));
    let q = DeviceTensor::from_host_bf16(&gpu, &qh, &[b, h, nq, d]).unwrap_or_else(|e| panic!("{e}"));
    let k = DeviceTensor::from_host_bf16(&gpu, &kh, &[b, hkv, nk, d]).unwrap_or_else(|e| panic!("{e}"));
    let v = DeviceTensor::from_host_bf16(&gpu, &vh, &[b, hkv, nk, d]).unwrap_or_else(|e| panic!("{e}"));
    let (o, lse) = kernel.forward(&q, &k, &v, &PatternArgs::new(), ForwardOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let o = o.to_host_as_f32().unwrap_or_else(|e| panic!("{e}"));
    let lse = lse.to_host_f32().unwrap_or_else(|e| panic!("{e}"));

    let f = |x: &[bf16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    let bindings = Bindings::new(&p, Dims::new(b, h, nq, nk), BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    let shape = AttentionShape { batch: b, heads: h, kv_heads: hkv, q_len: nq, kv_len: nk, head_dim: d };
    let want = attention(&p, &bindings, shape, &f(&qh), &f(&kh), &f(&vh), 1.0 / (d as f32).sqrt(), Precision::F64)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = o.iter().zip(&want.out).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let lse_nat = lse.iter().zip(&want.lse).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let lse_log2 = lse.iter().zip(&want.lse).map(|(a, b)| (a - b * std::f32::consts::LOG2_E).abs()).fold(0f32, f32::max);
    eprintln!("max |o - ref| = {err}; max lse diff: natural {lse_nat}, log2 {lse_log2}");
    assert!(o.iter().all(|x| x.is_finite()), "o has non-finite values");
    assert!(err < 2e-2, "o differs from the CPU reference by {err}");
    // The kernel's lse is in natural-log units, like the reference's.
    assert!(lse_nat < 1e-3, "lse differs from the CPU reference by {lse_nat}");
    let _ = std::fs::remove_dir_all(&dir);
}

pattern! {
    /// Causal aligned bottom-right (decoding), as the standard `causal-decode`.
    pub Decode(past: i32) = k <= q + past;
}

/// Split-KV through the public API: the same decoding problem with the
/// plain entry, the runtime's split count and forced ones gives the same O
/// and LSE; bad counts are errors that say what to do.
#[test]
fn split_kv_matches_the_plain_kernel_and_refuses_bad_counts() {
    if !lacuna_runtime::gpu::driver_present() {
        eprintln!("note: no libcuda on this machine; GPU test skipped");
        return;
    }
    let gpu = Gpu::new(0).unwrap_or_else(|e| panic!("{e}"));
    std::env::set_var("LACUNA_CACHE", std::env::temp_dir().join(format!("lacuna-jit-split-{}", std::process::id())));
    let p = Decode::ir();
    let (b, h, nq, nk, d) = (2, 4, 3, 3000, 128);
    let kernel = AttentionKernel::compile(&gpu, &p, d as u32, Dtype::Bf16).unwrap_or_else(|e| panic!("{e}"));
    assert!(kernel.manifest().split_kv.is_some());
    let q = DeviceTensor::from_host_bf16(&gpu, &values(b * h * nq * d, 4), &[b, h, nq, d]).unwrap_or_else(|e| panic!("{e}"));
    let k = DeviceTensor::from_host_bf16(&gpu, &values(b * h * nk * d, 5), &[b, h, nk, d]).unwrap_or_else(|e| panic!("{e}"));
    let v = DeviceTensor::from_host_bf16(&gpu, &values(b * h * nk * d, 6), &[b, h, nk, d]).unwrap_or_else(|e| panic!("{e}"));
    let past = (nk - nq) as i32;
    let args = PatternArgs::new().i32("past", past);
    let run = |kv_splits: Option<usize>| {
        let (o, lse) = kernel.forward(&q, &k, &v, &args, ForwardOptions { kv_splits, ..ForwardOptions::default() }).unwrap_or_else(|e| panic!("{kv_splits:?}: {e}"));
        (o.to_host_as_f32().unwrap_or_else(|e| panic!("{e}")), lse.to_host_f32().unwrap_or_else(|e| panic!("{e}")))
    };
    // 8 (b, h) query blocks: the runtime splits them.
    let auto = kernel.kv_splits_for(&q, &k, &v, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(auto > 1, "a decoding grid of 8 CTAs is split ({auto})");
    let (o1, l1) = run(Some(1));
    for splits in [None, Some(2), Some(7), Some(64)] {
        let (o, l) = run(splits);
        let err = o.iter().zip(&o1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let lse_err = l.iter().zip(&l1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("kv_splits {splits:?}: max |o - plain| {err}, lse {lse_err}");
        // bf16 output rounding of two f32 sums taken in different orders.
        assert!(err < 1e-2 && lse_err < 1e-3, "kv_splits {splits:?}: o {err}, lse {lse_err}");
    }
    let e = kernel.forward(&q, &k, &v, &args, ForwardOptions { kv_splits: Some(0), ..ForwardOptions::default() }).expect_err("zero splits");
    assert!(e.to_string().contains("0 splits"), "{e}");
    let e = kernel.forward(&q, &k, &v, &args, ForwardOptions { kv_splits: Some(65), ..ForwardOptions::default() }).expect_err("too many");
    assert!(e.to_string().contains("at most 64"), "{e}");
}
