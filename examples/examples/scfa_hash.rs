//! SCFA hash-bucketed attention end to end on the GPU: LSH buckets, stable
//! sort by bucket, and the HashBucket kernel reading Q/K/V rows and writing
//! O/LSE rows through the sort's permutation (no gather or scatter pass);
//! one call. Checks the result against the CPU reference (buckets
//! recomputed on the CPU from the same projection) and times it against
//! dense causal attention of the same shape.
//!
//!   cargo run --release -p lacuna-examples --example scfa_hash -- [--buckets 64] [--n 16384] [--heads 16] [--batch 1]

use std::collections::BTreeMap;

use lacuna_examples::{arg, check_against_reference, compile_method, dense_causal_ms, gpu, iota, median_ms, ok, random_qkv, report_time, Shape};
use lacuna_ir::InputValue;
use lacuna_runtime::methods::{Causal, HashConfig, MethodPattern, Projection};
use lacuna_runtime::ops::cpu;
use lacuna_runtime::{scfa_hash_attention, DeviceTensor, ElemType, ForwardOptions, GpuOps, PatternArgs};

fn main() {
    let gpu = gpu();
    let buckets = arg("buckets", 64);
    let iters = arg("iters", 10);

    // 1. Correctness at a size the CPU reference handles quickly.
    let s = Shape { batch: 1, heads: 4, kv_heads: 4, n: arg("check-n", 1024), head_dim: 64 };
    let cfg = HashConfig { buckets, projection: Projection::Seed(7), shared_qk: false, causal: Causal::Inclusive };
    let kernel = compile_method(&gpu, MethodPattern::HashBucket, s);
    let x = random_qkv(&gpu, s, 1);
    let out = ok(scfa_hash_attention(&gpu, &kernel, &x.q, &x.k, &x.v, &cfg));
    let r = cfg.projection.matrix(s.head_dim, buckets);
    let mut values = BTreeMap::new();
    let arr = |data: Vec<i32>| InputValue::I32Array { shape: vec![s.batch, s.heads, s.n], data };
    values.insert("q_bucket".into(), arr(cpu::lsh_buckets(&x.qf, s.head_dim, &r, buckets)));
    values.insert("k_bucket".into(), arr(cpu::lsh_buckets(&x.kf, s.head_dim, &r, buckets)));
    values.insert("q_pos".into(), iota(s.batch, s.heads, s.n));
    values.insert("k_pos".into(), iota(s.batch, s.heads, s.n));
    check_against_reference(&MethodPattern::HashBucket.ir(), values, s, &x, &out.o, &out.lse);

    // 2. Time at a long length.
    let s = Shape { batch: arg("batch", 1), heads: arg("heads", 16), kv_heads: arg("heads", 16), n: arg("n", 16384), head_dim: 64 };
    let kernel = compile_method(&gpu, MethodPattern::HashBucket, s);
    let x = random_qkv(&gpu, s, 2);
    let method = median_ms(&gpu, iters, || {
        ok(scfa_hash_attention(&gpu, &kernel, &x.q, &x.k, &x.v, &cfg));
    });
    // The attention kernel alone, given the buckets and the sort.
    let ops = ok(GpuOps::for_gpu(&gpu));
    let rd = ok(ops.upload_projection(&r, s.head_dim, buckets));
    let qo = ok(ops.sort_by_bucket(&ok(ops.lsh_buckets(&x.q, &rd, buckets)), buckets));
    let ko = ok(ops.sort_by_bucket(&ok(ops.lsh_buckets(&x.k, &rd, buckets)), buckets));
    let mut o = ok(DeviceTensor::zeros(&gpu, ElemType::Bf16, x.q.shape()));
    let mut lse = ok(DeviceTensor::zeros(&gpu, ElemType::F32, &x.q.shape()[..3]));
    let args = PatternArgs::new()
        .tensor("q_bucket", &qo.buckets)
        .tensor("k_bucket", &ko.buckets)
        .tensor("q_pos", &qo.perm)
        .tensor("k_pos", &ko.perm);
    let kernel_only = median_ms(&gpu, iters, || {
        ok(kernel.forward_rows_into(&x.q, &x.k, &x.v, &qo.perm, &ko.perm, &args, &mut o, &mut lse, ForwardOptions::default()));
    });
    let helpers = median_ms(&gpu, iters, || {
        ok(ops.sort_by_bucket(&ok(ops.lsh_buckets(&x.q, &rd, buckets)), buckets));
        ok(ops.sort_by_bucket(&ok(ops.lsh_buckets(&x.k, &rd, buckets)), buckets));
    });
    let dense = dense_causal_ms(&gpu, s, &x, iters);
    println!("buckets {buckets}: attention kernel alone {kernel_only:.3} ms; hashing + sorting {helpers:.3} ms");
    report_time(s, method, dense);
}
