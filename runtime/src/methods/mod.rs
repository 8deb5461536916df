//! The three seed methods end to end on the GPU, one call each: raw Q/K/V
//! (B, H, N, D) in, output and log-sum-exp in ORIGINAL token order out.
//! Every step runs on the Gpu's stream (helper ops from [`crate::ops`], then
//! the attention kernel of the method's standard pattern); the host only
//! makes small parameters (the LSH projection from a seed, per-head MoA
//! values) and reads nothing back.
//!
//! - [`scfa`]: SCFA hash buckets ([`scfa_hash_attention`]) and QK-drop
//!   ([`scfa_qk_drop_attention`]).
//! - [`sparsek`]: SparseK block top-k ([`sparsek_attention`]).
//! - [`moa`]: MoA plans ([`MoaPlan`]) and heterogeneous heads in one launch
//!   ([`moa_attention`]).
//!
//! This module owns the order of the steps and the checks that the kernel
//! fits the method; it must not hold CUDA code of its own.

// `%` rather than is_multiple_of: the workspace supports Rust 1.85.
#![allow(clippy::manual_is_multiple_of)]

pub mod moa;
pub mod scfa;
pub mod sparsek;

pub use moa::{moa_attention, MoaHead, MoaLayer, MoaPlan, PlanError, PlanProblem};
pub use scfa::{scfa_hash_attention, scfa_qk_drop_attention, Causal, HashConfig, Projection};
pub use sparsek::{sparsek_attention, SparseKConfig, SparseKOutput, TokenScores};

use lacuna_ir::{Pattern, PatternIr};

use crate::gpu::Gpu;
use crate::kernel::AttentionKernel;
use crate::ops::{check_rows, invalid, OpError, OpResult};
use crate::tensor::{DeviceTensor, ElemType};

/// A method's result in original token order.
#[derive(Debug)]
pub struct MethodOutput {
    /// (B, H, Nq, D), q's dtype, contiguous. Rows whose every key is masked
    /// (or, for QK-drop, dropped queries) are 0.
    pub o: DeviceTensor,
    /// f32 (B, H, Nq), natural log; −inf where `o` is a masked row.
    pub lse: DeviceTensor,
}

/// The standard pattern each method launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodPattern {
    /// SCFA hash, inclusive causality (`q_pos >= k_pos`).
    HashBucket,
    /// SCFA hash, strict causality (`q_pos > k_pos`, the shared-QK training variant).
    HashBucketStrict,
    /// SCFA QK-drop.
    QkDrop,
    /// SparseK block top-k plus window.
    TopK,
    /// MoA elastic bands.
    Moa,
}

impl MethodPattern {
    pub fn name(self) -> &'static str {
        match self {
            MethodPattern::HashBucket => lacuna_patterns::HashBucket::NAME,
            MethodPattern::HashBucketStrict => lacuna_patterns::HashBucketStrict::NAME,
            MethodPattern::QkDrop => lacuna_patterns::QkDrop::NAME,
            MethodPattern::TopK => lacuna_patterns::TopK::NAME,
            MethodPattern::Moa => lacuna_patterns::Moa::NAME,
        }
    }

    /// The pattern's IR, to compile ahead of time (`lacuna compile`) or
    /// load PTX for with `AttentionKernel::from_ptx`.
    pub fn ir(self) -> PatternIr {
        match self {
            MethodPattern::HashBucket => lacuna_patterns::HashBucket::ir(),
            MethodPattern::HashBucketStrict => lacuna_patterns::HashBucketStrict::ir(),
            MethodPattern::QkDrop => lacuna_patterns::QkDrop::ir(),
            MethodPattern::TopK => lacuna_patterns::TopK::ir(),
            MethodPattern::Moa => lacuna_patterns::Moa::ir(),
        }
    }

    /// Compiles (or takes from the on-disk cache) and loads the kernel the
    /// method's pipeline runs: for SCFA's patterns one that reads and writes
    /// rows through index arrays, so no gather or scatter pass is needed;
    /// long-row tiles where [`MethodPattern::long_rows`] says so. The CLI's
    /// `load_method_kernel` shapes the same plan from the same two methods.
    #[cfg(feature = "jit")]
    pub fn compile(self, gpu: &Gpu, head_dim: u32, dtype: lacuna_ir::Dtype) -> OpResult<AttentionKernel> {
        Ok(AttentionKernel::compile_with(gpu, &self.ir(), head_dim, dtype, self.regroups_rows(), self.long_rows(), None)?)
    }

    /// [`MethodPattern::compile`] for every key-length class of the
    /// method's plan (`KernelPlan::length_classes`), the kernel picked per
    /// launch by its key length: what the SCFA pipelines take when their
    /// lengths vary (QK-drop: short-row tiles up to 4K keys, long-row tiles
    /// past it).
    #[cfg(feature = "jit")]
    pub fn compile_by_length(self, gpu: &Gpu, head_dim: u32, dtype: lacuna_ir::Dtype) -> OpResult<crate::KernelByLength> {
        Ok(crate::KernelByLength::compile(gpu, &self.ir(), head_dim, dtype, self.regroups_rows(), self.long_rows())?)
    }

    /// Whether the method runs attention on regrouped rows (SCFA: bucket-sorted or compacted).
    pub fn regroups_rows(self) -> bool {
        matches!(self, MethodPattern::HashBucket | MethodPattern::HashBucketStrict | MethodPattern::QkDrop)
    }

    /// Whether the kernel's tiles should be shaped for long rows although
    /// the planner, from the pattern alone, expects short ones. Measured on
    /// an H100 (B=4, H=16, D=64, docs/perf-log.md):
    /// - QK-drop (scanned): the compacted rows stay causal on positions, so a
    ///   query sees about half of the kept keys; the long-row kernel is
    ///   faster from about 4K compacted keys (16K, 50% dropped: 1.87 vs
    ///   2.04 ms). Below that short-row tiles are 4-12% faster (H200), which
    ///   [`MethodPattern::compile_by_length`] gives.
    ///
    /// MoA took long rows too (v4: 2-9% faster from 8K on), until the
    /// short-row kernels got faster (v4.4-v4.8): at 50% density short rows
    /// are now 9% faster at 8K, 6% at 16K, 1.7% slower at 32K (H200).
    pub fn long_rows(self) -> bool {
        matches!(self, MethodPattern::QkDrop)
    }
}

/// Shapes of one method call, from q (B, H, Nq, D) and k, v (B, Hkv, Nk, D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Qkv {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    pub dtype: ElemType,
}

pub(crate) fn check_qkv(q: &DeviceTensor, k: &DeviceTensor, v: &DeviceTensor) -> OpResult<Qkv> {
    let ([b, h, nq, d], _) = check_rows("q", q)?;
    let ([bk, hkv, nk, dk], _) = check_rows("k", k)?;
    check_rows("v", v)?;
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Err(invalid("q, k and v", format!("are {}, {} and {}; give them one dtype", q.dtype(), k.dtype(), v.dtype())));
    }
    if v.shape() != k.shape() {
        return Err(invalid("v", format!("has shape {:?}; it must have k's shape {:?}", v.shape(), k.shape())));
    }
    if bk != b || dk != d {
        return Err(invalid("k", format!("has shape {:?}; its batch and head_dim must be q's ({b}, {d})", k.shape())));
    }
    if h % hkv != 0 {
        return Err(invalid("q", format!("has {h} heads and k has {hkv}: the query heads must be a multiple of the key/value heads")));
    }
    Ok(Qkv { batch: b, heads: h, kv_heads: hkv, q_len: nq, kv_len: nk, head_dim: d, dtype: q.dtype() })
}

/// The kernel implements `expected`, for this head_dim and dtype, on `gpu`.
pub(crate) fn check_kernel(
    gpu: &Gpu,
    kernel: &AttentionKernel,
    method: &'static str,
    expected: MethodPattern,
    p: &Qkv,
) -> OpResult<()> {
    let m = kernel.manifest();
    if m.pattern != expected.name() {
        return Err(OpError::WrongKernel { method, expected: expected.name(), got: m.pattern.clone() });
    }
    if kernel.gpu().ordinal() != gpu.ordinal() {
        return Err(invalid(
            "the kernel",
            format!("is loaded on device {} but the method runs on device {}", kernel.gpu().ordinal(), gpu.ordinal()),
        ));
    }
    if m.head_dim as usize != p.head_dim {
        return Err(invalid(
            "the kernel",
            format!("was compiled for head_dim {} but q has head_dim {}; compile it for {}", m.head_dim, p.head_dim, p.head_dim),
        ));
    }
    if ElemType::from(m.dtype) != p.dtype {
        return Err(invalid(
            "the kernel",
            format!("was compiled for {} but q is {}; compile it for {}", ElemType::from(m.dtype), p.dtype, p.dtype),
        ));
    }
    Ok(())
}

/// Fresh outputs in original order: o = 0, lse = −inf (what a row no key
/// reaches must hold).
pub(crate) fn fresh_outputs(gpu: &Gpu, p: &Qkv) -> OpResult<MethodOutput> {
    let o = DeviceTensor::zeros(gpu, p.dtype, &[p.batch, p.heads, p.q_len, p.head_dim])?;
    let mut lse = DeviceTensor::zeros(gpu, ElemType::F32, &[p.batch, p.heads, p.q_len])?;
    lse.fill_f32(f32::NEG_INFINITY)?;
    Ok(MethodOutput { o, lse })
}
