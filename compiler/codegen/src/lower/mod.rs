//! Lowering: pattern + plan → one LLVM module holding the forward kernel
//! (`forward.rs`: the loop over key blocks, fed by `keys.rs` and
//! `pipeline.rs`) and the generic summary kernels (`summary.rs`).

pub(crate) mod forward;
pub(crate) mod keys;
pub(crate) mod pipeline;
pub(crate) mod summary;

use inkwell::context::Context;
use inkwell::module::Module;

use lacuna_ir::PatternIr;

use crate::error::Result;
use crate::plan::KernelPlan;

/// Builds the module (not yet optimised; triple and data layout unset).
pub(crate) fn lower_module<'ctx>(ctx: &'ctx Context, p: &PatternIr, plan: &KernelPlan, entry: &str) -> Result<Module<'ctx>> {
    let module = ctx.create_module(entry);
    forward::build(ctx, &module, p, plan, entry)?;
    summary::build(ctx, &module, p)?;
    Ok(module)
}
