//! The one error type of the command line. Every message says what is wrong
//! and what to do about it; `main` prints it as `error: ...` and exits 2.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    UnknownPattern(#[from] lacuna_patterns::UnknownPattern),

    #[error("pattern `{pattern}` fails verification (a bug in its definition, not in your command):\n{errors}")]
    Verify { pattern: String, errors: String },

    #[error("`{flag} {name}=...` is given twice; give each name once")]
    Duplicate { flag: &'static str, name: String },

    #[error("input `{name}` is given both by --input and by --param; keep one of them")]
    GivenTwice { name: String },

    #[error("pattern `{pattern}` has no input or knob `{name}`; `--param` accepts: {accepted}")]
    UnknownParam { pattern: String, name: String, accepted: String },

    #[error("pattern `{pattern}` has no input `{name}`; its inputs are: {inputs}")]
    UnknownInput { pattern: String, name: String, inputs: String },

    #[error("input `{name}` is an array ({shape}); pass it as a file: `--input {name}=FILE.npy`")]
    ParamNotScalar { name: String, shape: &'static str },

    #[error("`--param {name}={value}`: {problem}; `{name}` is {shape}")]
    BadParamValue { name: String, value: String, problem: String, shape: &'static str },

    #[error("`--param {name}` has {got} values but there are {heads} heads; give one value per head (comma-separated) or one value for all heads")]
    HeadCount { name: String, got: usize, heads: usize },

    #[error("input `{name}`: cannot read `{}`: {source}; check the path", path.display())]
    NpyOpen { name: String, path: PathBuf, source: io::Error },

    #[error("input `{name}`: `{}` is not a readable .npy file ({source}); write it with numpy.save", path.display())]
    NpyFormat { name: String, path: PathBuf, source: io::Error },

    #[error("input `{name}`: `{}` holds dtype {found}, expected {expected}; convert it with `a.astype(numpy.{numpy})` before saving", path.display())]
    NpyDtype { name: String, path: PathBuf, expected: &'static str, numpy: &'static str, found: String },

    #[error("input `{name}`: `{}` has shape {found:?}, expected {expected} = {concrete}", path.display())]
    NpyShape { name: String, path: PathBuf, expected: &'static str, concrete: String, found: Vec<u64> },

    #[error("input `{name}`: `{}` is stored in Fortran order; save a C-ordered array (`numpy.ascontiguousarray(a)`)", path.display())]
    NpyFortran { name: String, path: PathBuf },

    #[error(transparent)]
    Example(#[from] lacuna_patterns::ExampleError),

    #[error("{source}{}", from_file(.file))]
    Bind { source: lacuna_ir::BindError, file: Option<PathBuf> },

    #[error(transparent)]
    Analysis(#[from] lacuna_ir::analysis::AnalysisError),

    #[error("{what} is too large to analyse here ({count} > {limit}); {advice}")]
    TooLarge { what: &'static str, count: u128, limit: u128, advice: &'static str },

    #[error("--check evaluates every element: B·H·Nq·Nk = {elements} is more than 2^31; use a shorter --q-len / --kv-len, fewer heads or a smaller batch")]
    CheckTooLarge { elements: u128 },

    #[error("the picture would be {width} x {height} tiles, too large for a PNG here; use larger --block-q / --block-k, fewer heads or a smaller batch")]
    PictureTooLarge { width: usize, height: usize },

    #[error("unknown dtype `{given}`; use bf16 or fp16")]
    UnknownDtype { given: String },

    #[error("unknown arch `{given}`; use sm_80 (Ampere and later) or sm_90a (Hopper)")]
    UnknownArch { given: String },

    #[error("cannot compile `{pattern}` with head_dim {head_dim}: {source}")]
    Codegen { pattern: String, head_dim: u32, source: lacuna_codegen::CodegenError },

    #[error("cannot create the directory `{}`: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("cannot write `{}`: {source}", path.display())]
    WriteFile { path: PathBuf, source: io::Error },

    #[error("cannot encode the PNG `{}`: {source}", path.display())]
    Png { path: PathBuf, source: png::EncodingError },

    #[error("cannot write the JSON output: {0}")]
    Json(#[from] serde_json::Error),

    #[error("{0}")]
    Runtime(#[from] lacuna_runtime::RuntimeError),

    #[error("the CPU reference refused the case: {0}")]
    Reference(#[from] lacuna_ir::reference::ReferenceError),

    #[error("{what}")]
    Usage { what: String },

    #[error("cannot write to standard output: {0}")]
    Output(#[from] io::Error),
}

fn from_file(file: &Option<PathBuf>) -> String {
    match file {
        Some(p) => format!(" (read from `{}`)", p.display()),
        None => String::new(),
    }
}
