//! CPU versions of the helper ops: the oracles the GPU tests compare
//! against, written for obviousness (plain loops), and bit-exact where the
//! GPU op promises it (LSH buckets, token and block scores, top-k: the same
//! sequential fused multiply-adds in the same order). Host slices only; no
//! CUDA here.

use super::BlockReduce;

/// Argmax with ties to the lower index (NaN never wins).
fn better(v: f32, i: usize, best: f32, best_i: usize) -> bool {
    v > best || (v == best && i < best_i)
}

/// A random LSH projection (D, buckets/2), row-major, standard normal
/// entries, reproducible from `seed` (splitmix64 + Box-Muller; the same on
/// every machine).
pub fn projection_from_seed(seed: u64, head_dim: usize, buckets: usize) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let n = head_dim * (buckets / 2);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // Uniform in (0, 1]: never 0, so the log is finite.
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// `argmax(concat(x·R, −x·R))` per row of `x` (rows × d, f32), R (d, buckets/2).
pub fn lsh_buckets(x: &[f32], d: usize, r: &[f32], buckets: usize) -> Vec<i32> {
    let m = buckets / 2;
    x.chunks(d)
        .map(|row| {
            let (mut best, mut best_i) = (f32::NEG_INFINITY, usize::MAX);
            for j in 0..m {
                let mut acc = 0f32;
                for c in 0..d {
                    acc = row[c].mul_add(r[c * m + j], acc);
                }
                if better(acc, j, best, best_i) {
                    (best, best_i) = (acc, j);
                }
                if better(-acc, j + m, best, best_i) {
                    (best, best_i) = (-acc, j + m);
                }
            }
            if best_i == usize::MAX {
                0
            } else {
                best_i as i32
            }
        })
        .collect()
}

/// Stable sort of each row (`n` values) of `buckets` by bucket (clamped into
/// [0, nb)): returns (perm, sorted buckets); `perm[i]` is the original index of
/// the i-th token in sorted order.
pub fn stable_sort_by_bucket(buckets: &[i32], n: usize, nb: usize) -> (Vec<i32>, Vec<i32>) {
    let mut perm = Vec::with_capacity(buckets.len());
    let mut sorted = Vec::with_capacity(buckets.len());
    for row in buckets.chunks(n.max(1)) {
        let clamp = |b: i32| b.clamp(0, nb as i32 - 1);
        let mut idx: Vec<usize> = (0..row.len()).collect();
        // `sort_by_key` is stable: equal buckets keep their original order.
        idx.sort_by_key(|&i| clamp(row[i]));
        perm.extend(idx.iter().map(|&i| i as i32));
        sorted.extend(idx.iter().map(|&i| clamp(row[i])));
    }
    (perm, sorted)
}

/// Stable compaction of each row (`n` flags) of `keep`: the original indices
/// of kept tokens, then `pad` up to `padded` entries per row; and the kept
/// count per row.
pub fn compact(keep: &[bool], n: usize, padded: usize, pad: i32) -> (Vec<i32>, Vec<i32>) {
    let mut pos = Vec::new();
    let mut counts = Vec::new();
    for row in keep.chunks(n.max(1)) {
        let kept: Vec<i32> = row.iter().enumerate().filter(|(_, &k)| k).map(|(i, _)| i as i32).collect();
        counts.push(kept.len() as i32);
        let mut r: Vec<i32> = kept.into_iter().take(padded).collect();
        r.resize(padded, pad);
        pos.extend(r);
    }
    (pos, counts)
}

/// `u = x · w` per row of `x` (rows × d), sequential fused multiply-adds.
pub fn token_scores(x: &[f32], d: usize, w: &[f32]) -> Vec<f32> {
    x.chunks(d)
        .map(|row| {
            let mut acc = 0f32;
            for c in 0..d {
                acc = row[c].mul_add(w[c], acc);
            }
            acc
        })
        .collect()
}

/// Per row of `u` (`n` scores), the max or mean over each 64-token block
/// (the last block may be shorter); NaN counts as −inf.
pub fn block_scores(u: &[f32], n: usize, reduce: BlockReduce) -> Vec<f32> {
    let mut out = Vec::new();
    for row in u.chunks(n.max(1)) {
        for blk in row.chunks(super::TOPK_BLOCK) {
            let vals = blk.iter().map(|&v| if v.is_nan() { f32::NEG_INFINITY } else { v });
            out.push(match reduce {
                BlockReduce::Max => vals.fold(f32::NEG_INFINITY, f32::max),
                BlockReduce::Mean => vals.fold(0f32, |a, v| a + v) / blk.len() as f32,
            });
        }
    }
    out
}

/// Causal top-k key-block selection, per (b, h, 64-query block): the
/// diagonal key block, then the best-scored earlier blocks (score
/// descending, index ascending) not already covered by the window for every
/// query of the block, sorted ascending, -1 padding. `scores` is
/// (B, kv_heads, nkb); the result (B, heads, ceil(nq/64), topk).
#[allow(clippy::too_many_arguments)]
pub fn topk_blocks(
    scores: &[f32],
    batch: usize,
    heads: usize,
    kv_heads: usize,
    nkb: usize,
    nq: usize,
    topk: usize,
    window: i32,
) -> Vec<i32> {
    let nqb = nq.div_ceil(super::TOPK_BLOCK);
    let group = heads / kv_heads;
    let mut out = Vec::with_capacity(batch * heads * nqb * topk);
    for b in 0..batch {
        for h in 0..heads {
            let s = &scores[(b * kv_heads + h / group) * nkb..][..nkb];
            for qb in 0..nqb {
                let last_q = (qb * 64 + 63).min(nq - 1);
                let diag = (last_q / 64).min(nkb - 1);
                let mut cands: Vec<usize> = (0..diag)
                    .filter(|&kb| !(window > 0 && (last_q as i64 - kb as i64 * 64) < window as i64))
                    .collect();
                let score = |kb: usize| if s[kb].is_nan() { f32::NEG_INFINITY } else { s[kb] };
                // Descending score, ascending index; total_cmp orders -0 below +0,
                // which the GPU treats as equal, so compare with partial_cmp.
                cands.sort_by(|&a, &c| {
                    score(c).partial_cmp(&score(a)).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&c))
                });
                let mut sel: Vec<i32> = std::iter::once(diag).chain(cands.into_iter().take(topk - 1)).map(|x| x as i32).collect();
                sel.sort_unstable();
                sel.resize(topk, -1);
                out.extend(sel);
            }
        }
    }
    out
}

/// The SPARSEK threshold per row of `u` (`n` scores): tau with
/// Σ clamp(u_j − tau, 0, 1) = k, found exactly from the sorted scores; and
/// the mask values clamp(u_j − tau, 0, 1). Needs 0 < k ≤ n.
pub fn sparsek_tau(u: &[f32], n: usize, k: f32) -> (Vec<f32>, Vec<f32>) {
    let mut taus = Vec::new();
    let mut mask = Vec::new();
    for row in u.chunks(n.max(1)) {
        let x: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let k = k as f64;
        let f = |tau: f64| x.iter().map(|&v| (v - tau).clamp(0.0, 1.0)).sum::<f64>();
        // f is continuous, non-increasing and piecewise linear with breakpoints
        // at u_j and u_j − 1: find the piece holding k, then solve on it.
        let mut bps: Vec<f64> = x.iter().flat_map(|&v| [v, v - 1.0]).collect();
        bps.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        bps.dedup();
        // Largest breakpoint with f(bp) >= k (exists: f(min − 1) = n ≥ k).
        let mut lo_i = 0;
        for (i, &bp) in bps.iter().enumerate() {
            if f(bp) >= k {
                lo_i = i;
            }
        }
        let lo = bps[lo_i];
        let tau = match bps.get(lo_i + 1) {
            Some(&hi) => {
                let (flo, fhi) = (f(lo), f(hi));
                if flo == fhi {
                    lo
                } else {
                    lo + (flo - k) / (flo - fhi) * (hi - lo)
                }
            }
            None => lo,
        };
        taus.push(tau as f32);
        mask.extend(x.iter().map(|&v| (v - tau).clamp(0.0, 1.0) as f32));
    }
    (taus, mask)
}

/// Rows of `x` (B, Hx, Nx, D) gathered per (b, h, i) of `index` (B, H, M):
/// row `index[b, h, i]` of head h / (H / Hx), zeros outside [0, Nx).
pub fn gather_rows(x: &[f32], shape: [usize; 4], index: &[i32], heads: usize, m: usize) -> Vec<f32> {
    let [batch, hx, nx, d] = shape;
    let group = heads / hx;
    let mut out = vec![0f32; batch * heads * m * d];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..m {
                let s = index[(b * heads + h) * m + i];
                if s >= 0 && (s as usize) < nx {
                    let src = &x[((b * hx + h / group) * nx + s as usize) * d..][..d];
                    out[((b * heads + h) * m + i) * d..][..d].copy_from_slice(src);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_is_reproducible_and_roughly_normal() {
        let a = projection_from_seed(7, 64, 16);
        assert_eq!(a.len(), 64 * 8);
        assert_eq!(a, projection_from_seed(7, 64, 16));
        assert_ne!(a, projection_from_seed(8, 64, 16));
        let big = projection_from_seed(1, 128, 64);
        let mean = big.iter().map(|&x| x as f64).sum::<f64>() / big.len() as f64;
        let var = big.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / big.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.1, "mean {mean} var {var}");
    }

    #[test]
    fn lsh_picks_the_signed_argmax_first_on_ties() {
        // d = 2, m = 2: R = identity. x = (3, -5): x·R = (3, -5), -x·R = (-3, 5) → bucket 3.
        let r = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(lsh_buckets(&[3.0, -5.0], 2, &r, 4), vec![3]);
        assert_eq!(lsh_buckets(&[3.0, 1.0], 2, &r, 4), vec![0]);
        // A tie between buckets 0 and 1 goes to 0; all-zero ties go to 0.
        assert_eq!(lsh_buckets(&[2.0, 2.0], 2, &r, 4), vec![0]);
        assert_eq!(lsh_buckets(&[0.0, 0.0], 2, &r, 4), vec![0]);
        // A NaN input poisons every projection (NaN · 0 is NaN): no value wins, bucket 0.
        assert_eq!(lsh_buckets(&[f32::NAN, 1.0], 2, &r, 4), vec![0]);
    }

    #[test]
    fn sort_is_stable_and_a_permutation() {
        let b = [2, 0, 2, 1, 0, 2, /* row 2 */ 1, 1, 0, 5, -3, 1];
        let (perm, sorted) = stable_sort_by_bucket(&b, 6, 4);
        assert_eq!(&perm[..6], &[1, 4, 3, 0, 2, 5]);
        assert_eq!(&sorted[..6], &[0, 0, 1, 2, 2, 2]);
        // 5 clamps to 3, -3 to 0.
        assert_eq!(&perm[6..], &[2, 4, 0, 1, 5, 3]);
        assert_eq!(&sorted[6..], &[0, 0, 1, 1, 1, 3]);
    }

    #[test]
    fn compaction_keeps_order_and_pads() {
        let keep = [true, false, true, true, false, false, /* row 2 */ false, true, false, false, false, false];
        let (pos, counts) = compact(&keep, 6, 4, -1);
        assert_eq!(counts, vec![3, 1]);
        assert_eq!(pos, vec![0, 2, 3, -1, 1, -1, -1, -1]);
    }

    #[test]
    fn block_scores_max_and_mean() {
        let mut u: Vec<f32> = (0..100).map(|i| i as f32).collect();
        u[3] = f32::NAN;
        assert_eq!(block_scores(&u, 100, BlockReduce::Max), vec![63.0, 99.0]);
        let mean = block_scores(&u[64..], 36, BlockReduce::Mean);
        assert_eq!(mean, vec![(64..100).sum::<i32>() as f32 / 36.0]);
    }

    #[test]
    fn topk_takes_the_diagonal_and_the_best_earlier_blocks() {
        // One head, 5 key blocks with scores; 5 query blocks.
        let s = [0.5, 3.0, 1.0, 3.0, 0.0];
        let sel = topk_blocks(&s, 1, 1, 1, 5, 320, 3, 0);
        let rows: Vec<&[i32]> = sel.chunks(3).collect();
        assert_eq!(rows[0], &[0, -1, -1]);
        assert_eq!(rows[1], &[0, 1, -1]);
        assert_eq!(rows[2], &[0, 1, 2]);
        // qb 3: candidates 0..3 scored 0.5, 3.0, 1.0 → 1 and 2, plus the diagonal 3.
        assert_eq!(rows[3], &[1, 2, 3]);
        // qb 4: 1 and 3 tie at 3.0 → both, plus 4.
        assert_eq!(rows[4], &[1, 3, 4]);
        // A window of 128 covers block 3 for every query of block 4 (319 - 192 < 128),
        // so block 3 is no candidate there and block 2 takes its place.
        let w = topk_blocks(&s, 1, 1, 1, 5, 320, 3, 128);
        assert_eq!(w.chunks(3).nth(4), Some(&[1, 2, 4][..]));
    }

    #[test]
    fn sparsek_tau_sums_to_k() {
        let u = [0.3f32, 2.0, -1.0, 0.9, 0.8, 1.5];
        for k in [0.5f32, 1.0, 2.0, 2.5, 4.0, 6.0] {
            let (tau, m) = sparsek_tau(&u, 6, k);
            let sum: f32 = m.iter().sum();
            assert!((sum - k).abs() < 1e-5, "k {k}: sum {sum} tau {tau:?}");
            assert!(m.iter().all(|&x| (0.0..=1.0).contains(&x)));
        }
        // k = 1 with one clear winner: tau = 1.0 (2.0 - 1), everything else 0.
        let (tau, m) = sparsek_tau(&[2.0, 0.5, 0.2], 3, 1.0);
        assert!((tau[0] - 1.0).abs() < 1e-6 || m == vec![1.0, 0.0, 0.0], "{tau:?} {m:?}");
    }

    #[test]
    fn gather_expands_gqa_heads_and_zero_pads() {
        // x: B=1, Hx=1, Nx=3, D=2.
        let x = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let idx = [2, 0, -1, /* head 1 */ 1, 7, 0];
        let g = gather_rows(&x, [1, 1, 3, 2], &idx, 2, 3);
        assert_eq!(g, vec![3.0, 3.0, 1.0, 1.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0]);
    }
}
