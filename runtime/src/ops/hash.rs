//! SCFA hash ops: LSH buckets, the stable sort of tokens by bucket per
//! (b, h), and the row gather/scatter that move Q/K/V into sorted order and
//! the output back. Also used by QK-drop (gather/scatter with padding).

use super::module::blocks_for;
use super::{
    check_contiguous, check_dtype, check_index3, check_rows, check_same_gpu, check_shape, group_of, invalid, GpuOps,
    OpResult, MAX_BUCKETS,
};
use crate::tensor::{DeviceTensor, ElemType};
use crate::validate::KernelArg::{self, I32, I64, Ptr};

/// Tokens of one (b, h) in bucket order.
#[derive(Debug)]
pub struct BucketOrder {
    /// i32 (B, H, N): `perm[b, h, i]` is the ORIGINAL position of the i-th
    /// token in sorted order (the `q_pos` / `k_pos` a kernel takes, and the
    /// index that gathers rows into sorted order and scatters them back).
    pub perm: DeviceTensor,
    /// i32 (B, H, N): the buckets in sorted order (non-decreasing per row).
    pub buckets: DeviceTensor,
}

/// The bucket count must be even (R has buckets/2 columns) and at most 1024.
pub fn check_buckets(buckets: usize) -> OpResult<()> {
    if buckets < 2 || buckets % 2 != 0 || buckets > MAX_BUCKETS {
        return Err(invalid(
            "the number of hash buckets",
            format!("is {buckets}; it must be even and in 2..={MAX_BUCKETS} (R has buckets/2 columns)"),
        ));
    }
    Ok(())
}

fn vec8_ok(d: usize, strides: &[usize], ptrs: &[u64]) -> bool {
    d % 8 == 0 && strides.iter().all(|s| s % 8 == 0) && ptrs.iter().all(|p| p % 16 == 0)
}

/// How the LSH op is launched for head dim `d`, `m` = buckets/2 projection
/// columns, and whether every row of x starts on a 16-byte boundary
/// (runtime/kernels/ops.cu). Both kernels pass the projection through shared
/// memory `cols` columns at a time: 4, 8 or 16, the fewest that cover `m`.
/// - Aligned rows and 9 to 16 columns (hash-18 to hash-32): one pass of 16
///   columns in `lacuna_lsh_bucket_direct`, one token per thread reading its
///   row from global memory, shared memory for the projection tile only
///   (D=64: 4 KB per 128 threads). H200, against the staged kernel, same
///   call: hash-32's LSH -11% / -14% / -11% / -6% at 4K / 8K / 16K / 32K;
///   but hash-64 (two passes, the row read twice) +3% to +11% past 8K and
///   hash-2 to hash-8 (4 columns, where the loads dominate and the staged
///   kernel's are coalesced) up to +12%, so those stay staged.
/// - Otherwise `lacuna_lsh_bucket`: two tokens per thread, the block's rows
///   staged as raw 16-bit values, each padded to an odd number of 4-byte
///   words (`lacuna_lsh_pitch`), then the tile (8 columns at most above
///   D=128), under the 48 KB a launch gets without opting in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LshLaunch {
    entry: &'static str,
    /// Tokens per block.
    rows: usize,
    threads: usize,
    cols: usize,
    shared_bytes: usize,
}

impl LshLaunch {
    fn new(d: usize, m: usize, aligned_rows: bool) -> Self {
        if aligned_rows && (9..=16).contains(&m) {
            return LshLaunch { entry: "lacuna_lsh_bucket_direct", rows: 128, threads: 128, cols: 16, shared_bytes: d * 16 * 4 };
        }
        let cols = if m <= 4 { 4 } else if m <= 8 || d > 128 { 8 } else { 16 };
        let rows = if d <= 128 { 128 } else { 64 };
        let words = d.div_ceil(2) | 1;
        // The projection tile starts on a 16-byte boundary (float4 reads).
        let x_floats = (rows * words).next_multiple_of(4);
        LshLaunch { entry: "lacuna_lsh_bucket", rows, threads: rows / 2, cols, shared_bytes: (x_floats + d * cols) * 4 }
    }
}

impl GpuOps {
    /// Uploads an LSH projection R (D, buckets/2), row-major f32.
    pub fn upload_projection(&self, r: &[f32], head_dim: usize, buckets: usize) -> OpResult<DeviceTensor> {
        check_buckets(buckets)?;
        if r.len() != head_dim * (buckets / 2) {
            return Err(invalid(
                "the projection R",
                format!(
                    "has {} values; it must be (D, buckets/2) = ({head_dim}, {}) = {} values, row-major",
                    r.len(),
                    buckets / 2,
                    head_dim * (buckets / 2)
                ),
            ));
        }
        if r.iter().any(|x| !x.is_finite()) {
            return Err(invalid("the projection R", "holds a non-finite value"));
        }
        Ok(DeviceTensor::from_host_f32(self.gpu(), r, &[head_dim, buckets / 2])?)
    }

    /// LSH buckets of every row of `x` (B, H, N, D) bf16/fp16:
    /// `argmax(concat(x·R, −x·R))` with `r` f32 (D, buckets/2); ties go to the
    /// lower bucket. Returns i32 (B, H, N). Bit-exact with [`super::cpu::lsh_buckets`].
    pub fn lsh_buckets(&self, x: &DeviceTensor, r: &DeviceTensor, buckets: usize) -> OpResult<DeviceTensor> {
        let ([b, h, n, d], is_f16) = check_rows("x", x)?;
        check_buckets(buckets)?;
        let m = buckets / 2;
        check_dtype("the projection R", r, ElemType::F32)?;
        check_shape("the projection R", r, &[Some(d), Some(m)], "(D, buckets/2)")?;
        check_contiguous("the projection R", r)?;
        let ord = self.gpu().ordinal();
        check_same_gpu("x", x, ord)?;
        check_same_gpu("the projection R", r, ord)?;
        let out = DeviceTensor::zeros(self.gpu(), ElemType::I32, &[b, h, n])?;
        let st = x.strides();
        let aligned_rows = vec8_ok(d, &st[..3], &[x.device_ptr()]);
        let LshLaunch { entry, rows, threads, cols, shared_bytes } = LshLaunch::new(d, m, aligned_rows);
        let args = [
            Ptr(x.device_ptr()),
            I64(st[0] as i64),
            I64(st[1] as i64),
            I64(st[2] as i64),
            I32(h as i32),
            I32(n as i32),
            I32(d as i32),
            I32(is_f16 as i32),
            Ptr(r.device_ptr()),
            I32(m as i32),
            I32(cols as i32),
            Ptr(out.device_ptr()),
        ];
        let grid = (blocks_for(n, rows)?, (b * h) as u32, 1);
        self.launch(entry, &args, grid, threads as u32, shared_bytes as u32)?;
        Ok(out)
    }

    /// Stable sort of each (b, h) row of `buckets` (i32 (B, H, N), values in
    /// [0, nb); others are clamped) by bucket; ties keep their original order.
    /// A counting sort in three launches (segment histograms, their scan,
    /// placement), each row split over several blocks.
    pub fn sort_by_bucket(&self, buckets: &DeviceTensor, nb: usize) -> OpResult<BucketOrder> {
        let [b, h, n] = check_index3("buckets", buckets)?;
        check_same_gpu("buckets", buckets, self.gpu().ordinal())?;
        if nb == 0 || nb > MAX_BUCKETS {
            return Err(invalid("the number of buckets", format!("is {nb}; it must be in 1..={MAX_BUCKETS}")));
        }
        let rows = b * h;
        if rows > u16::MAX as usize {
            return Err(invalid("buckets", format!("have B·H = {rows}, above 65535 (a CUDA grid dimension)")));
        }
        // Segments of a row are sorted by separate blocks: enough of them to
        // fill the GPU twice, each a whole number of 256-token chunks.
        let target_blocks = 2 * self.gpu().sm_count().max(1) as usize;
        let seg = (n * rows).div_ceil(target_blocks).next_multiple_of(256).clamp(512, 16384);
        let nseg = n.div_ceil(seg);
        let hist_len = nb * nseg;
        let perm = DeviceTensor::zeros(self.gpu(), ElemType::I32, &[b, h, n])?;
        let sorted = DeviceTensor::zeros(self.gpu(), ElemType::I32, &[b, h, n])?;
        let hist = DeviceTensor::zeros(self.gpu(), ElemType::I32, &[rows, hist_len])?;
        let grid = (nseg as u32, rows as u32, 1);
        let src = Ptr(buckets.device_ptr());
        let hist_args = [src, I32(n as i32), I32(nb as i32), I32(seg as i32), Ptr(hist.device_ptr())];
        self.launch("lacuna_bucket_hist", &hist_args, grid, 256, (nb * 4) as u32)?;
        let scan_args = [Ptr(hist.device_ptr()), I32(hist_len as i32)];
        self.launch("lacuna_bucket_offsets", &scan_args, (blocks_for(rows, 1)?, 1, 1), 1024, 0)?;
        let place_args = [
            src,
            I32(n as i32),
            I32(nb as i32),
            I32(seg as i32),
            Ptr(hist.device_ptr()),
            Ptr(perm.device_ptr()),
            Ptr(sorted.device_ptr()),
        ];
        self.launch("lacuna_bucket_place", &place_args, grid, 256, (9 * nb * 4) as u32)?;
        Ok(BucketOrder { perm, buckets: sorted })
    }

    /// Rows of `x` (B, Hx, Nx, D) in the order of `index` (i32 (B, H, M), H a
    /// multiple of Hx): result row (b, h, i) is row `index[b, h, i]` of head
    /// h / (H / Hx); an index outside [0, Nx) (padding) gives a zero row.
    /// Returns a contiguous (B, H, M, D) tensor of x's dtype.
    pub fn gather_rows(&self, x: &DeviceTensor, index: &DeviceTensor) -> OpResult<DeviceTensor> {
        let ([b, hx, nx, d], _) = check_rows("the rows to gather", x)?;
        let [bi, hi, m] = check_index3("the gather index", index)?;
        let ord = self.gpu().ordinal();
        check_same_gpu("the rows to gather", x, ord)?;
        check_same_gpu("the gather index", index, ord)?;
        if bi != b {
            return Err(invalid("the gather index", format!("has batch {bi}, the rows have {b}")));
        }
        let group = group_of("the gather index", hi, hx)?;
        let out = DeviceTensor::zeros(self.gpu(), x.dtype(), &[b, hi, m, d])?;
        let st = x.strides();
        let vec8 = vec8_ok(d, &st[..3], &[x.device_ptr(), out.device_ptr()]);
        let rows = b * hi * m;
        let args: [KernelArg; 13] = [
            Ptr(x.device_ptr()),
            I64(st[0] as i64),
            I64(st[1] as i64),
            I64(st[2] as i64),
            I32(nx as i32),
            I32(group as i32),
            Ptr(index.device_ptr()),
            I32(hi as i32),
            I32(m as i32),
            I32(d as i32),
            I64(rows as i64),
            I32(vec8 as i32),
            Ptr(out.device_ptr()),
        ];
        // One thread per 16-byte chunk (per value without vec8).
        let chunks = rows * if vec8 { d / 8 } else { d };
        self.launch("lacuna_gather_rows", &args, (blocks_for(chunks, 256)?, 1, 1), 256, 0)?;
        Ok(out)
    }

    /// Scatters rows back: for every (b, h, i) with p = `index[b, h, i]` in
    /// [0, N): `dst[b, h, p] = src[b, h, i]` and `dst_lse[b, h, p] =
    /// src_lse[b, h, i]`. `src` contiguous (B, H, M, D), `src_lse` f32
    /// (B, H, M), `dst` (B, H, N, D) of src's dtype (any strides, head_dim
    /// stride 1), `dst_lse` f32 (B, H, N) contiguous. Rows no index points at
    /// are left untouched.
    pub fn scatter_rows(
        &self,
        src: &DeviceTensor,
        src_lse: &DeviceTensor,
        index: &DeviceTensor,
        dst: &mut DeviceTensor,
        dst_lse: &mut DeviceTensor,
    ) -> OpResult<()> {
        let ([b, h, m, d], _) = check_rows("the rows to scatter", src)?;
        check_contiguous("the rows to scatter", src)?;
        check_index3("the scatter index", index)?;
        check_shape("the scatter index", index, &[Some(b), Some(h), Some(m)], "(B, H, M) like the rows")?;
        check_dtype("the lse to scatter", src_lse, ElemType::F32)?;
        check_shape("the lse to scatter", src_lse, &[Some(b), Some(h), Some(m)], "(B, H, M)")?;
        check_contiguous("the lse to scatter", src_lse)?;
        let ([_, _, n, _], _) = check_rows("the scatter output", dst)?;
        check_dtype("the scatter output", dst, src.dtype())?;
        check_shape("the scatter output", dst, &[Some(b), Some(h), None, Some(d)], "(B, H, N, D)")?;
        check_dtype("the output lse", dst_lse, ElemType::F32)?;
        check_shape("the output lse", dst_lse, &[Some(b), Some(h), Some(n)], "(B, H, N)")?;
        check_contiguous("the output lse", dst_lse)?;
        let ord = self.gpu().ordinal();
        for (name, t) in [("the rows to scatter", src), ("the lse to scatter", src_lse), ("the scatter index", index)] {
            check_same_gpu(name, t, ord)?;
        }
        check_same_gpu("the scatter output", dst, ord)?;
        check_same_gpu("the output lse", dst_lse, ord)?;
        let st = dst.strides().to_vec();
        let vec8 = vec8_ok(d, &st[..3], &[src.device_ptr(), dst.device_ptr()]);
        let rows = b * h * m;
        let args = [
            Ptr(src.device_ptr()),
            Ptr(src_lse.device_ptr()),
            Ptr(index.device_ptr()),
            I32(h as i32),
            I32(m as i32),
            I32(d as i32),
            I64(rows as i64),
            I32(n as i32),
            Ptr(dst.device_ptr()),
            I64(st[0] as i64),
            I64(st[1] as i64),
            I64(st[2] as i64),
            Ptr(dst_lse.device_ptr()),
            I32(vec8 as i32),
        ];
        let chunks = rows * if vec8 { d / 8 } else { d };
        self.launch("lacuna_scatter_rows", &args, (blocks_for(chunks, 256)?, 1, 1), 256, 0)
    }

    /// i32 (B, Hs, N) with each head repeated `group` times → (B, Hs·group, N).
    pub fn expand_heads(&self, t: &DeviceTensor, group: usize) -> OpResult<DeviceTensor> {
        let [b, hs, n] = check_index3("the per-head values", t)?;
        check_same_gpu("the per-head values", t, self.gpu().ordinal())?;
        if group == 0 {
            return Err(invalid("the head group", "is 0"));
        }
        let out = DeviceTensor::zeros(self.gpu(), ElemType::I32, &[b, hs * group, n])?;
        let total = b * hs * group * n;
        let args = [
            Ptr(t.device_ptr()),
            I32(hs as i32),
            I32(group as i32),
            I32(n as i32),
            I64(total as i64),
            Ptr(out.device_ptr()),
        ];
        self.launch("lacuna_expand_heads", &args, (blocks_for(total, 256)?, 1, 1), 256, 0)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsh_launches_fit_the_default_shared_memory() {
        for d in 1..=super::super::MAX_HEAD_DIM {
            for m in [1, 2, 4, 5, 8, 9, 16, 17, 512] {
                for aligned in [false, true] {
                    let l = LshLaunch::new(d, m, aligned);
                    assert!(l.shared_bytes <= 48 * 1024, "D={d} m={m}: {l:?}");
                    let direct = l.entry == "lacuna_lsh_bucket_direct";
                    assert_eq!(direct, aligned && (9..=16).contains(&m), "D={d} m={m}: {l:?}");
                    assert_eq!(l.rows, if direct { l.threads } else { 2 * l.threads }, "D={d} m={m}: {l:?}");
                    assert!(l.cols >= m.min(8) && [4, 8, 16].contains(&l.cols), "D={d} m={m}: {l:?}");
                }
            }
        }
        assert_eq!(
            LshLaunch::new(64, 16, false),
            LshLaunch { entry: "lacuna_lsh_bucket", rows: 128, threads: 64, cols: 16, shared_bytes: (128 * 33 + 64 * 16) * 4 }
        );
        assert_eq!(LshLaunch::new(64, 16, true), LshLaunch { entry: "lacuna_lsh_bucket_direct", rows: 128, threads: 128, cols: 16, shared_bytes: 64 * 16 * 4 });
        assert_eq!(LshLaunch::new(64, 4, false).cols, 4, "hash-8 multiplies no zero columns");
        assert_eq!(LshLaunch::new(64, 4, true), LshLaunch::new(64, 4, false), "hash-8 stays staged");
        assert_eq!(LshLaunch::new(64, 32, true), LshLaunch::new(64, 32, false), "hash-64 stays staged");
    }

}
