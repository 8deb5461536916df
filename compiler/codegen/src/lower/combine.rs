//! The split-KV combine kernel `<forward entry>_combine`: merges the partial
//! results of the split entry (`forward.rs` with `split`; layouts at
//! `ForwardAbi::split_start`) into O (the input dtype, strided like the
//! forward kernel's) and the LSE (natural log, contiguous (B, H, Nq)).
//!
//! Params (o_partial, lse_partial, o, lse, o_stride_b, o_stride_h,
//! o_stride_n, batch, heads, q_len, kv_splits); grid x = ceil(B·H·Nq / 4),
//! 128 threads, a warp per output row. Per row, with m the largest split
//! LSE (base 2) and w_s = 2^(lse_s - m):
//! O = Σ w_s O_s / Σ w_s and LSE = (m + log2 Σ w_s) · ln 2; a row no split
//! saw (every lse_s = -inf) gets zeros and -inf, as the forward kernel's
//! fully masked rows do. A lane owns column pairs `lane + 32 i` and reads
//! each split's pair as one 8-byte load. On sm_90a it is launched behind
//! the split grid with programmatic dependent launch: the split's CTAs let
//! it be scheduled once their key loop is done, and it waits
//! (`griddepcontrol.wait`) for the whole split grid before reading.

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::BasicMetadataTypeEnum;
use inkwell::values::BasicValueEnum as BV;
use inkwell::{FloatPredicate as FP, IntPredicate as IP};

use crate::cx::{named, Cx, GLOBAL};
use crate::error::Result;
use crate::lower::forward::PTX_KERNEL_CC;
use crate::plan::KernelPlan;
use lacuna_ir::Arch;

const THREADS: u32 = 128;
/// Output rows per CTA: one per warp.
pub(crate) const ROWS_PER_CTA: u32 = THREADS / 32;

/// Builds the combine kernel `entry` for `plan`'s head dim and dtype.
pub(crate) fn build<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, plan: &KernelPlan, entry: &str) -> Result<()> {
    let gptr = ctx.ptr_type(inkwell::AddressSpace::from(GLOBAL));
    let names = ["o_partial", "lse_partial", "o", "lse", "o_stride_b", "o_stride_h", "o_stride_n", "batch", "heads", "q_len", "kv_splits"];
    let types: Vec<BasicMetadataTypeEnum<'ctx>> =
        names.iter().enumerate().map(|(i, _)| if i < 4 { gptr.into() } else if i < 7 { ctx.i64_type().into() } else { ctx.i32_type().into() }).collect();
    let func = module.add_function(entry, ctx.void_type().fn_type(&types, false), None);
    func.set_call_conventions(PTX_KERNEL_CC);
    func.add_attribute(AttributeLoc::Function, ctx.create_string_attribute("nvvm.maxntid", &THREADS.to_string()));
    for (i, name) in names.iter().enumerate() {
        func.get_nth_param(i as u32).expect("declared above").set_name(name);
    }
    let cx = Cx::new(ctx, module, func);
    let param = |i: usize| func.get_nth_param(i as u32).expect("declared above");
    let ptr = |i: usize| param(i).into_pointer_value();
    let int = |i: usize| param(i).into_int_value();
    let (o_partial, lse_partial, o, lse) = (ptr(0), ptr(1), ptr(2), ptr(3));
    let (osb, osh, osn) = (int(4), int(5), int(6));
    let (batch, heads, q_len, splits) = (int(7), int(8), int(9), int(10));

    if plan.arch == Arch::Sm90a {
        // Launched programmatically behind the split grid (the manifest's
        // `combine_dependent`): its partials are complete and visible only
        // past this wait, a no-op after an ordinary launch.
        cx.griddepcontrol_wait()?;
    }
    let tid = cx.tid_x()?;
    let lane = cx.and(tid, cx.i32(31))?;
    let warp = cx.lshr(tid, cx.i32(5))?;
    // i64 throughout: B·H·Nq·D can pass 2^31.
    let rows = cx.mul(cx.mul(cx.sext64(batch)?, cx.sext64(heads)?)?, cx.sext64(q_len)?)?;
    let row = named(cx.add(cx.mul(cx.sext64(cx.ctaid('x')?)?, cx.i64(ROWS_PER_CTA as i64))?, cx.sext64(warp)?)?, "row");
    let (work, idle) = (cx.block("row"), cx.block("idle"));
    cx.cond_br(cx.icmp(IP::SLT, row, rows)?, work, idle)?;
    cx.at(idle);
    cx.ret_void()?;
    cx.at(work);

    let f32t = cx.f32t();
    let pair = f32t.vec_type(2);
    let head_dim = plan.head_dim as i64;
    let pairs = plan.head_dim / 2;
    // The lane's column pairs; past the row's last pair a lane re-reads a
    // pair it may (`% pairs`) and stores nothing.
    let cols: Vec<_> = (0..pairs.div_ceil(32)).map(|i| -> Result<_> {
        let p = cx.add(lane, cx.i32((32 * i) as i32))?;
        let mine = cx.icmp(IP::ULT, p, cx.i32(pairs as i32))?;
        Ok((cx.mul(cx.urem(p, cx.i32(pairs as i32))?, cx.i32(2))?, mine))
    }).collect::<Result<_>>()?;
    let splits = cx.smax(splits, cx.i32(1))?;
    let split_lse = |s: inkwell::values::IntValue<'ctx>| -> Result<_> {
        let at = cx.add(cx.mul(cx.sext64(s)?, rows)?, row)?;
        Ok((at, cx.load(f32t, cx.gep(f32t, lse_partial, at)?)?.into_float_value()))
    };

    // The largest split LSE.
    let m = cx.for_range(cx.i32(0), splits, vec![cx.f32(f32::NEG_INFINITY).into()], "max", |cx, s, carried| {
        let (_, l) = split_lse(s)?;
        Ok(vec![cx.fmax(carried[0].into_float_value(), l)?.into()])
    })?[0]
        .into_float_value();
    // Nothing seen anywhere: 0 in the exponent, so -inf - -inf never makes NaN.
    let seen = cx.fcmp(FP::OGT, m, cx.f32(f32::NEG_INFINITY))?;
    let m_use = cx.select_f32(seen, m, cx.f32(0.0))?;

    let mut init: Vec<BV<'ctx>> = vec![cx.f32(0.0).into()];
    init.extend((0..2 * cols.len()).map(|_| BV::from(cx.f32(0.0))));
    let sums = cx.for_range(cx.i32(0), splits, init, "merge", |cx, s, carried| {
        let (at, l) = split_lse(s)?;
        let w = cx.ex2(cx.fsub(l, m_use)?)?;
        let mut next = vec![BV::from(cx.fadd(carried[0].into_float_value(), w)?)];
        let o_row = cx.gep(f32t, o_partial, cx.mul(at, cx.i64(head_dim))?)?;
        for (i, &(col, _)) in cols.iter().enumerate() {
            let v = cx.load(pair, cx.gep(f32t, o_row, cx.sext64(col)?)?)?.into_vector_value();
            for e in 0..2 {
                let x = cx.b.build_extract_element(v, cx.i32(e), "")?.into_float_value();
                next.push(cx.fma(w, x, carried[1 + 2 * i + e as usize].into_float_value())?.into());
            }
        }
        Ok(next)
    })?;
    let total = sums[0].into_float_value();
    // total is 0 (nothing seen) or at least 1 (the largest split's own weight).
    let any = cx.fcmp(FP::OGT, total, cx.f32(0.0))?;
    let inv = cx.select_f32(any, cx.rcp(total)?, cx.f32(0.0))?;

    let q = cx.srem(row, cx.sext64(q_len)?)?;
    let bh = cx.sdiv(row, cx.sext64(q_len)?)?;
    let (b, h) = (cx.sdiv(bh, cx.sext64(heads)?)?, cx.srem(bh, cx.sext64(heads)?)?);
    let elem = cx.ctx.i16_type();
    let o_row = cx.gep(elem, o, cx.add(cx.add(cx.mul(b, osb)?, cx.mul(h, osh)?)?, cx.mul(q, osn)?)?)?;
    for (i, &(col, mine)) in cols.iter().enumerate() {
        let x = |e: usize| cx.fmul(sums[1 + 2 * i + e].into_float_value(), inv);
        let v = cx.pack_half2(plan.dtype, x(0)?, x(1)?)?;
        cx.if_then(mine, "store_pair", |cx| cx.store(cx.gep(elem, o_row, cx.sext64(col)?)?, v))?;
    }
    let lse_v = cx.select_f32(any, cx.fmul(cx.fadd(m_use, cx.lg2(total)?)?, cx.f32(std::f32::consts::LN_2))?, cx.f32(f32::NEG_INFINITY))?;
    cx.if_then(cx.icmp(IP::EQ, lane, cx.i32(0))?, "store_lse", |cx| cx.store(cx.gep(f32t, lse, row)?, lse_v))?;
    cx.ret_void()
}
