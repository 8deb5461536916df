//! The summary kernel `block_minmax`: per-block [min, max] of an i32 tensor,
//! the input of the in-kernel tile classifier. Generic over the pattern; the
//! runtime runs it once per tensor input with block = block_q or block_k.
//!
//! params (src, dst, rows, n, block); grid (any x, rows); 128 threads.
//! Each warp reduces [`BLOCKS_PER_WARP`] blocks at a time (lanes stride
//! through a block 32 elements per round, both blocks' loads in flight
//! together), and CTAs stride over the row's blocks by the grid's width, so
//! any grid.x is correct; `ceil(nblocks / BLOCKS_PER_CTA)` gives each warp
//! one turn. One block per CTA (the first version) made the summaries of a
//! 16K hash pattern cost 13 µs per input on an H100: launch-bound, not
//! memory-bound.

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::BasicValueEnum as BV;
use inkwell::IntPredicate as IP;

use crate::abi::SUMMARY_ENTRY;
use crate::cx::{named, Cx, GLOBAL};
use crate::error::Result;
use crate::lower::forward::PTX_KERNEL_CC;

const THREADS: i32 = 128;
const WARPS: i32 = THREADS / 32;
/// Blocks one warp reduces per turn.
pub(crate) const BLOCKS_PER_WARP: i32 = 2;
/// Blocks one CTA reduces per turn (the runtime sizes grid.x by it).
pub(crate) const BLOCKS_PER_CTA: i32 = WARPS * BLOCKS_PER_WARP;

pub(crate) fn build<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>) -> Result<()> {
    let gptr = ctx.ptr_type(inkwell::AddressSpace::from(GLOBAL));
    let i32t = ctx.i32_type();
    let fn_type = ctx.void_type().fn_type(&[gptr.into(), gptr.into(), i32t.into(), i32t.into(), i32t.into()], false);
    let func = module.add_function(SUMMARY_ENTRY, fn_type, None);
    func.set_call_conventions(PTX_KERNEL_CC);
    func.add_attribute(AttributeLoc::Function, ctx.create_string_attribute("nvvm.maxntid", &THREADS.to_string()));
    for (i, name) in ["src", "dst", "rows", "n", "block"].iter().enumerate() {
        func.get_nth_param(i as u32).expect("declared").set_name(name);
    }

    let cx = Cx::new(ctx, module, func);
    let p = |i: u32| func.get_nth_param(i).expect("declared");
    let (src, dst) = (p(0).into_pointer_value(), p(1).into_pointer_value());
    let (rows, n, block) = (p(2).into_int_value(), p(3).into_int_value(), p(4).into_int_value());
    let tid = named(cx.tid_x()?, "tid");
    let lane = cx.and(tid, cx.i32(31))?;
    let warp = cx.lshr(tid, cx.i32(5))?;
    let row = named(cx.ctaid('y')?, "row");
    let safe_block = cx.smax(block, cx.i32(1))?;
    let nblocks = named(cx.udiv(cx.add(n, cx.sub(safe_block, cx.i32(1))?)?, safe_block)?, "nblocks");
    let valid = cx.and(cx.icmp(IP::SGT, block, cx.i32(0))?, cx.icmp(IP::SLT, row, rows)?)?;
    let (work, idle) = (cx.block("work"), cx.block("idle"));
    cx.cond_br(valid, work, idle)?;
    cx.at(idle);
    cx.ret_void()?;
    cx.at(work);

    // This warp's first block, the stride between its turns, and its turns.
    let first = cx.add(cx.mul(cx.ctaid('x')?, cx.i32(BLOCKS_PER_CTA))?, cx.mul(warp, cx.i32(BLOCKS_PER_WARP))?)?;
    let stride = cx.mul(cx.nctaid('x')?, cx.i32(BLOCKS_PER_CTA))?;
    let left = cx.smax(cx.sub(nblocks, first)?, cx.i32(0))?;
    let turns = cx.udiv(cx.add(left, cx.sub(stride, cx.i32(1))?)?, stride)?;
    let rounds = cx.udiv(cx.add(safe_block, cx.i32(31))?, cx.i32(32))?;
    let row_src = cx.gep(cx.i32t(), src, cx.mul(cx.sext64(row)?, cx.sext64(n)?)?)?;
    let row_dst = cx.gep(cx.i32t(), dst, cx.mul(cx.mul(cx.sext64(row)?, cx.sext64(nblocks)?)?, cx.i64(2))?)?;
    let last_block = cx.sub(nblocks, cx.i32(1))?;
    cx.for_range(cx.i32(0), turns, Vec::new(), "turn", |cx, t, _| {
        let base = cx.add(first, cx.mul(t, stride)?)?;
        // Blocks past the row's end re-read its last block and store nothing.
        let blocks: Vec<_> = (0..BLOCKS_PER_WARP)
            .map(|j| {
                let blk = cx.add(base, cx.i32(j))?;
                let start = cx.mul(cx.smin(blk, last_block)?, safe_block)?;
                let end = cx.smin(cx.add(start, safe_block)?, n)?;
                Ok((blk, start, end))
            })
            .collect::<Result<_>>()?;
        let init: Vec<BV<'ctx>> = (0..BLOCKS_PER_WARP).flat_map(|_| [cx.i32(i32::MAX).into(), cx.i32(i32::MIN).into()]).collect();
        let acc = cx.for_range(cx.i32(0), rounds, init, "round", |cx, r, acc| {
            let offset = cx.add(cx.mul(r, cx.i32(32))?, lane)?;
            let mut next = Vec::new();
            for (j, &(_, start, end)) in blocks.iter().enumerate() {
                // Past the block's end, re-read its first element: min/max are unchanged.
                let i = cx.add(start, offset)?;
                let i = cx.select_int(cx.icmp(IP::SLT, i, end)?, i, start)?;
                let v = cx.load_i32(cx.gep(cx.i32t(), row_src, cx.sext64(i)?)?)?;
                next.push(cx.smin(acc[2 * j].into_int_value(), v)?.into());
                next.push(cx.smax(acc[2 * j + 1].into_int_value(), v)?.into());
            }
            Ok(next)
        })?;
        for (j, &(blk, _, _)) in blocks.iter().enumerate() {
            let (mut lo, mut hi) = (acc[2 * j].into_int_value(), acc[2 * j + 1].into_int_value());
            for mask in [16, 8, 4, 2, 1] {
                lo = cx.smin(lo, cx.shfl_bfly_i32(lo, mask)?)?;
                hi = cx.smax(hi, cx.shfl_bfly_i32(hi, mask)?)?;
            }
            let write = cx.and(cx.icmp(IP::EQ, lane, cx.i32(0))?, cx.icmp(IP::SLT, blk, nblocks)?)?;
            cx.if_then(write, "write", |cx| {
                let at = cx.mul(cx.sext64(blk)?, cx.i64(2))?;
                cx.store(cx.gep(cx.i32t(), row_dst, at)?, lo)?;
                cx.store(cx.gep(cx.i32t(), row_dst, cx.add(at, cx.i64(1))?)?, hi)
            })?;
        }
        Ok(Vec::new())
    })?;
    cx.ret_void()
}
