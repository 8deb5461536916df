//! The summary kernels, the input of the in-kernel tile classifier:
//! - `block_minmax` (params src, dst, rows, n, block): per-block [min, max]
//!   of one i32 tensor, in every module;
//! - `block_minmax_runs` (params src, buckets, dst, rows, n, block), only in
//!   modules whose pattern joins on a bucket (`lacuna_ir::summary`): [min,
//!   max] and the ranges over the block's smallest- and largest-bucket runs;
//! - `block_summaries`, generated for the pattern (modules whose pattern
//!   reads tensors): every tensor input's summary, each in its own form, in
//!   one launch with grid.z = the input. The runtime launches this one; the
//!   two generic kernels serve old manifests and checks of single tensors.
//!
//! Grid (any x, rows[, inputs]); 128 threads. Each warp reduces [`BLOCKS_PER_WARP`]
//! blocks at a time, [`LANES_PER_BLOCK`] lanes per block: a lane folds
//! [`PER_LANE`] elements per round into its accumulator (their loads all in
//! flight together; a group's lanes read 8 consecutive elements per load),
//! then the group merges in 3 shuffle steps. CTAs stride over the row's
//! blocks by the grid's width, so any grid.x is correct; `ceil(nblocks /
//! BLOCKS_PER_CTA)` gives each warp one turn.
//!
//! History: one block per CTA (the first version) made the summaries of a
//! 16K hash pattern cost 13 µs per input on an H100 (launch-bound). A warp
//! per 2 blocks (32 lanes each, 5 shuffle steps) was issue- and
//! latency-bound on the shuffle tree: hash's summaries took 9.5 µs at 4K
//! and 23.5 µs at 16K (ncu, H200, perf log v6.5), about 15% and 7% of
//! hash-32's time.

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::BasicValueEnum as BV;
use inkwell::values::{FunctionValue, PointerValue};
use inkwell::IntPredicate as IP;
use lacuna_ir::{BucketJoin, InputId, InputKind, PatternIr};

use crate::abi::{FUSED_SUMMARY_ENTRY, RUN_SUMMARY_ENTRY, SUMMARY_ENTRY};
use crate::cx::{named, Cx, GLOBAL, IV};
use crate::error::Result;
use crate::lower::forward::PTX_KERNEL_CC;

const THREADS: i32 = 128;
const WARPS: i32 = THREADS / 32;
/// Lanes that reduce one block together.
const LANES_PER_BLOCK: i32 = 8;
/// Blocks one warp reduces per turn.
pub(crate) const BLOCKS_PER_WARP: i32 = 32 / LANES_PER_BLOCK;
/// Elements each lane folds per round, loads issued together: a round
/// covers 64 elements of a block (one round for the 48- and 64-row tiles).
const PER_LANE: i32 = 8;
/// Blocks one CTA reduces per turn (the runtime sizes grid.x by it).
pub(crate) const BLOCKS_PER_CTA: i32 = WARPS * BLOCKS_PER_WARP;

/// The module's summary kernels: `block_minmax` always; `block_minmax_runs`
/// for a bucket join; `block_summaries` when the pattern reads tensors.
/// With `dependents`, `block_summaries` lets the forward kernel launched
/// after it be scheduled once each of its CTAs has stored its summaries.
pub(crate) fn build<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, p: &PatternIr, dependents: bool) -> Result<()> {
    build_kernel(ctx, module, Reduction::Range)?;
    if BucketJoin::find(p).is_some() {
        build_kernel(ctx, module, Reduction::Runs)?;
    }
    if !tensor_inputs(p).is_empty() {
        build_fused(ctx, module, p, dependents)?;
    }
    Ok(())
}

/// What one summary kernel reduces a block to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reduction {
    /// `[min, max]`.
    Range,
    /// `[min, max]`, then (smallest bucket, its run's min, max) and (largest
    /// bucket, its run's min, max), kept per lane and merged like the ranges.
    Runs,
}

impl Reduction {
    fn entry(self) -> &'static str {
        match self {
            Reduction::Range => SUMMARY_ENTRY,
            Reduction::Runs => RUN_SUMMARY_ENTRY,
        }
    }

    /// Accumulator words per block and the ones written out, in order.
    fn written(self) -> &'static [usize] {
        match self {
            Reduction::Range => &[0, 1],
            Reduction::Runs => &[0, 1, 3, 4, 6, 7],
        }
    }

    fn init<'ctx>(self, cx: &Cx<'_, 'ctx>) -> Vec<IV<'ctx>> {
        let (max, min) = (cx.i32(i32::MAX), cx.i32(i32::MIN));
        match self {
            Reduction::Range => vec![max, min],
            Reduction::Runs => vec![max, min, max, max, min, min, max, min],
        }
    }

    /// Folds `other` (an accumulator, or one element as a point) into `acc`.
    fn merge<'ctx>(self, cx: &Cx<'_, 'ctx>, acc: &[IV<'ctx>], other: &[IV<'ctx>]) -> Result<Vec<IV<'ctx>>> {
        let mut out = vec![cx.smin(acc[0], other[0])?, cx.smax(acc[1], other[1])?];
        if self == Reduction::Runs {
            // A run: (bucket, lo, hi); the other side's run replaces ours when
            // its bucket comes first (`first`), and joins it when equal.
            let run = |at: usize, first: bool| -> Result<[IV<'ctx>; 3]> {
                let (b, o) = (acc[at], other[at]);
                let replace = cx.icmp(if first { IP::SLT } else { IP::SGT }, o, b)?;
                let same = cx.icmp(IP::EQ, o, b)?;
                let lo = cx.select_int(same, cx.smin(acc[at + 1], other[at + 1])?, cx.select_int(replace, other[at + 1], acc[at + 1])?)?;
                let hi = cx.select_int(same, cx.smax(acc[at + 2], other[at + 2])?, cx.select_int(replace, other[at + 2], acc[at + 2])?)?;
                Ok([cx.select_int(replace, o, b)?, lo, hi])
            };
            out.extend(run(2, true)?);
            out.extend(run(5, false)?);
        }
        Ok(out)
    }

    /// One element `x` (in bucket `bucket`) as an accumulator.
    fn point<'ctx>(self, x: IV<'ctx>, bucket: Option<IV<'ctx>>) -> Vec<IV<'ctx>> {
        match (self, bucket) {
            (Reduction::Runs, Some(b)) => vec![x, x, b, x, x, b, x, x],
            _ => vec![x, x],
        }
    }
}

/// A standalone summary kernel: one tensor, params (src, [buckets,] dst, rows, n, block).
fn build_kernel<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, r: Reduction) -> Result<()> {
    let mut names = vec!["src"];
    if r == Reduction::Runs {
        names.push("buckets");
    }
    names.extend(["dst", "rows", "n", "block"]);
    let ptrs = names.len() - 3;
    let func = declare(ctx, module, r.entry(), &names, ptrs);

    let cx = Cx::new(ctx, module, func);
    let p = |i: usize| func.get_nth_param(i as u32).expect("declared");
    let src = p(0).into_pointer_value();
    let buckets = (r == Reduction::Runs).then(|| p(1).into_pointer_value());
    let dst = p(ptrs - 1).into_pointer_value();
    let (rows, n, block) = (p(ptrs).into_int_value(), p(ptrs + 1).into_int_value(), p(ptrs + 2).into_int_value());
    let row = named(cx.ctaid('y')?, "row");
    let (work, idle) = (cx.block("work"), cx.block("idle"));
    cx.cond_br(cx.icmp(IP::SLT, row, rows)?, work, idle)?;
    cx.at(idle);
    cx.ret_void()?;
    cx.at(work);
    reduce_row(&cx, r, RowSource { src, buckets, dst, n, block }, row)?;
    cx.ret_void()
}

/// Every tensor input's summary in one launch: params, per tensor input in
/// input order, (values, [its side's buckets when it has runs,] summary),
/// then (rows, q_len, kv_len, block_q, block_k); grid (any x, rows, tensor
/// inputs), z choosing the input. The standalone kernels cost each input a
/// launch of their own, latency-bound: 21% of hash-32's time at 4K (perf
/// log v5.5).
fn build_fused<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, p: &PatternIr, dependents: bool) -> Result<()> {
    let tensors = tensor_inputs(p);
    let mut names = Vec::new();
    for &(id, runs) in &tensors {
        let name = &p.input(id).name;
        names.push(name.clone());
        if runs {
            names.push(format!("{name}_buckets"));
        }
        names.push(format!("{name}_summary"));
    }
    let ptrs = names.len();
    names.extend(["rows", "q_len", "kv_len", "block_q", "block_k"].map(String::from));
    let func = declare(ctx, module, FUSED_SUMMARY_ENTRY, &names, ptrs);

    let cx = Cx::new(ctx, module, func);
    let param = |i: usize| func.get_nth_param(i as u32).expect("declared");
    let int = |i: usize| param(ptrs + i).into_int_value();
    let (rows, q_len, kv_len, block_q, block_k) = (int(0), int(1), int(2), int(3), int(4));
    let row = named(cx.ctaid('y')?, "row");
    let input = named(cx.ctaid('z')?, "input");
    let done = cx.block("done");
    let work = cx.block("work");
    cx.cond_br(cx.icmp(IP::SLT, row, rows)?, work, done)?;
    cx.at(work);
    let mut at = 0;
    for (z, &(id, runs)) in tensors.iter().enumerate() {
        let src = param(at).into_pointer_value();
        let buckets = runs.then(|| param(at + 1).into_pointer_value());
        let dst = param(at + 1 + runs as usize).into_pointer_value();
        at += 2 + runs as usize;
        let is_q = p.input(id).kind == InputKind::QueryTensor;
        let (n, block) = if is_q { (q_len, block_q) } else { (kv_len, block_k) };
        let r = if runs { Reduction::Runs } else { Reduction::Range };
        let (this, next) = (cx.block(&format!("input{z}")), cx.block(&format!("after{z}")));
        cx.cond_br(cx.icmp(IP::EQ, input, cx.i32(z as i32))?, this, next)?;
        cx.at(this);
        reduce_row(&cx, r, RowSource { src, buckets, dst, n, block }, row)?;
        cx.br(done)?;
        cx.at(next);
    }
    cx.br(done)?;
    cx.at(done);
    if dependents {
        // After this CTA's stores, not first thing: a trigger at the start
        // let the forward kernel's CTAs take SM slots (registers) while the
        // summaries were still being made, which cost QK-drop 80% at 4K,
        // D=64 (1.3 waves, heaviest first) 15-21% (perf log, v6.3); here the
        // forward grid is dispatched as the summary grid drains.
        cx.griddepcontrol_launch_dependents()?;
    }
    cx.ret_void()
}

/// A summary kernel entry of [`THREADS`] threads: parameters `names`, the
/// first `ptrs` global pointers and the rest i32.
fn declare<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, entry: &str, names: &[impl AsRef<str>], ptrs: usize) -> FunctionValue<'ctx> {
    let gptr = ctx.ptr_type(inkwell::AddressSpace::from(GLOBAL));
    let i32t = ctx.i32_type();
    let types: Vec<_> = (0..names.len()).map(|i| if i < ptrs { gptr.into() } else { i32t.into() }).collect();
    let func = module.add_function(entry, ctx.void_type().fn_type(&types, false), None);
    func.set_call_conventions(PTX_KERNEL_CC);
    func.add_attribute(AttributeLoc::Function, ctx.create_string_attribute("nvvm.maxntid", &THREADS.to_string()));
    for (i, name) in names.iter().enumerate() {
        func.get_nth_param(i as u32).expect("declared").set_name(name.as_ref());
    }
    func
}

/// The tensor inputs, in input order, and whether each is summarised with bucket runs.
pub(crate) fn tensor_inputs(p: &PatternIr) -> Vec<(InputId, bool)> {
    let join = BucketJoin::find(p);
    (0..p.inputs().len())
        .map(|i| InputId(i as u32))
        .filter(|&id| matches!(p.input(id).kind, InputKind::QueryTensor | InputKind::KeyTensor))
        .map(|id| (id, join.is_some_and(|j| j.has_runs(p, id))))
        .collect()
}

/// One tensor's rows: `(rows, n)` i32 values (and buckets) → `(rows, nblocks, words)`.
struct RowSource<'ctx> {
    src: PointerValue<'ctx>,
    buckets: Option<PointerValue<'ctx>>,
    dst: PointerValue<'ctx>,
    n: IV<'ctx>,
    block: IV<'ctx>,
}

/// This CTA's share of row `row`'s blocks (none when `block` is not positive).
fn reduce_row<'ctx>(cx: &Cx<'_, 'ctx>, r: Reduction, s: RowSource<'ctx>, row: IV<'ctx>) -> Result<()> {
    let RowSource { src, buckets, dst, n, block } = s;
    let tid = named(cx.tid_x()?, "tid");
    let lane = cx.and(tid, cx.i32(31))?;
    let warp = cx.lshr(tid, cx.i32(5))?;
    // This lane's block within the warp's turn, and its place in the block's group.
    let group = cx.udiv(lane, cx.i32(LANES_PER_BLOCK))?;
    let in_group = cx.urem(lane, cx.i32(LANES_PER_BLOCK))?;
    let safe_block = cx.smax(block, cx.i32(1))?;
    let nblocks = named(cx.udiv(cx.add(n, cx.sub(safe_block, cx.i32(1))?)?, safe_block)?, "nblocks");

    // This warp's first block, the stride between its turns, and its turns.
    let first = cx.add(cx.mul(cx.ctaid('x')?, cx.i32(BLOCKS_PER_CTA))?, cx.mul(warp, cx.i32(BLOCKS_PER_WARP))?)?;
    let stride = cx.mul(cx.nctaid('x')?, cx.i32(BLOCKS_PER_CTA))?;
    let left = cx.smax(cx.sub(nblocks, first)?, cx.i32(0))?;
    let turns = cx.udiv(cx.add(left, cx.sub(stride, cx.i32(1))?)?, stride)?;
    let turns = cx.select_int(cx.icmp(IP::SGT, block, cx.i32(0))?, turns, cx.i32(0))?;
    let per_round = LANES_PER_BLOCK * PER_LANE;
    let rounds = cx.udiv(cx.add(safe_block, cx.i32(per_round - 1))?, cx.i32(per_round))?;
    let row_start = cx.mul(cx.sext64(row)?, cx.sext64(n)?)?;
    let row_src = cx.gep(cx.i32t(), src, row_start)?;
    let row_buckets = buckets.map(|b| cx.gep(cx.i32t(), b, row_start)).transpose()?;
    let words = r.written().len() as i64;
    let row_dst = cx.gep(cx.i32t(), dst, cx.mul(cx.mul(cx.sext64(row)?, cx.sext64(nblocks)?)?, cx.i64(words))?)?;
    let last_block = cx.sub(nblocks, cx.i32(1))?;
    cx.for_range(cx.i32(0), turns, Vec::new(), "turn", |cx, t, _| {
        // Blocks past the row's end re-read its last block and store nothing.
        let blk = cx.add(cx.add(first, cx.mul(t, stride)?)?, group)?;
        let start = cx.mul(cx.smin(blk, last_block)?, safe_block)?;
        let end = cx.smin(cx.add(start, safe_block)?, n)?;
        let init: Vec<BV<'ctx>> = r.init(cx).into_iter().map(Into::into).collect();
        let acc = cx.for_range(cx.i32(0), rounds, init, "round", |cx, round, acc| {
            let base = cx.add(cx.add(start, cx.mul(round, cx.i32(per_round))?)?, in_group)?;
            // Every load of the round first, then the folds.
            let mut points = Vec::with_capacity(PER_LANE as usize);
            for e in 0..PER_LANE {
                // Past the block's end, re-read its first element: every
                // accumulator is idempotent, so it is unchanged.
                let i = cx.add(base, cx.i32(e * LANES_PER_BLOCK))?;
                let i = cx.sext64(cx.select_int(cx.icmp(IP::SLT, i, end)?, i, start)?)?;
                let x = cx.load_i32(cx.gep(cx.i32t(), row_src, i)?)?;
                let bucket = row_buckets.map(|b| cx.load_i32(cx.gep(cx.i32t(), b, i)?)).transpose()?;
                points.push(r.point(x, bucket));
            }
            let mut mine: Vec<IV<'ctx>> = acc.iter().map(|v| v.into_int_value()).collect();
            for p in &points {
                mine = r.merge(cx, &mine, p)?;
            }
            Ok(mine.into_iter().map(BV::from).collect())
        })?;
        let mut mine: Vec<IV<'ctx>> = acc.iter().map(|v| v.into_int_value()).collect();
        // Butterflies below LANES_PER_BLOCK stay inside the block's group.
        let mut mask = LANES_PER_BLOCK / 2;
        while mask > 0 {
            let theirs = mine.iter().map(|&v| cx.shfl_bfly_i32(v, mask)).collect::<Result<Vec<_>>>()?;
            mine = r.merge(cx, &mine, &theirs)?;
            mask /= 2;
        }
        let write = cx.and(cx.icmp(IP::EQ, in_group, cx.i32(0))?, cx.icmp(IP::SLT, blk, nblocks)?)?;
        cx.if_then(write, "write", |cx| {
            let at = cx.mul(cx.sext64(blk)?, cx.i64(words))?;
            for (w, &word) in r.written().iter().enumerate() {
                cx.store(cx.gep(cx.i32t(), row_dst, cx.add(at, cx.i64(w as i64))?)?, mine[word])?;
            }
            Ok(())
        })?;
        Ok(Vec::new())
    })?;
    Ok(())
}
