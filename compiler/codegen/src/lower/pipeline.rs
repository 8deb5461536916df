//! Shared memory and the copy pipeline: where the Q tile and the `stages`
//! K/V slots live in dynamic shared memory, and the cp.async.cg 16-byte
//! copies that fill them on the mma.sync path and for row-index kernels
//! (rows past the sequence end are zero-filled). The wgmma path loads the
//! tiles by TMA instead (`lower/forward.rs`, `KernelPlan::tma`).
//!
//! Layout (bytes from the start of dynamic shared memory), rows padded by
//! 16 B so ldmatrix is bank-conflict free:
//! `[Q: block_q rows][slot 0: K block_k rows, V block_k rows][slot 1] ...
//! [key list: key_chunk + 1 i32][counts: rounds x warps i32][next chunk]
//! [softmax state, when the plan keeps it in shared memory]`
//!
//! The 16 padding bytes after each row hold up to four i32 values of that
//! row's query (Q tile) or key (K tile) from the pattern's tensor inputs,
//! staged by 4-byte cp.async beside the tile, so the element test reads
//! them from shared memory instead of global memory.
//!
//! The wgmma path (`plan.swizzled()`) stores each tile unpadded in the
//! 128-byte swizzle wgmma reads: 16-byte chunk c of row r of a 64-column
//! block goes to `r * 128 + ((c ^ (r % 8)) * 16)`, column blocks one after
//! another, every tile 1024-byte aligned. Staged values then sit in their
//! own 16-byte rows after the Q tile and after each slot's V tile:
//! `[Q][Q values][slot 0: K, V, K values][slot 1] ... [key list][counts]`,
//! then, when K and V come by TMA (`plan.tma()`), one mbarrier per stage.
//! TMA writes the same swizzle (`CU_TENSOR_MAP_SWIZZLE_128B` is this XOR
//! on 1024-byte-aligned tiles), one 64-column block per load.

use inkwell::module::Linkage;
use inkwell::values::PointerValue;
use inkwell::IntPredicate as IP;

use crate::cx::{Cx, IV, SHARED};
use crate::error::Result;
use crate::plan::{KernelPlan, STAGED_ROW_BYTES, SWIZZLE_ROW_BYTES};

pub(crate) const SMEM_SYMBOL: &str = "lacuna_smem";

/// The dynamic shared-memory array (`.extern .shared .align 16 .b8 lacuna_smem[]`).
pub(crate) fn dynamic_smem<'ctx>(cx: &Cx<'_, 'ctx>) -> PointerValue<'ctx> {
    let g = cx.module.get_global(SMEM_SYMBOL).unwrap_or_else(|| {
        let g = cx.module.add_global(cx.ctx.i8_type().array_type(0), Some(inkwell::AddressSpace::from(SHARED)), SMEM_SYMBOL);
        g.set_linkage(Linkage::External);
        g.set_alignment(16);
        g
    });
    g.as_pointer_value()
}

/// Raises the dynamic shared memory's alignment to `align` bytes (swizzled
/// tiles must start on 1024-byte boundaries).
pub(crate) fn align_dynamic_smem(cx: &Cx<'_, '_>, align: u32) {
    if let Some(g) = cx.module.get_global(SMEM_SYMBOL) {
        g.set_alignment(align);
    }
}

/// Byte offsets of the tiles in dynamic shared memory.
pub(crate) struct SmemLayout {
    pub row_bytes: u32,
    pub q: u32,
    pub first_slot: u32,
    pub slot_bytes: u32,
    /// Where each block's V tile and its K rows' staged values are.
    pub slots: SlotContents,
    /// Where the Q rows' staged values start, and the distance between rows
    /// (padded rows: the padding of each row; swizzled: a separate array).
    pub q_values: u32,
    pub values_row_bytes: u32,
    /// The key-block list, then the per-warp counts.
    pub list: u32,
    pub counts: u32,
    /// Softmax state slots: `[slab * 4 + (m0, l0, m1, l1)][thread]` f32.
    pub softmax: u32,
    /// plan.tma: one 8-byte mbarrier per stage.
    pub barriers: u32,
}

/// What a pipeline slot holds besides its K tile.
pub(crate) enum SlotContents {
    /// The block's V tile and its K rows' staged values, at these offsets
    /// inside the slot.
    KAndV { v: u32, k_values: u32 },
    /// plan.single_v_slot: the slot holds K alone; every block's V tile is
    /// the one at `v`, and slot s's K rows keep their staged values at
    /// `k_values + s · k_values_per_slot` (offsets in shared memory).
    KOnly { v: u32, k_values: u32, k_values_per_slot: u32 },
}

/// Tensor values a row's padding holds.
pub(crate) const STAGED_PER_ROW: usize = 4;

impl SmemLayout {
    pub fn new(plan: &KernelPlan) -> Self {
        let (q_values, k_values_in_slot, values_row_bytes) = if plan.swizzled() {
            (plan.tile_bytes(plan.block_q), 2 * plan.tile_bytes(plan.block_k), STAGED_ROW_BYTES)
        } else {
            (plan.head_dim * 2, plan.head_dim * 2, plan.smem_row_bytes())
        };
        let slots_end = plan.q_tile_bytes() + plan.stages * plan.stage_bytes();
        // Single V slot: [Q][K slot 0..stages][V][Q values][K values of each slot].
        let (slots, q_values) = if plan.single_v_slot() {
            let q_values = slots_end + plan.tile_bytes(plan.block_k);
            let k_values = q_values + plan.block_q * STAGED_ROW_BYTES;
            (SlotContents::KOnly { v: slots_end, k_values, k_values_per_slot: plan.block_k * STAGED_ROW_BYTES }, q_values)
        } else {
            (SlotContents::KAndV { v: plan.tile_bytes(plan.block_k), k_values: k_values_in_slot }, q_values)
        };
        let list = slots_end + plan.v_and_staged_bytes();
        Self {
            row_bytes: plan.smem_row_bytes(),
            q: 0,
            first_slot: plan.q_tile_bytes(),
            slot_bytes: plan.stage_bytes(),
            slots,
            q_values,
            values_row_bytes,
            list,
            counts: list + 4 * (plan.key_chunk() + 1),
            softmax: list + plan.key_list_bytes(),
            barriers: list + plan.key_list_bytes() + plan.softmax_state_bytes(),
        }
    }

    /// Start of pipeline slot `slot` (a runtime index in 0..stages).
    pub fn slot<'ctx>(&self, cx: &Cx<'_, 'ctx>, smem: PointerValue<'ctx>, slot: IV<'ctx>) -> Result<PointerValue<'ctx>> {
        let off = cx.add(cx.i32(self.first_slot as i32), cx.mul(slot, cx.i32(self.slot_bytes as i32))?)?;
        cx.byte_gep(smem, off)
    }

    /// The V tile of the block in slot `slot` (with a single V slot, that one).
    pub fn v_tile<'ctx>(&self, cx: &Cx<'_, 'ctx>, smem: PointerValue<'ctx>, slot: IV<'ctx>) -> Result<PointerValue<'ctx>> {
        match self.slots {
            SlotContents::KOnly { v, .. } => cx.byte_gep(smem, cx.i32(v as i32)),
            SlotContents::KAndV { v, .. } => cx.byte_gep(self.slot(cx, smem, slot)?, cx.i32(v as i32)),
        }
    }

    /// The staged values of the K rows in slot `slot`.
    pub fn k_values<'ctx>(&self, cx: &Cx<'_, 'ctx>, smem: PointerValue<'ctx>, slot: IV<'ctx>) -> Result<PointerValue<'ctx>> {
        match self.slots {
            SlotContents::KOnly { k_values, k_values_per_slot, .. } => {
                cx.byte_gep(smem, cx.add(cx.i32(k_values as i32), cx.mul(slot, cx.i32(k_values_per_slot as i32))?)?)
            }
            SlotContents::KAndV { k_values, .. } => cx.byte_gep(self.slot(cx, smem, slot)?, cx.i32(k_values as i32)),
        }
    }
}

/// One global → shared tile copy: `rows` rows of `head_dim` halves starting at
/// row `row0` of a `(len, head_dim)` matrix with row stride `stride` elements.
pub(crate) struct TileCopy<'ctx> {
    /// Row 0 of this (batch, head)'s matrix in global memory (element pointer).
    pub src: PointerValue<'ctx>,
    pub stride: IV<'ctx>,
    pub len: IV<'ctx>,
    pub dst: PointerValue<'ctx>,
    /// Row r of the tile is source row `rows[r]` instead of r (plan.row_index).
    pub index: Option<RowIndex<'ctx>>,
}

/// An index array over source rows: entry i names the source row of row i;
/// entries outside `0..src_len` are padding (a zero row).
#[derive(Clone, Copy)]
pub(crate) struct RowIndex<'ctx> {
    /// Entry 0 of this (batch, head)'s i32 array.
    pub rows: PointerValue<'ctx>,
    pub src_len: IV<'ctx>,
}

impl<'ctx> RowIndex<'ctx> {
    /// The source row of row `i` (< the index's length) and whether it is a real row.
    pub fn source(&self, cx: &Cx<'_, 'ctx>, i: IV<'ctx>) -> Result<(IV<'ctx>, IV<'ctx>)> {
        let s = cx.load_i32(cx.gep(cx.i32t(), self.rows, cx.sext64(i)?)?)?;
        // Unsigned: negative entries are out of range too.
        let real = cx.icmp(IP::ULT, s, self.src_len)?;
        Ok((s, real))
    }
}

/// Where one of this thread's 16-byte chunks of a tile comes from.
struct ChunkSource<'ctx> {
    /// Row and chunk inside the tile.
    row: IV<'ctx>,
    chunk: IV<'ctx>,
    /// Source row (0 when not `valid`) and whether it is a real row.
    src_row: IV<'ctx>,
    valid: IV<'ctx>,
    /// For the last, partial round: whether this thread has a chunk at all.
    in_tile: Option<IV<'ctx>>,
}

/// The sources of this thread's chunks of a tile of `rows` rows from row
/// `row0`, all rounds computed before any copy is issued: with a row index
/// every index load is then in flight at once rather than each waiting
/// behind the previous copy, and tiles of the same rows (K and V) share them.
pub(crate) struct TileSources<'ctx> {
    chunks: Vec<ChunkSource<'ctx>>,
    rows: u32,
}

/// This thread's (row, chunk, has-a-chunk-in-the-last-round) per round of a
/// tile of `rows` rows; the one place the copy work is divided among threads.
fn tile_chunks<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, tid: IV<'ctx>, rows: u32) -> Result<Vec<(IV<'ctx>, IV<'ctx>, Option<IV<'ctx>>)>> {
    let chunks_per_row = plan.head_dim / 8;
    let threads = plan.threads();
    let total = rows * chunks_per_row;
    (0..total.div_ceil(threads))
        .map(|it| {
            let (row, chunk) = if threads % chunks_per_row == 0 {
                // Each thread keeps its chunk; rows advance by threads / chunks_per_row per round.
                let r = cx.add(cx.udiv(tid, cx.i32(chunks_per_row as i32))?, cx.i32((it * threads / chunks_per_row) as i32))?;
                (r, cx.urem(tid, cx.i32(chunks_per_row as i32))?)
            } else {
                let idx = cx.add(tid, cx.i32((it * threads) as i32))?;
                (cx.udiv(idx, cx.i32(chunks_per_row as i32))?, cx.urem(idx, cx.i32(chunks_per_row as i32))?)
            };
            let in_tile = ((it + 1) * threads > total)
                .then(|| cx.icmp(IP::ULT, cx.add(tid, cx.i32((it * threads) as i32))?, cx.i32(total as i32)))
                .transpose()?;
            Ok((row, chunk, in_tile))
        })
        .collect()
}

/// Row `row0 + row` of a tile, whether it is inside `0..len`, and the same
/// row clamped to 0 when it is not (a safe address to read at).
fn tile_row<'ctx>(cx: &Cx<'_, 'ctx>, len: IV<'ctx>, row0: IV<'ctx>, row: IV<'ctx>, in_tile: Option<IV<'ctx>>) -> Result<(IV<'ctx>, IV<'ctx>)> {
    let grow = cx.add(row0, row)?;
    // Unsigned: a negative row (the look-ahead past the last key block asks
    // for block -1) is outside too, so its index entry is read at row 0, not
    // before the array (an illegal address seen once on an H200 at 32K).
    let mut inside = cx.icmp(IP::ULT, grow, len)?;
    if let Some(t) = in_tile {
        inside = cx.and(inside, t)?;
    }
    Ok((inside, cx.select_int(inside, grow, cx.i32(0))?))
}

/// The raw index entries of this thread's rows of the tile of `rows` rows
/// from `row0` (one load per round, all issued together): loaded ahead of
/// [`tile_sources`] so their latency hides behind other work.
pub(crate) fn index_entries<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, tid: IV<'ctx>, len: IV<'ctx>, index: RowIndex<'ctx>, row0: IV<'ctx>, rows: u32) -> Result<Vec<IV<'ctx>>> {
    tile_chunks(cx, plan, tid, rows)?
        .into_iter()
        .map(|(row, _, in_tile)| {
            let (_, at) = tile_row(cx, len, row0, row, in_tile)?;
            Ok(index.source(cx, at)?.0)
        })
        .collect()
}

/// The source of one chunk (`entry`: its row's index entry, when loaded ahead).
fn chunk_source<'ctx>(
    cx: &Cx<'_, 'ctx>,
    len: IV<'ctx>,
    index: Option<RowIndex<'ctx>>,
    entry: Option<IV<'ctx>>,
    row0: IV<'ctx>,
    (row, chunk, in_tile): (IV<'ctx>, IV<'ctx>, Option<IV<'ctx>>),
) -> Result<ChunkSource<'ctx>> {
    let (inside, at) = tile_row(cx, len, row0, row, in_tile)?;
    let (valid, src_row) = match &index {
        None => (inside, at),
        Some(ix) => {
            let s = match entry {
                Some(e) => e,
                None => ix.source(cx, at)?.0,
            };
            let valid = cx.and(inside, cx.icmp(IP::ULT, s, ix.src_len)?)?;
            (valid, cx.select_int(valid, s, cx.i32(0))?)
        }
    };
    Ok(ChunkSource { row, chunk, src_row, valid, in_tile })
}

/// Computes [`TileSources`]: rows at or past `len`, and rows whose index
/// entry is padding, are zero-filled from a valid address (row 0). With an
/// index, `entries` are its values from [`index_entries`] for the same
/// tile, or `None` to load them here (all loads before any copy).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_sources<'ctx>(
    cx: &Cx<'_, 'ctx>,
    plan: &KernelPlan,
    tid: IV<'ctx>,
    len: IV<'ctx>,
    index: Option<RowIndex<'ctx>>,
    entries: Option<&[IV<'ctx>]>,
    row0: IV<'ctx>,
    rows: u32,
) -> Result<TileSources<'ctx>> {
    let chunks = tile_chunks(cx, plan, tid, rows)?
        .into_iter()
        .enumerate()
        .map(|(it, c)| chunk_source(cx, len, index, entries.map(|e| e[it]), row0, c))
        .collect::<Result<_>>()?;
    Ok(TileSources { chunks, rows })
}

/// Where chunk `chunk` of tile row `row` goes in a tile of `rows` rows at `dst`.
pub(crate) fn chunk_dst<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, dst: PointerValue<'ctx>, rows: u32, row: IV<'ctx>, chunk: IV<'ctx>) -> Result<PointerValue<'ctx>> {
    let row_bytes = plan.smem_row_bytes() as i32;
    let dst_off = if plan.swizzled() {
        // Column block chunk / 8, row `row` of it, chunk XOR (row % 8) inside the row.
        let block = cx.mul(cx.lshr(chunk, cx.i32(3))?, cx.i32((rows * SWIZZLE_ROW_BYTES) as i32))?;
        let swz = cx.xor(cx.and(chunk, cx.i32(7))?, cx.and(row, cx.i32(7))?)?;
        cx.add(block, cx.add(cx.mul(row, cx.i32(row_bytes))?, cx.mul(swz, cx.i32(16))?)?)?
    } else {
        cx.add(cx.mul(row, cx.i32(row_bytes))?, cx.mul(chunk, cx.i32(16))?)?
    };
    cx.byte_gep(dst, dst_off)
}

/// Element offset of chunk `chunk` of source row `src_row`. The row is
/// inside 0..len (clamped to 0 otherwise) and the chunk below head_dim / 8:
/// both non-negative, so zero extension is exact and saves the sign half of
/// the 64-bit multiply.
fn chunk_src<'ctx>(cx: &Cx<'_, 'ctx>, t: &TileCopy<'ctx>, src_row: IV<'ctx>, chunk: IV<'ctx>) -> Result<PointerValue<'ctx>> {
    let i64t = cx.ctx.i64_type();
    let elem_off = cx.add(cx.mul(cx.zext(src_row, i64t)?, t.stride)?, cx.zext(cx.mul(chunk, cx.i32(8))?, i64t)?)?;
    cx.gep(cx.ctx.i16_type(), t.src, elem_off)
}

/// Issues the cp.async copy of one chunk into a tile of `rows` rows at `t.dst`.
fn issue_chunk<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, t: &TileCopy<'ctx>, rows: u32, c: &ChunkSource<'ctx>) -> Result<()> {
    let issue = |cx: &Cx<'_, 'ctx>| -> Result<()> {
        let src = chunk_src(cx, t, c.src_row, c.chunk)?;
        let dst = chunk_dst(cx, plan, t.dst, rows, c.row, c.chunk)?;
        let size = cx.select_int(c.valid, cx.i32(16), cx.i32(0))?;
        cx.cp_async_16(dst, src, size)
    };
    match c.in_tile {
        Some(mine) => cx.if_then(mine, "copy.tail", issue),
        None => issue(cx),
    }
}

/// Issues the cp.async copies of one tile from `sources` into `t.dst`
/// (no commit: the caller groups tiles).
pub(crate) fn copy_from<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, t: &TileCopy<'ctx>, sources: &TileSources<'ctx>) -> Result<()> {
    sources.chunks.iter().try_for_each(|c| issue_chunk(cx, plan, t, sources.rows, c))
}

/// Issues the cp.async copies of one tile, spread over all threads of the CTA
/// (no commit: the caller groups tiles). Rows at or past `len` are zero-filled
/// from a valid address (row 0), so no byte outside the tensor is read. Each
/// chunk's address is made where its copy goes out (plain rows keep fewer
/// values live this way).
///
/// With `stepped`, a tile whose rows all lie inside `len` (every one but a
/// ragged last tile) takes a uniform branch where no row is clamped or
/// zero-filled and each round's source is the previous round's plus a fixed
/// number of rows: one 64-bit add per chunk instead of a compare, a select
/// and a 64-bit multiply-add (per 64-key tile, 4 warps, D=64: about 20
/// instructions of ~550 per thread).
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_tile<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, tid: IV<'ctx>, t: &TileCopy<'ctx>, row0: IV<'ctx>, rows: u32, stepped: bool) -> Result<()> {
    let chunks = tile_chunks(cx, plan, tid, rows)?;
    let clamped = |cx: &Cx<'_, 'ctx>| -> Result<()> {
        for &c in &chunks {
            let source = chunk_source(cx, t.len, t.index, None, row0, c)?;
            issue_chunk(cx, plan, t, rows, &source)?;
        }
        Ok(())
    };
    let chunks_per_row = plan.head_dim / 8;
    // Rounds advance by whole rows only when the threads split rows evenly
    // (tile_chunks); row indices need each row's entry.
    if !stepped || t.index.is_some() || plan.threads() % chunks_per_row != 0 {
        return clamped(cx);
    }
    let rows_per_round = (plan.threads() / chunks_per_row) as i64;
    let inside = cx.icmp(IP::SLE, cx.add(row0, cx.i32(rows as i32))?, t.len)?;
    cx.if_then(inside, "copy.inside", |cx| {
        let (row, chunk, _) = chunks[0];
        let step = cx.mul(t.stride, cx.i64(rows_per_round))?;
        let mut src = chunk_src(cx, t, cx.add(row0, row)?, chunk)?;
        for (it, &(row, chunk, in_tile)) in chunks.iter().enumerate() {
            if it > 0 {
                src = cx.gep(cx.ctx.i16_type(), src, step)?;
            }
            let dst = chunk_dst(cx, plan, t.dst, rows, row, chunk)?;
            match in_tile {
                Some(mine) => cx.if_then(mine, "copy.tail", |cx| cx.cp_async_16(dst, src, cx.i32(16)))?,
                None => cx.cp_async_16(dst, src, cx.i32(16))?,
            }
        }
        Ok(())
    })?;
    cx.if_then(cx.not(inside)?, "copy.ragged", clamped)
}

/// Stages `values[row0 + r]` (r < rows) of each tensor in `tensors` into
/// row r of the staged-values rows at `dst` (`row_bytes` apart), word `i`
/// for the i-th tensor (`tensors.len() <= STAGED_PER_ROW`). Indices past
/// `len - 1` read element `len - 1`, exactly as the element test clamps
/// them. No commit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_values<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, tid: IV<'ctx>, tensors: &[PointerValue<'ctx>], dst: PointerValue<'ctx>, row_bytes: u32, row0: IV<'ctx>, rows: u32, len: IV<'ctx>) -> Result<()> {
    debug_assert!(tensors.len() <= STAGED_PER_ROW);
    let threads = plan.threads();
    let total = rows * tensors.len() as u32;
    let row_bytes = row_bytes as i32;
    let last = cx.sub(len, cx.i32(1))?;
    for it in 0..total.div_ceil(threads) {
        let idx = cx.add(tid, cx.i32((it * threads) as i32))?;
        let issue = |cx: &Cx<'_, 'ctx>| -> Result<()> {
            for (i, &src) in tensors.iter().enumerate() {
                // Thread idx copies word i of row idx - i * rows when that row is in range.
                let r = cx.sub(idx, cx.i32((i as u32 * rows) as i32))?;
                let mine = cx.icmp(IP::ULT, r, cx.i32(rows as i32))?;
                cx.if_then(mine, "stage", |cx| {
                    let at = cx.smin(cx.add(row0, r)?, last)?;
                    let s = cx.gep(cx.i32t(), src, cx.sext64(at)?)?;
                    let d = cx.byte_gep(dst, cx.add(cx.mul(r, cx.i32(row_bytes))?, cx.i32(4 * i as i32))?)?;
                    cx.cp_async_4(d, s)
                })?;
            }
            Ok(())
        };
        if (it + 1) * threads > total {
            let inside = cx.icmp(IP::ULT, idx, cx.i32(total as i32))?;
            cx.if_then(inside, "stage.tail", issue)?;
        } else {
            issue(cx)?;
        }
    }
    Ok(())
}
