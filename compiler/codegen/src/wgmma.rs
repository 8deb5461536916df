//! Warpgroup matrix products on sm_90a: `wgmma.mma_async` as inline PTX (LLVM
//! has no intrinsic for it), the shared-memory matrix descriptors of
//! 128-byte-swizzled tiles, and the two products of the forward kernel,
//! S = Q·Kᵀ and O += P·V, for one warpgroup (4 warps, 64 query rows).
//!
//! The m64nNk16 accumulator is, per warp, the m16n8 accumulator layout of
//! mma.sync repeated over N/8 column tiles (rows 16·(warp % 4) + g and + 8,
//! columns 8j + 2t and + 1), and the register A operand of P·V has the
//! m16n8k16 A layout. So the element test, the online softmax and the
//! epilogue are shared with the mma.sync path unchanged; only where the
//! operands come from differs.
//!
//! Ordering: tiles written by cp.async are made visible to the tensor cores
//! by `fence.proxy.async` before the CTA barrier (the caller's job); each
//! product opens with `wgmma.fence` (its accumulator and A registers were
//! written by ordinary instructions) and commits one group. S = Q·Kᵀ is
//! issued and waited for separately, so the caller can issue the next
//! block's copies while the tensor cores run. The wait names the
//! accumulators as tied operands, so LLVM cannot move a use of them above it.
//! O += P·V can be left running too ([`pv_issue`], then [`wait_keeping`]
//! with the product's P registers tied through, so they keep their values
//! until it has read them): the forward kernel's `pv_overlap` runs it
//! beside the next block's softmax.

use inkwell::types::{BasicMetadataTypeEnum, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, PointerValue};

use lacuna_ir::Dtype;

use crate::cx::{Cx, BV, FV, IV};
use crate::error::{CodegenError, Result};
use crate::mma::{AFrag, Acc};
use crate::plan::{SWIZZLE_ALIGN, SWIZZLE_ROW_BYTES};

/// Descriptor bits 62-63: the 128-byte swizzle mode.
const SWIZZLE_128B: u64 = 1 << 62;

/// One operand tile in shared memory, as wgmma reads it.
#[derive(Clone, Copy)]
pub(crate) struct SmemOperand<'ctx> {
    /// The 64-bit descriptor of the tile's first k16 step.
    pub desc: IV<'ctx>,
    /// Rows of the tile (bytes between its 64-column blocks / 128).
    pub rows: u32,
}

/// The matrix descriptor of a 128-byte-swizzled tile at `addr` (1024-byte
/// aligned): start address, leading and stride byte offsets (all in 16-byte
/// units) and the swizzle mode.
///
/// K-major operands (Q and K: the reduction dimension, head_dim, is
/// contiguous): 8-row groups are `SBO` = 1024 bytes apart and the k16 steps
/// move the start address inside the 128-byte row (LBO unused, 1).
/// MN-major operands (V: keys are the reduction, head_dim contiguous): the
/// 8-key groups are `SBO` = 1024 bytes apart and the 64-column blocks of head_dim
/// `LBO` = rows · 128 bytes apart.
fn descriptor<'ctx>(cx: &Cx<'_, 'ctx>, addr: PointerValue<'ctx>, lbo: u32, sbo: u32) -> Result<IV<'ctx>> {
    let a = cx.b.build_ptr_to_int(addr, cx.i32t(), "smem_addr")?;
    let start = cx.lshr(cx.and(a, cx.i32(0x3ffff))?, cx.i32(4))?;
    let fixed = ((lbo as u64 >> 4) << 16) | ((sbo as u64 >> 4) << 32) | SWIZZLE_128B;
    let start = cx.zext(start, cx.i64t())?;
    Ok(cx.b.build_or(start, cx.i64t().const_int(fixed, false), "desc")?)
}

/// A K-major operand of `rows` rows at `addr` (Q rows of a warpgroup, a K tile).
pub(crate) fn k_major<'ctx>(cx: &Cx<'_, 'ctx>, addr: PointerValue<'ctx>, rows: u32) -> Result<SmemOperand<'ctx>> {
    Ok(SmemOperand { desc: descriptor(cx, addr, 16, SWIZZLE_ALIGN)?, rows })
}

/// An MN-major operand (a V tile of `rows` keys).
pub(crate) fn mn_major<'ctx>(cx: &Cx<'_, 'ctx>, addr: PointerValue<'ctx>, rows: u32) -> Result<SmemOperand<'ctx>> {
    Ok(SmemOperand { desc: descriptor(cx, addr, rows * SWIZZLE_ROW_BYTES, SWIZZLE_ALIGN)?, rows })
}

/// `desc` moved on by `bytes` (a multiple of 16, inside the 14-bit address field).
fn advance<'ctx>(cx: &Cx<'_, 'ctx>, desc: IV<'ctx>, bytes: u32) -> Result<IV<'ctx>> {
    if bytes == 0 {
        return Ok(desc);
    }
    Ok(cx.b.build_int_add(desc, cx.i64t().const_int((bytes >> 4) as u64, false), "")?)
}

/// Byte offset of k16 step `kk` of a K-major tile of `rows` rows: column block
/// kk / 4, then 32 bytes per step inside the 128-byte row.
fn k_step_offset(kk: u32, rows: u32) -> u32 {
    (kk / 4) * rows * SWIZZLE_ROW_BYTES + (kk % 4) * 32
}

fn type_suffix(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::Bf16 => "bf16.bf16",
        Dtype::F16 => "f16.f16",
    }
}

/// `{$first, ..., $first+n-1}`.
fn reg_list(first: usize, n: usize) -> String {
    let regs: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("{{{}}}", regs.join(", "))
}

/// One `wgmma.mma_async m64n{n}k16` with f32 accumulators `$0 .. $(n/2 - 1)`,
/// A operand text `a` (a descriptor `$i` or a register list), the B
/// descriptor at `$b`, scale-d from the i32 at `$scale` (0: overwrite), and
/// the trailing immediates (`scale-a, scale-b` are 1; then the transposes).
fn mma_asm(dtype: Dtype, n: u32, a: &str, b: usize, scale: usize, transposes: &str) -> String {
    format!(
        "{{\n.reg .pred p;\nsetp.ne.b32 p, ${scale}, 0;\nwgmma.mma_async.sync.aligned.m64n{n}k16.f32.{} {}, {a}, ${b}, p, 1, 1, {transposes};\n}}",
        type_suffix(dtype),
        reg_list(0, (n / 2) as usize),
    )
}

/// Calls one inline-asm statement whose outputs are `n` f32 accumulators
/// tied to the first `n` inputs; returns the outputs.
fn call_tied<'ctx>(cx: &Cx<'_, 'ctx>, asm: String, extra: &[(BasicMetadataValueEnum<'ctx>, &str)], acc: &[FV<'ctx>]) -> Result<Vec<FV<'ctx>>> {
    let tied: Vec<BV<'ctx>> = acc.iter().map(|v| BV::from(*v)).collect();
    Ok(call_tied_values(cx, asm, extra, &tied)?.into_iter().map(|v| v.into_float_value()).collect())
}

/// Calls one inline-asm statement whose outputs are tied to the inputs
/// `tied` (f32 in `f`, i32 in `r` registers), followed by the `extra`
/// inputs; returns the outputs, in `tied`'s order.
fn call_tied_values<'ctx>(cx: &Cx<'_, 'ctx>, asm: String, extra: &[(BasicMetadataValueEnum<'ctx>, &str)], tied: &[BV<'ctx>]) -> Result<Vec<BV<'ctx>>> {
    let n = tied.len();
    let types: Vec<BasicTypeEnum<'ctx>> = tied.iter().map(|v| v.get_type()).collect();
    let ret = cx.ctx.struct_type(&types, false);
    let mut params: Vec<BasicMetadataTypeEnum<'ctx>> = types.iter().map(|t| (*t).into()).collect();
    let mut args: Vec<BasicMetadataValueEnum<'ctx>> = tied.iter().map(|v| (*v).into()).collect();
    let mut constraints: Vec<String> = tied.iter().map(|v| if v.is_float_value() { "=f".to_string() } else { "=r".to_string() }).collect();
    constraints.extend((0..n).map(|i| i.to_string()));
    for (v, c) in extra {
        params.push(match v {
            BasicMetadataValueEnum::IntValue(i) => i.get_type().into(),
            _ => return Err(CodegenError::Builder("wgmma operands are integers".into())),
        });
        args.push(*v);
        constraints.push(c.to_string());
    }
    let fn_type = ret.fn_type(&params, false);
    let ptr = cx.ctx.create_inline_asm(fn_type, asm, constraints.join(","), true, false, None, false);
    let call = cx.b.build_indirect_call(fn_type, ptr, &args, "")?;
    let value = call.try_as_basic_value().basic().ok_or_else(|| CodegenError::Builder("inline asm returned no value".into()))?.into_struct_value();
    (0..n as u32).map(|i| Ok(cx.b.build_extract_value(value, i, "")?)).collect()
}

fn flatten<'ctx>(acc: &[Acc<'ctx>]) -> Vec<FV<'ctx>> {
    acc.iter().flat_map(|a| a.iter().copied()).collect()
}

fn unflatten<'ctx>(v: &[FV<'ctx>]) -> Vec<Acc<'ctx>> {
    v.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

/// Issues S = Q·Kᵀ for this warpgroup's 64 rows and all `block_k` keys from
/// `q` (the warpgroup's 64 Q rows) and `k` (the key tile), both K-major,
/// `head_dim / 16` steps, and commits the group. The returned accumulators
/// are still being written by the tensor cores: pass them to [`wait`] before
/// any use (other work may go in between).
pub(crate) fn qk_issue<'ctx>(cx: &Cx<'_, 'ctx>, dtype: Dtype, head_dim: u32, block_k: u32, q: SmemOperand<'ctx>, k: SmemOperand<'ctx>) -> Result<Vec<FV<'ctx>>> {
    let n = (block_k / 2) as usize;
    // Operands: n accumulators (tied), the Q and K descriptors, scale-d; no transposes.
    let asm = mma_asm(dtype, block_k, &format!("${}", 2 * n), 2 * n + 1, 2 * n + 2, "0, 0");
    let undef = cx.f32t().get_undef();
    let mut s: Vec<FV<'ctx>> = vec![undef; n];
    cx.wgmma_fence()?;
    for kk in 0..head_dim / 16 {
        let qd = advance(cx, q.desc, k_step_offset(kk, q.rows))?;
        let kd = advance(cx, k.desc, k_step_offset(kk, k.rows))?;
        // The first step overwrites the accumulators (scale-d = 0).
        let scale_d = cx.i32(i32::from(kk > 0));
        s = call_tied(cx, asm.clone(), &[(qd.into(), "l"), (kd.into(), "l"), (scale_d.into(), "r")], &s)?;
    }
    cx.wgmma_commit()?;
    Ok(s)
}

/// Waits for the committed products and returns `in_flight` as `[n8 tile]`
/// accumulators.
pub(crate) fn wait<'ctx>(cx: &Cx<'_, 'ctx>, in_flight: &[FV<'ctx>]) -> Result<Vec<Acc<'ctx>>> {
    wait_keeping(cx, 0, in_flight, &[])
}

/// Waits until at most `pending` of the newest committed groups are still
/// running (groups finish in commit order) and returns `in_flight` as
/// `[n8 tile]` accumulators; `operands` (the A registers of products that
/// may still be running, which must keep their values until then) pass
/// through tied, so nothing overwrites them before this point (they are
/// dead after it: only the accumulators come back).
pub(crate) fn wait_keeping<'ctx>(cx: &Cx<'_, 'ctx>, pending: u32, in_flight: &[FV<'ctx>], operands: &[IV<'ctx>]) -> Result<Vec<Acc<'ctx>>> {
    let mut tied: Vec<BV<'ctx>> = in_flight.iter().map(|v| BV::from(*v)).collect();
    tied.extend(operands.iter().map(|v| BV::from(*v)));
    let out = call_tied_values(cx, format!("wgmma.wait_group.sync.aligned {pending};"), &[], &tied)?;
    let acc: Vec<FV<'ctx>> = out[..in_flight.len()].iter().map(|v| v.into_float_value()).collect();
    Ok(unflatten(&acc))
}

/// O += P·V for this warpgroup: `p[k16 slice]` A fragments in registers
/// (block_k / 16 of them), `v` the MN-major V tile, `o[d n8 tile]`.
pub(crate) fn pv<'ctx>(cx: &Cx<'_, 'ctx>, dtype: Dtype, head_dim: u32, p: &[AFrag<'ctx>], v: SmemOperand<'ctx>, o: &mut Vec<Acc<'ctx>>) -> Result<()> {
    let acc = pv_issue(cx, dtype, head_dim, p, v, o)?;
    cx.wgmma_commit()?;
    *o = wait(cx, &acc)?;
    Ok(())
}

/// Issues O += P·V (as [`pv`]) without committing or waiting: returns the
/// accumulators the tensor cores are still writing. The caller commits the
/// group and, before any use of them or any write to `p`'s registers,
/// waits ([`wait_keeping`]).
pub(crate) fn pv_issue<'ctx>(cx: &Cx<'_, 'ctx>, dtype: Dtype, head_dim: u32, p: &[AFrag<'ctx>], v: SmemOperand<'ctx>, o: &[Acc<'ctx>]) -> Result<Vec<FV<'ctx>>> {
    let n = (head_dim / 2) as usize;
    // Operands: n accumulators (tied), four A registers, the V descriptor,
    // scale-d; B transposed (V is MN-major).
    let asm = mma_asm(dtype, head_dim, &reg_list(2 * n, 4), 2 * n + 4, 2 * n + 5, "1");
    let mut acc = flatten(o);
    cx.wgmma_fence()?;
    for (j, a) in p.iter().enumerate() {
        // Keys 16 j .. 16 j + 15: two 8-row groups, 2048 bytes into the tile.
        let vd = advance(cx, v.desc, j as u32 * 16 * SWIZZLE_ROW_BYTES)?;
        let mut extra: Vec<(BasicMetadataValueEnum<'ctx>, &str)> = a.iter().map(|r| ((*r).into(), "r")).collect();
        extra.push((vd.into(), "l"));
        extra.push((cx.i32(1).into(), "r"));
        acc = call_tied(cx, asm.clone(), &extra, &acc)?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_steps_walk_the_row_then_the_column_blocks() {
        // D = 128 in a 128-row tile: steps 0-3 inside the first 128-byte row,
        // steps 4-7 in the second column block, 128 * 128 bytes further on.
        let offs: Vec<u32> = (0..8).map(|kk| k_step_offset(kk, 128)).collect();
        assert_eq!(offs, vec![0, 32, 64, 96, 16384, 16416, 16448, 16480]);
    }

    #[test]
    fn register_lists_number_operands() {
        assert_eq!(reg_list(4, 3), "{$4, $5, $6}");
    }
}
