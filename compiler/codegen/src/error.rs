//! Everything code generation can refuse, as values with a message that says
//! what to do next. Nothing in this crate panics or aborts inside LLVM on user
//! input: plans and patterns are checked here before LLVM sees them.

use lacuna_ir::{Arch, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("head_dim {head_dim} is not supported; use a multiple of 16 from 16 to 256 (64 and 128 are tuned)")]
    UnsupportedHeadDim { head_dim: u32 },

    #[error("invalid kernel plan: {reason}; start from KernelPlan::for_pattern and change one field at a time")]
    InvalidPlan { reason: String },

    #[error("the plan needs {bytes} bytes of shared memory, more than the {limit} bytes {arch} allows per block; lower `stages`, `block_q` or `block_k`", arch = arch.name())]
    SharedMemory { bytes: u32, limit: u32, arch: Arch },

    #[error("pattern `{pattern}` is not valid IR:\n{}", errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    InvalidPattern { pattern: String, errors: Vec<VerifyError> },

    #[error("the plan asks for closed-form key ranges, but pattern `{pattern}` puts no affine bound on `k`; use KeySource::Scan (KernelPlan::for_pattern picks the right one)")]
    NoKeyRange { pattern: String },

    #[error("LLVM {llvm} has no intrinsic `{name}`; this LLVM is too old or too new for lacuna (it needs LLVM 22)", llvm = "22")]
    MissingIntrinsic { name: String },

    #[error("internal error while building LLVM IR: {0} (a bug in lacuna-codegen; please report it with the pattern and plan)")]
    Builder(String),

    #[error("LLVM {stage} failed: {message}")]
    Llvm { stage: &'static str, message: String },
}

impl From<inkwell::builder::BuilderError> for CodegenError {
    fn from(e: inkwell::builder::BuilderError) -> Self {
        CodegenError::Builder(e.to_string())
    }
}

pub type Result<T, E = CodegenError> = std::result::Result<T, E>;
