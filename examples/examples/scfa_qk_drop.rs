//! SCFA QK-dropping end to end on the GPU: keep masks for queries and keys,
//! stable compaction into original positions, and the QkDrop kernel reading
//! and writing rows through the compaction (dropped queries: output 0,
//! LSE −inf; no gather or scatter pass); one call. Checks the
//! result against the CPU reference with the equivalent mask in original
//! order and times it against dense causal attention of the same shape.
//!
//!   cargo run --release -p lacuna-examples --example scfa_qk_drop -- [--drop-pct 80] [--n 16384] [--heads 16]

use std::collections::BTreeMap;

use lacuna_examples::{arg, check_against_reference, compile_method_by_length, dense_causal_ms, gpu, median_ms, ok, random_qkv, report_time, Noise, Shape};
use lacuna_ir::InputValue;
use lacuna_runtime::methods::MethodPattern;
use lacuna_runtime::{scfa_qk_drop_attention, DeviceTensor, ElemType, ForwardOptions, Gpu, GpuOps, KeepMask, KernelForKeys, PatternArgs};

fn masks(gpu: &Gpu, s: Shape, drop_pct: u64, seed: u64) -> (Vec<bool>, Vec<bool>, KeepMask, KeepMask) {
    let mut noise = Noise::new(seed);
    let mut keep = |heads: usize| -> Vec<bool> { (0..s.batch * heads * s.n).map(|_| noise.next_u64() % 100 >= drop_pct).collect() };
    let (qk, kk) = (keep(s.heads), keep(s.kv_heads));
    let qm = ok(KeepMask::from_host_bool(gpu, &qk, [s.batch, s.heads, s.n]));
    let km = ok(KeepMask::from_host_bool(gpu, &kk, [s.batch, s.kv_heads, s.n]));
    (qk, kk, qm, km)
}

fn main() {
    let gpu = gpu();
    let drop_pct = arg("drop-pct", 80) as u64;
    let iters = arg("iters", 10);

    let s = Shape { batch: 1, heads: 4, kv_heads: 4, n: arg("check-n", 1024), head_dim: 64 };
    let kernel = compile_method_by_length(&gpu, MethodPattern::QkDrop, s);
    let x = random_qkv(&gpu, s, 1);
    let (qk, kk, qm, km) = masks(&gpu, s, drop_pct, 3);
    let out = ok(scfa_qk_drop_attention(&gpu, &kernel, &x.q, &x.k, &x.v, &qm, &km));
    let pos = |keep: &[bool], pad: i32| -> Vec<i32> {
        keep.iter().enumerate().map(|(j, &k)| if k { (j % s.n) as i32 } else { pad }).collect()
    };
    let mut values = BTreeMap::new();
    let arr = |data: Vec<i32>| InputValue::I32Array { shape: vec![s.batch, s.heads, s.n], data };
    values.insert("q_pos".into(), arr(pos(&qk, -1)));
    values.insert("k_pos".into(), arr(pos(&kk, i32::MAX)));
    check_against_reference(&MethodPattern::QkDrop.ir(), values, s, &x, &out.o, &out.lse);

    let s = Shape { batch: arg("batch", 1), heads: arg("heads", 16), kv_heads: arg("heads", 16), n: arg("n", 16384), head_dim: 64 };
    let kernel = compile_method_by_length(&gpu, MethodPattern::QkDrop, s);
    let x = random_qkv(&gpu, s, 2);
    let (_, _, qm, km) = masks(&gpu, s, drop_pct, 4);
    let method = median_ms(&gpu, iters, || {
        ok(scfa_qk_drop_attention(&gpu, &kernel, &x.q, &x.k, &x.v, &qm, &km));
    });
    // The attention kernel alone, given the compaction (into the full
    // length, as the pipeline makes it), and the class it picks for Nk.
    let ops = ok(GpuOps::for_gpu(&gpu));
    let (q_pos, k_pos) = (ok(ops.compact_into(&qm, s.n, -1)), ok(ops.compact_into(&km, s.n, i32::MAX)));
    let args = PatternArgs::new().tensor("q_pos", &q_pos).tensor("k_pos", &k_pos);
    let mut o = ok(DeviceTensor::zeros(&gpu, ElemType::Bf16, x.q.shape()));
    let mut lse = ok(DeviceTensor::zeros(&gpu, ElemType::F32, &x.q.shape()[..3]));
    let picked = kernel.for_keys(s.n);
    let kernel_only = median_ms(&gpu, iters, || {
        ok(picked.forward_rows_into(&x.q, &x.k, &x.v, &q_pos, &k_pos, &args, &mut o, &mut lse, ForwardOptions::default()));
    });
    // The busiest (b, h)'s kept tokens (the counts read back, for this print only).
    let (qc, kc) = (ok(ops.compact(&qm, -1)), ok(ops.compact(&km, i32::MAX)));
    let dense = dense_causal_ms(&gpu, s, &x, iters);
    println!(
        "dropping {drop_pct}% of queries and keys (independently per head): the busiest head keeps {} queries, {} keys; \
         attention kernel alone {kernel_only:.3} ms",
        qc.padded_len(),
        kc.padded_len()
    );
    report_time(s, method, dense);
}
