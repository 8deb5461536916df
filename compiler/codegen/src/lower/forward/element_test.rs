//! The element test: which of a thread's scores of a Partial (or ragged)
//! key block the pattern keeps, from the generated predicate
//! (`predicate.rs`), applied to the scores (wgmma) or to bit words made
//! before the product (mma.sync).

use inkwell::values::PointerValue;
use inkwell::IntPredicate as IP;

use super::Forward;
use crate::cx::{Cx, BV, IV};
use crate::error::Result;
use crate::predicate::{Staged, TileRange};

/// How the element test's verdicts (one i1 per score) act on the values it
/// is given: masking scores (`Forward::drop_scores`) or clearing bits
/// (`Forward::clear_bits`).
type ApplyKeep<'ctx> = dyn Fn(&Cx<'_, 'ctx>, &[BV<'ctx>], &[IV<'ctx>]) -> Result<Vec<BV<'ctx>>>;

/// One score of a thread's accumulators (see `Forward::score_place`).
struct ScorePlace {
    slab: usize,
    n8: usize,
    row: usize,
    col: usize,
}

/// Column (in the key tile) of this thread's score in n8 tile `j`, `e` = 0
/// or 1: 8j + 2t + e, with `two_t` = 2 · (lane % 4).
fn score_column<'ctx>(cx: &Cx<'_, 'ctx>, two_t: IV<'ctx>, j: u32, e: u32) -> Result<IV<'ctx>> {
    cx.add(two_t, cx.i32((8 * j + e) as i32))
}

impl<'p, 'a, 'ctx> Forward<'p, 'a, 'ctx> {
    /// Scores per thread: `[slab][n8 tile][4]`, in that order.
    fn scores_per_thread(&self) -> u32 {
        self.plan.slabs_per_warp() * self.plan.block_k / 8 * 4
    }

    /// Where this thread's score `i` sits: slab, n8 tile, row (g or g + 8),
    /// column (2t or 2t + 1), in the `[slab][n8 tile][4]` order of the scores.
    fn score_place(&self, i: usize) -> ScorePlace {
        let per_slab = (self.plan.block_k / 8 * 4) as usize;
        let c = i % 4;
        ScorePlace { slab: i / per_slab, n8: (i % per_slab) / 4, row: c / 2, col: c % 2 }
    }

    pub(super) fn mask_words(&self) -> u32 {
        self.scores_per_thread().div_ceil(32)
    }

    /// The element test for this thread's scores of key block `kb`, applied
    /// to `values` by `apply(values, keep)`, where `keep[i]` (i1) says score
    /// i (in `[slab][n8 tile][c]` order) is kept: the predicate holds and
    /// the key is inside kv_len. `values` are either the scores themselves
    /// (wgmma: masked scores become -inf) or bit words made before the
    /// product (mma.sync, see `kv_loop`).
    ///
    /// With a split predicate (two or more conjuncts), only the conjuncts the
    /// tile's classification left undecided are evaluated (`undecided`, see
    /// `NextBlock`): one uniform branch per variant, the whole predicate when
    /// two or more are undecided, none when the tile is Full and only
    /// ragged. A window's diagonal tile then tests
    /// `k <= q` alone and its far edge the window alone; a hash bucket's
    /// diagonal tile compares positions only.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn element_test(
        &self,
        cx: &Cx<'_, 'ctx>,
        kb: IV<'ctx>,
        k0: IV<'ctx>,
        ragged: IV<'ctx>,
        undecided: IV<'ctx>,
        k_values: PointerValue<'ctx>,
        values: Vec<BV<'ctx>>,
        apply: &ApplyKeep<'ctx>,
    ) -> Result<Vec<BV<'ctx>>> {
        let n = self.pred.conjunct_count();
        let values = if n == 1 {
            // One conjunct: the test runs on every tile that gets here (the
            // ragged Full tile too), in straight-line code: the mma.sync D=128
            // kernels are at 255 registers, and a branch here made them spill.
            apply(cx, &values, &self.element_keeps(cx, kb, k0, k_values, None)?)?
        } else {
            // Not 0 and not a power of two. The variants exclude each other.
            let several = cx.icmp(IP::NE, cx.and(undecided, cx.sub(undecided, cx.i32(1))?)?, cx.i32(0))?;
            let mut values = cx.if_then_values(several, "mask.all", values, |cx, vals| apply(cx, vals, &self.element_keeps(cx, kb, k0, k_values, None)?))?;
            for i in 0..n {
                let only = cx.icmp(IP::EQ, undecided, cx.i32(1 << i))?;
                values = cx.if_then_values(only, &format!("mask.c{i}"), values, |cx, vals| apply(cx, vals, &self.element_keeps(cx, kb, k0, k_values, Some(i))?))?;
            }
            values
        };
        // Keys at or past kv_len (read as clamped values above) exist only in
        // the last, ragged key block: drop them there, under a uniform
        // branch, rather than testing every element of every Partial tile
        // (that test was a compare and a select per element: ~25% of the
        // element test in hash-32's SASS).
        cx.if_then_values(ragged, "mask.ragged", values, |cx, vals| {
            let keys_left = cx.sub(self.kv_len, k0)?;
            let two_t = cx.mul(self.fresh_coords()?.t4, cx.i32(2))?;
            let inside = (0..self.scores_per_thread() as usize)
                .map(|i| {
                    let ScorePlace { n8: j, col: e, .. } = self.score_place(i);
                    cx.icmp(IP::SLT, score_column(cx, two_t, j as u32, e as u32)?, keys_left)
                })
                .collect::<Result<Vec<_>>>()?;
            apply(cx, vals, &inside)
        })
    }

    /// Masks scores in place: `keep[i]` false makes score i -inf.
    pub(super) fn drop_scores(cx: &Cx<'_, 'ctx>, scores: &[BV<'ctx>], keep: &[IV<'ctx>]) -> Result<Vec<BV<'ctx>>> {
        let ninf = cx.f32(f32::NEG_INFINITY);
        scores.iter().zip(keep).map(|(v, &k)| Ok(cx.select_f32(k, v.into_float_value(), ninf)?.into())).collect()
    }

    /// Clears bit i of the words (score i, 32 to a word) where `keep[i]` is false.
    pub(super) fn clear_bits(cx: &Cx<'_, 'ctx>, words: &[BV<'ctx>], keep: &[IV<'ctx>]) -> Result<Vec<BV<'ctx>>> {
        let mut packed = vec![cx.i32(0); words.len()];
        for (i, &k) in keep.iter().enumerate() {
            let bit = cx.shl(cx.zext(k, cx.i32t())?, cx.i32((i % 32) as i32))?;
            packed[i / 32] = cx.or(packed[i / 32], bit)?;
        }
        words.iter().zip(packed).map(|(w, p)| Ok(cx.and(w.into_int_value(), p)?.into())).collect()
    }

    /// The predicate (or only conjunct `conjunct`) at this thread's scores of
    /// key block `kb`, one i1 per score in `[slab][n8 tile][c]` order; keys
    /// past kv_len read clamped values (the caller drops them).
    fn element_keeps(&self, cx: &Cx<'_, 'ctx>, kb: IV<'ctx>, k0: IV<'ctx>, k_values: PointerValue<'ctx>, conjunct: Option<usize>) -> Result<Vec<IV<'ctx>>> {
        let values_row = cx.i32(self.layout.values_row_bytes as i32);
        let bk = self.plan.block_k;
        let k1 = cx.sub(cx.smin(cx.add(k0, cx.i32(bk as i32))?, self.kv_len)?, cx.i32(1))?;
        let ktile = TileRange { lo: k0, hi: k1, block: kb };
        let slabs = self.plan.slabs_per_warp();
        // Rows of this thread: slab s, r = 0 (row g) or 1 (row g + 8).
        // A rare path: coordinates from fresh reads (see `fresh_coords`).
        let c = self.fresh_coords()?;
        let two_t = cx.mul(c.t4, cx.i32(2))?;
        let mut row_vals = Vec::new();
        let mut col_vals = Vec::new();
        self.pred.with_bh(c.bh, || {
            for s in 0..slabs {
                for r in 0..2 {
                    let local = cx.add(c.warp_row0, cx.add(c.g, cx.i32((16 * s + 8 * r) as i32))?)?;
                    let q = cx.add(c.q0, local)?;
                    let at = cx.add(cx.i32(self.layout.q_values as i32), cx.mul(local, values_row)?)?;
                    let staged = Staged { pad: cx.byte_gep(self.smem, at)?, word: &self.q_words };
                    row_vals.push(self.pred.row_side(cx, q, &ktile, Some(&staged))?);
                }
            }
            for j in 0..bk / 8 {
                for e in 0..2 {
                    let local = score_column(cx, two_t, j, e)?;
                    let k = cx.add(k0, local)?;
                    let staged = Staged { pad: cx.byte_gep(k_values, cx.mul(local, values_row)?)?, word: &self.k_words };
                    col_vals.push(self.pred.col_side(cx, k, &ktile, Some(&staged))?);
                }
            }
            Ok(())
        })?;
        (0..self.scores_per_thread() as usize)
            .map(|i| {
                let ScorePlace { slab: s, n8: j, row: r, col: e } = self.score_place(i);
                self.pred.element(cx, &row_vals[s * 2 + r], &col_vals[j * 2 + e], conjunct)
            })
            .collect()
    }
}
