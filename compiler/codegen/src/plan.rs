//! The kernel plan: tile shape, warps, pipeline depth and target, chosen per
//! (pattern, head_dim, dtype, arch) and checked before any LLVM is built.
//! Everything derived from the plan (threads, shared bytes, register
//! residency of Q) is computed here and nowhere else.

use std::fmt;

use lacuna_ir::{Arch, Coord, Dtype, GridOrder, InputKind, KeyRange, KeySource, Node, NodeId, PatternIr};

use crate::error::{CodegenError, Result};

/// How one forward kernel is shaped. Build it with [`KernelPlan::for_pattern`],
/// then change fields if you know better; [`crate::compile`] re-checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPlan {
    pub head_dim: u32,
    pub dtype: Dtype,
    /// Query rows per CTA; a multiple of `16 * warps` (each warp owns `block_q / warps` rows).
    pub block_q: u32,
    /// Key rows per pipeline stage; a multiple of 16.
    pub block_k: u32,
    pub warps: u32,
    /// Depth of the K/V pipeline (2 = double buffering): TMA or cp.async.
    pub stages: u32,
    pub arch: Arch,
    /// Where key blocks come from: the pattern's closed form, or a scan of
    /// every key block. `Scan` is always correct and may be forced.
    pub key_source: KeySource,
    /// How CTAs map to query blocks and heads (see [`GridOrder`]): heaviest
    /// first across all heads where work grows with the query index
    /// (causal-like and scanned patterns), head-major elsewhere (perf log,
    /// v4.9: windows and MoA bands lose L2 reuse of K/V without it).
    pub grid: GridOrder,
    /// Which tensor-core instructions compute S = Q·Kᵀ and O += P·V.
    pub mma: Mma,
    /// Q, K, V rows are read, and O / LSE rows written, through per-(b, h)
    /// index arrays (`q_rows`, `kv_rows`; out-of-range entries are padding:
    /// zero rows, nothing written): the kernel runs on a regrouped sequence
    /// (SCFA's bucket-sorted or compacted tokens) with no gather or scatter
    /// pass around it.
    pub row_index: bool,
    /// How long the planner expects rows to be; it picked the tile shape
    /// from this. A caller that knows better at run time (SCFA's QK-drop:
    /// compacted rows stay causal on positions, thousands of keys long)
    /// re-shapes with [`KernelPlan::with_row_length`].
    pub rows: RowLength,
    /// Head rank r (see [`GridOrder`]) runs head `head_order[r]` (an i32 per
    /// head the launch passes) instead of head r: where heads do different
    /// amounts of work (MoA's per-head spans), the caller launches the heaviest heads first
    /// so the light ones fill the tail of the grid. Set by the planner when
    /// a bound of the closed-form key range reads a per-head input.
    pub head_order: bool,
    /// The predicate reads block lists (SparseK's top-k): its element test
    /// builds bit masks beside the scores, which takes registers the other
    /// patterns' tests do not (see [`Self::single_v_slot`]).
    pub block_lists: bool,
}

/// How many key blocks a query block visits, as the planner sees it from the
/// pattern's closed-form key range: `Long` when a span grows with the query
/// and is bounded below by a constant (causal-like: thousands of keys at
/// long lengths); `Short` for bounded spans (windows, MoA bands, sinks) and
/// for scanned patterns (hash buckets, QK-drop), whose rows are sparse in
/// the original token order. A caller that runs a scanned pattern on
/// regrouped rows may know they are long (see [`KernelPlan::with_row_length`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLength {
    Long,
    Short,
}

impl RowLength {
    pub fn name(self) -> &'static str {
        match self {
            RowLength::Long => "long",
            RowLength::Short => "short",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "long" => Some(RowLength::Long),
            "short" => Some(RowLength::Short),
            _ => None,
        }
    }
}

/// The tensor-core path of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mma {
    /// `mma.sync.m16n8k16` per warp, operands from padded shared rows by
    /// ldmatrix (sm_80 and later). Every head dim.
    Sync,
    /// `wgmma.mma_async` per warpgroup of 4 warps (sm_90a): S from Q and K
    /// in shared memory (128-byte swizzled rows), O += P·V with P from
    /// registers and V from shared memory. Head dims 64 and 128.
    Wgmma,
}

impl Mma {
    pub fn name(self) -> &'static str {
        match self {
            Mma::Sync => "sync",
            Mma::Wgmma => "wgmma",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sync" => Some(Mma::Sync),
            "wgmma" => Some(Mma::Wgmma),
            _ => None,
        }
    }

    /// Whether `arch` and `head_dim` can take this path.
    pub fn supports(self, arch: Arch, head_dim: u32) -> bool {
        match self {
            Mma::Sync => true,
            Mma::Wgmma => arch == Arch::Sm90a && (head_dim == 64 || head_dim == 128),
        }
    }
}

/// Bytes of one row of a 128-byte-swizzled tile: 64 halves. A tile of a wider
/// head dim is stored as `head_dim / 64` such column blocks, one after another.
pub const SWIZZLE_ROW_BYTES: u32 = 128;
/// Alignment of every swizzled tile: the swizzle pattern repeats every 8 rows
/// of 128 bytes and wgmma reads it relative to 1024-byte boundaries.
pub const SWIZZLE_ALIGN: u32 = 1024;
/// Bytes per row of staged tensor values beside a swizzled tile (4 i32 words).
pub const STAGED_ROW_BYTES: u32 = 16;

/// Bytes of padding after each shared-memory row: rows of `head_dim + 8`
/// halves make eight consecutive rows hit eight different 16-byte bank
/// groups, so ldmatrix (plain and .trans) is conflict free for every head dim
/// that is a multiple of 16.
pub const ROW_PAD_BYTES: u32 = 16;

/// Key lengths up to which long-row plans take short-row tiles
/// ([`KernelPlan::for_length`]), by head dim.
pub const SHORT_BELOW_D64: usize = 4096;
pub const SHORT_BELOW_D128: usize = 8192;
/// Key lengths up to which scanned long-row plans (QK-drop's compacted
/// rows, causal on positions) take short-row tiles, at both head dims.
pub const SHORT_BELOW_SCANNED: usize = 8192;
/// Key lengths up to which scanned long-row plans that read rows through
/// index arrays (the SCFA QK-drop pipeline's kernels: K and V by cp.async,
/// not TMA) take short-row tiles, at both head dims.
pub const SHORT_BELOW_ROW_INDEX: usize = 4096;
/// Key lengths up to which scanned D=128 plans take 64-key tiles instead of
/// 48 ([`KernelPlan::for_length`]).
pub const WIDE_KEYS_BELOW_D128: usize = 1536;
/// CTAs per SM from which [`KernelPlan::single_v_slot`] replaces the P·V
/// overlap (when it adds one).
pub const SINGLE_V_SLOT_CTAS: u32 = 4;
/// Key lengths up to which closed-form band plans (windows, MoA) run
/// heaviest first (rank-major) instead of head-major
/// ([`KernelPlan::for_length`]).
pub const RANK_MAJOR_BANDS_BELOW: usize = 4096;
/// Query rows per (b, h) up to which long-row plans take short-row tiles
/// ([`KernelPlan::for_queries`]): one short-row query block.
pub const SHORT_ROWS_BLOCK_Q: usize = 64;

/// Bytes of the shared-memory regions whose size depends on
/// [`KernelPlan::single_v_slot`] (see `KernelPlan::sizes`).
struct SharedSizes {
    q_tile: u32,
    stage: u32,
    v_and_staged: u32,
    key_list_rounds: u32,
    key_list: u32,
}

impl KernelPlan {
    /// Tuned defaults. Errors when `head_dim` is not a multiple of 16 in 16..=256.
    pub fn for_pattern(p: &PatternIr, head_dim: u32, dtype: Dtype, arch: Arch) -> Result<Self> {
        check_head_dim(head_dim)?;
        // Registers per thread ~ O (block_q/warps * head_dim / 32) + S (block_q/warps * block_k / 32)
        // + Q fragments; each choice keeps that under 255 so ptxas never spills.
        // Measured on an H200 (dense bf16, N = 1K..16K). D=64: 2 slabs per warp
        // (K/V fragments reused across slabs) ~290 TFLOP/s vs ~260 with one.
        // D=128: 2 slabs per warp too (one ldmatrix.x4 feeds 4 mma instead of 2;
        // the 1-slab, 8-warp kernel is shared-memory bound): 128x32, 4 warps,
        // 3 stages, with the softmax state in shared memory and O rescaled only
        // when a row maximum moves, fits 255 registers for every standard pattern.
        let mma = if Mma::Wgmma.supports(arch, head_dim) { Mma::Wgmma } else { Mma::Sync };
        let range = KeyRange::derive(p);
        let grows = work_grows_with_q(range.as_ref());
        let block_lists = p.inputs().iter().any(|d| matches!(d.kind, InputKind::BlockList { .. }));
        let grid = grid_order(grows, block_lists);
        // A block list picks a bounded number of key blocks per query block,
        // so its rows are short whatever causal bound surrounds it (SparseK's
        // top-16 blocks and 256-key window visit 15% of the causal blocks at
        // 16K): short-row tiles ran its attention 19-21% faster at 8K-32K
        // (H200, perf log "Block lists as bitmaps").
        let rows = if range.is_some() && grows && !block_lists { RowLength::Long } else { RowLength::Short };
        let head_order = range.as_ref().is_some_and(|r| work_varies_by_head(p, r));
        let key_source = match range {
            Some(r) => KeySource::Range(r.to_string()),
            None => KeySource::Scan,
        };
        let (block_q, block_k, warps, stages) = Self::default_shape(mma, head_dim, rows);
        let plan = KernelPlan { head_dim, dtype, block_q, block_k, warps, stages, arch, key_source, grid, mma, row_index: false, rows, head_order, block_lists };
        plan.validate()?;
        Ok(plan)
    }

    /// (block_q, block_k, warps, stages) the planner picks for a path.
    ///
    /// wgmma, measured on an H100 (docs/perf-log.md, "wgmma v1"): rows that
    /// grow with the query (causal-like) take two warpgroups per CTA and the
    /// largest blocks that keep S and O in registers (D=64: 128x64, 370
    /// TFLOP/s causal at 16K; D=128: 128x128, 437); short or scanned rows
    /// (windows, MoA bands, hash buckets, QK-drop) take one warpgroup and
    /// small tiles, so several CTAs share an SM and overlap one another's
    /// prologue, softmax and matrix phases, and boundary tiles waste less
    /// (D=64 hash-8 +21%, window +25% over the large tiles). Short rows are
    /// issue bound, and more CTAs beat deeper pipelines there (H100, 16K,
    /// "short-row occupancy" in the perf log): D=64 takes 2 stages, so 4
    /// CTAs fit instead of 3 (5-9% faster on every short pattern). D=128
    /// took 64x32 blocks for 3 CTAs per SM (v4.4), until the element test on
    /// the scores (v4.8) made 64x64 with 2 CTAs 5-8% faster than that on
    /// windows, MoA, hash-8 and QK-drop 50% (H200, 16K, same call). Scanned
    /// patterns at D=128 then took 64x48 blocks (v5.0): 69.7 KB of shared
    /// memory and ~156 registers fit 3 CTAs per SM, which hide one
    /// another's per-CTA work (the key scan, staged values), and the
    /// narrower blocks waste less at scattered edges: hash-32 -6%, hash-8
    /// -2.4%, QK-drop 50% -4%, QK-drop 80% -7% against 64x64 (H200, 16K,
    /// same call). Closed-form bands kept 64x64 then (MoA +3.5% on 64x48)
    /// and take 64x48 since K and V come by TMA (v6.2): with no copy work
    /// per thread the third CTA per SM pays for the extra loop trips
    /// (H200, same call: window -3.5% / -3.0% at 4K / 16K, MoA -2.5% /
    /// -0.2%). 64x32 (4 CTAs) is still slower for QK-drop (+6-36%) and
    /// mixed for hash (hash-32 -4 to -7%, hash-8 -1.6% / +1.7%).
    pub fn default_shape(mma: Mma, head_dim: u32, rows: RowLength) -> (u32, u32, u32, u32) {
        match (mma, head_dim, rows) {
            (Mma::Wgmma, 0..=64, RowLength::Long) => (128, 64, 8, 3),
            (Mma::Wgmma, _, RowLength::Long) => (128, 128, 8, 2),
            (Mma::Wgmma, 0..=64, RowLength::Short) => (64, 64, 4, 2),
            (Mma::Wgmma, _, RowLength::Short) => (64, 48, 4, 2),
            (Mma::Sync, 0..=64, _) => (128, 64, 4, 3),
            (Mma::Sync, 65..=128, _) => (128, 32, 4, 3),
            (Mma::Sync, _, _) => (64, 32, 4, 2),
        }
    }

    /// Switches to `mma` with that path's default tile shape (keeping the
    /// key source, query order and row length); `validate` then checks the
    /// combination.
    pub fn with_mma(mut self, mma: Mma) -> Self {
        (self.block_q, self.block_k, self.warps, self.stages) = Self::default_shape(mma, self.head_dim, self.rows);
        self.mma = mma;
        self
    }

    /// Re-shapes the tiles for rows of this length (the path's default shape
    /// for it). For scanned patterns whose rows the caller knows to be long
    /// at run time; query blocks of scanned patterns already run heaviest first.
    pub fn with_row_length(mut self, rows: RowLength) -> Self {
        (self.block_q, self.block_k, self.warps, self.stages) = Self::default_shape(self.mma, self.head_dim, rows);
        self.rows = rows;
        self
    }

    /// The plan for a problem of `kv_len` keys, on the wgmma path:
    /// - a long-row (causal-like) plan takes the short-row tiles where the
    ///   whole sequence is short enough that its rows are short too.
    ///   Measured on an H200 (perf log v5.4, dense causal, same call): D=64
    ///   short 64x64 tiles -11% / -9% at 2K / 4K, level at 8K, +11% at 16K;
    ///   D=128 64x48 tiles -10% / -13% / -9% at 2K / 4K / 8K, +10% at 16K.
    ///   Fewer query rows per CTA give a short problem more CTAs to spread
    ///   over the SMs, and 64x48 fits 3 CTAs per SM at D=128. A scanned
    ///   long-row plan (QK-drop on compacted rows) keeps the short tiles up
    ///   to [`SHORT_BELOW_SCANNED`] keys at both head dims: long tiles were
    ///   15-24% slower at D=64 up to 8K keys and level at 8K at D=128, and
    ///   21-22% faster at 16K keys at both (perf log v6.4). A scanned
    ///   row-index plan (the SCFA QK-drop pipeline's, K and V by cp.async)
    ///   crosses over earlier, at [`SHORT_BELOW_ROW_INDEX`] keys: short
    ///   tiles were 4-10% faster up to 3.3K compacted keys, long ones
    ///   2-19% faster from 4.2K (perf log, "the SCFA QK-drop pipeline on
    ///   short-row tiles", D=64);
    /// - a scanned D=128 plan (64x48 tiles) takes 64-key tiles up to
    ///   [`WIDE_KEYS_BELOW_D128`] keys: with a few dozen keys per row the
    ///   third CTA per SM buys less than a third fewer loop trips (perf log
    ///   v5.7: QK-drop's compacted rows, 819 keys -10%, 1,024 -14%; 3,277 keys
    ///   +8%, and hash at 4K +5%, so not beyond);
    /// - a closed-form band plan (windows, MoA: short rows, head-major so
    ///   that the CTAs in flight share their heads' K/V in L2) runs
    ///   heaviest first up to [`RANK_MAJOR_BANDS_BELOW`] keys. A short
    ///   problem is a few waves of CTAs, and head-major leaves whole-band
    ///   CTAs for the last wave where rank-major leaves the light first
    ///   blocks of every head. Measured on an H200 (perf log v5.11, same
    ///   call, B·H = 64 at D=64 and 32 at D=128): at 4K, MoA -11% at both
    ///   head dims, the 1024-key window -3.7% / -0.9%; at 8K mixed (-2.7%
    ///   to +4.5%), at 16K 1-49% slower (L2 misses). With many more heads
    ///   in flight than that, the 4K gain may shrink (more waves, a larger
    ///   K/V working set).
    ///
    /// Closed-form row-index plans (not measured) and every other plan are
    /// unchanged. [`KernelPlan::length_classes`] lists the plans this gives
    /// over all lengths.
    pub fn for_length(self, kv_len: usize) -> Self {
        let scanned = self.key_source == KeySource::Scan;
        if self.mma != Mma::Wgmma || (self.row_index && !scanned) {
            return self;
        }
        match self.rows {
            RowLength::Long => {
                let limit = match (&self.key_source, self.head_dim) {
                    (KeySource::Scan, _) if self.row_index => SHORT_BELOW_ROW_INDEX,
                    (KeySource::Scan, _) => SHORT_BELOW_SCANNED,
                    (_, 0..=64) => SHORT_BELOW_D64,
                    _ => SHORT_BELOW_D128,
                };
                if kv_len > limit {
                    return self;
                }
                // Then the short-row rules below (QK-drop's 819-key rows at
                // D=128 take 64-key tiles).
                self.with_row_length(RowLength::Short).for_length(kv_len)
            }
            RowLength::Short if self.block_k == 48 && scanned && kv_len <= WIDE_KEYS_BELOW_D128 => {
                KernelPlan { block_k: 64, ..self }
            }
            RowLength::Short if self.grid == GridOrder::HeadMajor && matches!(self.key_source, KeySource::Range(_)) && kv_len <= RANK_MAJOR_BANDS_BELOW => {
                KernelPlan { grid: GridOrder::RankMajor, ..self }
            }
            RowLength::Short => self,
        }
    }

    /// The plan for `q_len` query rows per (b, h), before
    /// [`KernelPlan::for_length`]: where they fit one short-row query block
    /// (decoding: a few new tokens over a long cache), long-row tiles would
    /// run 128 query rows for a handful, in half as many CTAs per SM, and
    /// split-KV spreads the keys over the GPU anyway; so such a launch takes
    /// short-row tiles at every key length. One query row over 16K / 32K
    /// keys: -14% / -20% at D=64, -1% / -2% at D=128 (H200, perf log,
    /// thirteenth session). wgmma plans without row indices only.
    pub fn for_queries(self, q_len: usize) -> Self {
        if self.mma == Mma::Wgmma && !self.row_index && self.rows == RowLength::Long && q_len <= SHORT_ROWS_BLOCK_Q {
            self.with_row_length(RowLength::Short)
        } else {
            self
        }
    }

    /// The distinct plans [`KernelPlan::for_length`] gives over every key
    /// length, in ascending order, each with the largest length it serves:
    /// `for_length(n)` is the plan of the first class whose bound is at
    /// least `n`. The last bound is `usize::MAX`, and a plan no length
    /// changes is one class. What a runtime compiles to pick a kernel per
    /// launch when the key length is known only then (SCFA's QK-drop learns
    /// it from the compaction's counts).
    pub fn length_classes(&self) -> Vec<(usize, KernelPlan)> {
        // for_length's rules are all `kv_len <= bound`, so a class can only
        // end at one of these bounds.
        let mut bounds = vec![
            SHORT_BELOW_D64,
            SHORT_BELOW_D128,
            SHORT_BELOW_SCANNED,
            SHORT_BELOW_ROW_INDEX,
            WIDE_KEYS_BELOW_D128,
            RANK_MAJOR_BANDS_BELOW,
        ];
        bounds.sort_unstable();
        bounds.dedup();
        let mut classes = Vec::new();
        for bound in bounds {
            let plan = self.clone().for_length(bound);
            if plan != self.clone().for_length(bound + 1) {
                classes.push((bound, plan));
            }
        }
        classes.push((usize::MAX, self.clone().for_length(usize::MAX)));
        classes
    }

    /// Whether tiles are stored 128-byte swizzled (wgmma) instead of in padded rows.
    pub fn swizzled(&self) -> bool {
        self.mma == Mma::Wgmma
    }

    pub fn threads(&self) -> u32 {
        self.warps * 32
    }

    /// m16 row slabs each warp owns.
    pub fn slabs_per_warp(&self) -> u32 {
        self.block_q / (16 * self.warps)
    }

    /// Q fragments stay in registers across key blocks when a warp owns one
    /// slab and they cost at most 32 registers; otherwise they are re-read from
    /// shared memory per key block (as FlashAttention-2 does). Holding 2 slabs
    /// of Q at D=64 made ptxas spill in the element-test path.
    pub fn q_in_registers(&self) -> bool {
        !self.swizzled() && self.slabs_per_warp() == 1 && self.head_dim <= 128
    }

    /// Bytes of one shared-memory row of `head_dim` halves, padded (mma.sync);
    /// for swizzled tiles, the bytes of a row inside one 64-column block.
    pub fn smem_row_bytes(&self) -> u32 {
        if self.swizzled() {
            SWIZZLE_ROW_BYTES
        } else {
            self.head_dim * 2 + ROW_PAD_BYTES
        }
    }

    /// Bytes of a tile of `rows` rows (swizzled: rounded up to whole 1024-byte units).
    pub fn tile_bytes(&self, rows: u32) -> u32 {
        if self.swizzled() {
            (rows * self.head_dim * 2).next_multiple_of(SWIZZLE_ALIGN)
        } else {
            rows * self.smem_row_bytes()
        }
    }

    /// Bytes of the staged tensor values of `rows` rows kept beside a swizzled
    /// tile (padded rows hold them in their padding: 0).
    pub fn staged_bytes(&self, rows: u32) -> u32 {
        if self.swizzled() {
            (rows * STAGED_ROW_BYTES).next_multiple_of(SWIZZLE_ALIGN)
        } else {
            0
        }
    }

    /// The Q tile and its staged query-tensor values (with
    /// [`Self::single_v_slot`] the values sit in [`Self::v_and_staged_bytes`]).
    pub fn q_tile_bytes(&self) -> u32 {
        self.sizes(self.single_v_slot()).q_tile
    }

    /// One pipeline stage: a K tile, a V tile, the K rows' staged values;
    /// with [`Self::single_v_slot`], the K tile alone.
    pub fn stage_bytes(&self) -> u32 {
        self.sizes(self.single_v_slot()).stage
    }

    /// With [`Self::single_v_slot`]: the V tile after the stages, then the
    /// staged values of the Q rows and of each stage's K rows, packed (not
    /// rounded up to the swizzle's 1024 bytes: nothing after them is a tile).
    pub fn v_and_staged_bytes(&self) -> u32 {
        self.sizes(self.single_v_slot()).v_and_staged
    }

    /// Rounds of one candidate per thread that make a chunk of the key-block
    /// list: at least 16K keys' worth of blocks per chunk (256 at block_k
    /// 64, 342 at 48), so a scan at that length classifies everything in
    /// one go rather than stopping mid-row to scan a second chunk. With
    /// [`Self::single_v_slot`], 2 rounds (256 blocks): the third round's 528
    /// bytes are what keeps a fourth CTA per SM out otherwise.
    pub fn key_list_rounds(&self) -> u32 {
        self.sizes(self.single_v_slot()).key_list_rounds
    }

    /// Candidate key blocks classified together (the list's capacity).
    pub fn key_chunk(&self) -> u32 {
        self.key_list_rounds() * self.threads()
    }

    /// The CTA's list of key blocks to visit (one i32 per candidate of a
    /// chunk and an end marker), one count per (round, warp) and the next
    /// chunk's first block.
    pub fn key_list_bytes(&self) -> u32 {
        self.sizes(self.single_v_slot()).key_list
    }

    /// The layout's sizes with or without [`Self::single_v_slot`] (which
    /// itself asks what each choice leaves room for, so it cannot be read
    /// from here).
    fn sizes(&self, single_v: bool) -> SharedSizes {
        let k_tile = self.tile_bytes(self.block_k);
        let rounds = (16384 / self.block_k.max(1)).div_ceil(self.threads()).max(1);
        let key_list_rounds = if single_v { rounds.min(2) } else { rounds };
        let key_list = (4 * (key_list_rounds * self.threads() + 1 + key_list_rounds * self.warps + 1)).next_multiple_of(16);
        if single_v {
            SharedSizes {
                q_tile: self.tile_bytes(self.block_q),
                stage: k_tile,
                v_and_staged: k_tile + (self.block_q + self.stages * self.block_k) * STAGED_ROW_BYTES,
                key_list_rounds,
                key_list,
            }
        } else {
            SharedSizes {
                q_tile: self.tile_bytes(self.block_q) + self.staged_bytes(self.block_q),
                stage: 2 * k_tile + self.staged_bytes(self.block_k),
                v_and_staged: 0,
                key_list_rounds,
                key_list,
            }
        }
    }

    /// The online-softmax state (row max and partial row sum of each of a
    /// thread's rows) lives in shared memory, one slot per thread, instead of
    /// in registers, when a warp owns two or more slabs at head dims above 64:
    /// there the O accumulators alone take 128+ registers and the 8 to 16
    /// state registers decide whether ptxas spills.
    pub fn softmax_state_in_shared(&self) -> bool {
        self.slabs_per_warp() >= 2 && self.head_dim > 64
    }

    /// The module also holds the split-KV entry and its combine kernel
    /// (`lower/forward/epilogue.rs`, `lower/combine.rs`): for launches with too few
    /// query blocks to fill the GPU (decoding, short problems), the runtime
    /// gives each query block's key blocks to several CTAs and merges their
    /// partial results. Not with row indices: those kernels serve SCFA's
    /// regrouped sequences, whose rows are the whole sequence.
    pub fn split_kv(&self) -> bool {
        !self.row_index
    }

    /// O is rescaled only when some row of a warp moves its reference
    /// maximum (a warp vote and a uniform branch) rather than after every key
    /// block, and a row's reference moves only when a block's maximum exceeds
    /// it by more than 2^8 (see `RESCALE_SLACK` in lower/forward.rs), so after
    /// a row's first blocks the rescale almost never runs. mma.sync: where O
    /// is large (the same cases as [`Self::softmax_state_in_shared`]; H200,
    /// D=128 causal +3%, and it keeps ptxas from spilling there; at D=64 the
    /// branch cost as much as the multiplies saved). wgmma: where O has more
    /// values per thread than S (head_dim > block_k, the D=128 short-row
    /// tiles): there the rescale was 64 multiplies per 16 scores and skipping
    /// it gained 2-4% (H100, 16K); where S is as large as O (D=128's 128x128
    /// tiles) the branch cost 1-4% (perf log, v4.5). Since P·V overlaps the
    /// next block's softmax (v5.0) the multiplies sit between that P·V's
    /// wait and the next issue, and the one-warpgroup D=64 tiles gain from
    /// skipping them: closed-form ranges (windows, MoA bands, short causal
    /// problems) 1.2-2.4% (H200, perf log v5.12); scanned patterns since
    /// v6.7 (hash -0.2% to -1.5%, QK-drop up to -2.4%; in v5.12, before
    /// the TMA copies freed registers, QK-drop spilled and hash-32 lost
    /// 1.7%), except with row indices: SCFA's regrouped hash kernels lost up
    /// to 3% with it (perf log v6.7).
    pub fn conditional_rescale(&self) -> bool {
        self.softmax_state_in_shared() || (self.mma == Mma::Wgmma && (self.head_dim > self.block_k || (self.block_q == 64 && (matches!(self.key_source, KeySource::Range(_)) || !self.row_index))))
    }

    /// Each block's O += P·V is issued in the next iteration, behind that
    /// block's S = Q·Kᵀ, and runs on the tensor cores while the next block's
    /// element test and softmax run (FlashAttention-3's intra-warpgroup
    /// overlap; without it the warpgroup waited for P·V at the end of every
    /// iteration: 8% of hash-32's D=128 stall samples, perf log v5.0). It
    /// costs the P registers of one more block and moves V's copy an
    /// iteration later (V of block j goes out with K of block j+1). Where:
    /// wgmma with one warpgroup and 2 stages (the short-row tiles), without
    /// row indices (their K and V copies share index entries), and where
    /// P·V is the longer product (head_dim > block_k: D=128 short rows,
    /// 2-5% faster on an H200; at D=64 it was 1-3% slower, with 4 CTAs per
    /// SM already overlapping one another and registers at the 128 limit).
    /// Not with [`Self::single_v_slot`], which takes its place where it
    /// fits one more CTA per SM.
    pub fn pv_overlap(&self) -> bool {
        self.overlap_shape() && !self.single_v_slot()
    }

    fn overlap_shape(&self) -> bool {
        self.mma == Mma::Wgmma && self.warps == 4 && self.stages == 2 && !self.row_index && self.head_dim > self.block_k
    }

    /// K tiles in the stages' slots and every block's V tile in one slot of
    /// its own (`v_and_staged_bytes`), instead of the P·V overlap, where that
    /// fits one more CTA per SM (D=128 64x48 tiles: 4 instead of 3; these
    /// kernels are latency bound, perf log "Hash-32 at D=128 under ncu").
    /// Block j's P·V runs in its own iteration (no overlap); V(j) goes out
    /// at the top of iteration j with K(j+1), on K(j+1)'s slot barrier,
    /// once the CTA barrier there says every warp's P·V(j-1) has finished
    /// reading the V slot, and iteration j waits for that barrier before
    /// its P·V. TMA plans only (the barrier carries the group). Measured
    /// on an H200 (perf log v6.6), 64x48 at D=128 going from 3 CTAs per SM
    /// to 4: hash -6% to -11%, QK-drop 50% -4% / -9%, the bands ±2.5%; but
    /// 64x64 going from 2 to 3 (QK-drop 80% at 4K): +17%. So only where it
    /// reaches [`SINGLE_V_SLOT_CTAS`]. Not for block lists: at the fourth
    /// CTA's 128 registers ptxas spilled the top-k kernel (60 bytes; 166
    /// registers at three CTAs).
    pub fn single_v_slot(&self) -> bool {
        if !self.overlap_shape() || !self.tma() || self.block_lists {
            return false;
        }
        let ctas = self.resident_ctas_with(true);
        ctas >= SINGLE_V_SLOT_CTAS && ctas > self.resident_ctas_with(false)
    }

    /// Registers per thread the CTA count is planned for: mma.sync 255;
    /// wgmma S, O and P per thread plus 16. The 16 on top of the fragments:
    /// the D=64 short-row kernels (64x64, S 32 + O 32 + P 16 registers) use
    /// 108-120 registers when ptxas may, and 96 without spilling when capped
    /// there for a fifth CTA per SM; the fifth CTA made every sparse pattern
    /// 2-5% faster (H200, perf log v5.2). The two-warpgroup 128x64 kernels
    /// estimate 96 and keep two CTAs (ptxas caps them at 128; the row-index
    /// QK-drop one uses 125-128). The D=128 64x48 ones estimate 116: ptxas
    /// fits them in 126 at four CTAs. Row-index kernels hold the next key
    /// block's index entries across the loop: 8 more, so the D=64 short ones
    /// run 4 CTAs per SM (at 5, capped at 96 registers, ptxas spilled the
    /// hash and top-k ones: 36 and 28 bytes; at 4 none spills).
    pub fn register_estimate(&self) -> u32 {
        let index_entries = if self.row_index { 8 } else { 0 };
        match self.mma {
            Mma::Sync => 255,
            Mma::Wgmma => self.block_k / 2 + self.head_dim / 2 + self.block_k / 4 + 16 + index_entries,
        }
    }

    /// CTAs per SM the kernel is built for (`.minnctapersm`; ptxas then caps
    /// registers at 64K / (threads · CTAs)): as many as the register
    /// estimate allows, never more than the shared memory of that many CTAs
    /// allows (each also holds the 1 KB the hardware reserves); mma.sync at
    /// most 2.
    pub fn resident_ctas(&self) -> u32 {
        self.resident_ctas_with(self.single_v_slot())
    }

    fn resident_ctas_with(&self, single_v: bool) -> u32 {
        let by_regs = 65536 / (self.threads() * self.register_estimate());
        let by_smem = Self::shared_per_sm(self.arch) / (self.shared_bytes_with(single_v) + Self::SHARED_RESERVED_PER_CTA);
        by_regs.min(by_smem).clamp(1, if self.mma == Mma::Sync { 2 } else { 2048 / self.threads() })
    }

    /// Q, K and V tiles are loaded by the Tensor Memory Accelerator: one
    /// thread issues a `cp.async.bulk.tensor` per 64-column block of each
    /// tile, described by a tensor map per tensor and launch (the runtime
    /// encodes them), and the tile lands in the 128-byte swizzle wgmma
    /// reads, with an mbarrier per stage (and one for Q) counting its bytes.
    /// Every other thread issues nothing: the cp.async path spent ~48
    /// instructions per warp per key block on copies and their addresses
    /// (perf log, "Where the per-visited misses come from"; v6.0 measured
    /// 3.5-7% on short rows, 14% on dense causal D=128). wgmma plans without
    /// row indices: TMA cannot gather rows through an index array (Hopper
    /// has no tiled gather).
    pub fn tma(&self) -> bool {
        self.mma == Mma::Wgmma && !self.row_index
    }

    /// Bytes of the mbarriers of [`Self::tma`]: one per stage, then Q's (8 each).
    pub fn barrier_bytes(&self) -> u32 {
        if self.tma() {
            (8 * (self.stages + 1)).next_multiple_of(16)
        } else {
            0
        }
    }

    /// Bytes of the softmax state slots (0 when it stays in registers).
    pub fn softmax_state_bytes(&self) -> u32 {
        if self.softmax_state_in_shared() {
            self.threads() * self.slabs_per_warp() * 4 * 4
        } else {
            0
        }
    }

    /// Dynamic shared memory the forward kernel needs (the manifest's `shared_bytes`).
    pub fn shared_bytes(&self) -> u32 {
        self.shared_bytes_with(self.single_v_slot())
    }

    fn shared_bytes_with(&self, single_v: bool) -> u32 {
        let z = self.sizes(single_v);
        z.q_tile + self.stages * z.stage + z.v_and_staged + z.key_list + self.softmax_state_bytes() + self.barrier_bytes()
    }

    /// Shared memory the hardware reserves for each CTA on an SM (outside
    /// what the CTA asks for).
    pub const SHARED_RESERVED_PER_CTA: u32 = 1024;

    /// Shared memory of one SM that its CTAs' requests and reservations share.
    pub fn shared_per_sm(arch: Arch) -> u32 {
        Self::shared_limit(arch) + Self::SHARED_RESERVED_PER_CTA
    }

    /// The most dynamic shared memory one block may use on `arch`.
    pub fn shared_limit(arch: Arch) -> u32 {
        match arch {
            Arch::Sm80 => 163 * 1024,
            Arch::Sm90a => 227 * 1024,
        }
    }

    /// Checks every constraint the lowering relies on.
    pub fn validate(&self) -> Result<()> {
        check_head_dim(self.head_dim)?;
        let bad = |reason: String| Err(CodegenError::InvalidPlan { reason });
        if !(1..=16).contains(&self.warps) {
            return bad(format!("warps = {}, use 1 to 16", self.warps));
        }
        if self.block_q == 0 || self.block_q % (16 * self.warps) != 0 {
            return bad(format!(
                "block_q = {} must be a positive multiple of 16 * warps = {}",
                self.block_q,
                16 * self.warps
            ));
        }
        if self.slabs_per_warp() > 4 {
            return bad(format!(
                "block_q / warps = {} rows per warp; at most 64 fit in registers, add warps",
                self.block_q / self.warps
            ));
        }
        if self.block_k == 0 || self.block_k % 16 != 0 || self.block_k > 256 {
            return bad(format!("block_k = {} must be a multiple of 16 from 16 to 256", self.block_k));
        }
        if !(2..=8).contains(&self.stages) {
            return bad(format!("stages = {}, use 2 to 8", self.stages));
        }
        if !self.mma.supports(self.arch, self.head_dim) {
            return bad(format!(
                "mma = {} needs sm_90a and head_dim 64 or 128 (got {}, head_dim {}); use mma = sync",
                self.mma.name(),
                self.arch.name(),
                self.head_dim
            ));
        }
        if self.mma == Mma::Wgmma && (self.warps % 4 != 0 || self.slabs_per_warp() != 1 || self.block_k % 16 != 0) {
            return bad(format!(
                "wgmma needs whole warpgroups with 16 rows per warp: warps = {} must be a multiple of 4 and block_q = 16 * warps (got block_q {})",
                self.warps, self.block_q
            ));
        }
        let (bytes, limit) = (self.shared_bytes(), Self::shared_limit(self.arch));
        if bytes > limit {
            return Err(CodegenError::SharedMemory { bytes, limit, arch: self.arch });
        }
        Ok(())
    }
}

/// Whether a query block's key range grows with its index: some span is
/// bounded above only by `q`-increasing bounds and below by none that grow.
/// Unknown (scan) counts as growing: the scanned standard patterns (QK-drop,
/// hash buckets) are causal on positions (H200, v4.9: heaviest first made
/// QK-drop 14-21% and hash-8 4-5% faster, hash-32 1-3% slower).
fn work_grows_with_q(range: Option<&KeyRange>) -> bool {
    let Some(r) = range else { return true };
    r.spans.iter().any(|s| !s.upper.is_empty() && s.upper.iter().all(|b| b.q_coef > 0) && s.lower.iter().all(|b| b.q_coef <= 0))
}

/// The grid order (perf log v4.9): heaviest first across all heads where
/// work grows with the query index, except where each query block reads
/// key blocks from all over its head's sequence (block lists: SparseK's
/// top-k). There, as for MoA's long bands, the CTAs in flight must share
/// their heads' K/V in L2, which only a head-major grid keeps together
/// (query-major, MoA ran 25-40% slower at 16K; top-k was not timed).
fn grid_order(grows: bool, block_lists: bool) -> GridOrder {
    if grows && !block_lists {
        GridOrder::RankMajor
    } else {
        GridOrder::HeadMajor
    }
}

/// Whether some bound of the key range reads a per-head input or the head
/// index: then heads visit different numbers of key blocks.
fn work_varies_by_head(p: &PatternIr, r: &KeyRange) -> bool {
    fn reads_head(p: &PatternIr, id: NodeId) -> bool {
        match p.node(id) {
            Node::Coord(c) => *c == Coord::H,
            Node::Input(i) => matches!(p.input(*i).kind, InputKind::HeadScalar(_)),
            Node::ConstI32(_) | Node::ConstF32(_) | Node::ConstBool(_) => false,
            Node::Unary(_, a) | Node::Cast(_, a) => reads_head(p, *a),
            Node::Binary(_, a, b) => reads_head(p, *a) || reads_head(p, *b),
            Node::Select(c, a, b) => reads_head(p, *c) || reads_head(p, *a) || reads_head(p, *b),
        }
    }
    r.spans.iter().flat_map(|s| s.lower.iter().chain(&s.upper)).flat_map(|b| &b.terms).any(|(_, t)| reads_head(p, *t))
}

fn check_head_dim(head_dim: u32) -> Result<()> {
    if head_dim == 0 || head_dim % 16 != 0 || head_dim > 256 {
        return Err(CodegenError::UnsupportedHeadDim { head_dim });
    }
    Ok(())
}

impl fmt::Display for KernelPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel plan: {} {}, head_dim {}", self.arch.name(), self.dtype.name(), self.head_dim)?;
        writeln!(f, "  tile: block_q {} x block_k {} (shaped for {} rows)", self.block_q, self.block_k, self.rows.name())?;
        writeln!(
            f,
            "  warps: {} ({} threads), {} m16 slab(s) per warp, Q fragments {}",
            self.warps,
            self.threads(),
            self.slabs_per_warp(),
            if self.swizzled() {
                "read by wgmma from shared memory"
            } else if self.q_in_registers() {
                "kept in registers"
            } else {
                "re-read from shared memory per key block"
            }
        )?;
        match self.mma {
            Mma::Sync => {
                writeln!(f, "  tensor cores: mma.sync m16n8k16 per warp, ldmatrix from shared")?;
                writeln!(f, "  pipeline: {} stages of K+V tiles, cp.async.cg 16 B, rows padded by {ROW_PAD_BYTES} B", self.stages)?;
            }
            Mma::Wgmma => {
                let groups = self.warps / 4;
                let plural = if groups == 1 { "" } else { "s" };
                writeln!(f, "  tensor cores: wgmma m64n{}k16 (S) and m64n{}k16 (O) per warpgroup, {groups} warpgroup{plural}", self.block_k, self.head_dim)?;
                let copy = if self.tma() { "TMA (one thread, tensor maps, an mbarrier per stage; Q too)" } else { "cp.async.cg 16 B" };
                if self.single_v_slot() {
                    writeln!(f, "  pipeline: {} stages of K tiles and one V slot (V of block j with K of block j+1), {copy}, 128-byte swizzled rows", self.stages)?;
                } else {
                    writeln!(f, "  pipeline: {} stages of K+V tiles, {copy}, 128-byte swizzled rows", self.stages)?;
                }
            }
        }
        writeln!(
            f,
            "  shared memory: {} bytes (Q {} + {} x {} {}{} + key list {}{}{}), {} CTAs per SM",
            self.shared_bytes(),
            self.q_tile_bytes(),
            self.stages,
            if self.single_v_slot() { "K" } else { "K/V" },
            self.stage_bytes(),
            if self.single_v_slot() { format!(" + V and staged values {}", self.v_and_staged_bytes()) } else { String::new() },
            self.key_list_bytes(),
            if self.softmax_state_in_shared() { format!(" + softmax state {}", self.softmax_state_bytes()) } else { String::new() },
            if self.tma() { format!(" + mbarriers {}", self.barrier_bytes()) } else { String::new() },
            self.resident_ctas()
        )?;
        if self.row_index {
            writeln!(f, "  rows: Q, K, V read and O, LSE written through q_rows / kv_rows indices")?;
        }
        if self.pv_overlap() {
            writeln!(f, "  overlap: O += P·V of each block runs during the next block's softmax")?;
        }
        writeln!(
            f,
            "  softmax: exp2 with the scale folded in (one FMA per score); O rescaled {}",
            if self.conditional_rescale() { "only when a row's max grows by more than 2^8 (warp vote)" } else { "after every key block" }
        )?;
        let why = match self.grid {
            GridOrder::HeadMajor => "neighbouring blocks share K/V in L2",
            GridOrder::HeaviestFirst | GridOrder::RankMajor => "heaviest first across all heads",
        };
        writeln!(f, "  grid: {} ({why})", self.grid.describe())?;
        if self.head_order {
            writeln!(f, "  heads: in the launch's head_order (heads do different work: heaviest first)")?;
        }
        if self.split_kv() {
            writeln!(f, "  split-KV: a second entry shares each query block's key blocks among kv_splits CTAs; a combine kernel merges them")?;
        }
        match &self.key_source {
            KeySource::Range(r) => writeln!(f, "  key source: closed form, {r}"),
            KeySource::Scan => writeln!(f, "  key source: scan of every key block"),
        }
    }
}
