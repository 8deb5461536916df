//! Every way the runtime can refuse or fail, as values. Each message says
//! what is wrong and what to do about it, because the caller is usually a
//! person reading a terminal, not code matching on variants. Nothing in this
//! crate panics across its API; anything a user can influence ends up here.

use cudarc::driver::DriverError;

use crate::tensor::ElemType;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    // ---- driver and device ------------------------------------------------
    #[error("no CUDA driver found (libcuda): run on a machine with an NVIDIA GPU and driver installed, \
             or put the directory holding libcuda.so on LD_LIBRARY_PATH")]
    NoDriver,
    #[error("there is no CUDA device {ordinal}: this machine has {count} (ordinals 0..{count}); \
             pick another ordinal or check CUDA_VISIBLE_DEVICES")]
    NoDevice { ordinal: usize, count: usize },
    /// cudarc panicked inside the driver bindings (e.g. a symbol missing from
    /// an old libcuda); caught so it reaches the caller as a value.
    #[error("the CUDA driver could not be used ({message}); update the NVIDIA driver (CUDA 13.0 or newer is expected)")]
    DriverUnusable { message: String },
    #[error("CUDA driver error while {action}: {source}")]
    Driver {
        action: String,
        #[source]
        source: DriverError,
    },

    // ---- loading a kernel ---------------------------------------------------
    #[error(transparent)]
    Manifest(#[from] lacuna_ir::ManifestError),
    #[error("this PTX was compiled for pattern `{ptx_pattern}`, not `{pattern}`; \
             load the PTX compiled for `{pattern}` or recompile with `lacuna compile --emit ptx` for it")]
    WrongPattern { ptx_pattern: String, pattern: String },
    #[error("this PTX was compiled for an older version of pattern `{pattern}` (ir hash {ptx_hash:016x}, \
             the pattern now hashes to {hash:016x}); recompile it with `lacuna compile --emit ptx`")]
    StalePattern { pattern: String, ptx_hash: u64, hash: u64 },
    #[error("the PTX manifest for pattern `{pattern}` does not match the pattern's inputs ({detail}); \
             the PTX is stale or was made by a different Lacuna version: recompile it with `lacuna compile --emit ptx`")]
    ManifestParams { pattern: String, detail: String },
    #[error("this kernel was compiled for {arch} but device {device} is compute capability {major}.{minor}; \
             {hint}")]
    ArchMismatch { arch: &'static str, device: String, major: u32, minor: u32, hint: &'static str },
    #[error("the kernel needs {needed} {what} but device {device} allows at most {max}; \
             compile a smaller tile configuration")]
    KernelTooBig { what: &'static str, needed: u32, max: u32, device: String },
    #[error("with {kv_len} keys the block lists' bitmaps take the kernel to {needed} bytes of shared memory \
             per block, but device {device} allows at most {max}; split the keys into shorter launches \
             or list coarser key blocks (a larger N in `Blocks<N>`)")]
    ListBitmapsTooBig { kv_len: usize, needed: u32, max: u32, device: String },
    #[error("the PTX text {problem}; pass the file exactly as `lacuna compile --emit ptx` wrote it")]
    BadPtx { problem: String },

    // ---- tensors --------------------------------------------------------------
    #[error("{what}: {len} host values were given for shape {shape:?}, which holds {expected}; \
             pass exactly one value per element")]
    HostLength { what: String, len: usize, shape: Vec<usize>, expected: usize },
    #[error("{tensor} is {got}, but {expected} is needed{hint}")]
    Dtype { tensor: String, expected: ElemType, got: ElemType, hint: String },
    #[error("{tensor} has shape {got:?}; {expected}")]
    Shape { tensor: String, got: Vec<usize>, expected: String },
    #[error("kernel compiled for head_dim {expected}, got {got}: compile one for {got} with \
             `lacuna compile --head-dim {got}` (or `AttentionKernel::compile(.., {got}, ..)` with the jit feature); \
             head_dim is the last dimension of {tensor}")]
    HeadDim { tensor: String, expected: u32, got: usize },
    #[error("q has {heads} heads and k/v have {kv_heads}: the number of query heads must be a multiple of the \
             number of key/value heads (grouped-query attention)")]
    HeadsNotMultiple { heads: usize, kv_heads: usize },
    #[error("{tensor} has shape {shape:?} and strides {strides:?}: {problem}")]
    Layout { tensor: String, shape: Vec<usize>, strides: Vec<usize>, problem: String },
    #[error("{what} is {value}, above the limit of {max} ({why})")]
    TooLarge { what: String, value: usize, max: usize, why: &'static str },
    #[error("{tensor} lives on device {got} but the kernel was loaded on device {expected}; \
             upload it with the same `Gpu`")]
    WrongDevice { tensor: String, expected: usize, got: usize },
    #[error("{a} and {b} share device memory, and the kernel writes {a} while reading {b}; \
             give {a} its own buffer (e.g. `DeviceTensor::zeros`)")]
    Aliased { a: String, b: String },
    #[error("{what} is only possible on {only}, not on a {got} tensor")]
    UnsupportedDtype { what: &'static str, only: &'static str, got: ElemType },

    // ---- pattern inputs ---------------------------------------------------------
    #[error("pattern `{pattern}` needs input `{name}`, {expected}; bind it with `PatternArgs::{method}(\"{name}\", ..)`")]
    MissingInput { pattern: String, name: String, expected: String, method: &'static str },
    #[error("pattern `{pattern}` has no input `{name}`; its inputs are: {known}")]
    UnknownInput { pattern: String, name: String, known: String },
    #[error("input `{name}` is bound twice; bind each input once")]
    DuplicateInput { name: String },
    #[error("input `{name}` must be {expected}, got {got}")]
    InputType { name: String, expected: String, got: String },
    #[error("input `{name}` must be {expected}, got {got}")]
    InputShape { name: String, expected: String, got: String },

    #[error("kernel `{entry}` {problem}")]
    RowIndexMode { entry: String, problem: &'static str },

    #[error("kernel `{entry}` has no bucket-run summary kernel, because its pattern joins on no bucket \
             (a top-level `a[q] == b[k]` with other tensor inputs); use `block_summary`")]
    NoRunSummary { entry: String },

    #[error("head_order for kernel `{entry}`: {problem}")]
    HeadOrder { entry: String, problem: String },

    #[error("kv_splits for kernel `{entry}`: {problem}")]
    KvSplits { entry: String, problem: String },

    #[error("kernels by key length: {problem}")]
    LengthClasses { problem: String },

    #[error("internal error in lacuna-runtime ({what}); please report it with the pattern and shapes")]
    Internal { what: String },

    // ---- compiling on first use (jit feature) --------------------------------------
    #[error("could not compile pattern `{pattern}` for head_dim {head_dim} {dtype} on {arch}: {message}")]
    Codegen { pattern: String, head_dim: u32, dtype: &'static str, arch: &'static str, message: String },
}

impl RuntimeError {
    /// Wraps a driver error with what the runtime was doing at the time.
    pub(crate) fn driver(action: impl Into<String>) -> impl FnOnce(DriverError) -> RuntimeError {
        let action = action.into();
        move |source| RuntimeError::Driver { action, source }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
