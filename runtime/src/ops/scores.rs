//! SparseK ops: per-token scores u = X·w, per-64-key-block scores, causal
//! top-k key-block selection into the `TopK` pattern's `sel` list, and the
//! SPARSEK operator's threshold tau with its mask values.

use super::module::blocks_for;
use super::{
    check_contiguous, check_dtype, check_rows, check_same_gpu, check_shape, group_of, invalid, GpuOps, OpResult,
    TOPK_BLOCK,
};
use crate::tensor::{DeviceTensor, ElemType};
use crate::validate::KernelArg::{F32, I32, I64, Ptr};

/// How a 64-key block's score is made from its tokens' scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockReduce {
    /// The best token decides (a block holding one important key is kept).
    #[default]
    Max,
    /// The average token score (sequential f32 sum / tokens in the block).
    Mean,
}

/// Largest top-k width (selected key blocks per query block).
pub const MAX_TOPK: usize = 4096;

/// Top-k selection from one sorted order per row (`lacuna_topk_order` +
/// `lacuna_topk_pick`) up to this width (a warp's lanes hold the picks) and
/// [`TOPK_ORDER_MAX`] key blocks (the sort's shared memory); past either,
/// the scan per query block (`lacuna_topk_blocks`).
const TOPK_PICK_MAX: usize = 32;
/// `TOPK_ORDER_MAX` in ops.cu: key blocks one row's sort holds (256K keys).
const TOPK_ORDER_MAX: usize = 4096;

impl GpuOps {
    /// `u[b, h, j] = x[b, h, j, :] · w`: x (B, H, N, D) bf16/fp16 (the keys),
    /// `w` f32 (D). Returns f32 (B, H, N). Bit-exact with [`super::cpu::token_scores`].
    pub fn token_scores(&self, x: &DeviceTensor, w: &DeviceTensor) -> OpResult<DeviceTensor> {
        let ([b, h, n, d], is_f16) = check_rows("the keys to score", x)?;
        check_dtype("the score weights w", w, ElemType::F32)?;
        check_shape("the score weights w", w, &[Some(d)], "(D)")?;
        check_contiguous("the score weights w", w)?;
        let ord = self.gpu().ordinal();
        check_same_gpu("the keys to score", x, ord)?;
        check_same_gpu("the score weights w", w, ord)?;
        let out = DeviceTensor::zeros(self.gpu(), ElemType::F32, &[b, h, n])?;
        let st = x.strides();
        let args = [
            Ptr(x.device_ptr()),
            I64(st[0] as i64),
            I64(st[1] as i64),
            I64(st[2] as i64),
            I32(h as i32),
            I32(n as i32),
            I32(d as i32),
            I32(is_f16 as i32),
            Ptr(w.device_ptr()),
            Ptr(out.device_ptr()),
        ];
        self.launch("lacuna_token_scores", &args, (blocks_for(n, 128)?, (b * h) as u32, 1), 128, (d * 4) as u32)?;
        Ok(out)
    }

    /// Per 64-token block of each row of `u` (f32 (B, H, N), contiguous):
    /// the max or mean score. Returns f32 (B, H, ceil(N/64)).
    pub fn block_scores(&self, u: &DeviceTensor, reduce: BlockReduce) -> OpResult<DeviceTensor> {
        check_dtype("the token scores", u, ElemType::F32)?;
        check_shape("the token scores", u, &[None, None, None], "(B, H, N)")?;
        check_contiguous("the token scores", u)?;
        check_same_gpu("the token scores", u, self.gpu().ordinal())?;
        let [b, h, n] = [u.shape()[0], u.shape()[1], u.shape()[2]];
        if n > i32::MAX as usize {
            return Err(invalid("the token scores", format!("have N = {n}, above i32::MAX")));
        }
        let nkb = n.div_ceil(TOPK_BLOCK);
        let out = DeviceTensor::zeros(self.gpu(), ElemType::F32, &[b, h, nkb])?;
        let total = b * h * nkb;
        let mode = match reduce {
            BlockReduce::Max => 0,
            BlockReduce::Mean => 1,
        };
        let args = [
            Ptr(u.device_ptr()),
            I32(n as i32),
            I32(nkb as i32),
            I64(total as i64),
            I32(mode),
            Ptr(out.device_ptr()),
        ];
        self.launch("lacuna_block_scores", &args, (blocks_for(total, 256)?, 1, 1), 256, 0)?;
        Ok(out)
    }

    /// Causal top-k key-block selection for `heads` query heads over `q_len`
    /// queries, from `block_scores` f32 (B, Hkv, nkb) (heads a multiple of
    /// Hkv): per 64-query block the diagonal key block plus the `topk - 1`
    /// best-scored earlier key blocks (ties to the lower index), leaving out
    /// blocks that the causal window `window` (0 = none) covers for every
    /// query of the block; sorted ascending, -1 padding. Returns the TopK
    /// pattern's `sel`: i32 (B, heads, ceil(q_len/64), topk).
    pub fn topk_blocks(
        &self,
        block_scores: &DeviceTensor,
        heads: usize,
        q_len: usize,
        topk: usize,
        window: i32,
    ) -> OpResult<DeviceTensor> {
        check_dtype("the block scores", block_scores, ElemType::F32)?;
        check_shape("the block scores", block_scores, &[None, None, None], "(B, Hkv, key blocks)")?;
        check_contiguous("the block scores", block_scores)?;
        check_same_gpu("the block scores", block_scores, self.gpu().ordinal())?;
        let [b, hkv, nkb] = [block_scores.shape()[0], block_scores.shape()[1], block_scores.shape()[2]];
        group_of("the query side", heads, hkv)?;
        if topk == 0 || topk > MAX_TOPK {
            return Err(invalid("topk", format!("is {topk}; it must be in 1..={MAX_TOPK} (the diagonal block counts)")));
        }
        if q_len == 0 || q_len > i32::MAX as usize {
            return Err(invalid("q_len", format!("is {q_len}; it must be in 1..=i32::MAX")));
        }
        if window < 0 {
            return Err(invalid("the window W", format!("is {window}; use 0 for no window")));
        }
        let nqb = q_len.div_ceil(TOPK_BLOCK);
        let sel = DeviceTensor::zeros(self.gpu(), ElemType::I32, &[b, heads, nqb, topk])?;
        let total = b * heads * nqb;
        // Up to the limits each (b, hk) row's blocks are sorted once, and a
        // warp per query block takes the first picks of that order inside
        // its prefix; past them a warp per query block scans its prefix
        // topk - 1 times (ops.cu explains both).
        let order = if topk <= TOPK_PICK_MAX && nkb <= TOPK_ORDER_MAX {
            // Every entry is written by the sort.
            let order = DeviceTensor::uninit(self.gpu(), ElemType::I32, &[b, hkv, nkb])?;
            let order_args = [Ptr(block_scores.device_ptr()), I32(nkb as i32), Ptr(order.device_ptr())];
            let threads = nkb.next_power_of_two().clamp(32, 1024) as u32;
            self.launch("lacuna_topk_order", &order_args, (blocks_for(b * hkv, 1)?, 1, 1), threads, 0)?;
            Some(order)
        } else {
            None
        };
        let (entry, source) = match &order {
            Some(order) => ("lacuna_topk_pick", order.device_ptr()),
            None => ("lacuna_topk_blocks", block_scores.device_ptr()),
        };
        let args = [
            Ptr(source),
            I32(heads as i32),
            I32(hkv as i32),
            I32(nkb as i32),
            I32(q_len as i32),
            I32(nqb as i32),
            I32(topk as i32),
            I32(window),
            I64(total as i64),
            Ptr(sel.device_ptr()),
        ];
        self.launch(entry, &args, (blocks_for(total, 8)?, 1, 1), 256, 0)?;
        Ok(sel)
    }

    /// The SPARSEK operator (forward) on every row of `u` (f32 (..., n),
    /// contiguous): tau with Σ_j clamp(u_j − tau, 0, 1) = k, by bisection and
    /// an exact solve on the GPU. Returns (tau f32 (...), mask f32 u's shape)
    /// with mask_j = clamp(u_j − tau, 0, 1). Needs 0 < k ≤ n.
    pub fn sparsek(&self, u: &DeviceTensor, k: f32) -> OpResult<(DeviceTensor, DeviceTensor)> {
        check_dtype("the scores u", u, ElemType::F32)?;
        check_contiguous("the scores u", u)?;
        check_same_gpu("the scores u", u, self.gpu().ordinal())?;
        let shape = u.shape().to_vec();
        let Some((&n, rows_shape)) = shape.split_last() else {
            return Err(invalid("the scores u", "is a scalar; give rows of scores (..., n)"));
        };
        if n == 0 || n > i32::MAX as usize || shape.contains(&0) {
            return Err(invalid("the scores u", format!("has shape {shape:?}; every dimension must be at least 1")));
        }
        if !(k > 0.0 && k <= n as f32) {
            return Err(invalid("k", format!("is {k}; it must be in (0, n] with n = {n} scores per row")));
        }
        let rows: usize = rows_shape.iter().product();
        let tau_shape = if rows_shape.is_empty() { vec![1] } else { rows_shape.to_vec() };
        let tau = DeviceTensor::zeros(self.gpu(), ElemType::F32, &tau_shape)?;
        let mask = DeviceTensor::zeros(self.gpu(), ElemType::F32, &shape)?;
        let args = [Ptr(u.device_ptr()), I32(n as i32), F32(k), Ptr(tau.device_ptr()), Ptr(mask.device_ptr())];
        self.launch("lacuna_sparsek_tau", &args, (blocks_for(rows, 1)?, 1, 1), 256, 0)?;
        Ok((tau, mask))
    }
}
