//! Lacuna's runtime: loads generated PTX, checks every launch against the
//! kernel's manifest, and launches it through cudarc. The only crate that
//! touches CUDA; it links no LLVM unless the `jit` feature pulls in the code
//! generator to compile patterns on first use.
//!
//! - [`gpu`]: the device, its context and stream, timing.
//! - [`tensor`]: device tensors, host copies, strided views.
//! - [`args`]: values for a pattern's named inputs.
//! - [`validate`]: every pre-launch check, pure (tested without a GPU).
//! - [`kernel`]: loading a kernel and launching it.
//! - [`by_length`]: one kernel per key-length class, picked per launch.
//! - [`jit`]: compile on first use with an on-disk PTX cache.
//! - [`ops`]: the seed methods' helper ops (NVRTC-compiled CUDA C) and their CPU twins.
//! - [`methods`]: SCFA hash / QK-drop, SparseK and MoA end to end, one call each.
//! - [`error`]: what can go wrong, and what to do about it.
//!
//! ```no_run
//! use lacuna_runtime::{AttentionKernel, DeviceTensor, ForwardOptions, Gpu, PatternArgs};
//! # fn demo(pattern: &lacuna_ir::PatternIr, ptx: &str, q: &[half::bf16]) -> lacuna_runtime::Result<()> {
//! let gpu = Gpu::new(0)?;
//! let kernel = AttentionKernel::from_ptx(&gpu, ptx, pattern)?;
//! let q = DeviceTensor::from_host_bf16(&gpu, q, &[1, 8, 1024, 128])?;
//! let (o, lse) = kernel.forward(&q, &q, &q, &PatternArgs::new().i32("W", 256), ForwardOptions::default())?;
//! let o = o.to_host_bf16()?;
//! # let _ = (o, lse); Ok(()) }
//! ```

pub mod args;
pub mod by_length;
pub mod clock;
pub mod error;
pub mod gpu;
pub mod jit;
pub mod kernel;
pub mod methods;
pub mod ops;
pub mod tensor;
pub mod validate;

pub use args::PatternArgs;
pub use by_length::{KernelByLength, KernelForKeys};
pub use error::{Result, RuntimeError};
pub use gpu::Gpu;
pub use kernel::{AttentionKernel, ForwardOptions};
pub use methods::{
    moa_attention, scfa_hash_attention, scfa_qk_drop_attention, sparsek_attention, MethodOutput, MethodPattern,
};
pub use ops::{GpuOps, KeepMask, OpError, OpResult};
pub use tensor::{DeviceTensor, ElemType};

/// Re-exported so callers can build bf16/fp16 host data without naming `half` themselves.
pub use half;
pub use lacuna_ir::{Arch, Dtype, KernelManifest};
