//! SparseK (Lou et al., 2024), block form, end to end: per-key scores (given,
//! or u = K·w), 64-key block scores, causal top-k key blocks per 64-query
//! block, then the `TopK` kernel over the selected blocks plus a causal
//! window. No reordering: the output is already in original order.

use super::{check_kernel, check_qkv, MethodPattern};
use crate::args::PatternArgs;
use crate::gpu::Gpu;
use crate::kernel::{AttentionKernel, ForwardOptions};
use crate::ops::{check_contiguous, check_dtype, group_of, invalid, BlockReduce, GpuOps, OpResult};
use crate::tensor::{DeviceTensor, ElemType};

/// Where the per-key scores come from.
#[derive(Clone, Copy, Debug)]
pub enum TokenScores<'a> {
    /// f32 (B, Hs, Nk) with H a multiple of Hs (per key/value head or per
    /// query head), contiguous.
    Given(&'a DeviceTensor),
    /// The scoring vector w (D values): u = K · w per key/value head.
    Weights(&'a [f32]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseKConfig {
    /// Key blocks per 64-query block, the diagonal block included (≥ 1).
    pub topk: usize,
    /// Causal window of W keys on top of the selection (0 = none).
    pub window: i32,
    /// How a block's score is made from its keys' scores.
    pub reduce: BlockReduce,
}

#[derive(Debug)]
pub struct SparseKOutput {
    /// (B, H, Nq, D), original order.
    pub o: DeviceTensor,
    /// f32 (B, H, Nq).
    pub lse: DeviceTensor,
    /// The selection the kernel used: i32 (B, H, ceil(Nq/64), topk), -1 padding.
    pub sel: DeviceTensor,
}

/// SparseK block top-k attention (pattern `TopK`).
pub fn sparsek_attention(
    gpu: &Gpu,
    kernel: &AttentionKernel,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    scores: TokenScores<'_>,
    cfg: &SparseKConfig,
) -> OpResult<SparseKOutput> {
    let p = check_qkv(q, k, v)?;
    check_kernel(gpu, kernel, "sparsek_attention", MethodPattern::TopK, &p)?;
    let ops = GpuOps::for_gpu(gpu)?;
    let computed;
    let u = match scores {
        TokenScores::Given(t) => {
            check_dtype("the token scores", t, ElemType::F32)?;
            check_contiguous("the token scores", t)?;
            let s = t.shape();
            if s.len() != 3 || s[0] != p.batch || s[2] != p.kv_len || s[1] == 0 {
                return Err(invalid(
                    "the token scores",
                    format!("have shape {s:?}; they must be (B, Hs, Nk) = ({}, Hs, {})", p.batch, p.kv_len),
                ));
            }
            group_of("the query heads", p.heads, s[1])?;
            t
        }
        TokenScores::Weights(w) => {
            if w.len() != p.head_dim {
                return Err(invalid("the score weights w", format!("have {} values; give one per head_dim ({})", w.len(), p.head_dim)));
            }
            let w = DeviceTensor::from_host_f32(gpu, w, &[w.len()])?;
            computed = ops.token_scores(k, &w)?;
            &computed
        }
    };
    let block = ops.block_scores(u, cfg.reduce)?;
    let sel = ops.topk_blocks(&block, p.heads, p.q_len, cfg.topk, cfg.window)?;
    let args = PatternArgs::new().block_list("sel", &sel).i32("W", cfg.window);
    let (o, lse) = kernel.forward(q, k, v, &args, ForwardOptions::default())?;
    Ok(SparseKOutput { o, lse, sel })
}
