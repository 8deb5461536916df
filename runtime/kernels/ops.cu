// Lacuna's helper ops for the seed methods (SCFA hash / QK-drop, SparseK,
// MoA): everything a method does around the attention kernel itself.
// Compiled at first use by NVRTC (runtime/src/ops/module.rs) for the device's
// compute capability; launched only through the typed wrappers in
// runtime/src/ops/, which check every shape before a launch.
//
// Conventions:
// - 16-bit floats (bf16, fp16) travel as raw `u16` bits; `is_f16` picks the
//   conversion. No CUDA headers are included (NVRTC may not ship them).
// - A "row" is one token's D values; row tensors are (B, H, N, D) with strides
//   in elements (head_dim stride 1); index tensors are contiguous (B, H, N).
// - Reductions whose result must match the CPU bit for bit (LSH projections,
//   token and block scores) are sequential per thread with fmaf, in the same
//   order as the CPU versions in runtime/src/ops/cpu.rs.

typedef unsigned short u16;
typedef long long i64;

#define FULL_MASK 0xffffffffu

// Inclusive prefix sum of `v` across the 32 lanes of a warp.
__device__ __forceinline__ int lacuna_warp_inclusive_scan(int v, int lane) {
    for (int off = 1; off < 32; off <<= 1) {
        const int up = __shfl_up_sync(FULL_MASK, v, off);
        if (lane >= off) v += up;
    }
    return v;
}
#define INT_MAX_ 2147483647

__device__ __forceinline__ float lacuna_to_f32(u16 bits, int is_f16) {
    if (is_f16) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
        return f;
    }
    return __uint_as_float(((unsigned)bits) << 16);
}

// (v, i) beats (bv, bi): larger value, then smaller index (argmax keeps the
// first maximum, like torch.argmax). NaN never wins.
__device__ __forceinline__ bool lacuna_better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

// ---------------------------------------------------------------------------
// SCFA hash: LSH buckets. bucket = argmax(concat(x·R, -x·R)), R is (D, M)
// row-major f32 with M = buckets / 2. Each thread owns LSH_TOKENS tokens
// (rows t and t + blockDim of the block's); the
// block's rows are staged in shared memory as their raw 16-bit values (half
// the bytes of f32; rows padded to an odd number of words so the per-thread
// row reads do not collide on banks) and converted as they are used. R passes
// through shared memory COLS columns at a time (4, 8 or 16: the fewest that
// cover M, so hash-8 does not multiply zero columns); each R value read from
// shared memory serves one fused multiply-add per token. Every column still
// sums over c in order with fmaf: bit-exact with the CPU.
// Four tokens per thread (so each R value read served 4 multiply-adds) ran
// 33% slower at D=64: at 96 registers and one warp per block, too few warps
// hid the shared-memory latency (perf log, LSH op).
// grid (ceil(N / (LSH_TOKENS * blockDim)), B * H);
// dynamic shared: LSH_TOKENS * blockDim rows of lacuna_lsh_pitch(D) u16 (rounded
// up to 16 bytes), then D * COLS floats.
// ---------------------------------------------------------------------------
#define LSH_LOADS 8
#define LSH_TOKENS 2

// u16 values per staged row: D rounded up to an odd number of 4-byte words.
__device__ __forceinline__ int lacuna_lsh_pitch(int d) {
    int words = (d + 1) / 2;
    if ((words & 1) == 0) words += 1;
    return 2 * words;
}

template <bool F16>
__device__ __forceinline__ float lacuna_lsh_f32(u16 bits) {
    if (F16) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
        return f;
    }
    return __uint_as_float(((unsigned)bits) << 16);
}

// This thread's TOK tokens against every column of R, COLS at a time;
// best / best_i: the running signed argmax of each token.
template <int COLS, bool F16, int TOK>
__device__ __forceinline__ void lacuna_lsh_project(
    const u16* __restrict__ xs, float* __restrict__ rt, int pitch, int d,
    const float* __restrict__ r, int m, float* best, int* best_i)
{
    const u16* row[TOK];
#pragma unroll
    for (int k = 0; k < TOK; ++k) row[k] = xs + (threadIdx.x + k * blockDim.x) * pitch;
    for (int j0 = 0; j0 < m; j0 += COLS) {
        __syncthreads();  // x staged (first tile); the previous tile consumed
        for (int e = threadIdx.x; e < d * COLS; e += blockDim.x) {
            const int c = e / COLS, u = e - c * COLS;
            rt[e] = j0 + u < m ? __ldg(r + (i64)c * m + j0 + u) : 0.0f;
        }
        __syncthreads();
        float a[TOK][COLS];
#pragma unroll
        for (int k = 0; k < TOK; ++k)
#pragma unroll
            for (int u = 0; u < COLS; ++u) a[k][u] = 0.0f;
        for (int c = 0; c < d; ++c) {
            float xv[TOK];
#pragma unroll
            for (int k = 0; k < TOK; ++k) xv[k] = lacuna_lsh_f32<F16>(row[k][c]);
#pragma unroll
            for (int q = 0; q < COLS / 4; ++q) {
                const float4 rv = *(const float4*)(rt + c * COLS + 4 * q);
#pragma unroll
                for (int k = 0; k < TOK; ++k) {
                    a[k][4 * q + 0] = fmaf(xv[k], rv.x, a[k][4 * q + 0]);
                    a[k][4 * q + 1] = fmaf(xv[k], rv.y, a[k][4 * q + 1]);
                    a[k][4 * q + 2] = fmaf(xv[k], rv.z, a[k][4 * q + 2]);
                    a[k][4 * q + 3] = fmaf(xv[k], rv.w, a[k][4 * q + 3]);
                }
            }
        }
        // Column j's better half: (v, j) when v >= 0 (a tie goes to the
        // lower index), (-v, j + m) when v < 0; NaN stays NaN and never
        // wins. The argmax over these equals the one over both halves.
#pragma unroll
        for (int u = 0; u < COLS; ++u) {
            const int j = j0 + u;
            if (j < m) {
#pragma unroll
                for (int k = 0; k < TOK; ++k) {
                    const float v = a[k][u];
                    const int i = v < 0.0f ? j + m : j;
                    const float av = fabsf(v);
                    if (lacuna_better(av, i, best[k], best_i[k])) { best[k] = av; best_i[k] = i; }
                }
            }
        }
    }
}

// `cols`: 4, 8 or 16, the host's choice; it sized the shared memory.
extern "C" __global__ void lacuna_lsh_bucket(
    const u16* __restrict__ x, i64 sb, i64 sh, i64 sn, int heads, int n, int d, int is_f16,
    const float* __restrict__ r, int m, int cols, int* __restrict__ out)
{
    extern __shared__ __align__(16) float smem[];
    const int bh = blockIdx.y;
    const int b = bh / heads, h = bh % heads;
    const int rows = LSH_TOKENS * blockDim.x;
    const int t0 = blockIdx.x * rows;
    const int pitch = lacuna_lsh_pitch(d);
    u16* xs = (u16*)smem;
    // The projection tile's float4 reads need 16-byte alignment: round up.
    float* rt = smem + ((rows * pitch / 2 + 3) & ~3);  // [d][cols]
    const u16* xbh = x + b * sb + h * sh;
    if (d % 8 == 0 && sn % 8 == 0 && ((unsigned long long)xbh & 15) == 0) {
        // 16-byte loads: 8 values per thread and step (2-byte loads ran the
        // staging at a tenth of the memory bandwidth), LSH_LOADS of them
        // issued before any is stored: with one load in flight per thread
        // the staging ran at ~0.8 TB/s (perf log, LSH op). Rows start on
        // 4-byte boundaries (pitch is even), so each lands as 4 words.
        const int per_row = d / 8;
        const int total = rows * per_row;
        for (int e0 = threadIdx.x; e0 < total; e0 += LSH_LOADS * blockDim.x) {
            uint4 v[LSH_LOADS];
#pragma unroll
            for (int k = 0; k < LSH_LOADS; ++k) {
                const int e = e0 + k * blockDim.x;
                const int t = e / per_row, c8 = e - t * per_row;
                const int tok = t0 + t;
                v[k] = e < total && tok < n ? __ldg((const uint4*)(xbh + (i64)tok * sn + c8 * 8)) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int k = 0; k < LSH_LOADS; ++k) {
                const int e = e0 + k * blockDim.x;
                if (e < total) {
                    const int t = e / per_row, c8 = e - t * per_row;
                    unsigned* w = (unsigned*)(xs + t * pitch + c8 * 8);
                    w[0] = v[k].x; w[1] = v[k].y; w[2] = v[k].z; w[3] = v[k].w;
                }
            }
        }
    } else {
        for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
            const int t = e / d, c = e - t * d;
            const int tok = t0 + t;
            xs[t * pitch + c] = tok < n ? xbh[(i64)tok * sn + c] : (u16)0;
        }
    }
    float best[LSH_TOKENS];
    int best_i[LSH_TOKENS];
#pragma unroll
    for (int k = 0; k < LSH_TOKENS; ++k) { best[k] = -__int_as_float(0x7f800000); best_i[k] = INT_MAX_; }
    if (is_f16) {
        if (cols == 4) lacuna_lsh_project<4, true, LSH_TOKENS>(xs, rt, pitch, d, r, m, best, best_i);
        else if (cols == 8) lacuna_lsh_project<8, true, LSH_TOKENS>(xs, rt, pitch, d, r, m, best, best_i);
        else lacuna_lsh_project<16, true, LSH_TOKENS>(xs, rt, pitch, d, r, m, best, best_i);
    } else {
        if (cols == 4) lacuna_lsh_project<4, false, LSH_TOKENS>(xs, rt, pitch, d, r, m, best, best_i);
        else if (cols == 8) lacuna_lsh_project<8, false, LSH_TOKENS>(xs, rt, pitch, d, r, m, best, best_i);
        else lacuna_lsh_project<16, false, LSH_TOKENS>(xs, rt, pitch, d, r, m, best, best_i);
    }
#pragma unroll
    for (int k = 0; k < LSH_TOKENS; ++k) {
        const int tok = t0 + threadIdx.x + k * blockDim.x;
        if (tok < n) out[(i64)bh * n + tok] = best_i[k] == INT_MAX_ ? 0 : best_i[k];
    }
}

// The same buckets with no staging, for rows of x on 16-byte boundaries
// (D a multiple of 8): a thread owns one token and reads its row 8 values
// (16 bytes) at a time straight from global memory, the next 8 loaded
// while these are used; shared memory holds only the projection tile,
// which every lane reads at the same address (a broadcast). 60 registers
// and 4-8 KB of shared memory per 128 threads, so an SM runs 32 warps
// where the staged kernel runs 20. Every column still sums over c in
// order with fmaf: bit-exact with the CPU. Faster only for one pass of 16
// columns (the host's LshLaunch says where it runs, and why).
// grid (ceil(N / blockDim), B * H); dynamic shared: D * COLS floats.
template <int COLS, bool F16>
__device__ __forceinline__ void lacuna_lsh_direct(
    const u16* __restrict__ x, i64 sb, i64 sh, i64 sn, int heads, int n, int d,
    const float* __restrict__ r, int m, int* __restrict__ out, float* rt)
{
    const int bh = blockIdx.y;
    const int b = bh / heads, h = bh % heads;
    const int tok = blockIdx.x * blockDim.x + threadIdx.x;
    const uint4* src = (const uint4*)(x + b * sb + h * sh + (i64)min(tok, n - 1) * sn);
    float best = -__int_as_float(0x7f800000);
    int best_i = INT_MAX_;
    for (int j0 = 0; j0 < m; j0 += COLS) {
        __syncthreads();  // the previous tile consumed
        for (int e = threadIdx.x; e < d * COLS; e += blockDim.x) {
            const int c = e / COLS, u = e - c * COLS;
            rt[e] = j0 + u < m ? __ldg(r + (i64)c * m + j0 + u) : 0.0f;
        }
        __syncthreads();
        float a[COLS];
#pragma unroll
        for (int u = 0; u < COLS; ++u) a[u] = 0.0f;
        uint4 next = __ldg(src);
        for (int c0 = 0; c0 < d; c0 += 8) {
            const uint4 v = next;
            if (c0 + 8 < d) next = __ldg(src + (c0 + 8) / 8);
            const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                const float xv = lacuna_lsh_f32<F16>((u16)((t & 1) ? w[t / 2] >> 16 : w[t / 2] & 0xffffu));
                const float* rc = rt + (c0 + t) * COLS;
#pragma unroll
                for (int q = 0; q < COLS / 4; ++q) {
                    const float4 rv = *(const float4*)(rc + 4 * q);
                    a[4 * q + 0] = fmaf(xv, rv.x, a[4 * q + 0]);
                    a[4 * q + 1] = fmaf(xv, rv.y, a[4 * q + 1]);
                    a[4 * q + 2] = fmaf(xv, rv.z, a[4 * q + 2]);
                    a[4 * q + 3] = fmaf(xv, rv.w, a[4 * q + 3]);
                }
            }
        }
        // As lacuna_lsh_project: column j's better half, ties to the lower index.
#pragma unroll
        for (int u = 0; u < COLS; ++u) {
            const int j = j0 + u;
            if (j < m) {
                const float v = a[u];
                const int i = v < 0.0f ? j + m : j;
                const float av = fabsf(v);
                if (lacuna_better(av, i, best, best_i)) { best = av; best_i = i; }
            }
        }
    }
    if (tok < n) out[(i64)bh * n + tok] = best_i == INT_MAX_ ? 0 : best_i;
}

// The host runs this kernel for 9 to 16 projection columns only, one pass
// of 16 (LshLaunch in ops/hash.rs); `cols` (16) is there so both LSH
// kernels take one argument list.
extern "C" __global__ void lacuna_lsh_bucket_direct(
    const u16* __restrict__ x, i64 sb, i64 sh, i64 sn, int heads, int n, int d, int is_f16,
    const float* __restrict__ r, int m, int cols, int* __restrict__ out)
{
    extern __shared__ __align__(16) float rt[];
    if (is_f16) lacuna_lsh_direct<16, true>(x, sb, sh, sn, heads, n, d, r, m, out, rt);
    else lacuna_lsh_direct<16, false>(x, sb, sh, sn, heads, n, d, r, m, out, rt);
}

// ---------------------------------------------------------------------------
// Stable counting sort of each (b, h) row of buckets in [0, nb) (values
// outside are clamped), in three passes so that long rows use many blocks:
// each row is cut into segments of `seg` tokens;
//   1. lacuna_bucket_hist: per (row, segment) bucket counts, stored
//      bucket-major: hist[row][bucket][segment];
//   2. lacuna_bucket_offsets: per row, an exclusive scan over that order, so
//      bucket b of segment s starts after all smaller buckets and after
//      bucket b of the earlier segments (this is what makes it stable);
//   3. lacuna_bucket_place: per (row, segment), tokens placed chunk by chunk
//      in index order; inside a chunk a token's rank among equal buckets
//      counts the earlier warps (per-warp counts in shared memory) and the
//      earlier lanes of its warp (__match_any_sync).
// Writes perm (perm[i] = original index of the i-th token in sorted order)
// and the sorted buckets.
// ---------------------------------------------------------------------------
#define SORT_THREADS 256
#define SORT_WARPS (SORT_THREADS / 32)

__device__ __forceinline__ int lacuna_bucket_of(const int* in, int i, int nb) {
    return min(max(in[i], 0), nb - 1);
}

// grid (nseg, rows), 256 threads; dynamic shared nb ints.
extern "C" __global__ void lacuna_bucket_hist(
    const int* __restrict__ buckets, int n, int nb, int seg, int* __restrict__ hist)
{
    extern __shared__ int cnt[];
    const int nseg = gridDim.x, s = blockIdx.x;
    const i64 row = blockIdx.y;
    const int* in = buckets + row * n;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) cnt[i] = 0;
    __syncthreads();
    const int lo = s * seg, hi = min(n, lo + seg);
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) atomicAdd(&cnt[lacuna_bucket_of(in, i, nb)], 1);
    __syncthreads();
    for (int i = threadIdx.x; i < nb; i += blockDim.x) hist[(row * nb + i) * nseg + s] = cnt[i];
}

// In-place exclusive scan of each row of `len` ints. One block of exactly
// 1024 threads per row.
extern "C" __global__ void lacuna_bucket_offsets(int* __restrict__ hist, int len)
{
    __shared__ int warp_sums[32];
    __shared__ int chunk_total;
    __shared__ int base;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int* h = hist + (i64)blockIdx.x * len;
    if (tid == 0) base = 0;
    __syncthreads();
    for (int c0 = 0; c0 < len; c0 += 1024) {
        const int i = c0 + tid;
        const int v = i < len ? h[i] : 0;
        const int incl = lacuna_warp_inclusive_scan(v, lane);
        if (lane == 31) warp_sums[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            const int w = warp_sums[lane];
            const int wi = lacuna_warp_inclusive_scan(w, lane);
            warp_sums[lane] = wi - w;
            if (lane == 31) chunk_total = wi;
        }
        __syncthreads();
        if (i < len) h[i] = base + warp_sums[warp] + incl - v;
        __syncthreads();
        if (tid == 0) base += chunk_total;
        __syncthreads();
    }
}

// grid (nseg, rows), exactly 256 threads; dynamic shared (1 + 8) * nb ints.
extern "C" __global__ void lacuna_bucket_place(
    const int* __restrict__ buckets, int n, int nb, int seg, const int* __restrict__ offsets,
    int* __restrict__ perm, int* __restrict__ sorted)
{
    extern __shared__ int sm[];
    int* base = sm;          // [nb]: next free slot per bucket
    int* wc = sm + nb;       // [SORT_WARPS][nb]: per-warp counts of the current chunk
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int nseg = gridDim.x, s = blockIdx.x;
    const i64 row = blockIdx.y;
    const int* in = buckets + row * n;
    int* po = perm + row * n;
    int* so = sorted + row * n;
    for (int i = tid; i < nb; i += SORT_THREADS) base[i] = offsets[(row * nb + i) * nseg + s];
    for (int i = tid; i < nb * SORT_WARPS; i += SORT_THREADS) wc[i] = 0;
    __syncthreads();
    const int lo = s * seg, hi = min(n, lo + seg);
    for (int c0 = lo; c0 < hi; c0 += SORT_THREADS) {
        const int i = c0 + tid;
        const bool valid = i < hi;
        const int bk = valid ? lacuna_bucket_of(in, i, nb) : -1;
        const unsigned peers = __match_any_sync(FULL_MASK, bk);
        const int rank = __popc(peers & ((1u << lane) - 1u));
        const bool leader = rank == 0;
        if (valid && leader) wc[warp * nb + bk] = __popc(peers);
        __syncthreads();
        if (valid) {
            int off = base[bk] + rank;
            for (int w = 0; w < warp; ++w) off += wc[w * nb + bk];
            po[off] = i;
            so[off] = bk;
        }
        __syncthreads();
        if (valid && leader) {
            atomicAdd(&base[bk], __popc(peers));
            wc[warp * nb + bk] = 0;
        }
        __syncthreads();
    }
}

// ---------------------------------------------------------------------------
// Gather rows: dst[b, h, i, :] = src[b, h / group, idx[b, h, i], :], a zero
// row where idx is outside [0, src_n) (padding). dst is contiguous
// (B, H, M, D). One thread per 16-byte chunk when `vec8` (D, the strides and
// both base addresses allow it), else one per value.
// grid ceil(B * H * M * chunks_per_row / threads_per_block).
// ---------------------------------------------------------------------------
extern "C" __global__ void lacuna_gather_rows(
    const u16* __restrict__ src, i64 sb, i64 sh, i64 sn, int src_n, int group,
    const int* __restrict__ idx, int heads, int m, int d, i64 rows, int vec8, u16* __restrict__ dst)
{
    // One thread per 16-byte chunk (or per value without vec8): a warp covers
    // several rows, so every lane moves data (one warp per row left 3/4 of
    // the lanes idle at D = 64 and ran at a quarter of the bandwidth).
    const int per_row = vec8 ? d / 8 : d;
    const i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 row = e / per_row;
    const int c = (int)(e - row * per_row);
    if (row >= rows) return;
    const i64 bh = row / m;
    const int b = (int)(bh / heads), h = (int)(bh % heads);
    const int s = idx[row];
    u16* o = dst + row * d;
    const bool pad = s < 0 || s >= src_n;
    const u16* in = src + b * sb + (i64)(h / group) * sh + (i64)s * sn;
    if (vec8) {
        ((uint4*)o)[c] = pad ? make_uint4(0, 0, 0, 0) : ((const uint4*)in)[c];
    } else {
        o[c] = pad ? (u16)0 : in[c];
    }
}

// ---------------------------------------------------------------------------
// Scatter rows back: for each (b, h, i) with p = idx[b, h, i] in [0, dst_n):
// dst[b, h, p, :] = src[b, h, i, :] and dst_lse[b, h, p] = src_lse[b, h, i].
// src is contiguous (B, H, M, D) and src_lse (B, H, M); dst is (B, H, dst_n, D)
// with strides, dst_lse contiguous (B, H, dst_n). Rows no index points at are
// left as they are (the caller pre-fills 0 and -inf).
// ---------------------------------------------------------------------------
extern "C" __global__ void lacuna_scatter_rows(
    const u16* __restrict__ src, const float* __restrict__ src_lse, const int* __restrict__ idx,
    int heads, int m, int d, i64 rows, int dst_n,
    u16* __restrict__ dst, i64 db, i64 dh, i64 dn, float* __restrict__ dst_lse, int vec8)
{
    // One thread per 16-byte chunk, as in lacuna_gather_rows.
    const int per_row = vec8 ? d / 8 : d;
    const i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 row = e / per_row;
    const int c = (int)(e - row * per_row);
    if (row >= rows) return;
    const i64 bh = row / m;
    const int b = (int)(bh / heads), h = (int)(bh % heads);
    const int p = idx[row];
    if (p < 0 || p >= dst_n) return;
    const u16* in = src + row * d;
    u16* o = dst + b * db + h * dh + (i64)p * dn;
    if (vec8) {
        ((uint4*)o)[c] = ((const uint4*)in)[c];
    } else {
        o[c] = in[c];
    }
    if (c == 0) dst_lse[bh * dst_n + p] = src_lse[row];
}

// ---------------------------------------------------------------------------
// Per-head i32 values (B, Hs, N) repeated for `group` consecutive heads into
// (B, Hs * group, N) (keys hashed or compacted per key/value head, handed to a
// kernel that takes per-query-head inputs).
// ---------------------------------------------------------------------------
extern "C" __global__ void lacuna_expand_heads(
    const int* __restrict__ src, int src_heads, int group, int n, i64 total, int* __restrict__ dst)
{
    const i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    const int heads = src_heads * group;
    const i64 bh = e / n;
    const int i = (int)(e - bh * n);
    const int b = (int)(bh / heads), h = (int)(bh % heads);
    dst[e] = src[((i64)b * src_heads + h / group) * n + i];
}

// ---------------------------------------------------------------------------
// SCFA QK-drop: keep masks (nonzero = keep), u8 or i32, contiguous (B, H, N).
// ---------------------------------------------------------------------------
__device__ __forceinline__ bool lacuna_kept(const void* keep, int is_u8, i64 at) {
    return is_u8 ? ((const unsigned char*)keep)[at] != 0 : ((const int*)keep)[at] != 0;
}

// counts[row] = kept tokens of the row. One block (any multiple of 32 threads) per row.
extern "C" __global__ void lacuna_keep_count(const void* __restrict__ keep, int is_u8, int n, int* __restrict__ counts)
{
    __shared__ int total;
    if (threadIdx.x == 0) total = 0;
    __syncthreads();
    const i64 row = blockIdx.x;
    int c = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) c += lacuna_kept(keep, is_u8, row * n + i) ? 1 : 0;
    for (int off = 16; off > 0; off >>= 1) c += __shfl_down_sync(FULL_MASK, c, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(&total, c);
    __syncthreads();
    if (threadIdx.x == 0) counts[row] = total;
}

// Stable compaction: pos[row, j] = original index of the j-th kept token,
// then `pad` up to m. One block of exactly 1024 threads per row; each thread
// takes KEEP_PER_THREAD consecutive tokens of a chunk of 1024 *
// KEEP_PER_THREAD, so a 4K-token row is one chunk (two barriers) instead of
// four (one token per thread: 16 barriers, and the compaction was a third of
// QK-drop's pipeline at 4K; perf log).
#define KEEP_PER_THREAD 4
extern "C" __global__ void lacuna_keep_compact(
    const void* __restrict__ keep, int is_u8, int n, int m, int pad, int* __restrict__ pos)
{
    __shared__ int warp_sums[32];
    __shared__ int chunk_total;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const i64 row = blockIdx.x;
    int* out = pos + row * m;
    int base = 0;  // the same in every thread: kept tokens of the chunks before
    for (int c0 = 0; c0 < n; c0 += 1024 * KEEP_PER_THREAD) {
        const int i0 = c0 + tid * KEEP_PER_THREAD;
        bool k[KEEP_PER_THREAD];
        int mine = 0;
#pragma unroll
        for (int u = 0; u < KEEP_PER_THREAD; ++u) {
            k[u] = i0 + u < n && lacuna_kept(keep, is_u8, row * n + i0 + u);
            mine += k[u] ? 1 : 0;
        }
        // Exclusive prefix of `mine` over the block: lanes, then warps.
        const int incl = lacuna_warp_inclusive_scan(mine, lane);
        if (lane == 31) warp_sums[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            const int v = warp_sums[lane];
            const int wincl = lacuna_warp_inclusive_scan(v, lane);
            warp_sums[lane] = wincl - v;
            if (lane == 31) chunk_total = wincl;
        }
        __syncthreads();
        int at = base + warp_sums[warp] + incl - mine;
#pragma unroll
        for (int u = 0; u < KEEP_PER_THREAD; ++u) {
            if (k[u]) {
                if (at < m) out[at] = i0 + u;
                ++at;
            }
        }
        base += chunk_total;
        // warp_sums and chunk_total are rewritten by the next chunk.
        __syncthreads();
    }
    for (int j = base + tid; j < m; j += 1024) out[j] = pad;
}

// ---------------------------------------------------------------------------
// SparseK scores.
// token scores: u[b, h, j] = x[b, h, j, :] · w (sequential fmaf), one thread
// per token; w (D f32) staged in shared memory (dynamic, D floats). A row
// on a 16-byte boundary is read 8 values per load, up to 8 loads in flight
// (2-byte loads, one value per load, ran this op at ~0.3 TB/s; perf log).
// ---------------------------------------------------------------------------
extern "C" __global__ void lacuna_token_scores(
    const u16* __restrict__ x, i64 sb, i64 sh, i64 sn, int heads, int n, int d, int is_f16,
    const float* __restrict__ w, float* __restrict__ out)
{
    extern __shared__ float ws[];
    for (int c = threadIdx.x; c < d; c += blockDim.x) ws[c] = w[c];
    __syncthreads();
    const int bh = blockIdx.y;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    const int b = bh / heads, h = bh % heads;
    const u16* row = x + b * sb + h * sh + (i64)j * sn;
    float acc = 0.0f;
    if (d % 8 == 0 && ((unsigned long long)row & 15) == 0) {
        for (int c0 = 0; c0 < d; c0 += 64) {
            uint4 v[8];
#pragma unroll
            for (int k = 0; k < 8; ++k) v[k] = c0 + 8 * k < d ? __ldg((const uint4*)(row + c0 + 8 * k)) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                if (c0 + 8 * k < d) {
                    const u16* h8 = (const u16*)&v[k];
#pragma unroll
                    for (int u = 0; u < 8; ++u) acc = fmaf(lacuna_to_f32(h8[u], is_f16), ws[c0 + 8 * k + u], acc);
                }
            }
        }
    } else {
        for (int c = 0; c < d; ++c) acc = fmaf(lacuna_to_f32(row[c], is_f16), ws[c], acc);
    }
    out[(i64)bh * n + j] = acc;
}

// Block scores: per (row, 64-token block) the max (mode 0) or the mean
// (mode 1, sequential f32 sum / count) of the token scores. NaN counts as -inf.
extern "C" __global__ void lacuna_block_scores(
    const float* __restrict__ u, int n, int nblocks, i64 total, int mode, float* __restrict__ out)
{
    const i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    const i64 row = e / nblocks;
    const int kb = (int)(e - row * nblocks);
    const float* s = u + row * n;
    const int lo = kb * 64, hi = min(lo + 64, n);
    const float ninf = -__int_as_float(0x7f800000);
    float acc = mode == 0 ? ninf : 0.0f;
    for (int j = lo; j < hi; ++j) {
        float v = s[j];
        if (v != v) v = ninf;
        acc = mode == 0 ? fmaxf(acc, v) : acc + v;
    }
    out[e] = mode == 0 ? acc : acc / (float)(hi - lo);
}

// The query block of top-k warp `wid` (b, h, query block, row-major):
// where its (b, kv head) row of block scores starts, its last query, and
// its diagonal key block. Both selection kernels start from this.
struct LacunaTopkBlock { i64 scores_row; int last_q; int diag; };
__device__ __forceinline__ LacunaTopkBlock lacuna_topk_block(i64 wid, int heads, int kv_heads, int nkb, int nq, int nqb) {
    const i64 bh = wid / nqb;
    const int qb = (int)(wid - bh * nqb);
    const int b = (int)(bh / heads), h = (int)(bh % heads);
    const int hk = h / (heads / kv_heads);
    const int last_q = min(qb * 64 + 63, nq - 1);
    return LacunaTopkBlock{((i64)b * kv_heads + hk) * nkb, last_q, min(last_q / 64, nkb - 1)};
}

// Causal top-k key-block selection, one warp per (b, h, query block of 64):
// the diagonal key block always, then the `k - 1` best-scored earlier key
// blocks (score descending, then index ascending; blocks the causal window W
// already covers for every query of the block are not candidates), sorted
// ascending, -1 padding. scores (B, Hkv, nkb); sel (B, H, nqb, k).
extern "C" __global__ void lacuna_topk_blocks(
    const float* __restrict__ scores, int heads, int kv_heads, int nkb, int nq, int nqb,
    int k, int window, i64 total, int* __restrict__ sel)
{
    const i64 wid = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (wid >= total) return;
    const LacunaTopkBlock q = lacuna_topk_block(wid, heads, kv_heads, nkb, nq, nqb);
    const float* s = scores + q.scores_row;
    int* out = sel + wid * k;
    const int last_q = q.last_q, diag = q.diag;
    const float ninf = -__int_as_float(0x7f800000);
    float pv = __int_as_float(0x7f800000);
    int pi = -1;
    int count = 0;
    if (lane == 0) out[0] = diag;
    count = 1;
    for (; count < k; ++count) {
        float bv = ninf;
        int bi = INT_MAX_;
        for (int kb = lane; kb < diag; kb += 32) {
            if (window > 0 && last_q - kb * 64 < window) continue;
            float v = s[kb];
            if (v != v) v = ninf;
            const bool below = v < pv || (v == pv && kb > pi);
            if (below && lacuna_better(v, kb, bv, bi)) { bv = v; bi = kb; }
        }
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, off);
            const int oi = __shfl_xor_sync(FULL_MASK, bi, off);
            if (lacuna_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        if (bi == INT_MAX_) break;
        if (lane == 0) out[count] = bi;
        pv = bv;
        pi = bi;
    }
    if (lane == 0) {
        for (int j = count; j < k; ++j) out[j] = -1;
        for (int a = 1; a < count; ++a) {
            const int v = out[a];
            int z = a - 1;
            while (z >= 0 && out[z] > v) { out[z + 1] = out[z]; --z; }
            out[z + 1] = v;
        }
    }
}

// The same selection for k <= 32 and at most TOPK_ORDER_MAX key blocks, in
// two launches that share work across query blocks: the scores do not
// depend on the query block, so every query block's k - 1 picks are the
// first k - 1 blocks of ONE order (score descending, then index ascending)
// that fall inside its candidate prefix [0, p) (causal blocks before the
// diagonal and before the window). lacuna_topk_order sorts each (b, hk)
// row once; lacuna_topk_pick walks that order 32 blocks at a time per
// query block, about 15 (nkb / p) / 32 loads of 32 instead of k - 1 scans
// of the whole prefix.
#define TOPK_ORDER_MAX 4096

// A u32 that sorts ascending as scores sort descending: NaN ranks as -inf
// and -0 as +0 (the CPU reference compares them equal; the index decides).
__device__ __forceinline__ unsigned lacuna_descending_key(float v) {
    if (v != v) v = -__int_as_float(0x7f800000);
    if (v == 0.0f) v = 0.0f;
    unsigned u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~u;
}

// One block per (b, hk) row of scores (B, Hkv, nkb), nkb <= TOPK_ORDER_MAX:
// order (B, Hkv, nkb) lists the row's key blocks best first. A bitonic sort
// of (key << 32 | index) in shared memory, padded to a power of two with
// keys that sort last.
extern "C" __global__ void lacuna_topk_order(const float* __restrict__ scores, int nkb, int* __restrict__ order)
{
    __shared__ unsigned long long keys[TOPK_ORDER_MAX];
    const i64 row = blockIdx.x;
    const float* s = scores + row * nkb;
    int n2 = 1;
    while (n2 < nkb) n2 <<= 1;
    for (int i = threadIdx.x; i < n2; i += blockDim.x)
        keys[i] = i < nkb ? ((unsigned long long)lacuna_descending_key(s[i]) << 32) | (unsigned)i : ~0ull;
    __syncthreads();
    for (int size = 2; size <= n2; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < n2; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    const unsigned long long a = keys[i], b = keys[j];
                    if ((a > b) == ((i & size) == 0)) { keys[i] = b; keys[j] = a; }
                }
            }
            __syncthreads();
        }
    }
    for (int i = threadIdx.x; i < nkb; i += blockDim.x) order[row * nkb + i] = (int)(keys[i] & 0xffffffffull);
}

// One warp per (b, h, query block of 64), k <= 32: lacuna_topk_blocks'
// output from the row's order. Lane l holds output entry l.
extern "C" __global__ void lacuna_topk_pick(
    const int* __restrict__ order, int heads, int kv_heads, int nkb, int nq, int nqb,
    int k, int window, i64 total, int* __restrict__ sel)
{
    __shared__ int picked[8][32];  // 8 warps: the host launches 256 threads
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 wid = (i64)blockIdx.x * (blockDim.x >> 5) + w;
    if (wid >= total) return;
    const LacunaTopkBlock q = lacuna_topk_block(wid, heads, kv_heads, nkb, nq, nqb);
    const int* ord = order + q.scores_row;
    const int last_q = q.last_q, diag = q.diag;
    // Candidates: kb < diag, and (with a window) last_q - 64 kb >= window.
    int p = diag;
    if (window > 0) p = last_q >= window ? min(p, (last_q - window) / 64 + 1) : 0;
    const int want = min(k - 1, p);
    if (lane == 0) picked[w][0] = diag;
    for (int c = 0, taken = 0; taken < want && c < nkb; c += 32) {
        const int j = c + lane;
        const int kb = j < nkb ? ord[j] : INT_MAX_;
        const bool hit = kb < p;
        const unsigned m = __ballot_sync(FULL_MASK, hit);
        const int at = taken + __popc(m & ((1u << lane) - 1));
        if (hit && at < want) picked[w][1 + at] = kb;
        taken += __popc(m);
    }
    __syncwarp();
    const int count = 1 + want;
    const int v = lane < count ? picked[w][lane] : INT_MAX_;
    // Ascending: each entry's place is how many entries are smaller (they are distinct).
    int place = 0;
    for (int o = 0; o < 32; ++o) place += __shfl_sync(FULL_MASK, v, o) < v;
    int* out = sel + wid * k;
    if (lane < count) out[place] = v;
    else if (lane < k) out[lane] = -1;
}

// ---------------------------------------------------------------------------
// SPARSEK operator (forward): per row of u (rows, n), tau with
// sum_j clamp(u_j - tau, 0, 1) = k, by bisection on [min u - 1, max u] and
// one exact solve on the linear piece found; mask[j] = clamp(u_j - tau, 0, 1).
// One block of 256 threads per row.
// ---------------------------------------------------------------------------
__device__ double lacuna_block_sum(double v, double* red) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(FULL_MASK, v, off);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double t = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) t += red[w];
    return t;
}

__device__ float lacuna_block_minmax(float v, int is_max, float* redf) {
    for (int off = 16; off > 0; off >>= 1) {
        const float o = __shfl_down_sync(FULL_MASK, v, off);
        v = is_max ? fmaxf(v, o) : fminf(v, o);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (lane == 0) redf[warp] = v;
    __syncthreads();
    float t = redf[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) t = is_max ? fmaxf(t, redf[w]) : fminf(t, redf[w]);
    return t;
}

extern "C" __global__ void lacuna_sparsek_tau(
    const float* __restrict__ u, int n, float k, float* __restrict__ tau_out, float* __restrict__ mask)
{
    __shared__ double red[32];
    __shared__ float redf[32];
    const i64 row = blockIdx.x;
    const float* x = u + row * n;
    const float inf = __int_as_float(0x7f800000);
    float mn = inf, mx = -inf;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        mn = fminf(mn, x[j]);
        mx = fmaxf(mx, x[j]);
    }
    mn = lacuna_block_minmax(mn, 0, redf);
    mx = lacuna_block_minmax(mx, 1, redf);
    double lo = (double)mn - 1.0, hi = (double)mx;
    for (int it = 0; it < 60; ++it) {
        const double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        double s = 0.0;
        for (int j = threadIdx.x; j < n; j += blockDim.x) s += fmin(fmax((double)x[j] - mid, 0.0), 1.0);
        s = lacuna_block_sum(s, red);
        if (s > (double)k) lo = mid; else hi = mid;
    }
    // Exact solve on the piece around hi: tokens at the cap, tokens in between.
    double c1 = 0.0, c0 = 0.0, s0 = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const double t = (double)x[j] - hi;
        if (t >= 1.0) c1 += 1.0;
        else if (t > 0.0) { c0 += 1.0; s0 += (double)x[j]; }
    }
    c1 = lacuna_block_sum(c1, red);
    c0 = lacuna_block_sum(c0, red);
    s0 = lacuna_block_sum(s0, red);
    double tau = hi;
    if (c0 > 0.0) {
        const double t = (s0 + c1 - (double)k) / c0;
        // Keep the solve only where it stays on the bisection's bracket.
        if (t >= lo - 1e-6 && t <= hi + 1e-6) tau = t;
    }
    if (threadIdx.x == 0) tau_out[row] = (float)tau;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        mask[row * n + j] = (float)fmin(fmax((double)x[j] - tau, 0.0), 1.0);
}
