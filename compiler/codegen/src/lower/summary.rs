//! The summary kernel `block_minmax`: per-block [min, max] of an i32 tensor,
//! the input of the in-kernel tile classifier. Generic over the pattern; the
//! runtime runs it once per tensor input with block = block_q or block_k.
//!
//! params (src, dst, rows, n, block); grid (ceil(n / block), rows); 128 threads.

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::IntPredicate as IP;

use crate::abi::SUMMARY_ENTRY;
use crate::cx::{named, Cx, GLOBAL, SHARED};
use crate::error::Result;
use crate::lower::forward::PTX_KERNEL_CC;

const THREADS: i32 = 128;
const WARPS: u32 = (THREADS / 32) as u32;

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
    let partials = module.add_global(i32t.array_type(2 * WARPS), Some(inkwell::AddressSpace::from(SHARED)), "lacuna_minmax_partials");
    partials.set_linkage(Linkage::Internal);
    partials.set_initializer(&i32t.array_type(2 * WARPS).get_undef());
    partials.set_alignment(4);

    let cx = Cx::new(ctx, module, func);
    let p = |i: u32| func.get_nth_param(i).expect("declared");
    let (src, dst) = (p(0).into_pointer_value(), p(1).into_pointer_value());
    let (rows, n, block) = (p(2).into_int_value(), p(3).into_int_value(), p(4).into_int_value());
    let tid = named(cx.tid_x()?, "tid");
    let blk = named(cx.ctaid('x')?, "blk");
    let row = named(cx.ctaid('y')?, "row");
    let safe_block = cx.smax(block, cx.i32(1))?;
    let nblocks = cx.udiv(cx.add(n, cx.sub(safe_block, cx.i32(1))?)?, safe_block)?;
    let valid = cx.and(
        cx.and(cx.icmp(IP::SGT, block, cx.i32(0))?, cx.icmp(IP::SLT, row, rows)?)?,
        cx.icmp(IP::SLT, blk, nblocks)?,
    )?;
    let (work, idle) = (cx.block("work"), cx.block("idle"));
    cx.cond_br(valid, work, idle)?;
    cx.at(idle);
    cx.ret_void()?;
    cx.at(work);

    let start = cx.mul(blk, block)?;
    let end = cx.smin(cx.add(start, block)?, n)?;
    let row_base = cx.mul(cx.sext64(row)?, cx.sext64(n)?)?;
    let rounds = cx.udiv(cx.add(cx.sub(end, start)?, cx.i32(THREADS - 1))?, cx.i32(THREADS))?;
    let init = vec![cx.i32(i32::MAX).into(), cx.i32(i32::MIN).into()];
    let acc = cx.for_range(cx.i32(0), rounds, init, "scan", |cx, it, c| {
        let i = cx.add(start, cx.add(tid, cx.mul(it, cx.i32(THREADS))?)?)?;
        // Past the block's end, re-read its first element: min/max are unchanged.
        let i = cx.select_int(cx.icmp(IP::SLT, i, end)?, i, start)?;
        let v = cx.load_i32(cx.gep(cx.i32t(), src, cx.add(row_base, cx.sext64(i)?)?)?)?;
        Ok(vec![cx.smin(c[0].into_int_value(), v)?.into(), cx.smax(c[1].into_int_value(), v)?.into()])
    })?;
    let (mut lo, mut hi) = (acc[0].into_int_value(), acc[1].into_int_value());
    for mask in [16, 8, 4, 2, 1] {
        lo = cx.smin(lo, cx.shfl_bfly_i32(lo, mask)?)?;
        hi = cx.smax(hi, cx.shfl_bfly_i32(hi, mask)?)?;
    }
    let lane = cx.and(tid, cx.i32(31))?;
    let warp = cx.lshr(tid, cx.i32(5))?;
    let part = partials.as_pointer_value();
    cx.if_then(cx.icmp(IP::EQ, lane, cx.i32(0))?, "partial", |cx| {
        cx.store(cx.gep(cx.i32t(), part, warp)?, lo)?;
        cx.store(cx.gep(cx.i32t(), part, cx.add(warp, cx.i32(WARPS as i32))?)?, hi)
    })?;
    cx.barrier()?;
    cx.if_then(cx.icmp(IP::EQ, tid, cx.i32(0))?, "write", |cx| {
        let (mut lo, mut hi) = (cx.i32(i32::MAX), cx.i32(i32::MIN));
        for w in 0..WARPS as i32 {
            lo = cx.smin(lo, cx.load_i32(cx.gep(cx.i32t(), part, cx.i32(w))?)?)?;
            hi = cx.smax(hi, cx.load_i32(cx.gep(cx.i32t(), part, cx.i32(w + WARPS as i32))?)?)?;
        }
        let at = cx.mul(cx.add(cx.mul(cx.sext64(row)?, cx.sext64(nblocks)?)?, cx.sext64(blk)?)?, cx.i64(2))?;
        cx.store(cx.gep(cx.i32t(), dst, at)?, lo)?;
        cx.store(cx.gep(cx.i32t(), dst, cx.add(at, cx.i64(1))?)?, hi)
    })?;
    cx.ret_void()
}
