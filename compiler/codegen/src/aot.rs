//! Ahead-of-time kernels for build scripts: an application's `build.rs`
//! compiles its patterns to self-describing PTX files (the manifest on the
//! first line), embeds them with `include_str!`, and at run time loads them
//! with `lacuna_runtime::AttentionKernel::from_ptx`, linking no LLVM.
//!
//! ```no_run
//! // build.rs (lacuna-codegen as a build-dependency)
//! # fn ir() -> lacuna_ir::PatternIr { unimplemented!() }
//! let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
//! lacuna_codegen::aot::write_ptx(&ir(), 64, lacuna_codegen::Dtype::Bf16, lacuna_codegen::Arch::Sm90a, &out.join("causal_d64.ptx")).unwrap();
//! ```

use std::path::Path;

use lacuna_ir::{Arch, Dtype, PatternIr};

use crate::{compile, CodegenError, CompiledKernel, KernelPlan};

/// Plans (tuned defaults) and compiles `p`, returning the kernel.
pub fn build(p: &PatternIr, head_dim: u32, dtype: Dtype, arch: Arch) -> Result<CompiledKernel, CodegenError> {
    let plan = KernelPlan::for_pattern(p, head_dim, dtype, arch)?;
    compile(p, &plan)
}

/// [`build`], then writes the PTX with its manifest line to `path`
/// (only when the content changed, so cargo does not rebuild needlessly).
pub fn write_ptx(p: &PatternIr, head_dim: u32, dtype: Dtype, arch: Arch, path: &Path) -> Result<CompiledKernel, AotError> {
    let kernel = build(p, head_dim, dtype, arch)?;
    let text = kernel.manifest.attach_to_ptx(&kernel.ptx);
    if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(path, text).map_err(|source| AotError::Write { path: path.display().to_string(), source })?;
    }
    Ok(kernel)
}

#[derive(Debug, thiserror::Error)]
pub enum AotError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("cannot write the PTX file `{path}`: {source}")]
    Write { path: String, source: std::io::Error },
}
