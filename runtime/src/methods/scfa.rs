//! SCFA (Pagliardini et al., 2023) end to end: hash-bucketed attention and
//! QK-dropping. Both regroup tokens per (b, h), run exact attention on the
//! regrouped rows with their original positions, and put the output back in
//! original order. With a `row_index` kernel (the default the CLI and the
//! examples build) the regrouping is only an index: the kernel reads Q/K/V
//! rows and writes O/LSE rows through it, so no gathered copy or scatter
//! pass exists; other kernels get the explicit gather → attention → scatter.

use super::{check_kernel, check_qkv, fresh_outputs, MethodOutput, MethodPattern, Qkv};
use crate::args::PatternArgs;
use crate::by_length::KernelForKeys;
use crate::gpu::Gpu;
use crate::kernel::ForwardOptions;
use crate::ops::hash::check_buckets;
use crate::ops::{cpu, invalid, GpuOps, KeepMask, OpResult};
use crate::tensor::DeviceTensor;

/// Where the LSH projection R (D, buckets/2) comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    /// Standard normal entries made on the host from this seed
    /// ([`crate::ops::cpu::projection_from_seed`], reproducible).
    Seed(u64),
    /// Given, row-major (D, buckets/2).
    Given(Vec<f32>),
}

impl Projection {
    /// R as host values for `head_dim` and `buckets`.
    pub fn matrix(&self, head_dim: usize, buckets: usize) -> Vec<f32> {
        match self {
            Projection::Seed(seed) => cpu::projection_from_seed(*seed, head_dim, buckets),
            Projection::Given(r) => r.clone(),
        }
    }
}

/// Causality on original positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Causal {
    /// `q_pos >= k_pos` (pattern `HashBucket`).
    #[default]
    Inclusive,
    /// `q_pos > k_pos` (pattern `HashBucketStrict`; the shared-QK training
    /// variant, where a token's own key would dominate).
    Strict,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HashConfig {
    /// Number of LSH buckets: even, 2..=1024.
    pub buckets: usize,
    pub projection: Projection,
    /// Keys use the queries' buckets and order (needs Nq = Nk; each query
    /// head then orders its own copy of the key/value rows). Otherwise keys
    /// are hashed with the same R and sorted per key/value head.
    pub shared_qk: bool,
    pub causal: Causal,
}

impl HashConfig {
    /// The pattern the kernel must implement.
    pub fn pattern(&self) -> MethodPattern {
        match self.causal {
            Causal::Inclusive => MethodPattern::HashBucket,
            Causal::Strict => MethodPattern::HashBucketStrict,
        }
    }
}

/// SCFA hash-bucketed attention: LSH buckets for queries (and keys), stable
/// sort by bucket per (b, h), gather of Q/K/V into that order, the
/// `HashBucket[Strict]` kernel (same bucket and causal on original
/// positions), and the scatter of O and LSE back to original order.
/// q (B, H, N, D), k and v (B, Hkv, N, D), bf16 or fp16. `kernel`: one
/// kernel, or one per key-length class ([`crate::KernelByLength`]).
pub fn scfa_hash_attention<K: KernelForKeys + ?Sized>(
    gpu: &Gpu,
    kernel: &K,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    cfg: &HashConfig,
) -> OpResult<MethodOutput> {
    let p = check_qkv(q, k, v)?;
    let kernel = kernel.for_keys(p.kv_len);
    check_kernel(gpu, kernel, "scfa_hash_attention", cfg.pattern(), &p)?;
    check_buckets(cfg.buckets)?;
    if cfg.shared_qk && p.q_len != p.kv_len {
        return Err(invalid(
            "shared-QK hashing",
            format!("needs as many keys as queries, got Nq = {} and Nk = {}", p.q_len, p.kv_len),
        ));
    }
    let ops = GpuOps::for_gpu(gpu)?;
    let r = ops.upload_projection(&cfg.projection.matrix(p.head_dim, cfg.buckets), p.head_dim, cfg.buckets)?;

    let q_order = ops.sort_by_bucket(&ops.lsh_buckets(q, &r, cfg.buckets)?, cfg.buckets)?;
    let k_own = if cfg.shared_qk { None } else { Some(ops.sort_by_bucket(&ops.lsh_buckets(k, &r, cfg.buckets)?, cfg.buckets)?) };
    let k_order = k_own.as_ref().unwrap_or(&q_order);

    // The kernel takes key inputs per query head.
    let key_heads = k_order.perm.shape()[1];
    let expanded = if key_heads == p.heads {
        None
    } else {
        let g = p.heads / key_heads;
        Some((ops.expand_heads(&k_order.buckets, g)?, ops.expand_heads(&k_order.perm, g)?))
    };
    let (k_bucket, k_pos) = match &expanded {
        Some((b, pos)) => (b, pos),
        None => (&k_order.buckets, &k_order.perm),
    };
    let args = PatternArgs::new()
        .tensor("q_bucket", &q_order.buckets)
        .tensor("k_bucket", k_bucket)
        .tensor("q_pos", &q_order.perm)
        .tensor("k_pos", k_pos);
    if kernel.manifest().row_index {
        // Every row is some query's: the kernel writes all of o and lse.
        let mut out = MethodOutput {
            o: DeviceTensor::uninit(gpu, p.dtype, &[p.batch, p.heads, p.q_len, p.head_dim])?,
            lse: DeviceTensor::uninit(gpu, crate::tensor::ElemType::F32, &[p.batch, p.heads, p.q_len])?,
        };
        kernel.forward_rows_into(q, k, v, &q_order.perm, k_pos, &args, &mut out.o, &mut out.lse, ForwardOptions::default())?;
        return Ok(out);
    }
    let qs = ops.gather_rows(q, &q_order.perm)?;
    let ks = ops.gather_rows(k, &k_order.perm)?;
    let vs = ops.gather_rows(v, &k_order.perm)?;
    let (os, lses) = kernel.forward(&qs, &ks, &vs, &args, ForwardOptions::default())?;
    let mut out = fresh_outputs(gpu, &p)?;
    ops.scatter_rows(&os, &lses, &q_order.perm, &mut out.o, &mut out.lse)?;
    Ok(out)
}

fn check_keep(name: &str, keep: &KeepMask, p: &Qkv, query: bool) -> OpResult<()> {
    let [b, h, n] = keep.shape();
    let (want_n, ok_heads) = if query {
        (p.q_len, h == p.heads)
    } else {
        (p.kv_len, h == p.heads || h == p.kv_heads)
    };
    if b != p.batch || n != want_n || !ok_heads {
        let heads = if query { format!("{}", p.heads) } else { format!("{} or {}", p.heads, p.kv_heads) };
        return Err(invalid(
            name,
            format!("has shape {:?}; it must be (B, H, N) = ({}, {heads}, {want_n})", keep.shape(), p.batch),
        ));
    }
    Ok(())
}

/// SCFA QK-dropping: keep masks for queries (B, H, Nq) and keys (B, H, Nk)
/// or (B, Hkv, Nk) are compacted stably into original positions (padding
/// queries -1, padding keys i32::MAX, padded to the full length), the
/// `QkDrop` kernel run on the compacted rows (causal on positions), and O
/// and LSE written back in original order. Dropped queries get output 0
/// and LSE −inf.
///
/// Nothing is read back to the host, so the call does not wait for the GPU:
/// the host goes on queueing work while it runs. The kernel's grid covers the full
/// length; a row-index kernel's query blocks that hold only padding (most
/// of the trailing ones at high drop rates) leave before their key scan.
///
/// `kernel`: one kernel, or one per key-length class
/// ([`crate::KernelByLength`], what [`MethodPattern::compile_by_length`]
/// builds), picked by the key length Nk.
pub fn scfa_qk_drop_attention<K: KernelForKeys + ?Sized>(
    gpu: &Gpu,
    kernel: &K,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    q_keep: &KeepMask,
    k_keep: &KeepMask,
) -> OpResult<MethodOutput> {
    let p = check_qkv(q, k, v)?;
    let kernel = kernel.for_keys(p.kv_len);
    check_kernel(gpu, kernel, "scfa_qk_drop_attention", MethodPattern::QkDrop, &p)?;
    check_keep("the query keep mask", q_keep, &p, true)?;
    check_keep("the key keep mask", k_keep, &p, false)?;
    let ops = GpuOps::for_gpu(gpu)?;
    let q_pos = ops.compact_into(q_keep, p.q_len, -1)?;
    let k_pos = ops.compact_into(k_keep, p.kv_len, i32::MAX)?;

    let key_heads = k_keep.shape()[1];
    let expanded = if key_heads == p.heads { None } else { Some(ops.expand_heads(&k_pos, p.heads / key_heads)?) };
    let k_pos_per_head = expanded.as_ref().unwrap_or(&k_pos);
    let args = PatternArgs::new().tensor("q_pos", &q_pos).tensor("k_pos", k_pos_per_head);
    // Dropped queries keep output 0 and LSE -inf: no index names their rows.
    let mut out = fresh_outputs(gpu, &p)?;
    if kernel.manifest().row_index {
        kernel.forward_rows_into(q, k, v, &q_pos, k_pos_per_head, &args, &mut out.o, &mut out.lse, ForwardOptions::default())?;
        return Ok(out);
    }
    let qs = ops.gather_rows(q, &q_pos)?;
    let ks = ops.gather_rows(k, &k_pos)?;
    let vs = ops.gather_rows(v, &k_pos)?;
    let (os, lses) = kernel.forward(&qs, &ks, &vs, &args, ForwardOptions::default())?;
    ops.scatter_rows(&os, &lses, &q_pos, &mut out.o, &mut out.lse)?;
    Ok(out)
}
