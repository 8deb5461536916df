//! Lowering: pattern + plan → one LLVM module holding the forward kernel
//! (`forward.rs`: the loop over key blocks, fed by `keys.rs` and
//! `pipeline.rs`), its split-KV entry and their combine kernel
//! (`combine.rs`), and the summary kernels (`summary.rs`).

pub(crate) mod combine;
pub(crate) mod forward;
pub(crate) mod keys;
pub(crate) mod pipeline;
pub(crate) mod summary;

use inkwell::context::Context;
use inkwell::module::Module;

use lacuna_ir::{Arch, PatternIr};

use crate::abi::{COMBINE_SUFFIX, SPLIT_SUFFIX};
use crate::error::Result;
use crate::plan::KernelPlan;

/// Whether the forward kernel is launched programmatically after the
/// `block_summaries` launch (Hopper's programmatic dependent launch): the
/// summary kernel lets it be scheduled once every summary CTA has stored
/// its summaries, so its launch and prologue (barriers, the Q tile,
/// coordinates) overlap the summary grid's end, and it waits
/// (`griddepcontrol.wait`) for the summaries to be visible before its key
/// scan reads them. For every pattern that reads tensors, on sm_90a;
/// without summaries there is nothing to wait for, and the launch before
/// it is the caller's, whose writes (Q, K, V) the prologue reads. Measured
/// (perf log, v6.3): 2-5% at 4K, 1-2% at 8K.
pub(crate) fn dependent_launch(p: &PatternIr, plan: &KernelPlan) -> bool {
    plan.arch == Arch::Sm90a && !summary::tensor_inputs(p).is_empty()
}

/// Builds the module (not yet optimised; triple and data layout unset).
pub(crate) fn lower_module<'ctx>(ctx: &'ctx Context, p: &PatternIr, plan: &KernelPlan, entry: &str) -> Result<Module<'ctx>> {
    let module = ctx.create_module(entry);
    forward::build(ctx, &module, p, plan, entry, false)?;
    if plan.split_kv() {
        forward::build(ctx, &module, p, plan, &format!("{entry}{SPLIT_SUFFIX}"), true)?;
        combine::build(ctx, &module, plan, &format!("{entry}{COMBINE_SUFFIX}"))?;
    }
    summary::build(ctx, &module, p, dependent_launch(p, plan))?;
    Ok(module)
}
