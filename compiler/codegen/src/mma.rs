//! Warp-level matrix products on tensor cores: ldmatrix addressing, the
//! m16n8k16 fragment layouts (kernel-notes.md) and the two products of the
//! forward kernel, S = Q·Kᵀ and O += P·V, as straight-line code. Every
//! fragment is a separate SSA value; loops here are Rust loops.
//!
//! Lane `l`: group `g = l / 4`, thread-in-group `t = l % 4`. An accumulator
//! tile (16 x 8) holds rows g (c0, c1) and g + 8 (c2, c3), columns 2t, 2t + 1.

use inkwell::values::PointerValue;

use lacuna_ir::Dtype;

use crate::cx::{Cx, FV, IV};
use crate::error::Result;

/// A (16 x 16) A operand: four registers of two halves.
pub(crate) type AFrag<'ctx> = [IV<'ctx>; 4];
/// A (16 x 8) f32 accumulator tile.
pub(crate) type Acc<'ctx> = [FV<'ctx>; 4];

/// Byte offsets inside a shared tile of rows `row_bytes` long, where each lane
/// points for the three ldmatrix uses (the lane-dependent part only).
pub(crate) struct LaneOffsets<'ctx> {
    /// A operand (Q): lane l → row l % 16, column 8 * (l / 16).
    pub a: IV<'ctx>,
    /// B operand from row-major [key, d] (K, no .trans): matrices
    /// (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7), (keys 8-15, d 8-15).
    pub b_k: IV<'ctx>,
    /// B operand from row-major [key, d] read with .trans (V): matrices
    /// (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15).
    pub b_v: IV<'ctx>,
}

impl<'ctx> LaneOffsets<'ctx> {
    pub fn new(cx: &Cx<'_, 'ctx>, lane: IV<'ctx>, row_bytes: u32) -> Result<Self> {
        let c = |v: i32| cx.i32(v);
        let rb = c(row_bytes as i32);
        let bits = |shift: i32, mask: i32| -> Result<IV<'ctx>> { cx.and(cx.lshr(lane, c(shift))?, c(mask)) };
        let l7 = cx.and(lane, c(7))?;
        // A: row l & 15, chunk l >> 4.
        let a = cx.add(cx.mul(cx.and(lane, c(15))?, rb)?, cx.mul(bits(4, 1)?, c(16))?)?;
        // K: row (l & 7) + 8 * (l >> 4), chunk (l >> 3) & 1.
        let k_row = cx.add(l7, cx.mul(bits(4, 1)?, c(8))?)?;
        let b_k = cx.add(cx.mul(k_row, rb)?, cx.mul(bits(3, 1)?, c(16))?)?;
        // V: row (l & 7) + 8 * ((l >> 3) & 1), chunk l >> 4.
        let v_row = cx.add(l7, cx.mul(bits(3, 1)?, c(8))?)?;
        let b_v = cx.add(cx.mul(v_row, rb)?, cx.mul(bits(4, 1)?, c(16))?)?;
        Ok(Self { a, b_k, b_v })
    }
}

fn at<'ctx>(cx: &Cx<'_, 'ctx>, base: PointerValue<'ctx>, offset: u32) -> Result<PointerValue<'ctx>> {
    if offset == 0 {
        return Ok(base);
    }
    cx.byte_gep(base, cx.i32(offset as i32))
}

/// The A fragment of rows [16 s, 16 s + 16), head-dim slice kk, from a shared
/// Q tile; `lane_base` already includes the warp's first row and `LaneOffsets::a`.
pub(crate) fn load_a<'ctx>(cx: &Cx<'_, 'ctx>, lane_base: PointerValue<'ctx>, row_bytes: u32, slab: u32, kk: u32) -> Result<AFrag<'ctx>> {
    cx.ldmatrix_x4(at(cx, lane_base, slab * 16 * row_bytes + kk * 32)?, false)
}

/// Where the A fragments of Q come from.
pub(crate) enum QFrags<'ctx> {
    /// `[slab][kk]`, loaded once per CTA.
    Registers(Vec<Vec<AFrag<'ctx>>>),
    /// Re-read from the shared Q tile at each use (large head dims).
    Shared { lane_base: PointerValue<'ctx>, row_bytes: u32 },
}

impl<'ctx> QFrags<'ctx> {
    fn get(&self, cx: &Cx<'_, 'ctx>, slab: u32, kk: u32) -> Result<AFrag<'ctx>> {
        match self {
            QFrags::Registers(f) => Ok(f[slab as usize][kk as usize]),
            QFrags::Shared { lane_base, row_bytes } => load_a(cx, *lane_base, *row_bytes, slab, kk),
        }
    }
}

/// Shape of the warp's share of one key block.
#[derive(Clone, Copy)]
pub(crate) struct WarpTile {
    pub dtype: Dtype,
    pub slabs: u32,
    pub head_dim: u32,
    pub block_k: u32,
    pub row_bytes: u32,
}

/// S = Q·Kᵀ for the warp's rows and all `block_k` keys: `[slab][n8 tile]`.
/// `k_lane` points at the K tile plus `LaneOffsets::b_k`.
pub(crate) fn qk<'ctx>(cx: &Cx<'_, 'ctx>, w: WarpTile, q: &QFrags<'ctx>, k_lane: PointerValue<'ctx>) -> Result<Vec<Vec<Acc<'ctx>>>> {
    let zero = cx.f32(0.0);
    let mut s = vec![vec![[zero; 4]; (w.block_k / 8) as usize]; w.slabs as usize];
    for kk in 0..w.head_dim / 16 {
        let a: Vec<AFrag<'ctx>> = (0..w.slabs).map(|sl| q.get(cx, sl, kk)).collect::<Result<_>>()?;
        for np in 0..w.block_k / 16 {
            // Keys 16 np .. 16 np + 15, d 16 kk .. 16 kk + 15 → B of n8 tiles 2 np and 2 np + 1.
            let r = cx.ldmatrix_x4(at(cx, k_lane, np * 16 * w.row_bytes + kk * 32)?, false)?;
            for (sl, a) in a.iter().enumerate() {
                for (half, b) in [[r[0], r[1]], [r[2], r[3]]].iter().enumerate() {
                    let n = (2 * np) as usize + half;
                    s[sl][n] = cx.mma_m16n8k16(w.dtype, a, b, &s[sl][n])?;
                }
            }
        }
    }
    Ok(s)
}

/// P (f32 probabilities, `[n8 tile]` of one slab) as A fragments `[k16 slice]`:
/// tiles 2j and 2j + 1 of the accumulator are exactly the A layout of slice j.
pub(crate) fn p_as_a<'ctx>(cx: &Cx<'_, 'ctx>, dtype: Dtype, p: &[Acc<'ctx>]) -> Result<Vec<AFrag<'ctx>>> {
    p.chunks(2)
        .map(|pair| {
            let (lo, hi) = (pair[0], pair[1]);
            Ok([
                cx.pack_half2(dtype, lo[0], lo[1])?,
                cx.pack_half2(dtype, lo[2], lo[3])?,
                cx.pack_half2(dtype, hi[0], hi[1])?,
                cx.pack_half2(dtype, hi[2], hi[3])?,
            ])
        })
        .collect()
}

/// O += P·V: `p[slab][k16 slice]`, `o[slab][d n8 tile]`; `v_lane` points at
/// the V tile plus `LaneOffsets::b_v`.
pub(crate) fn pv<'ctx>(cx: &Cx<'_, 'ctx>, w: WarpTile, p: &[Vec<AFrag<'ctx>>], v_lane: PointerValue<'ctx>, o: &mut [Vec<Acc<'ctx>>]) -> Result<()> {
    for j in 0..w.block_k / 16 {
        for dn in 0..w.head_dim / 16 {
            // Keys 16 j .. 16 j + 15, d 16 dn .. 16 dn + 15, transposed → B of d tiles 2 dn, 2 dn + 1.
            let r = cx.ldmatrix_x4(at(cx, v_lane, j * 16 * w.row_bytes + dn * 32)?, true)?;
            for (sl, ps) in p.iter().enumerate() {
                for (half, b) in [[r[0], r[1]], [r[2], r[3]]].iter().enumerate() {
                    let n = (2 * dn) as usize + half;
                    o[sl][n] = cx.mma_m16n8k16(w.dtype, &ps[j as usize], b, &o[sl][n])?;
                }
            }
        }
    }
    Ok(())
}
