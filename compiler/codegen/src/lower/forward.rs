//! The forward kernel skeleton: where the tile list becomes a loop.
//!
//! ```text
//! entry:    CTA coordinates (query blocks last-first for causal-like patterns),
//!           base pointers, launch-uniform predicate values, the CTA's key-block
//!           candidates (keys.rs); Q tile (and its query-tensor values) → shared;
//!           prologue: build the key-block list (all threads classify a chunk of
//!           candidates) and issue the first stages-1 K/V blocks
//! kv_loop:  while the oldest pending block exists:
//!             wait for it (wgmma path: on its slot's mbarrier, then the CTA
//!             barrier); take the next list entry and issue its block into the
//!             freed slot (with its key-tensor values when it is Partial);
//!             S = Q·Kᵀ (mma.rs); if Partial or ragged: element test (predicate.rs),
//!             reading the staged tensor values from shared memory;
//!             online softmax (exp2 form; row maxima, rescale of O, exponentials); O += P·V
//! epilogue: O / l in dtype, lse in natural log; an all-masked row gives 0 and -inf
//! ```
//!
//! The element test is in `forward/element_test.rs`, the epilogues (the
//! plain entry's and the split-KV entry's) in `forward/epilogue.rs`.
//!
//! Copies: on the wgmma path (`plan.tma()`) thread 0 loads the Q, K and V
//! tiles by TMA through the launch's tensor maps, one mbarrier per stage
//! and one for Q counting the bytes (`tma_issue`, `wait_block`); elsewhere
//! every thread issues cp.async copies (`lower/pipeline.rs`). Staged
//! tensor values always come by cp.async.

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::BasicMetadataTypeEnum;
use inkwell::values::PointerValue;
use inkwell::{FloatPredicate as FP, IntPredicate as IP};

use lacuna_ir::summary::summary_words;
use lacuna_ir::{Arch, GridOrder, InputId, InputKind, PatternIr};

mod element_test;
mod epilogue;

use crate::abi::{fixed, AbiType, ForwardAbi};
use crate::cx::{named, Cx, BV, FV, GLOBAL, IV};
use crate::error::Result;
use crate::lower::keys::{is_partial, next_block, KeyBlocks, KeyList, ListCursor, NextBlock};
use crate::lower::pipeline::{align_dynamic_smem, copy_from, copy_tile, dynamic_smem, index_entries, stage_values, tile_sources, RowIndex, SmemLayout, TileCopy, STAGED_PER_ROW};
use crate::mma::{self, Acc, LaneOffsets, QFrags, WarpTile};
use crate::plan::{KernelPlan, Mma, SWIZZLE_ALIGN, SWIZZLE_ROW_BYTES};
use crate::wgmma::{self, SmemOperand};
use crate::predicate::{list_bitmap_words, list_rows_per_tile, InputArg, ListBitmap, PredEnv, Predicate, TileRange};

/// PTX calling convention of a kernel entry (`ptx_kernel`).
pub(crate) const PTX_KERNEL_CC: u32 = 71;

/// Size and alignment of a `CUtensorMap` parameter.
const TENSOR_MAP_BYTES: u32 = 128;
const TENSOR_MAP_ALIGN: u64 = 64;

/// plan.tma: what the issuing thread needs for the tensor loads.
#[derive(Clone, Copy)]
struct Tma<'ctx> {
    /// Generic addresses of the `q_tensor_map`, `k_tensor_map` and
    /// `v_tensor_map` parameters.
    q_map: PointerValue<'ctx>,
    k_map: PointerValue<'ctx>,
    v_map: PointerValue<'ctx>,
    /// The box coordinates that do not move with the key block.
    kv_head: IV<'ctx>,
    batch: IV<'ctx>,
    /// Shared address of stage 0's mbarrier (stage s's is 8·s further;
    /// after the stages', Q's).
    barriers: IV<'ctx>,
}

/// Issues the TMA loads of one tile: `rows` rows from `row0` of (head,
/// batch) of the tensor map at `map`, into the swizzled tile at `dst`, one
/// load per 64-column block (see `chunk_dst`), counted on `bar`.
#[allow(clippy::too_many_arguments)]
fn tma_tile<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, map: PointerValue<'ctx>, dst: PointerValue<'ctx>, rows: u32, row0: IV<'ctx>, head: IV<'ctx>, batch: IV<'ctx>, bar: IV<'ctx>) -> Result<()> {
    let dst = cx.shared_addr(dst)?;
    for c in 0..plan.head_dim / 64 {
        let at = cx.add(dst, cx.i32((c * rows * SWIZZLE_ROW_BYTES) as i32))?;
        cx.tma_load_4d(at, map, [cx.i32((64 * c) as i32), row0, head, batch], bar)?;
    }
    Ok(())
}

/// Where a CTA works: its query block, batch and head.
struct CtaCoords<'ctx> {
    qb: IV<'ctx>,
    b: IV<'ctx>,
    h: IV<'ctx>,
}

/// The split-KV entry's own parameters (see `ForwardAbi::split_start`).
#[derive(Clone, Copy)]
struct SplitKv<'ctx> {
    /// `kv_splits`: how many CTAs share a query block's key blocks.
    splits: IV<'ctx>,
    o_partial: PointerValue<'ctx>,
    lse_partial: PointerValue<'ctx>,
}

impl<'ctx> SplitKv<'ctx> {
    /// The batch and split of the grid's batch axis value: with splits the
    /// axis runs over `batch · kv_splits` (value `b · kv_splits + s`),
    /// without it is the batch. The runtime rejects a zero split count; it
    /// must not become a division by zero here.
    fn unfold(split: Option<Self>, cx: &Cx<'_, 'ctx>, axis: IV<'ctx>) -> Result<(IV<'ctx>, Option<IV<'ctx>>)> {
        let Some(sp) = split else { return Ok((axis, None)) };
        let splits = cx.smax(sp.splits, cx.i32(1))?;
        let b = cx.udiv(axis, splits)?;
        Ok((named(b, "b"), Some(named(cx.sub(axis, cx.mul(b, splits)?)?, "split"))))
    }
}

/// The query block, batch and head this CTA runs: the one place grid order
/// is decided (`GridOrder`; the runtime launches the matching grid, and
/// `GridOrder::work_of` is this arithmetic on the host, tested there). Every
/// grid reads its head as a rank: `head_order[rank]` when the plan takes a
/// head order (one uniform load per CTA), else the rank itself. With
/// `fresh`, special registers are read fresh (see `Forward::fresh_coords`)
/// in the order the epilogue has always read them, so its code stays as
/// measured; `q_blocks` is made only where the grid needs it.
fn cta_coords<'ctx>(
    cx: &Cx<'_, 'ctx>,
    plan: &KernelPlan,
    fresh: bool,
    q_blocks: &dyn Fn() -> Result<IV<'ctx>>,
    heads: IV<'ctx>,
    head_order: Option<PointerValue<'ctx>>,
) -> Result<CtaCoords<'ctx>> {
    let sreg = |axis: char| if fresh { cx.sreg_fresh(&format!("ctaid.{axis}")) } else { cx.ctaid(axis) };
    let coords = |qb, b, h| CtaCoords { qb, b: named(b, "b"), h };
    let head = |rank: IV<'ctx>| -> Result<IV<'ctx>> {
        let h = match head_order {
            Some(order) => cx.load_i32(cx.gep(cx.i32t(), order, cx.sext64(rank)?)?)?,
            None => rank,
        };
        Ok(named(h, "h"))
    };
    match plan.grid {
        GridOrder::HeadMajor if fresh => {
            let b = sreg('z')?;
            let h = head(sreg('y')?)?;
            Ok(coords(named(sreg('x')?, "qb"), b, h))
        }
        GridOrder::HeadMajor => {
            let qb = named(sreg('x')?, "qb");
            let h = head(sreg('y')?)?;
            Ok(coords(qb, sreg('z')?, h))
        }
        GridOrder::HeaviestFirst => {
            // Row y holds every head's block of rank y; the hardware hands
            // CTAs out x-fastest, so the grid drains heaviest first across
            // all heads (a head-major grid does so only within each head:
            // an 18% tail on causal at 3.3K, perf log v4.9).
            let rank_y = |cx: &Cx<'_, 'ctx>| -> Result<IV<'ctx>> {
                let (n, y) = (q_blocks()?, sreg('y')?);
                Ok(named(cx.sub(cx.sub(n, cx.i32(1))?, y)?, "qb"))
            };
            let qb = if fresh { None } else { Some(rank_y(cx)?) };
            // A zero head count is a launch error the runtime rejects; it
            // must not become a division by zero here.
            let x = sreg('x')?;
            let b = cx.udiv(x, cx.smax(heads, cx.i32(1))?)?;
            let rank = cx.sub(x, cx.mul(b, heads)?)?;
            let h = head(rank)?;
            let qb = match qb {
                Some(qb) => qb,
                None => rank_y(cx)?,
            };
            Ok(coords(qb, b, h))
        }
        GridOrder::RankMajor => {
            // The HeaviestFirst order without folding b and h into x: no
            // division by the head count (perf log v5.3). Fresh reads take
            // the rank last, as HeaviestFirst's do.
            let rank_z = || -> Result<IV<'ctx>> { Ok(named(cx.sub(cx.sub(q_blocks()?, cx.i32(1))?, sreg('z')?)?, "qb")) };
            let qb = if fresh { None } else { Some(rank_z()?) };
            let h = head(sreg('x')?)?;
            let b = sreg('y')?;
            Ok(coords(qb.map_or_else(rank_z, Ok)?, b, h))
        }
    }
}

/// A thread's place in the CTA's tile, as the epilogue recomputes it.
struct Coords<'ctx> {
    /// The split-KV entry: this CTA's split.
    split: Option<IV<'ctx>>,
    b: IV<'ctx>,
    h: IV<'ctx>,
    /// `b * heads + h`, i64.
    bh: IV<'ctx>,
    q0: IV<'ctx>,
    warp_row0: IV<'ctx>,
    g: IV<'ctx>,
    t4: IV<'ctx>,
}

/// Where S = Q·Kᵀ takes Q from: mma.sync fragments, or the warpgroup's Q
/// rows in shared memory for wgmma.
enum QOperand<'ctx> {
    Sync(QFrags<'ctx>),
    Wgmma(SmemOperand<'ctx>),
}

/// Online-softmax state of one accumulator row (per thread: a partial row sum).
#[derive(Clone, Copy)]
struct RowState<'ctx> {
    /// Running max of the scaled scores (log2 units); -inf while all masked.
    m: FV<'ctx>,
    /// This thread's share of the running sum of 2^(s - m).
    l: FV<'ctx>,
}

/// Values carried around the key-block loop, flattened for phis.
struct LoopState<'ctx> {
    slot: IV<'ctx>,
    /// Position in the key-block list.
    cursor: ListCursor<'ctx>,
    /// Pending (classified, loading) blocks, oldest first: (kb or -1, undecided
    /// conjuncts, see `NextBlock::undecided`).
    pending: Vec<(IV<'ctx>, IV<'ctx>)>,
    /// `[slab][d n8 tile]`.
    o: Vec<Vec<Acc<'ctx>>>,
    /// `[slab][0: row g, 1: row g + 8]`; empty when the state lives in shared memory.
    rows: Vec<[RowState<'ctx>; 2]>,
    /// plan.row_index: the block to issue next, chosen one iteration early,
    /// with this thread's kv_rows entries for it already loaded.
    ahead: Option<Ahead<'ctx>>,
    /// plan.pv_overlap: the previous block's O += P·V, not yet issued.
    prev: Option<PendingPv<'ctx>>,
    /// plan.tma: bit s is the parity of the phase of stage s's mbarrier
    /// the loop waits for next (flipped after each wait).
    phases: Option<IV<'ctx>>,
}

/// With `KernelPlan::pv_overlap`, block j's O += P·V is issued in the next
/// iteration, right behind that block's S = Q·Kᵀ, and runs on the tensor
/// cores while block j+1's element test and softmax run (FlashAttention-3's
/// intra-warpgroup overlap). What that product needs meanwhile: its P
/// fragments (flattened A registers), the slot holding its V tile, and
/// whether there is one (i1: false before the first block).
#[derive(Clone)]
struct PendingPv<'ctx> {
    p: Vec<IV<'ctx>>,
    slot: IV<'ctx>,
    live: IV<'ctx>,
}

/// The next key block to issue and its row-index entries (see `LoopState::ahead`).
#[derive(Clone)]
struct Ahead<'ctx> {
    kb: IV<'ctx>,
    undecided: IV<'ctx>,
    entries: Vec<IV<'ctx>>,
}

impl<'ctx> LoopState<'ctx> {
    fn flatten(&self) -> Vec<BV<'ctx>> {
        let mut v: Vec<BV<'ctx>> = vec![self.slot.into()];
        v.extend(self.cursor.values().map(BV::from));
        for (kb, undecided) in &self.pending {
            v.push((*kb).into());
            v.push((*undecided).into());
        }
        for slab in &self.o {
            for acc in slab {
                v.extend(acc.iter().map(|x| BV::from(*x)));
            }
        }
        for r in &self.rows {
            for s in r {
                v.push(s.m.into());
                v.push(s.l.into());
            }
        }
        if let Some(a) = &self.ahead {
            v.push(a.kb.into());
            v.push(a.undecided.into());
            v.extend(a.entries.iter().map(|e| BV::from(*e)));
        }
        if let Some(p) = &self.prev {
            v.extend(p.p.iter().map(|x| BV::from(*x)));
            v.push(p.slot.into());
            v.push(p.live.into());
        }
        v.extend(self.phases.map(BV::from));
        v
    }

    fn unflatten(&self, v: &[BV<'ctx>]) -> Self {
        let mut it = v.iter();
        let mut next = || *it.next().expect("same shape");
        let slot = next().into_int_value();
        let cursor = ListCursor::from_values([0; 2].map(|_| next().into_int_value()));
        let pending = self.pending.iter().map(|_| (next().into_int_value(), next().into_int_value())).collect();
        let o = self
            .o
            .iter()
            .map(|slab| slab.iter().map(|_| [0; 4].map(|_| next().into_float_value())).collect())
            .collect();
        let rows = self
            .rows
            .iter()
            .map(|_| [0; 2].map(|_| RowState { m: next().into_float_value(), l: next().into_float_value() }))
            .collect();
        let ahead = self.ahead.as_ref().map(|a| Ahead {
            kb: next().into_int_value(),
            undecided: next().into_int_value(),
            entries: a.entries.iter().map(|_| next().into_int_value()).collect(),
        });
        let prev = self.prev.as_ref().map(|p| PendingPv {
            p: p.p.iter().map(|_| next().into_int_value()).collect(),
            slot: next().into_int_value(),
            live: next().into_int_value(),
        });
        let phases = self.phases.map(|_| next().into_int_value());
        Self { slot, cursor, pending, o, rows, ahead, prev, phases }
    }
}

/// Accumulators as a flat list of values (for phis and tied operands).
fn flat_acc<'ctx>(acc: &[Acc<'ctx>]) -> Vec<BV<'ctx>> {
    acc.iter().flat_map(|a| a.iter().map(|x| BV::from(*x))).collect()
}

/// The inverse of [`flat_acc`].
fn unflat_acc<'ctx>(v: &[BV<'ctx>]) -> Vec<Acc<'ctx>> {
    v.chunks(4).map(|c| [0, 1, 2, 3].map(|i| c[i].into_float_value())).collect()
}

/// Builds the forward entry `entry` into `module`; with `split`, the split-KV entry (see
/// `ForwardAbi::split_start`): the same kernel over its split's share of
/// the key blocks, writing partial results for `lower/combine.rs`.
pub(crate) fn build<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, p: &PatternIr, plan: &KernelPlan, entry: &str, split: bool) -> Result<()> {
    let abi = ForwardAbi::new(p, plan, split);
    let gptr = ctx.ptr_type(inkwell::AddressSpace::from(GLOBAL));
    let param_types: Vec<BasicMetadataTypeEnum<'ctx>> = abi
        .params
        .iter()
        .map(|a| match a.ty {
            AbiType::GlobalPtr => gptr.into(),
            AbiType::I32 => ctx.i32_type().into(),
            AbiType::I64 => ctx.i64_type().into(),
            AbiType::F32 => ctx.f32_type().into(),
            AbiType::TensorMap => ctx.ptr_type(inkwell::AddressSpace::default()).into(),
        })
        .collect();
    let func = module.add_function(entry, ctx.void_type().fn_type(&param_types, false), None);
    func.set_call_conventions(PTX_KERNEL_CC);
    func.add_attribute(AttributeLoc::Function, ctx.create_string_attribute("nvvm.maxntid", &plan.threads().to_string()));
    func.add_attribute(AttributeLoc::Function, ctx.create_string_attribute("nvvm.minctasm", &plan.resident_ctas().to_string()));
    let kind = inkwell::attributes::Attribute::get_named_enum_kind_id;
    let noalias = ctx.create_enum_attribute(kind("noalias"), 0);
    // A tensor map is a 128-byte parameter TMA reads in place: byval, 64-byte
    // aligned, and a grid constant, so LLVM takes its address with
    // `cvta.param` instead of copying it to local memory.
    let map_bytes = ctx.i8_type().array_type(TENSOR_MAP_BYTES);
    let tensor_map = [
        ctx.create_type_attribute(kind("byval"), inkwell::types::AnyTypeEnum::ArrayType(map_bytes)),
        ctx.create_enum_attribute(kind("align"), TENSOR_MAP_ALIGN),
        ctx.create_string_attribute("nvvm.grid_constant", ""),
    ];
    for (i, a) in abi.params.iter().enumerate() {
        let v = func.get_nth_param(i as u32).expect("declared above");
        v.set_name(&a.name);
        match a.ty {
            AbiType::GlobalPtr => func.add_attribute(AttributeLoc::Param(i as u32), noalias),
            AbiType::TensorMap => tensor_map.iter().for_each(|&attr| func.add_attribute(AttributeLoc::Param(i as u32), attr)),
            _ => {}
        }
    }
    let cx = Cx::new(ctx, module, func);
    Forward::emit(&cx, p, plan, &abi)
}

/// How far (log2 units) a block's maximum may exceed a row's reference
/// maximum before the reference moves and O is rescaled, with
/// `conditional_rescale`. Probabilities stay below 2^8 = 256: far from f32's
/// range in O and l, and bf16/fp16 P keeps its relative precision. The
/// value FlashAttention-4 uses.
const RESCALE_SLACK: f32 = 8.0;

/// Whether tile copies take the stepped path for tiles inside the sequence
/// (`copy_tile`). Measured on an H100 (perf log, v4.6): 5-10% faster for
/// every kernel that shares its SM with other CTAs, 4% slower for the one
/// that runs alone (dense D=128, 128x128 tiles): there the extra uniform
/// branch around the copies costs more than the adds it saves.
fn stepped_copies(plan: &KernelPlan) -> bool {
    plan.resident_ctas() >= 2
}

/// Everything fixed for the CTA, shared by the loop body and the epilogue.
struct Forward<'p, 'a, 'ctx> {
    cx: &'p Cx<'a, 'ctx>,
    plan: &'p KernelPlan,
    tile: WarpTile,
    pred: Predicate<'p, 'ctx>,
    keys: KeyBlocks<'ctx>,
    list: KeyList<'ctx>,
    qtile: TileRange<'ctx>,
    smem: PointerValue<'ctx>,
    layout: SmemLayout,
    lanes: LaneOffsets<'ctx>,
    tid: IV<'ctx>,
    q_len: IV<'ctx>,
    kv_len: IV<'ctx>,
    scale_log2: FV<'ctx>,
    k_copy: TileCopy<'ctx>,
    v_copy: TileCopy<'ctx>,
    /// plan.row_index: the `q_rows` parameter and `q_src_len` (the epilogue
    /// writes O and LSE row `q_rows[bh][q]`).
    q_rows: Option<(PointerValue<'ctx>, IV<'ctx>)>,
    /// plan.head_order: the `head_order` parameter (see `cta_coords`).
    head_order: Option<PointerValue<'ctx>>,
    /// The split-KV entry: its split count and partial outputs.
    split: Option<SplitKv<'ctx>>,
    /// Key-tensor inputs are staged in the K rows' padding.
    k_staged: bool,
    /// plan.tma: K and V come by TMA.
    tma: Option<Tma<'ctx>>,
    heads: IV<'ctx>,
    /// Per input: its word in a K row's padding (key tensors) ...
    k_words: Vec<Option<usize>>,
    /// ... and in a Q row's padding (query tensors).
    q_words: Vec<Option<usize>>,
}

impl<'p, 'a, 'ctx> Forward<'p, 'a, 'ctx> {
    fn emit(cx: &'p Cx<'a, 'ctx>, p: &'p PatternIr, plan: &'p KernelPlan, abi: &ForwardAbi) -> Result<()> {
        let param = |i: usize| cx.func.get_nth_param(i as u32).expect("ABI parameter");
        let ptr = |i: usize| param(i).into_pointer_value();
        let int = |i: usize| param(i).into_int_value();
        let (bq, bk) = (plan.block_q as i32, plan.block_k as i32);

        // ---- CTA coordinates ----
        let tid = named(cx.tid_x()?, "tid");
        let lane = cx.and(tid, cx.i32(31))?;
        let warp = cx.lshr(tid, cx.i32(5))?;
        let q_len_early = int(fixed::Q_LEN);
        let q_blocks = named(cx.udiv(cx.add(q_len_early, cx.i32(bq - 1))?, cx.i32(bq))?, "q_blocks");
        let head_order = abi.head_order.map(ptr);
        let (heads, kv_heads, q_len, kv_len) = (int(fixed::HEADS), int(fixed::KV_HEADS), int(fixed::Q_LEN), int(fixed::KV_LEN));
        let CtaCoords { qb, b, h } = cta_coords(cx, plan, false, &|| Ok(q_blocks), heads, head_order)?;
        let split = abi.split_start.map(|i| SplitKv { splits: int(i), o_partial: ptr(i + 1), lse_partial: ptr(i + 2) });
        let (b, split_index) = SplitKv::unfold(split, cx, b)?;
        let scale_log2 = param(fixed::SCALE_LOG2).into_float_value();
        // GQA: kv head = h / (heads / kv_heads); a zero anywhere (a launch error the
        // runtime rejects) must not become a division by zero here. Without
        // GQA the kv head is h: a uniform branch skips the two divisions
        // (~40 instructions in every CTA's prologue).
        let kvh = {
            let (mha_bb, gqa, join) = (cx.current(), cx.block("gqa"), cx.block("gqa.join"));
            cx.cond_br(cx.icmp(IP::EQ, kv_heads, heads)?, join, gqa)?;
            cx.at(gqa);
            let group = cx.smax(cx.udiv(heads, cx.smax(kv_heads, cx.i32(1))?)?, cx.i32(1))?;
            let grouped = cx.udiv(h, group)?;
            let gqa_end = cx.current();
            cx.br(join)?;
            cx.at(join);
            named(cx.phi(cx.i32t(), &[(h.into(), mha_bb), (grouped.into(), gqa_end)])?.into_int_value(), "kv_head")
        };

        let q0 = named(cx.mul(qb, cx.i32(bq))?, "q0");
        let run = cx.block("cta");
        let done = cx.block("cta.idle");
        cx.cond_br(cx.icmp(IP::SLT, q0, q_len)?, run, done)?;
        cx.at(done);
        cx.ret_void()?;
        cx.at(run);
        let q1 = named(cx.sub(cx.smin(cx.add(q0, cx.i32(bq))?, q_len)?, cx.i32(1))?, "q1");
        let k_blocks = named(cx.udiv(cx.add(kv_len, cx.i32(bk - 1))?, cx.i32(bk))?, "k_blocks");

        // ---- base pointers of this (b, h) ----
        let stride = |tensor: usize, dim: usize| int(fixed::STRIDES + 3 * tensor + dim);
        let elem = cx.ctx.i16_type();
        let base = |tensor: usize, head: IV<'ctx>| -> Result<PointerValue<'ctx>> {
            let off = cx.add(cx.mul(cx.sext64(b)?, stride(tensor, 0))?, cx.mul(cx.sext64(head)?, stride(tensor, 1))?)?;
            cx.gep(elem, ptr([fixed::Q, fixed::K, fixed::V, fixed::O][tensor]), off)
        };
        let (q_bh, k_bh, v_bh) = (base(0, h)?, base(1, kvh)?, base(2, kvh)?);
        let bh = cx.add(cx.mul(cx.sext64(b)?, cx.sext64(heads)?)?, cx.sext64(h)?)?;
        // plan.row_index: this (b, h)'s index arrays (both indexed by the query head).
        let rows = abi.rows_start.map(|r| (ptr(r), ptr(r + 1), int(r + 2), int(r + 3)));
        let index = |rows: PointerValue<'ctx>, len: IV<'ctx>, src_len: IV<'ctx>| -> Result<RowIndex<'ctx>> {
            Ok(RowIndex { rows: cx.gep(cx.i32t(), rows, cx.mul(bh, cx.sext64(len)?)?)?, src_len })
        };
        let q_index = rows.map(|(qr, _, qn, _)| index(qr, q_len, qn)).transpose()?;
        let kv_index = rows.map(|(_, kr, _, kn)| index(kr, kv_len, kn)).transpose()?;
        if let Some(ix) = q_index {
            // A query block of padding rows only writes nothing (padding rows
            // are never stored), so it leaves before the key scan. SCFA's
            // QK-drop compacts into the full length without reading the kept
            // counts back, which leaves most trailing blocks all padding at
            // high drop rates. First thing, while little is live (after the
            // Q copy it made ptxas spill).
            let row = cx.add(q0, tid)?;
            let in_tile = cx.and(cx.icmp(IP::ULT, tid, cx.i32(bq))?, cx.icmp(IP::SLT, row, q_len)?)?;
            let (_, real) = ix.source(cx, cx.select_int(in_tile, row, q0)?)?;
            let any_real = cx.barrier_or(cx.and(in_tile, real)?)?;
            let (rows, padding) = (cx.block("cta.rows"), cx.block("cta.padding"));
            cx.cond_br(any_real, rows, padding)?;
            cx.at(padding);
            cx.ret_void()?;
            cx.at(rows);
        }

        // ---- the predicate's launch-uniform values, then the key-block candidates ----
        let smem = dynamic_smem(cx);
        // Block lists' bitmaps sit after the plan's shared memory, one after
        // another in input order, sized by the key length (the manifest's
        // `shared_bytes_for` adds the same bytes at launch).
        let mut bitmap_at = cx.i32(plan.shared_bytes() as i32);
        let mut inputs = Vec::with_capacity(p.inputs().len());
        for (input, (d, &i)) in p.inputs().iter().zip(&abi.input_start).enumerate() {
            inputs.push(match d.kind {
                InputKind::QueryTensor | InputKind::KeyTensor => {
                    let words = summary_words(p, InputId(input as u32)) as u32;
                    InputArg::Tensor { values: ptr(i), summary: ptr(i + 1), words }
                }
                InputKind::HeadScalar(_) => InputArg::HeadScalar(ptr(i)),
                InputKind::LaunchScalar(_) => InputArg::LaunchScalar(param(i)),
                InputKind::BlockList { block } => {
                    let rows = list_rows_per_tile(plan.block_q, block);
                    let words = list_bitmap_words(cx, kv_len, block)?;
                    let bitmap = ListBitmap { base: cx.byte_gep(smem, bitmap_at)?, words, rows };
                    bitmap_at = cx.add(bitmap_at, cx.mul(words, cx.i32(4 * rows as i32))?)?;
                    InputArg::BlockList { list: ptr(i), width: int(i + 1), block, bitmap }
                }
            });
        }
        let env = PredEnv { b, h, bh, q_len, kv_len, q_blocks, k_blocks, inputs };
        // Element-test variants per undecided conjunct: on the wgmma path,
        // where they were measured. mma.sync kernels at D=128 sit at 255
        // registers and the variants made the block-list ones (top-k) spill.
        let pred = Predicate::new(cx, p, env, plan.mma == Mma::Wgmma)?;
        let qtile = TileRange { lo: q0, hi: q1, block: qb };
        let mut keys = KeyBlocks::new(cx, p, plan, &pred, &qtile, q_len, kv_len, k_blocks)?;
        if let (Some(sp), Some(s)) = (split, split_index) {
            keys = keys.split(cx, s, sp.splits)?;
        }

        if plan.swizzled() {
            align_dynamic_smem(cx, SWIZZLE_ALIGN);
        }
        let layout = SmemLayout::new(plan);
        let list = KeyList {
            list: cx.byte_gep(smem, cx.i32(layout.list as i32))?,
            counts: cx.byte_gep(smem, cx.i32(layout.counts as i32))?,
            warps: plan.warps,
            rounds: plan.key_list_rounds(),
            tid,
            lane,
            warp,
        };
        // Tensor inputs whose values are staged in the rows' padding (at most
        // STAGED_PER_ROW per side; any others are read from global memory).
        type Staging<'ctx> = (Vec<(usize, PointerValue<'ctx>)>, Vec<Option<usize>>);
        let staging = |kind: InputKind| -> Result<Staging<'ctx>> {
            let rows: Vec<_> = pred.tensor_rows(cx, kind, None)?.into_iter().take(STAGED_PER_ROW).collect();
            let mut words = vec![None; p.inputs().len()];
            for (w, (i, _)) in rows.iter().enumerate() {
                words[*i] = Some(w);
            }
            Ok((rows, words))
        };
        let (q_staged, q_words) = staging(InputKind::QueryTensor)?;
        let (k_staged, k_words) = staging(InputKind::KeyTensor)?;
        let tma = match abi.tensor_maps {
            Some(i) => Some(Tma {
                q_map: ptr(i),
                k_map: ptr(i + 1),
                v_map: ptr(i + 2),
                kv_head: kvh,
                batch: b,
                barriers: cx.shared_addr(cx.byte_gep(smem, cx.i32(layout.barriers as i32))?)?,
            }),
            None => None,
        };
        let slabs = plan.slabs_per_warp();
        let warp_row0 = cx.mul(warp, cx.i32((16 * slabs) as i32))?;
        let this = Forward {
            cx,
            plan,
            tile: WarpTile { dtype: plan.dtype, slabs, head_dim: plan.head_dim, block_k: plan.block_k, row_bytes: layout.row_bytes },
            pred,
            keys,
            list,
            qtile,
            smem,
            lanes: LaneOffsets::new(cx, lane, layout.row_bytes)?,
            layout,
            tid,
            q_len,
            kv_len,
            scale_log2,
            k_copy: TileCopy { src: k_bh, stride: stride(1, 2), len: kv_len, dst: smem, index: kv_index },
            v_copy: TileCopy { src: v_bh, stride: stride(2, 2), len: kv_len, dst: smem, index: kv_index },
            q_rows: rows.map(|(qr, _, qn, _)| (qr, qn)),
            head_order,
            split,
            k_staged: !k_staged.is_empty(),
            tma,
            heads,
            k_words,
            q_words,
        };

        // ---- Q tile → shared (group 0), then the first stages-1 K/V blocks ----
        let q_dst = cx.byte_gep(smem, cx.i32(this.layout.q as i32))?;
        let q_bar = match &this.tma {
            Some(t) => {
                // Thread 0 makes every arrival and issues every load, so its
                // own initialisation is ordered before them; the other threads
                // first wait on a barrier after the Q wait's bar.sync.
                let q_bar = cx.add(t.barriers, cx.i32(8 * plan.stages as i32))?;
                cx.if_then(cx.icmp(IP::EQ, tid, cx.i32(0))?, "tma.q", |cx| {
                    for s in 0..=plan.stages {
                        cx.mbarrier_init(cx.add(t.barriers, cx.i32(8 * s as i32))?, 1)?;
                    }
                    cx.fence_mbarrier_init()?;
                    cx.mbarrier_arrive_expect_tx(q_bar, cx.i32((plan.block_q * plan.head_dim * 2) as i32))?;
                    tma_tile(cx, plan, t.q_map, q_dst, plan.block_q, q0, h, b, q_bar)
                })?;
                Some(q_bar)
            }
            None => {
                let q_copy = TileCopy { src: q_bh, stride: stride(0, 2), len: q_len, dst: q_dst, index: q_index };
                copy_tile(cx, plan, tid, &q_copy, q0, plan.block_q, stepped_copies(plan))?;
                None
            }
        };
        if !q_staged.is_empty() {
            let rows: Vec<_> = q_staged.iter().map(|(_, v)| *v).collect();
            let dst = cx.byte_gep(smem, cx.i32(this.layout.q_values as i32))?;
            stage_values(cx, plan, tid, &rows, dst, this.layout.values_row_bytes, q0, plan.block_q, q_len)?;
        }
        cx.cp_async_commit()?;
        if super::dependent_launch(p, plan) {
            // Everything above reads only the caller's tensors; the key
            // scan below reads the block summaries, which the summary grid
            // this one was launched behind may still be writing.
            cx.griddepcontrol_wait()?;
        }
        this.pred.build_list_bitmaps(cx, tid, plan.threads(), q0, q1)?;
        let mut cursor = this.keys.start(cx, &this.list)?;
        let mut pending = Vec::new();
        for slot in 0..plan.stages - 1 {
            let next = next_block(cx, plan, &this.keys, &this.list, &this.pred, &this.qtile, kv_len, cursor)?;
            if plan.pv_overlap() || plan.single_v_slot() {
                // V goes out an iteration later (see `kv_loop`).
                this.issue_k_and_v((next.kb, next.undecided, cx.i32(slot as i32)), None)?;
            } else {
                this.issue_kv(next.kb, next.undecided, cx.i32(slot as i32), None)?;
            }
            cursor = next.cursor;
            pending.push((next.kb, next.undecided));
        }
        // With row indices the block after these is chosen now and its index
        // entries loaded: the loop issues it from registers and looks one further.
        let ahead = if plan.row_index {
            let next = next_block(cx, plan, &this.keys, &this.list, &this.pred, &this.qtile, kv_len, cursor)?;
            cursor = next.cursor;
            Some(Ahead { kb: next.kb, undecided: next.undecided, entries: this.kv_entries(next.kb)? })
        } else {
            None
        };
        // Q has landed once at most stages-1 groups are still in flight
        // (with TMA: its values have; the tile itself on its barrier, whose
        // only phase is 0).
        this.wait_tiles(plan.stages - 1)?;
        if let Some(bar) = q_bar {
            cx.mbarrier_wait(bar, cx.i32(0))?;
        }
        let q_lane = cx.byte_gep(smem, cx.add(cx.i32(this.layout.q as i32), cx.add(cx.mul(warp_row0, cx.i32(this.layout.row_bytes as i32))?, this.lanes.a)?)?)?;
        let qfrags = if plan.mma == Mma::Wgmma {
            // The warpgroup's 64 rows start 64 rows into each column block of the Q tile.
            let wg_rows = cx.mul(cx.lshr(warp, cx.i32(2))?, cx.i32((64 * SWIZZLE_ROW_BYTES) as i32))?;
            let at = cx.byte_gep(smem, cx.add(cx.i32(this.layout.q as i32), wg_rows)?)?;
            QOperand::Wgmma(wgmma::k_major(cx, at, plan.block_q)?)
        } else if plan.q_in_registers() {
            let frags = (0..slabs)
                .map(|s| (0..plan.head_dim / 16).map(|kk| mma::load_a(cx, q_lane, this.layout.row_bytes, s, kk)).collect::<Result<Vec<_>>>())
                .collect::<Result<Vec<_>>>()?;
            QOperand::Sync(QFrags::Registers(frags))
        } else {
            QOperand::Sync(QFrags::Shared { lane_base: q_lane, row_bytes: this.layout.row_bytes })
        };

        let zero = cx.f32(0.0);
        let rows = vec![[RowState { m: cx.f32(f32::NEG_INFINITY), l: zero }; 2]; slabs as usize];
        let rows = if plan.softmax_state_in_shared() {
            this.store_rows(&rows)?;
            Vec::new()
        } else {
            rows
        };
        let prev = plan.pv_overlap().then(|| PendingPv {
            p: vec![cx.i32(0); (4 * plan.block_k / 16) as usize],
            slot: cx.i32(0),
            live: cx.bool(false),
        });
        let phases = this.tma.map(|_| cx.i32(0));
        let init = LoopState { slot: cx.i32(0), cursor, pending, o: vec![vec![[zero; 4]; (plan.head_dim / 8) as usize]; slabs as usize], rows, ahead, prev, phases };
        let mut last = this.kv_loop(init, &qfrags)?;
        if plan.softmax_state_in_shared() {
            last.rows = this.load_rows()?;
        }
        // Coordinates again, from fresh special-register reads: values the loop does not
        // need then do not live across it (at D=128 they would cost spills).
        let coords = this.fresh_coords()?;
        if let Some(sp) = this.split {
            if plan.arch == Arch::Sm90a {
                // The combine grid, launched programmatically behind this
                // one, may be scheduled now (into SMs this small grid
                // leaves free); it waits for this grid's partials to land.
                cx.griddepcontrol_launch_dependents()?;
            }
            return this.epilogue_split(&last, &coords, &sp, int(fixed::BATCH));
        }
        this.epilogue(&last, &coords, ptr(fixed::O), ptr(fixed::LSE), coords.b, coords.h, heads, stride(3, 0), stride(3, 1), stride(3, 2))
    }

    /// The thread's coordinates recomputed from fresh special-register reads
    /// (volatile, so LLVM neither merges them with the entry's nor hoists them):
    /// for code after the loop or in its rare paths, which would otherwise keep
    /// the entry's values, and every address derived from them, in registers
    /// across the whole loop.
    fn fresh_coords(&self) -> Result<Coords<'ctx>> {
        let cx = self.cx;
        let bq = self.plan.block_q as i32;
        let q_blocks = || cx.udiv(cx.add(self.q_len, cx.i32(bq - 1))?, cx.i32(bq));
        let CtaCoords { qb, b, h } = cta_coords(cx, self.plan, true, &q_blocks, self.heads, self.head_order)?;
        let (b, split) = SplitKv::unfold(self.split, cx, b)?;
        let tid = cx.sreg_fresh("tid.x")?;
        let lane = cx.and(tid, cx.i32(31))?;
        Ok(Coords {
            split,
            b,
            h,
            bh: cx.add(cx.mul(cx.sext64(b)?, cx.sext64(self.heads)?)?, cx.sext64(h)?)?,
            q0: cx.mul(qb, cx.i32(bq))?,
            warp_row0: cx.mul(cx.lshr(tid, cx.i32(5))?, cx.i32((16 * self.plan.slabs_per_warp()) as i32))?,
            g: cx.lshr(lane, cx.i32(2))?,
            t4: cx.and(lane, cx.i32(3))?,
        })
    }

    /// `b * heads + h` (i64) from fresh reads, for the staged-values copy of
    /// every Partial key block. The heaviest-first grid without a head order
    /// holds it as ctaid.x (x = b · heads + rank), so there it needs no
    /// division by the head count: that division and the address math
    /// around it were 6% of hash-32's stall samples at D=64 (perf log v5.0).
    fn fresh_bh(&self) -> Result<IV<'ctx>> {
        let cx = self.cx;
        match self.plan.grid {
            // With splits the batch axis also holds the split (`SplitKv::unfold`).
            _ if self.split.is_some() => {}
            GridOrder::HeaviestFirst if self.head_order.is_none() => return cx.sext64(cx.sreg_fresh("ctaid.x")?),
            GridOrder::RankMajor if self.head_order.is_none() => {
                let (h, b) = (cx.sreg_fresh("ctaid.x")?, cx.sreg_fresh("ctaid.y")?);
                return cx.add(cx.mul(cx.sext64(b)?, cx.sext64(self.heads)?)?, cx.sext64(h)?);
            }
            _ => {}
        }
        Ok(self.fresh_coords()?.bh)
    }

    /// With row indices (`state.ahead` set): takes the list's next block and
    /// loads this thread's kv_rows entries for it, returning the cursor after it.
    fn look_ahead(&self, state: &LoopState<'ctx>) -> Result<Option<(ListCursor<'ctx>, Ahead<'ctx>)>> {
        if state.ahead.is_none() {
            return Ok(None);
        }
        let a = next_block(self.cx, self.plan, &self.keys, &self.list, &self.pred, &self.qtile, self.kv_len, state.cursor)?;
        Ok(Some((a.cursor, Ahead { kb: a.kb, undecided: a.undecided, entries: self.kv_entries(a.kb)? })))
    }

    /// This thread's kv_rows entries for key block `kb` (any kb: out-of-range
    /// rows read entry 0 and are dropped by the copy).
    fn kv_entries(&self, kb: IV<'ctx>) -> Result<Vec<IV<'ctx>>> {
        let Some(ix) = self.k_copy.index else { return Ok(Vec::new()) };
        let row0 = self.cx.mul(kb, self.cx.i32(self.plan.block_k as i32))?;
        index_entries(self.cx, self.plan, self.tid, self.kv_len, ix, row0, self.plan.block_k)
    }

    /// Whether the wgmma loop issues the next block's copies while S = Q·Kᵀ
    /// runs rather than before: when a third stage or another CTA on the SM
    /// leaves slack for the later start. Measured on an H200: +3% at D=64
    /// (3 stages), -4% at D=128 with 2 stages and one CTA per SM, where the
    /// copy needs the whole iteration.
    fn copies_during_qk(&self) -> bool {
        self.plan.stages >= 3 || self.plan.resident_ctas() >= 2
    }

    /// Waits until at most `pending` cp.async groups are in flight, then the
    /// CTA barrier; on the wgmma path each thread first fences its copies
    /// into the async proxy, which is where wgmma reads shared memory.
    fn wait_tiles(&self, pending: u32) -> Result<()> {
        self.cx.cp_async_wait(pending)?;
        if self.plan.mma == Mma::Wgmma {
            self.cx.fence_proxy_async_shared()?;
        }
        self.cx.barrier()
    }

    /// plan.tma: the loop's wait after `wait_block`. K and V are in no
    /// cp.async group (and in the async proxy already); only the staged key
    /// values are, which the element test reads as ordinary loads: no fence.
    fn wait_staged(&self, pending: u32) -> Result<()> {
        if self.k_staged {
            self.cx.cp_async_wait(pending)?;
        }
        self.cx.barrier()
    }

    /// plan.tma: waits for the phase of `slot`'s mbarrier that `phases`
    /// names (the slot's K and V tiles, or with plan.pv_overlap and
    /// plan.single_v_slot the group issued on it: K of its block and V of
    /// the one before) and returns
    /// the phases with that bit flipped; None without TMA.
    fn wait_block(&self, slot: IV<'ctx>, phases: Option<IV<'ctx>>) -> Result<Option<IV<'ctx>>> {
        let (Some(t), Some(phases)) = (&self.tma, phases) else { return Ok(None) };
        self.wait_phase(t, slot, phases)?;
        let cx = self.cx;
        Ok(Some(cx.xor(phases, cx.shl(cx.i32(1), slot)?)?))
    }

    /// Waits for the phase of `slot`'s mbarrier that `phases` names, and
    /// leaves `phases` as it is (the caller flips the bit once it is done
    /// with the phase).
    fn wait_phase(&self, t: &Tma<'ctx>, slot: IV<'ctx>, phases: IV<'ctx>) -> Result<()> {
        let cx = self.cx;
        let parity = cx.and(cx.lshr(phases, slot)?, cx.i32(1))?;
        cx.mbarrier_wait(cx.add(t.barriers, cx.mul(slot, cx.i32(8))?)?, parity)
    }

    /// plan.tma: thread 0 arms `slot`'s mbarrier with the bytes of
    /// `tiles` (block kb's tile of a tensor map into shared memory at dst;
    /// nothing for kb < 0) and issues their loads, one per 64-column block.
    /// The arrival is made even when every kb is negative, so each group the
    /// loop waits for completes.
    fn tma_issue(&self, t: &Tma<'ctx>, slot: IV<'ctx>, tiles: &[(IV<'ctx>, PointerValue<'ctx>, PointerValue<'ctx>)]) -> Result<()> {
        let cx = self.cx;
        let plan = self.plan;
        let tile_bytes = (plan.block_k * plan.head_dim * 2) as i32;
        cx.if_then(cx.icmp(IP::EQ, self.tid, cx.i32(0))?, "tma", |cx| {
            let bar = cx.add(t.barriers, cx.mul(slot, cx.i32(8))?)?;
            let mut bytes = cx.i32(0);
            for &(kb, _, _) in tiles {
                bytes = cx.add(bytes, cx.select_int(cx.icmp(IP::SGE, kb, cx.i32(0))?, cx.i32(tile_bytes), cx.i32(0))?)?;
            }
            cx.mbarrier_arrive_expect_tx(bar, bytes)?;
            for &(kb, map, dst) in tiles {
                cx.if_then(cx.icmp(IP::SGE, kb, cx.i32(0))?, "tma.tile", |cx| {
                    let row0 = cx.mul(kb, cx.i32(plan.block_k as i32))?;
                    tma_tile(cx, plan, map, dst, plan.block_k, row0, t.kv_head, t.batch, bar)
                })?;
            }
            Ok(())
        })
    }

    /// This thread's slot for value `i` of the shared softmax state (`[i][thread]`: conflict free).
    fn row_slot(&self, i: u32) -> Result<PointerValue<'ctx>> {
        let cx = self.cx;
        let at = cx.add(cx.i32((self.layout.softmax + 4 * i * self.plan.threads()) as i32), cx.mul(self.tid, cx.i32(4))?)?;
        cx.byte_gep(self.smem, at)
    }

    /// Reads the softmax state from shared memory (each thread its own slots).
    fn load_rows(&self) -> Result<Vec<[RowState<'ctx>; 2]>> {
        let cx = self.cx;
        (0..self.plan.slabs_per_warp())
            .map(|sl| {
                let row = |r: u32| -> Result<RowState<'ctx>> {
                    let m = cx.load(cx.f32t(), self.row_slot(sl * 4 + 2 * r)?)?.into_float_value();
                    let l = cx.load(cx.f32t(), self.row_slot(sl * 4 + 2 * r + 1)?)?.into_float_value();
                    Ok(RowState { m, l })
                };
                Ok([row(0)?, row(1)?])
            })
            .collect()
    }

    fn store_rows(&self, rows: &[[RowState<'ctx>; 2]]) -> Result<()> {
        for (sl, pair) in rows.iter().enumerate() {
            for (r, st) in pair.iter().enumerate() {
                let i = (sl * 4 + 2 * r) as u32;
                self.cx.store(self.row_slot(i)?, st.m)?;
                self.cx.store(self.row_slot(i + 1)?, st.l)?;
            }
        }
        Ok(())
    }

    /// The loop's issue of the next block into the freed slot `refill`: its
    /// K and V (`issue_kv`), or with plan.single_v_slot its K and the V of
    /// this block (`kb`, in `slot`), whose slot every warp left when it passed
    /// the barrier at the top of this iteration.
    fn issue_next(&self, next: &NextBlock<'ctx>, refill: IV<'ctx>, kb: IV<'ctx>, slot: IV<'ctx>, entries: Option<&[IV<'ctx>]>) -> Result<()> {
        if self.plan.single_v_slot() {
            self.issue_k_and_v((next.kb, next.undecided, refill), Some((kb, slot)))
        } else {
            self.issue_kv(next.kb, next.undecided, refill, entries)
        }
    }

    /// Issues block `kb`'s K and V tiles into `slot` when `kb >= 0` (and, when
    /// the block will run the element test, its key-tensor values into the K
    /// rows' padding), then commits a group (always, so group counting stays uniform).
    fn issue_kv(&self, kb: IV<'ctx>, undecided: IV<'ctx>, slot: IV<'ctx>, entries: Option<&[IV<'ctx>]>) -> Result<()> {
        let cx = self.cx;
        if self.tma.is_some() {
            // K and V of one block into one slot: the TMA group form.
            return self.issue_k_and_v((kb, undecided, slot), Some((kb, slot)));
        }
        cx.if_then(cx.icmp(IP::SGE, kb, cx.i32(0))?, "load_kv", |cx| {
            let bk = cx.i32(self.plan.block_k as i32);
            let row0 = cx.mul(kb, bk)?;
            let k_dst = self.layout.slot(cx, self.smem, slot)?;
            let v_dst = self.layout.v_tile(cx, self.smem, slot)?;
            let k = &self.k_copy;
            if k.index.is_some() {
                // K and V rows are the same rows: one set of sources (and index entries) for both.
                let sources = tile_sources(cx, self.plan, self.tid, k.len, k.index, entries, row0, self.plan.block_k)?;
                copy_from(cx, self.plan, &TileCopy { dst: k_dst, ..self.k_copy }, &sources)?;
                copy_from(cx, self.plan, &TileCopy { dst: v_dst, ..self.v_copy }, &sources)?;
            } else {
                // Plain rows: each tile's addresses made where its copies go out, so
                // none stay live across the other tile's (fewer registers at D=128).
                copy_tile(cx, self.plan, self.tid, &TileCopy { dst: k_dst, ..self.k_copy }, row0, self.plan.block_k, stepped_copies(self.plan))?;
                copy_tile(cx, self.plan, self.tid, &TileCopy { dst: v_dst, ..self.v_copy }, row0, self.plan.block_k, stepped_copies(self.plan))?;
            }
            self.stage_k(row0, undecided, slot)
        })?;
        cx.cp_async_commit()
    }

    /// plan.pv_overlap and plan.single_v_slot: K of block `k.0` (kb or -1:
    /// nothing) and its staged values into slot `k.2`, and V of block `v.0`
    /// into slot `v.1`'s V tile (the single V slot: that one), as one
    /// group. K of block j+1 and V of block j go out together: V's slot is
    /// free only once the previous O += P·V that read it has finished.
    /// With TMA the group counts on K's slot barrier (every TMA issue takes
    /// this form; without the overlap K and V are of one block and slot).
    fn issue_k_and_v(&self, k: (IV<'ctx>, IV<'ctx>, IV<'ctx>), v: Option<(IV<'ctx>, IV<'ctx>)>) -> Result<()> {
        let cx = self.cx;
        let bk = cx.i32(self.plan.block_k as i32);
        let (kb, undecided, k_slot) = k;
        if let Some(t) = &self.tma {
            // One group on the K slot's barrier: the loop waits for it there.
            let k_dst = self.layout.slot(cx, self.smem, k_slot)?;
            let mut tiles = vec![(kb, t.k_map, k_dst)];
            if let Some((vb, v_slot)) = v {
                tiles.push((vb, t.v_map, self.layout.v_tile(cx, self.smem, v_slot)?));
            }
            self.tma_issue(t, k_slot, &tiles)?;
            if self.k_staged {
                cx.if_then(cx.icmp(IP::SGE, kb, cx.i32(0))?, "load_k", |cx| self.stage_k(cx.mul(kb, bk)?, undecided, k_slot))?;
            }
            return cx.cp_async_commit();
        }
        cx.if_then(cx.icmp(IP::SGE, kb, cx.i32(0))?, "load_k", |cx| {
            let row0 = cx.mul(kb, bk)?;
            let k_dst = self.layout.slot(cx, self.smem, k_slot)?;
            copy_tile(cx, self.plan, self.tid, &TileCopy { dst: k_dst, ..self.k_copy }, row0, self.plan.block_k, stepped_copies(self.plan))?;
            self.stage_k(row0, undecided, k_slot)
        })?;
        if let Some((vb, v_slot)) = v {
            let v_dst = self.layout.v_tile(cx, self.smem, v_slot)?;
            copy_tile(cx, self.plan, self.tid, &TileCopy { dst: v_dst, ..self.v_copy }, cx.mul(vb, bk)?, self.plan.block_k, stepped_copies(self.plan))?;
        }
        cx.cp_async_commit()
    }

    /// The staged tensor values of the K rows in `slot` (rows from `row0`),
    /// where the element test will read them: Partial tiles and the ragged
    /// last block.
    fn stage_k(&self, row0: IV<'ctx>, undecided: IV<'ctx>, slot: IV<'ctx>) -> Result<()> {
        if !self.k_staged {
            return Ok(());
        }
        let cx = self.cx;
        let bk = cx.i32(self.plan.block_k as i32);
        let ragged = cx.icmp(IP::SGT, cx.add(row0, bk)?, self.kv_len)?;
        let partial = is_partial(cx, undecided)?;
        cx.if_then(cx.or(partial, ragged)?, "stage_k", |cx| {
            // The rows' addresses from fresh coordinates: 64-bit pointers kept across
            // the loop for this rare path would cost registers (spills at D=128).
            let bh = self.fresh_bh()?;
            let rows: Vec<_> = self.pred.tensor_rows(cx, InputKind::KeyTensor, Some(bh))?.into_iter().take(STAGED_PER_ROW).map(|(_, v)| v).collect();
            let dst = self.layout.k_values(cx, self.smem, slot)?;
            stage_values(cx, self.plan, cx.sreg_fresh("tid.x")?, &rows, dst, self.layout.values_row_bytes, row0, self.plan.block_k, self.kv_len)
        })
    }

    /// The key-block loop; returns the state after the last block.
    fn kv_loop(&self, init: LoopState<'ctx>, q: &QOperand<'ctx>) -> Result<LoopState<'ctx>> {
        let cx = self.cx;
        let stages = self.plan.stages as i32;
        let pre = cx.current();
        let (head, body, exit) = (cx.block("kv_loop"), cx.block("kv_loop.body"), cx.block("kv_loop.end"));
        cx.br(head)?;
        cx.at(head);
        let init_flat = init.flatten();
        let phis = init_flat.iter().map(|v| cx.b.build_phi(v.get_type(), "")).collect::<Result<Vec<_>, _>>()?;
        for (phi, v) in phis.iter().zip(&init_flat) {
            phi.add_incoming(&[(v, pre)]);
        }
        let state = init.unflatten(&phis.iter().map(|p| p.as_basic_value()).collect::<Vec<_>>());
        let (kb, undecided) = state.pending[0];
        named(kb, "kb");
        cx.cond_br(cx.icmp(IP::SGE, kb, cx.i32(0))?, body, exit)?;

        cx.at(body);
        // Block kb's group is complete once at most stages-2 newer groups are pending;
        // the barrier also means every warp is done with the slot refilled below.
        let phases = self.wait_block(state.slot, state.phases)?;
        if self.tma.is_some() {
            self.wait_staged(self.plan.stages - 2)?;
        } else {
            self.wait_tiles(self.plan.stages - 2)?;
        }
        // The block to issue into the freed slot: the one chosen an iteration ago
        // (row indices: its entries are in registers), or the list's next.
        let (next, next_entries) = match &state.ahead {
            Some(a) => (NextBlock { kb: a.kb, undecided: a.undecided, cursor: state.cursor }, Some(a.entries.clone())),
            None => (next_block(cx, self.plan, &self.keys, &self.list, &self.pred, &self.qtile, self.kv_len, state.cursor)?, None),
        };
        let is_first = cx.icmp(IP::EQ, state.slot, cx.i32(0))?;
        let refill = cx.select_int(is_first, cx.i32(stages - 1), cx.sub(state.slot, cx.i32(1))?)?;
        // mma.sync: the next block's copies go out first. wgmma: they go out
        // while S = Q·Kᵀ runs on the tensor cores (below), which hides their
        // address math and, with row indices, the index loads they wait on.
        let issue_first = state.prev.is_none() && (self.plan.mma == Mma::Sync || !self.copies_during_qk());
        // Row indices: the block after `next` and its entries, loaded now and
        // used one iteration later (with wgmma, while S = Q·Kᵀ runs).
        let mut lookahead = None;
        if issue_first {
            self.issue_next(&next, refill, kb, state.slot, next_entries.as_deref())?;
            if self.plan.mma == Mma::Sync {
                lookahead = self.look_ahead(&state)?;
            }
        }

        let slot_ptr = self.layout.slot(cx, self.smem, state.slot)?;
        let k_lane = cx.byte_gep(slot_ptr, self.lanes.b_k)?;
        let v_lane = cx.byte_gep(self.layout.v_tile(cx, self.smem, state.slot)?, self.lanes.b_v)?;

        // Masking: Partial tiles and the ragged last block run the element test.
        // wgmma: on the scores, after the product (a compare chain and a select per
        // score). mma.sync: before S exists, into one bit per score applied after
        // the product, so the predicate never competes with the accumulators for
        // registers (its D=128 kernels are at 255); that costs a select and an or
        // per score more. Block-list predicates (a row mask and a bit per column)
        // take the bits path on wgmma too: next to the scores they spilled at
        // D=64 (128 registers for 4 CTAs per SM).
        let bk = cx.i32(self.plan.block_k as i32);
        let k0 = named(cx.mul(kb, bk)?, "k0");
        let ragged = cx.icmp(IP::SGT, cx.add(k0, bk)?, self.kv_len)?;
        let partial = is_partial(cx, undecided)?;
        let test = named(cx.or(partial, ragged)?, "element_test");
        let test_bits = self.plan.mma == Mma::Sync || self.pred.reads_block_lists();
        let keep_words = if test_bits {
            let all: Vec<BV<'ctx>> = (0..self.mask_words()).map(|_| cx.i32(-1).into()).collect();
            Some(cx.if_then_values(test, "mask", all, |cx, ones| self.element_test(cx, kb, k0, ragged, undecided, self.layout.k_values(cx, self.smem, state.slot)?, ones.to_vec(), &Self::clear_bits))?)
        } else {
            None
        };

        // S = Q·Kᵀ, raw (the scale is folded into the exponent below); masked
        // scores become -inf.
        // plan.pv_overlap: the previous block's O += P·V, issued behind S and
        // still running on the tensor cores until the wait after the softmax.
        let mut o_running = None;
        let s = match q {
            QOperand::Sync(q) => mma::qk(cx, self.tile, q, k_lane)?,
            QOperand::Wgmma(q) => {
                let k = wgmma::k_major(cx, slot_ptr, self.plan.block_k)?;
                let in_flight = wgmma::qk_issue(cx, self.plan.dtype, self.plan.head_dim, self.plan.block_k, *q, k)?;
                if let Some(prev) = &state.prev {
                    let o = cx.if_then_values(prev.live, "pv.prev", flat_acc(&state.o[0]), |_, o| {
                        Ok(self.pv_issue_pending(prev, &unflat_acc(o))?.into_iter().map(BV::from).collect())
                    })?;
                    // One group either way (empty before the first block), so
                    // "S has landed" below is always "at most one group pending".
                    cx.wgmma_commit()?;
                    o_running = Some(o.into_iter().map(|v| v.into_float_value()).collect::<Vec<_>>());
                    // K of the next block and V of this one (into this block's
                    // slot: the product just issued reads the previous one's).
                    self.issue_k_and_v((next.kb, next.undecided, refill), Some((kb, state.slot)))?;
                    vec![wgmma::wait_keeping(cx, 1, &in_flight, &[])?]
                } else {
                    if !issue_first {
                        self.issue_next(&next, refill, kb, state.slot, next_entries.as_deref())?;
                    }
                    lookahead = self.look_ahead(&state)?;
                    vec![wgmma::wait(cx, &in_flight)?]
                }
            }
        };
        let flat: Vec<BV<'ctx>> = s.iter().flatten().flat_map(|a| a.iter().map(|x| BV::from(*x))).collect();
        let masked = match &keep_words {
            Some(words) => cx.if_then_values(test, "apply_mask", flat, |cx, vals| {
                let keep = (0..vals.len())
                    .map(|i| {
                        let bit = cx.and(cx.lshr(words[i / 32].into_int_value(), cx.i32((i % 32) as i32))?, cx.i32(1))?;
                        cx.icmp(IP::NE, bit, cx.i32(0))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Self::drop_scores(cx, vals, &keep)
            })?,
            None => cx.if_then_values(test, "mask", flat, |cx, vals| self.element_test(cx, kb, k0, ragged, undecided, self.layout.k_values(cx, self.smem, state.slot)?, vals.to_vec(), &Self::drop_scores))?,
        };
        let mut it = masked.into_iter();
        let s: Vec<Vec<Acc<'ctx>>> = s
            .iter()
            .map(|slab| slab.iter().map(|_| [0; 4].map(|_| it.next().expect("same shape").into_float_value())).collect())
            .collect();

        // Online softmax, then O += P·V.
        let mut o = state.o.clone();
        let mut rows = if self.plan.softmax_state_in_shared() { self.load_rows()? } else { state.rows.clone() };
        // Row maxima first: they give every row's rescale factor alpha.
        let mut maxima = Vec::with_capacity(s.len());
        let mut changed = cx.bool(false);
        for (slab, row_pair) in s.iter().zip(&rows) {
            let mut pair = Vec::with_capacity(2);
            for (r, old) in row_pair.iter().enumerate() {
                let (m, m_use, alpha, moved) = self.row_max(slab, r, *old)?;
                changed = cx.or(changed, moved)?;
                pair.push((m, m_use, alpha));
            }
            maxima.push(pair);
        }
        // With `conditional_rescale`, O is rescaled only when some row of the warp
        // moved its maximum (otherwise alpha is exactly 1): once the maxima settle,
        // most blocks skip these head_dim / 2 multiplies per row. The branch comes
        // before the exponentials, so they and P·V stay in one block for the scheduler.
        let per_slab = o[0].len() * 4;
        let rescale = |cx: &Cx<'_, 'ctx>, vals: &[BV<'ctx>]| -> Result<Vec<BV<'ctx>>> {
            vals.iter()
                .enumerate()
                .map(|(i, v)| {
                    let (sl, c) = (i / per_slab, i % 4);
                    Ok(cx.fmul(v.into_float_value(), maxima[sl][c / 2].2)?.into())
                })
                .collect()
        };
        let rescale_o = |o: &mut Vec<Vec<Acc<'ctx>>>| -> Result<()> {
            let flat: Vec<BV<'ctx>> = o.iter().flat_map(|slab| flat_acc(slab)).collect();
            let scaled = if !self.plan.conditional_rescale() {
                rescale(cx, &flat)?
            } else {
                let any = cx.icmp(IP::NE, cx.ballot(changed)?, cx.i32(0))?;
                cx.if_then_values(any, "rescale", flat, rescale)?
            };
            let mut it = scaled.into_iter();
            for slab in o.iter_mut() {
                for acc in slab.iter_mut() {
                    for x in acc.iter_mut() {
                        *x = it.next().expect("same shape").into_float_value();
                    }
                }
            }
            Ok(())
        };
        // Overlapped, O is still being written: it is rescaled after the wait below.
        if o_running.is_none() {
            rescale_o(&mut o)?;
        }
        let mut p_frags = Vec::with_capacity(s.len());
        for (sl, slab) in s.iter().enumerate() {
            let mut p: Vec<Acc<'ctx>> = slab.clone();
            for r in 0..2 {
                let (m, m_use, alpha) = maxima[sl][r];
                let l = self.row_exp(&mut p, r, m_use, rows[sl][r].l, alpha)?;
                rows[sl][r] = RowState { m, l };
            }
            p_frags.push(mma::p_as_a(cx, self.plan.dtype, &p)?);
        }
        let prev = match (o_running, &state.prev) {
            (Some(running), Some(prev)) => {
                // The previous block's product has run beside this softmax; its
                // P registers stay untouched until it has finished.
                o = vec![wgmma::wait_keeping(cx, 0, &running, &prev.p)?];
                rescale_o(&mut o)?;
                Some(PendingPv { p: p_frags[0].iter().flatten().copied().collect(), slot: state.slot, live: cx.bool(true) })
            }
            _ => {
                match self.plan.mma {
                    Mma::Sync => mma::pv(cx, self.tile, &p_frags, v_lane, &mut o)?,
                    Mma::Wgmma => {
                        if let (true, Some(t), Some(phases)) = (self.plan.single_v_slot(), &self.tma, phases) {
                            // V of this block came with K of the next, on the refilled slot's
                            // barrier; the next iteration's wait_block flips its bit.
                            self.wait_phase(t, refill, phases)?;
                        }
                        let v = wgmma::mn_major(cx, self.layout.v_tile(cx, self.smem, state.slot)?, self.plan.block_k)?;
                        wgmma::pv(cx, self.plan.dtype, self.plan.head_dim, &p_frags[0], v, &mut o[0])?;
                    }
                }
                None
            }
        };

        let wrap = cx.icmp(IP::EQ, state.slot, cx.i32(stages - 1))?;
        let slot = cx.select_int(wrap, cx.i32(0), cx.add(state.slot, cx.i32(1))?)?;
        let mut pending: Vec<(IV<'ctx>, IV<'ctx>)> = state.pending[1..].to_vec();
        pending.push((next.kb, next.undecided));
        let rows = if self.plan.softmax_state_in_shared() {
            self.store_rows(&rows)?;
            Vec::new()
        } else {
            rows
        };
        let (cursor, ahead) = match lookahead {
            Some((cursor, a)) => (cursor, Some(a)),
            None => (next.cursor, None),
        };
        let after = LoopState { slot, cursor, pending, o, rows, ahead, prev, phases };
        let latch = cx.current();
        cx.br(head)?;
        for (phi, v) in phis.iter().zip(after.flatten()) {
            phi.add_incoming(&[(&v, latch)]);
        }
        cx.at(exit);
        let mut state = state;
        if let Some(prev) = state.prev.clone() {
            // The last block's O += P·V, once its V tile (the last group) has landed.
            let o = cx.if_then_values(prev.live, "pv.last", flat_acc(&state.o[0]), |cx, o| {
                // TMA: its V tile came on the slot's barrier (no cp.async group
                // holds it, and no other thread's copies: no bar.sync).
                if self.tma.is_some() {
                    self.wait_block(state.slot, state.phases)?;
                } else {
                    self.wait_tiles(0)?;
                }
                let running = self.pv_issue_pending(&prev, &unflat_acc(o))?;
                cx.wgmma_commit()?;
                Ok(flat_acc(&wgmma::wait(cx, &running)?))
            })?;
            state.o = vec![unflat_acc(&o)];
        }
        Ok(state)
    }

    /// Issues the pending block's O += P·V onto `o` (not committed: see
    /// `wgmma::pv_issue`).
    fn pv_issue_pending(&self, prev: &PendingPv<'ctx>, o: &[Acc<'ctx>]) -> Result<Vec<FV<'ctx>>> {
        let cx = self.cx;
        let v = self.layout.v_tile(cx, self.smem, prev.slot)?;
        let v = wgmma::mn_major(cx, v, self.plan.block_k)?;
        let p: Vec<mma::AFrag<'ctx>> = prev.p.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        wgmma::pv_issue(cx, self.plan.dtype, self.plan.head_dim, &p, v, o)
    }

    /// The first half of one row's online-softmax step over this block: the
    /// row's reference maximum m' (log2 units), the m' used in exponents (0
    /// while the row is all masked, so -inf - -inf never makes NaN), the
    /// factor 2^(m - m') by which the row's O and l are rescaled, and whether
    /// m' moved (alpha is exactly 1 when it did not).
    ///
    /// The scores are raw: the row's raw maximum times the scale is exactly
    /// the maximum of the scaled scores, because the scale is positive (the
    /// runtime refuses others) and rounding x·c is monotone in x.
    ///
    /// With `conditional_rescale`, m' stays put unless the block's maximum
    /// exceeds it by more than [`RESCALE_SLACK`]: the result is the same
    /// (O and l share the reference, and lse = m' + log2 l), the
    /// exponentials stay below 2^RESCALE_SLACK, and after a row's first
    /// blocks almost no block moves it, so O is almost never rescaled.
    fn row_max(&self, p: &[Acc<'ctx>], r: usize, old: RowState<'ctx>) -> Result<(FV<'ctx>, FV<'ctx>, FV<'ctx>, IV<'ctx>)> {
        let cx = self.cx;
        let (a, b) = (2 * r, 2 * r + 1);
        let mut mx = cx.f32(f32::NEG_INFINITY);
        for acc in p.iter() {
            mx = cx.fmax(mx, cx.fmax(acc[a], acc[b])?)?;
        }
        // The 4 lanes of a group share the row.
        mx = cx.fmax(mx, cx.shfl_bfly_f32(mx, 1)?)?;
        mx = cx.fmax(mx, cx.shfl_bfly_f32(mx, 2)?)?;
        let m_block = cx.fmul(mx, self.scale_log2)?;
        // All masked so far: use 0 in the exponent so -inf - -inf never makes NaN.
        let usable = |m: FV<'ctx>| cx.select_f32(cx.fcmp(FP::OEQ, m, cx.f32(f32::NEG_INFINITY))?, cx.f32(0.0), m);
        if !self.plan.conditional_rescale() {
            let m = cx.fmax(old.m, m_block)?;
            let m_use = usable(m)?;
            let alpha = cx.ex2(cx.fsub(old.m, m_use)?)?;
            return Ok((m, m_use, alpha, cx.bool(true)));
        }
        // -inf old maximum: +inf > slack (moves); both -inf: NaN, unordered (stays).
        let moved = cx.fcmp(FP::OGT, cx.fsub(m_block, old.m)?, cx.f32(RESCALE_SLACK))?;
        let m = cx.select_f32(moved, m_block, old.m)?;
        let m_use = usable(m)?;
        let alpha = cx.select_f32(moved, cx.ex2(cx.fsub(old.m, m_use)?)?, cx.f32(1.0))?;
        Ok((m, m_use, alpha, moved))
    }

    /// The second half of a row's step: rewrites its raw scores s in `p` to
    /// 2^(s·c - m_use), one FMA and one ex2 each (c = scale in log2 units),
    /// and returns the new partial row sum `l * alpha + Σ p`.
    fn row_exp(&self, p: &mut [Acc<'ctx>], r: usize, m_use: FV<'ctx>, l: FV<'ctx>, alpha: FV<'ctx>) -> Result<FV<'ctx>> {
        let cx = self.cx;
        let mut sum = cx.f32(0.0);
        let neg_m = cx.fneg(m_use)?;
        for acc in p.iter_mut() {
            for i in [2 * r, 2 * r + 1] {
                acc[i] = cx.ex2(cx.fma(acc[i], self.scale_log2, neg_m)?)?;
                sum = cx.fadd(sum, acc[i])?;
            }
        }
        cx.fma(l, alpha, sum)
    }
}
