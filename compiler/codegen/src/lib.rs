//! Code generation: pattern IR + [`KernelPlan`] → LLVM IR → PTX. The only
//! crate that links LLVM.
//!
//! The stages, in order (each a module):
//! - [`plan`]: tile shape, warps, pipeline depth, key source; checked first.
//! - `lower`: the kernel skeleton, where the tile list becomes a loop over key
//!   blocks (`lower/forward.rs`), fed by the key-block source (`lower/keys.rs`)
//!   and the cp.async pipeline (`lower/pipeline.rs`); plus the summary kernel.
//! - `predicate`: where the pattern IR becomes LLVM: the element test and the
//!   in-kernel tile classifier.
//! - `mma` / `wgmma` / `intrinsics`: tensor-core products (mma.sync per warp;
//!   wgmma per warpgroup on sm_90a) and typed NVVM wrappers.
//! - `emit`: LLVM module → PTX through the NVPTX target machine.
//! - [`ptxas`]: assemble PTX without a GPU to check registers and spills.

// `x % n == 0` instead of `is_multiple_of`: the workspace MSRV is 1.85.
#![allow(clippy::manual_is_multiple_of)]

mod abi;
pub mod aot;
mod cx;
mod emit;
mod error;
mod intrinsics;
mod lower;
mod mma;
pub mod plan;
mod predicate;
mod wgmma;
pub mod ptxas;

use inkwell::context::Context;

pub use lacuna_ir::{Arch, Dtype, KernelManifest, KeySource};

pub use abi::{snake_case, FUSED_SUMMARY_ENTRY, RUN_SUMMARY_ENTRY, SUMMARY_ENTRY};

/// The crate version and a hash of the generator's sources: changes whenever
/// generated code may change, so caches of PTX key on it.
pub const FINGERPRINT: &str = env!("LACUNA_CODEGEN_FINGERPRINT");
pub use error::CodegenError;
pub use plan::{KernelPlan, Mma, RowLength};

use lacuna_ir::{InputKind, ListBitmap, PatternIr, SplitKvEntries};

/// One compiled pattern: the module holds the forward kernel
/// (`manifest.entry`) and the summary kernels (`manifest.summary_entry`,
/// and `manifest.bucket_runs`' entry for patterns that join on a bucket).
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    pub plan: KernelPlan,
    pub manifest: KernelManifest,
    /// The module as lacuna emitted it, verified, before LLVM's `default<O3>`
    /// (stable across LLVM releases, readable: values are named).
    pub llvm_ir: String,
    pub ptx: String,
}

/// Compiles `p` with `plan` to PTX for `plan.arch`.
pub fn compile(p: &PatternIr, plan: &KernelPlan) -> Result<CompiledKernel, CodegenError> {
    lacuna_ir::verify(p).map_err(|errors| CodegenError::InvalidPattern { pattern: p.name().to_string(), errors })?;
    plan.validate()?;
    let entry = abi::forward_entry(p, plan);
    let tm = emit::target_machine(plan.arch)?;
    let ctx = Context::create();
    let module = lower::lower_module(&ctx, p, plan, &entry)?;
    emit::prepare(&module, &tm);
    emit::verify(&module, "verification of the generated IR")?;
    let llvm_ir = module.print_to_string().to_string();
    let ptx = emit::to_ptx(&module, &tm)?;
    let manifest = KernelManifest {
        entry: entry.clone(),
        summary_entry: SUMMARY_ENTRY.to_string(),
        pattern: p.name().to_string(),
        ir_hash: p.content_hash(),
        head_dim: plan.head_dim,
        dtype: plan.dtype,
        arch: plan.arch,
        block_q: plan.block_q,
        block_k: plan.block_k,
        threads: plan.threads(),
        shared_bytes: plan.shared_bytes(),
        key_source: plan.key_source.clone(),
        params: abi::manifest_params(p),
        row_index: plan.row_index,
        head_order: plan.head_order,
        grid: plan.grid,
        bucket_runs: abi::bucket_runs(p),
        summaries_entry: (!lower::summary::tensor_inputs(p).is_empty()).then(|| FUSED_SUMMARY_ENTRY.to_string()),
        tensor_maps: plan.tma(),
        dependent_launch: lower::dependent_launch(p, plan),
        list_bitmaps: p
            .inputs()
            .iter()
            .filter_map(|d| match d.kind {
                InputKind::BlockList { block } => Some(ListBitmap { block, rows: predicate::list_rows_per_tile(plan.block_q, block) }),
                _ => None,
            })
            .collect(),
        split_kv: plan.split_kv().then(|| SplitKvEntries {
            entry: format!("{entry}{}", abi::SPLIT_SUFFIX),
            combine_entry: format!("{entry}{}", abi::COMBINE_SUFFIX),
            combine_rows_per_cta: lower::combine::ROWS_PER_CTA,
            combine_dependent: plan.arch == lacuna_ir::Arch::Sm90a,
        }),
    };
    Ok(CompiledKernel { plan: plan.clone(), manifest, llvm_ir, ptx })
}
