//! What the helper ops and the method pipelines can refuse or fail with.
//! Launch errors of the attention kernel itself stay `RuntimeError`s and
//! travel inside [`OpError::Runtime`].

use crate::error::RuntimeError;
use crate::methods::moa::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),

    #[error(
        "NVRTC (libnvrtc.so) was not found: the seed methods' helper ops are CUDA C that Lacuna compiles with NVRTC \
         on first use. Install the CUDA toolkit's NVRTC (e.g. `apt-get install cuda-nvrtc-13-0` from NVIDIA's \
         repository, or `pip install nvidia-cuda-nvrtc`) and put the directory holding libnvrtc.so (usually \
         /usr/local/cuda/lib64) on LD_LIBRARY_PATH"
    )]
    NoNvrtc,

    #[error("NVRTC could not compile the helper ops (runtime/kernels/ops.cu) for {arch}: {message}")]
    OpsCompile { arch: String, message: String },

    #[error("{what} {problem}")]
    Invalid { what: String, problem: String },

    #[error(
        "{method} needs a kernel compiled for pattern `{expected}`, but this kernel is for `{got}`; \
         compile `{expected}` (`MethodPattern::{expected}`; with the jit feature `MethodPattern::compile`)"
    )]
    WrongKernel { method: &'static str, expected: &'static str, got: String },

    #[error(transparent)]
    Plan(#[from] PlanError),
}

pub type OpResult<T> = std::result::Result<T, OpError>;
