//! GPU helper ops of the seed methods: everything SCFA (hash buckets,
//! QK-drop), SparseK and MoA do around the attention kernel itself. The ops
//! are CUDA C (`runtime/kernels/ops.cu`, embedded) compiled by NVRTC at first
//! use for the device's compute capability, loaded once per [`Gpu`](crate::gpu::Gpu) and kept
//! in a [`GpuOps`]. Each op is a typed wrapper that checks shapes, dtypes and
//! layouts and returns an [`OpError`] before launching anything.
//!
//! This module owns the ops and their CPU twins ([`cpu`], the oracles for
//! the GPU tests); it must not launch attention kernels (that is
//! [`crate::methods`]) or touch generated PTX.
//!
//! - [`hash`]: LSH buckets, stable sort by bucket, gather and scatter of rows.
//! - [`compact`]: QK-drop keep masks, stable compaction with padding.
//! - [`scores`]: SparseK token and block scores, causal top-k block
//!   selection, the SPARSEK operator's threshold tau.

// `%` rather than is_multiple_of: the workspace supports Rust 1.85.
#![allow(clippy::manual_is_multiple_of)]

pub mod compact;
pub mod cpu;
mod error;
pub mod hash;
mod module;
pub mod scores;

pub use compact::{Compacted, KeepMask};
pub use error::{OpError, OpResult};
pub use hash::BucketOrder;
pub use module::{compile_ops_ptx, nvrtc_present, GpuOps, OPS_ENTRIES, OPS_SOURCE};
pub use scores::BlockReduce;

use crate::tensor::{DeviceTensor, ElemType};
use crate::validate::is_contiguous;

/// The query and key block size of the SparseK `TopK` pattern's block list.
pub const TOPK_BLOCK: usize = 64;
/// Largest number of hash buckets (the sort keeps one counter per bucket per
/// warp in shared memory).
pub const MAX_BUCKETS: usize = 1024;
/// Largest head dim the row ops take (Lacuna's kernels stop at 256 too).
pub const MAX_HEAD_DIM: usize = 256;
/// CUDA's limit on a grid's y dimension, which carries B·H in some ops.
const MAX_GRID_Y: usize = 65_535;

pub(crate) fn invalid(what: impl Into<String>, problem: impl Into<String>) -> OpError {
    OpError::Invalid { what: what.into(), problem: problem.into() }
}

/// Checks rank and dims of `t` against `want` (`None` = any size ≥ 1).
pub(crate) fn check_shape(name: &str, t: &DeviceTensor, want: &[Option<usize>], layout: &str) -> OpResult<()> {
    let shape = t.shape();
    let ok = shape.len() == want.len() && shape.iter().zip(want).all(|(&s, w)| s >= 1 && w.is_none_or(|w| w == s));
    if !ok {
        let expected: Vec<String> = want.iter().map(|w| w.map_or("_".into(), |w| w.to_string())).collect();
        return Err(invalid(
            name,
            format!("has shape {shape:?}, expected [{}] {layout} (no dimension may be 0)", expected.join(", ")),
        ));
    }
    Ok(())
}

pub(crate) fn check_dtype(name: &str, t: &DeviceTensor, want: ElemType) -> OpResult<()> {
    if t.dtype() != want {
        return Err(invalid(name, format!("is {}, but {want} is needed", t.dtype())));
    }
    Ok(())
}

pub(crate) fn check_contiguous(name: &str, t: &DeviceTensor) -> OpResult<()> {
    if !is_contiguous(t.shape(), t.strides()) {
        return Err(invalid(
            name,
            format!("has strides {:?} but must be contiguous; make a contiguous copy", t.strides()),
        ));
    }
    Ok(())
}

pub(crate) fn check_same_gpu(name: &str, t: &DeviceTensor, ordinal: usize) -> OpResult<()> {
    if t.gpu().ordinal() != ordinal {
        return Err(invalid(
            name,
            format!("lives on device {} but the ops run on device {ordinal}; upload it with the same Gpu", t.gpu().ordinal()),
        ));
    }
    Ok(())
}

/// A bf16/fp16 row tensor (B, H, N, D) with head_dim stride 1: returns
/// (B, H, N, D) and whether it is fp16.
pub(crate) fn check_rows(name: &str, t: &DeviceTensor) -> OpResult<([usize; 4], bool)> {
    check_shape(name, t, &[None, None, None, None], "(B, H, N, D)")?;
    let is_f16 = match t.dtype() {
        ElemType::Bf16 => false,
        ElemType::F16 => true,
        other => return Err(invalid(name, format!("is {other}; rows must be bf16 or fp16"))),
    };
    let s = t.shape();
    if t.strides()[3] != 1 {
        return Err(invalid(name, "the last (head_dim) dimension must have stride 1; make a contiguous copy"));
    }
    if s[3] > MAX_HEAD_DIM {
        return Err(invalid(name, format!("head_dim is {}, above the limit of {MAX_HEAD_DIM}", s[3])));
    }
    if s[0] * s[1] > MAX_GRID_Y {
        return Err(invalid(name, format!("B·H is {}, above {MAX_GRID_Y} (a CUDA grid dimension)", s[0] * s[1])));
    }
    if s[2] > i32::MAX as usize {
        return Err(invalid(name, format!("N is {}, above i32::MAX", s[2])));
    }
    Ok(([s[0], s[1], s[2], s[3]], is_f16))
}

/// An i32 (B, H, N) contiguous tensor: returns its shape.
pub(crate) fn check_index3(name: &str, t: &DeviceTensor) -> OpResult<[usize; 3]> {
    check_shape(name, t, &[None, None, None], "(B, H, N)")?;
    check_dtype(name, t, ElemType::I32)?;
    check_contiguous(name, t)?;
    let s = t.shape();
    if s[2] > i32::MAX as usize {
        return Err(invalid(name, format!("N is {}, above i32::MAX", s[2])));
    }
    Ok([s[0], s[1], s[2]])
}

/// `a` heads are a whole multiple of `b` heads.
pub(crate) fn group_of(what: &str, heads: usize, base: usize) -> OpResult<usize> {
    if base == 0 || heads % base != 0 {
        return Err(invalid(what, format!("has {heads} heads, not a multiple of {base}")));
    }
    Ok(heads / base)
}
