//! The epilogues: a CTA's finished rows out to memory. The plain entry
//! writes O / l in the input dtype and the natural-log LSE; the split-KV
//! entry writes its split's f32 O and base-2 LSE for the combine kernel.

use inkwell::values::PointerValue;
use inkwell::{FloatPredicate as FP, IntPredicate as IP};

use super::{Coords, Forward, LoopState, RowState, SplitKv};
use crate::cx::{Cx, FV, IV};
use crate::error::{CodegenError, Result};
use crate::lower::pipeline::{chunk_dst, RowIndex};

/// One output row as the epilogues finish it (`Forward::row_total`).
struct RowTotal<'ctx> {
    /// Row in the tile, and its query.
    local: IV<'ctx>,
    q: IV<'ctx>,
    /// The row's softmax sum; `any`: it is positive (the row saw a key).
    l: FV<'ctx>,
    any: IV<'ctx>,
    /// 1 / l, or 0 for a row that saw nothing.
    inv: FV<'ctx>,
}

impl<'p, 'a, 'ctx> Forward<'p, 'a, 'ctx> {
    /// O / l (0 for an all-masked row) in dtype for rows < q_len, and
    /// lse = (m + log2 l) · ln 2 (-inf for an all-masked row).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn epilogue(&self, st: &LoopState<'ctx>, c: &Coords<'ctx>, o: PointerValue<'ctx>, lse: PointerValue<'ctx>, b: IV<'ctx>, h: IV<'ctx>, heads: IV<'ctx>, osb: IV<'ctx>, osh: IV<'ctx>, osn: IV<'ctx>) -> Result<()> {
        let cx = self.cx;
        let elem = cx.ctx.i16_type();
        let o_off = cx.add(cx.mul(cx.sext64(b)?, osb)?, cx.mul(cx.sext64(h)?, osh)?)?;
        let o_bh = cx.gep(elem, o, o_off)?;
        let bh = cx.add(cx.mul(cx.sext64(b)?, cx.sext64(heads)?)?, cx.sext64(h)?)?;
        // Output rows: q itself, or q_rows[bh][q] of q_src_len source rows.
        let out_rows = match self.q_rows {
            None => None,
            Some((rows, src_len)) => Some(RowIndex { rows: cx.gep(cx.i32t(), rows, cx.mul(bh, cx.sext64(self.q_len)?)?)?, src_len }),
        };
        let lse_row0 = cx.mul(bh, cx.sext64(out_rows.map_or(self.q_len, |ix| ix.src_len))?)?;
        let two_t = cx.mul(c.t4, cx.i32(2))?;
        // A row this thread holds: its tile row, its query, 1 / l and the LSE.
        let row_values = |sl: usize, r: usize, row: &RowState<'ctx>| -> Result<(IV<'ctx>, IV<'ctx>, FV<'ctx>, FV<'ctx>)> {
            let t = self.row_total(c, sl, r, row)?;
            let lse_v = cx.fmul(cx.fadd(row.m, cx.lg2(t.l)?)?, cx.f32(std::f32::consts::LN_2))?;
            let lse_v = cx.select_f32(t.any, lse_v, cx.f32(f32::NEG_INFINITY))?;
            Ok((t.local, t.q, t.inv, lse_v))
        };
        let packed = |sl: usize, r: usize, n: usize, inv: FV<'ctx>| -> Result<IV<'ctx>> {
            let acc = &st.o[sl][n];
            cx.pack_half2(self.plan.dtype, cx.fmul(acc[2 * r], inv)?, cx.fmul(acc[2 * r + 1], inv)?)
        };
        let store_lse = |cx: &Cx<'_, 'ctx>, out_row: IV<'ctx>, lse_v: FV<'ctx>| -> Result<()> {
            cx.if_then(cx.icmp(IP::EQ, c.t4, cx.i32(0))?, "store_lse", |cx| {
                cx.store(cx.gep(cx.f32t(), lse, cx.add(lse_row0, cx.sext64(out_row)?)?)?, lse_v)
            })
        };
        // Straight from the accumulators: 4-byte stores, a row's 16-byte
        // pieces from 4 lanes (every path; the only one for mma.sync, row
        // indices and O rows that are not 16-byte aligned).
        let direct = |cx: &Cx<'_, 'ctx>| -> Result<()> {
            for (sl, r, row) in st.rows.iter().enumerate().flat_map(|(sl, rows)| rows.iter().enumerate().map(move |(r, row)| (sl, r, row))) {
                let (_, q, inv, lse_v) = row_values(sl, r, row)?;
                let store = |cx: &Cx<'_, 'ctx>, out_row: IV<'ctx>| -> Result<()> {
                    let row_ptr = cx.gep(elem, o_bh, cx.mul(cx.sext64(out_row)?, osn)?)?;
                    for n in 0..st.o[sl].len() {
                        let v = packed(sl, r, n, inv)?;
                        let col = cx.add(two_t, cx.i32((8 * n) as i32))?;
                        cx.store(cx.gep(elem, row_ptr, cx.sext64(col)?)?, v)?;
                    }
                    store_lse(cx, out_row, lse_v)
                };
                cx.if_then(cx.icmp(IP::SLT, q, self.q_len)?, "store_row", |cx| match out_rows {
                    None => store(cx, q),
                    // Padding rows (outside 0..q_src_len) write nothing.
                    Some(ix) => {
                        let (src, real) = ix.source(cx, q)?;
                        cx.if_then(real, "store_source_row", |cx| store(cx, src))
                    }
                })?;
            }
            Ok(())
        };
        if !self.plan.swizzled() || out_rows.is_some() {
            direct(cx)?;
            return cx.ret_void();
        }
        // wgmma kernels: O goes through Q's shared memory (free once the last
        // S = Q·Kᵀ has been waited on), in Q's swizzled layout, then out in
        // whole 16-byte chunks, each warp its own rows: a row's chunks in
        // one store instruction instead of 4-byte pieces (ncu: the epilogue
        // was 9-13% of hash-32's samples, its stores a quarter of that).
        let aligned = {
            let addr = cx.b.build_ptr_to_int(o, cx.ctx.i64_type(), "o_addr")?;
            let strides = cx.or(cx.or(osb, osh)?, osn)?;
            let low = cx.or(cx.and(addr, cx.i64(15))?, cx.and(strides, cx.i64(7))?)?;
            cx.icmp(IP::EQ, low, cx.i64(0))?
        };
        cx.if_then(cx.not(aligned)?, "store.direct", direct)?;
        cx.if_then(aligned, "store.staged", |cx| {
            let q_tile = cx.byte_gep(self.smem, cx.i32(self.layout.q as i32))?;
            let rows = self.plan.block_q;
            // Every warp of the warpgroup has waited on its last S = Q·Kᵀ.
            cx.barrier()?;
            for (sl, r, row) in st.rows.iter().enumerate().flat_map(|(sl, rows)| rows.iter().enumerate().map(move |(r, row)| (sl, r, row))) {
                let (local, q, inv, lse_v) = row_values(sl, r, row)?;
                for n in 0..st.o[sl].len() {
                    let at = cx.byte_gep(chunk_dst(cx, self.plan, q_tile, rows, local, cx.i32(n as i32))?, cx.mul(c.t4, cx.i32(4))?)?;
                    cx.store(at, packed(sl, r, n, inv)?)?;
                }
                cx.if_then(cx.icmp(IP::SLT, q, self.q_len)?, "store_lse_row", |cx| store_lse(cx, q, lse_v))?;
            }
            cx.syncwarp()?;
            let chunks_per_row = self.plan.head_dim / 8;
            let warp_rows = 16 * st.rows.len() as u32;
            let total = warp_rows * chunks_per_row;
            let lane = cx.and(cx.sreg_fresh("tid.x")?, cx.i32(31))?;
            let v4 = cx.i32t().vec_type(4);
            let chunk_ptr = |cx: &Cx<'_, 'ctx>, q: IV<'ctx>, chunk: IV<'ctx>| -> Result<PointerValue<'ctx>> {
                let row_ptr = cx.gep(elem, o_bh, cx.mul(cx.sext64(q)?, osn)?)?;
                cx.gep(elem, row_ptr, cx.sext64(cx.mul(chunk, cx.i32(8))?)?)
            };
            // Where a row's chunks divide a warp (head dims 64 and 128: 8
            // and 16 chunks), a lane keeps its chunk in every round and
            // moves down a fixed number of rows: its global address is
            // computed once and stepped by a uniform offset, instead of a
            // 64-bit row product per round (~10 instructions each).
            let fixed_chunk = (32 % chunks_per_row == 0).then(|| -> Result<_> {
                let (row, chunk) = (cx.udiv(lane, cx.i32(chunks_per_row as i32))?, cx.urem(lane, cx.i32(chunks_per_row as i32))?);
                let q = cx.add(c.q0, cx.add(c.warp_row0, row)?)?;
                Ok((row, chunk, chunk_ptr(cx, q, chunk)?))
            });
            let fixed_chunk = fixed_chunk.transpose()?;
            let rows_per_round = 32 / chunks_per_row;
            for it in 0..total.div_ceil(32) {
                let idx = cx.add(lane, cx.i32((32 * it) as i32))?;
                let (row, chunk) = match fixed_chunk {
                    Some((row, chunk, _)) => (cx.add(row, cx.i32((it * rows_per_round) as i32))?, chunk),
                    None => (cx.udiv(idx, cx.i32(chunks_per_row as i32))?, cx.urem(idx, cx.i32(chunks_per_row as i32))?),
                };
                let local = cx.add(c.warp_row0, row)?;
                let q = cx.add(c.q0, local)?;
                let mut mine = cx.icmp(IP::SLT, q, self.q_len)?;
                if (it + 1) * 32 > total {
                    mine = cx.and(mine, cx.icmp(IP::ULT, idx, cx.i32(total as i32))?)?;
                }
                cx.if_then(mine, "store_chunk", |cx| {
                    let v = cx.load(v4, chunk_dst(cx, self.plan, q_tile, rows, local, chunk)?)?;
                    let at = match fixed_chunk {
                        Some((_, _, first)) => cx.gep(elem, first, cx.mul(osn, cx.i64((it * rows_per_round) as i64))?)?,
                        None => chunk_ptr(cx, q, chunk)?,
                    };
                    cx.store(at, v)
                })?;
            }
            Ok(())
        })?;
        cx.ret_void()
    }

    /// A finished row this thread holds (slab `sl`, `r` = 0 for row g, 1
    /// for g + 8): its tile row and query, its softmax sum over the quad,
    /// whether it saw any key, and 1 / sum (0 when it saw none).
    fn row_total(&self, c: &Coords<'ctx>, sl: usize, r: usize, row: &RowState<'ctx>) -> Result<RowTotal<'ctx>> {
        let cx = self.cx;
        let zero = cx.f32(0.0);
        let mut l = row.l;
        l = cx.fadd(l, cx.shfl_bfly_f32(l, 1)?)?;
        l = cx.fadd(l, cx.shfl_bfly_f32(l, 2)?)?;
        let any = cx.fcmp(FP::OGT, l, zero)?;
        // l is 0 (nothing seen) or at least 1 (the row maximum's own term):
        // the approximate reciprocal and logarithm need no subnormal
        // handling, and 1 ulp of 1 / l is far below bf16's and fp16's.
        let inv = cx.select_f32(any, cx.rcp(l)?, zero)?;
        let local = cx.add(c.warp_row0, cx.add(c.g, cx.i32((16 * sl + 8 * r) as i32))?)?;
        Ok(RowTotal { local, q: cx.add(c.q0, local)?, l, any, inv })
    }

    /// The split-KV entry's epilogue: this split's O, normalised by its own
    /// softmax sum, in f32 to `o_partial`, and its log-sum-exp in base 2 to
    /// `lse_partial` (layouts at `ForwardAbi::split_start`). A row the split
    /// saw nothing of gets zeros and -inf, which the combine weighs as
    /// nothing. 8-byte stores straight from the accumulators (a quad's
    /// four lanes write 32 contiguous bytes): the split entry runs where
    /// query rows are few, so the partials are small.
    pub(super) fn epilogue_split(&self, st: &LoopState<'ctx>, c: &Coords<'ctx>, sp: &SplitKv<'ctx>, batch: IV<'ctx>) -> Result<()> {
        let cx = self.cx;
        let s = c.split.ok_or_else(|| CodegenError::Builder("the split entry's coordinates lack the split".into()))?;
        // Row ((s · B + b) · H + h) · q_len + q of the partial outputs.
        let sb = cx.add(cx.mul(cx.sext64(s)?, cx.sext64(batch)?)?, cx.sext64(c.b)?)?;
        let row0 = cx.mul(cx.add(cx.mul(sb, cx.sext64(self.heads)?)?, cx.sext64(c.h)?)?, cx.sext64(self.q_len)?)?;
        let two_t = cx.mul(c.t4, cx.i32(2))?;
        let pair = cx.f32t().vec_type(2);
        for (sl, rows) in st.rows.iter().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                let RowTotal { q, l, any, inv, .. } = self.row_total(c, sl, r, row)?;
                let lse2 = cx.select_f32(any, cx.fadd(row.m, cx.lg2(l)?)?, cx.f32(f32::NEG_INFINITY))?;
                cx.if_then(cx.icmp(IP::SLT, q, self.q_len)?, "store_partial_row", |cx| {
                    let out_row = cx.add(row0, cx.sext64(q)?)?;
                    let o_row = cx.gep(cx.f32t(), sp.o_partial, cx.mul(out_row, cx.i64(self.plan.head_dim as i64))?)?;
                    for (n, acc) in st.o[sl].iter().enumerate() {
                        let mut v = pair.get_undef();
                        v = cx.b.build_insert_element(v, cx.fmul(acc[2 * r], inv)?, cx.i32(0), "")?;
                        v = cx.b.build_insert_element(v, cx.fmul(acc[2 * r + 1], inv)?, cx.i32(1), "")?;
                        let col = cx.add(two_t, cx.i32((8 * n) as i32))?;
                        cx.store(cx.gep(cx.f32t(), o_row, cx.sext64(col)?)?, v)?;
                    }
                    cx.if_then(cx.icmp(IP::EQ, c.t4, cx.i32(0))?, "store_partial_lse", |cx| cx.store(cx.gep(cx.f32t(), sp.lse_partial, out_row)?, lse2))
                })?;
            }
        }
        cx.ret_void()
    }
}
