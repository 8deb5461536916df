//! The kernel manifest: what a generated kernel expects at launch, written by
//! the code generator and checked by the runtime. It is the contract between
//! `lacuna-codegen` (LLVM side) and `lacuna-runtime` (CUDA side), so it lives
//! here, where both can see it without linking the other.

use std::fmt;

use crate::types::InputKind;

/// Element type of Q, K, V and O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    Bf16,
    F16,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "fp16",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bf16" => Some(Dtype::Bf16),
            "fp16" | "f16" => Some(Dtype::F16),
            _ => None,
        }
    }
}

/// GPU target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    /// Ampere and later: mma.sync, ldmatrix, cp.async.
    Sm80,
    /// Hopper with arch-specific features (wgmma, setmaxnreg).
    Sm90a,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90a => "sm_90a",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sm_80" | "sm80" => Some(Arch::Sm80),
            "sm_90a" | "sm90a" | "sm_90" => Some(Arch::Sm90a),
            _ => None,
        }
    }
}

/// How the forward kernel finds the key blocks of its query block.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeySource {
    /// Closed-form spans from [`crate::KeyRange`], printed.
    Range(String),
    /// Walk every key block and classify it from the block summaries.
    Scan,
}

/// How the forward kernel's grid maps CTAs to query blocks, heads and
/// batches. The hardware hands out CTAs x-fastest, so this decides which
/// CTAs run together and which run last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GridOrder {
    /// Grid (query blocks, H, B), query block x in order: the CTAs running
    /// together are neighbouring query blocks of one or two heads, which
    /// share that head's K/V in L2. For patterns whose work per query block
    /// is flat (windows, bands). The default: manifests written before
    /// this field launched this way.
    #[default]
    HeadMajor,
    /// Grid (B·H, query blocks), x = b·H + head rank, row y = query block
    /// `q_blocks - 1 - y`: heaviest first like `RankMajor`, with batch and
    /// head folded into x, which cost every CTA two integer divisions by H
    /// to unfold (perf log v5.3). Kernels generated before 2026-11-29 were
    /// planned this way; the runtime still launches them.
    HeaviestFirst,
    /// Grid (H, B, query blocks), x = head rank, y = batch, z = query block
    /// `q_blocks - 1 - z`: the hardware hands CTAs out x-fastest, so every
    /// head's heaviest blocks start before any lighter ones and the grid's
    /// tail is made of the light blocks. For patterns whose work grows with
    /// the query index (causal-like, scans).
    RankMajor,
}

impl GridOrder {
    /// The launch grid for `q_blocks` query blocks, `heads` heads and `batch`.
    pub fn grid(self, q_blocks: u32, heads: u32, batch: u32) -> (u32, u32, u32) {
        match self {
            GridOrder::HeadMajor => (q_blocks, heads, batch),
            GridOrder::HeaviestFirst => (batch * heads, q_blocks, 1),
            GridOrder::RankMajor => (heads, batch, q_blocks),
        }
    }

    /// What CTA `cta` of the launch grid works on, as the generated kernel
    /// decodes it (codegen's `cta_coords` emits this arithmetic): (query
    /// block, batch, head rank). The contract between the launch and the
    /// kernel, tested here.
    pub fn work_of(self, cta: (u32, u32, u32), q_blocks: u32, heads: u32) -> (u32, u32, u32) {
        let heads = heads.max(1);
        match self {
            GridOrder::HeadMajor => (cta.0, cta.2, cta.1),
            GridOrder::HeaviestFirst => (q_blocks - 1 - cta.1, cta.0 / heads, cta.0 % heads),
            GridOrder::RankMajor => (q_blocks - 1 - cta.2, cta.1, cta.0),
        }
    }

    /// The grid's shape and query-block order, for the plan and manifest text.
    pub fn describe(self) -> &'static str {
        match self {
            GridOrder::HeadMajor => "(query blocks, H, B), query blocks in order",
            GridOrder::HeaviestFirst => "(B·H, query blocks), query blocks last first",
            GridOrder::RankMajor => "(H, B, query blocks), query blocks last first",
        }
    }

    /// The name `lacuna compile --grid` takes.
    pub fn name(self) -> &'static str {
        match self {
            GridOrder::HeadMajor => "head-major",
            GridOrder::HeaviestFirst => "heaviest-first",
            GridOrder::RankMajor => "rank-major",
        }
    }

    /// Every order, for parsing and tests.
    pub const ALL: [GridOrder; 3] = [GridOrder::HeadMajor, GridOrder::HeaviestFirst, GridOrder::RankMajor];

    /// Whether the grid drains query blocks heaviest first across all heads.
    pub fn heaviest_first(self) -> bool {
        matches!(self, GridOrder::HeaviestFirst | GridOrder::RankMajor)
    }

    pub fn parse(s: &str) -> Option<GridOrder> {
        Self::ALL.into_iter().find(|g| g.name() == s)
    }
}

/// One kernel parameter after the fixed ones, in order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KernelParam {
    /// A pattern input: its name and kind. Tensors are passed as two pointers
    /// (the `(B, H, N)` values, then the `(B, H, nblocks, 2)` per-block min/max
    /// made by the summary kernel); head scalars as a pointer to `(H,)`;
    /// launch scalars by value; block lists as a pointer then the i32 width.
    Input { name: String, kind: InputKind },
}

/// Everything the runtime needs to launch a generated forward kernel.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelManifest {
    /// PTX entry name of the forward kernel.
    pub entry: String,
    /// PTX entry name of the per-block min/max summary kernel (in the same module).
    pub summary_entry: String,
    pub pattern: String,
    pub ir_hash: u64,
    pub head_dim: u32,
    pub dtype: Dtype,
    pub arch: Arch,
    pub block_q: u32,
    pub block_k: u32,
    pub threads: u32,
    pub shared_bytes: u32,
    pub key_source: KeySource,
    pub params: Vec<KernelParam>,
    /// The kernel reads Q/K/V rows, and writes O/LSE rows, through index
    /// arrays (`q_rows`, `kv_rows`: i32 (B, H, M)): it works on a regrouped
    /// sequence of M rows without a gather or scatter pass.
    #[serde(default)]
    pub row_index: bool,
    /// The kernel takes a `head_order` array (i32 per query head, a
    /// permutation of 0..H) after everything else: head rank r (grid row
    /// y, x with `GridOrder::RankMajor`, x mod H with `HeaviestFirst`) runs head
    /// `head_order[r]`. Pass heads heaviest first.
    #[serde(default)]
    pub head_order: bool,
    #[serde(default)]
    pub grid: GridOrder,
    /// Tensor inputs summarised with bucket runs (the pattern joins on a
    /// bucket; `summary.rs`), made by a second summary kernel. None for
    /// every other pattern, and in manifests written before runs existed.
    #[serde(default)]
    pub bucket_runs: Option<BucketRunSummaries>,
    /// PTX entry name of the kernel that makes every tensor input's summary
    /// in one launch (in the same module): params, per tensor input in input
    /// order, (values, [its side's bucket input when `bucket_runs` lists it,]
    /// summary), then i32 (rows, q_len, kv_len, block_q, block_k); grid (any
    /// x, rows, tensor inputs). None for patterns without tensor inputs, and
    /// in manifests written before it (one `summary_entry` launch per input).
    #[serde(default)]
    pub summaries_entry: Option<String>,
    /// The kernel loads Q, K and V by TMA and takes three tensor maps after
    /// everything else (`q_tensor_map`, `k_tensor_map`, `v_tensor_map`:
    /// 128-byte `CUtensorMap`s by value). Each is 4-D, innermost first:
    /// (head_dim, length, heads, batch) over that tensor's (B, H, N, D)
    /// view, byte strides of its n, h, b dimensions, box (64, block_q for Q
    /// or block_k for K and V, 1, 1), 128-byte swizzle, zero fill out of
    /// bounds.
    #[serde(default)]
    pub tensor_maps: bool,
    /// Launch the forward kernel right behind `summaries_entry` with
    /// Hopper's programmatic dependent launch (the stream attribute
    /// `PROGRAMMATIC_STREAM_SERIALIZATION`): it runs its prologue while the
    /// summary grid finishes, and waits for the summaries
    /// (`griddepcontrol.wait`) before its key scan reads them. Only when
    /// the summary launch is the one right before it on the stream; an
    /// ordinary launch is also correct (the wait is then a no-op).
    #[serde(default)]
    pub dependent_launch: bool,
    /// One per block-list input, in input order: the kernel keeps a bitmap
    /// of each list's rows in dynamic shared memory after `shared_bytes`,
    /// sized by the launch's key length ([`KernelManifest::shared_bytes_for`]).
    /// Empty for patterns without block lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list_bitmaps: Vec<ListBitmap>,
    /// The split-KV entry and its combine kernel, in the same module: for
    /// launches whose query blocks are too few to fill the GPU. None in
    /// modules without them (row indices) and in manifests written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_kv: Option<SplitKvEntries>,
}

/// The split-KV entry point and the kernel that merges its splits.
///
/// `entry` takes the forward entry's parameters, then `kv_splits` (i32),
/// `o_partial` and `lse_partial` (f32 buffers of `[kv_splits, B, H, Nq,
/// head_dim]` and `[kv_splits, B, H, Nq]`); its grid is the forward grid
/// with the batch axis over `B · kv_splits`. Split s of a query block
/// visits an even share of its candidate key blocks and writes O
/// normalised by its own softmax sum, and its log-sum-exp in base 2 (-inf
/// and zeros for rows it saw nothing of).
///
/// `combine_entry` takes `(o_partial, lse_partial, o, lse, o_stride_b,
/// o_stride_h, o_stride_n: i64, batch, heads, q_len, kv_splits: i32)` and
/// writes O (the kernel's dtype, strided) and LSE (natural log, contiguous
/// (B, H, Nq)) like the forward entry, a warp per output row: grid x =
/// ceil(B·H·Nq / `combine_rows_per_cta`), `32 · combine_rows_per_cta`
/// threads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitKvEntries {
    pub entry: String,
    pub combine_entry: String,
    pub combine_rows_per_cta: u32,
    /// Launch the combine kernel right behind the split entry with
    /// programmatic dependent launch (sm_90a): it waits for the split
    /// grid before reading, so an ordinary launch is also correct.
    #[serde(default)]
    pub combine_dependent: bool,
}

/// The shared-memory bitmap of one block-list input: for each of the
/// `rows` list rows a CTA's query tile can span, bit `j` of word `j / 32`
/// is set when key list-block `j` is listed. A row takes
/// [`list_bitmap_words`] words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListBitmap {
    /// Keys per list block (the input's `Blocks<block>`).
    pub block: u32,
    /// List rows per CTA (query list-blocks a query tile can overlap).
    pub rows: u32,
}

/// i32 words of one list row's bitmap at key length `kv_len`: a bit per key
/// list-block, plus one zero word so a 64-bit read at the last word stays
/// inside the row. The kernel computes the same (codegen's `predicate.rs`).
pub fn list_bitmap_words(kv_len: usize, block: u32) -> usize {
    kv_len.div_ceil(block.max(1) as usize).div_ceil(32) + 1
}

/// The summaries with bucket runs: each listed input's summary is
/// `(B, H, nblocks, 6)` i32 ([`crate::summary::RUN_WORDS`]), made by `entry`
/// from the input and its side's bucket input.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketRunSummaries {
    /// PTX entry name of the run summary kernel (in the same module).
    pub entry: String,
    /// The query-side and key-side bucket inputs.
    pub query_bucket: String,
    pub key_bucket: String,
    /// The inputs summarised with runs, in input order.
    pub inputs: Vec<String>,
}

impl BucketRunSummaries {
    /// The bucket input `input`'s runs are taken over, if it has runs.
    pub fn bucket_for(&self, input: &str, kind: InputKind) -> Option<&str> {
        let bucket = match kind {
            InputKind::QueryTensor => self.query_bucket.as_str(),
            _ => self.key_bucket.as_str(),
        };
        self.inputs.iter().any(|i| i == input).then_some(bucket)
    }
}

impl fmt::Display for KernelManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {} (pattern {}, ir hash {:016x})", self.entry, self.pattern, self.ir_hash)?;
        writeln!(f, "  target {} {} head_dim {}", self.arch.name(), self.dtype.name(), self.head_dim)?;
        writeln!(f, "  tile {} x {}, {} threads, {} bytes shared", self.block_q, self.block_k, self.threads, self.shared_bytes)?;
        match &self.key_source {
            KeySource::Range(r) => writeln!(f, "  key blocks: closed form, {r}")?,
            KeySource::Scan => writeln!(f, "  key blocks: scan, classified from block summaries")?,
        }
        for p in &self.params {
            let KernelParam::Input { name, kind } = p;
            writeln!(f, "  input {name}: {kind}")?;
        }
        if self.row_index {
            writeln!(f, "  rows: through q_rows (B, H, Nq) and kv_rows (B, H, Nk) indices into Q, K, V, O, LSE")?;
        }
        if self.head_order {
            writeln!(f, "  heads: launched in the order of head_order (H), heaviest first")?;
        }
        writeln!(f, "  grid: {}", self.grid.describe())?;
        if self.tensor_maps {
            writeln!(
                f,
                "  Q, K, V: loaded by TMA through q_tensor_map, k_tensor_map, v_tensor_map (boxes of 64 columns x {} / {} rows, 128-byte swizzle)",
                self.block_q, self.block_k
            )?;
        }
        if let Some(r) = &self.bucket_runs {
            writeln!(
                f,
                "  bucket runs: {} summarised per run of {} / {} (summary kernel {})",
                r.inputs.join(", "),
                r.query_bucket,
                r.key_bucket,
                r.entry
            )?;
        }
        match &self.summaries_entry {
            Some(all) => writeln!(f, "  summary kernels {all} (every tensor input, one launch), {}", self.summary_entry)?,
            None => writeln!(f, "  summary kernel {}", self.summary_entry)?,
        }
        if self.dependent_launch {
            writeln!(f, "  launch: programmatically dependent on the summary launch (prologue overlaps it; griddepcontrol.wait before the key scan)")?;
        }
        if let Some(sp) = &self.split_kv {
            writeln!(f, "  split-KV: entry {} (kv_splits CTAs per query block, partial O and LSE in f32), combined by {}", sp.entry, sp.combine_entry)?;
        }
        for b in &self.list_bitmaps {
            writeln!(
                f,
                "  block list: a bitmap of {} list row(s) in shared memory after the {} bytes, a bit per {}-key block (ceil(Nk / {}) bits, sized at launch)",
                b.rows, self.shared_bytes, b.block, b.block
            )?;
        }
        Ok(())
    }
}

/// The first line of a self-describing PTX file: `// lacuna-manifest: {json}`.
const HEADER: &str = "// lacuna-manifest: ";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("this PTX has no `{HEADER}` line; produce it with `lacuna compile --emit ptx` (or `CompiledKernel::ptx_with_manifest`)")]
    Missing,
    #[error("the PTX's manifest line is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl KernelManifest {
    /// Dynamic shared memory of a launch with `kv_len` keys: `shared_bytes`
    /// plus the block-list bitmaps, which grow with the key length.
    pub fn shared_bytes_for(&self, kv_len: usize) -> usize {
        let bitmaps: usize = self.list_bitmaps.iter().map(|b| 4 * b.rows as usize * list_bitmap_words(kv_len, b.block)).sum();
        self.shared_bytes as usize + bitmaps
    }

    /// Prepends the manifest to PTX text, so one file carries both.
    pub fn attach_to_ptx(&self, ptx: &str) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{HEADER}{json}\n{ptx}")
    }

    /// Reads the manifest back from PTX made by [`KernelManifest::attach_to_ptx`].
    pub fn from_ptx(ptx: &str) -> Result<Self, ManifestError> {
        let line = ptx.lines().find_map(|l| l.strip_prefix(HEADER)).ok_or(ManifestError::Missing)?;
        Ok(serde_json::from_str(line)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_bitmaps_grow_the_launch_shared_memory_with_the_keys() {
        let mut m = manifest(GridOrder::HeadMajor);
        assert_eq!(m.shared_bytes_for(1 << 20), m.shared_bytes as usize, "no block lists, no bitmaps");
        m.list_bitmaps = vec![ListBitmap { block: 64, rows: 2 }];
        // 4096 keys: 64 list blocks, two words and the pad word per row.
        assert_eq!(m.shared_bytes_for(4096), m.shared_bytes as usize + 4 * 2 * 3);
        assert_eq!(m.shared_bytes_for(4097), m.shared_bytes as usize + 4 * 2 * 4);
        assert_eq!(list_bitmap_words(1, 64), 2);
        assert_eq!(list_bitmap_words(32 * 128, 128), 2);
        m.list_bitmaps.push(ListBitmap { block: 128, rows: 1 });
        assert_eq!(m.shared_bytes_for(4096), m.shared_bytes as usize + 4 * 2 * 3 + 4 * 2);
        let text = m.to_string();
        assert!(text.contains("block list: a bitmap of 2 list row(s) in shared memory"), "{text}");
    }

    fn manifest(grid: GridOrder) -> KernelManifest {
        KernelManifest {
            entry: "fwd".into(),
            summary_entry: "block_minmax".into(),
            pattern: "Causal".into(),
            ir_hash: 7,
            head_dim: 64,
            dtype: Dtype::Bf16,
            arch: Arch::Sm90a,
            block_q: 64,
            block_k: 64,
            threads: 128,
            shared_bytes: 1024,
            key_source: KeySource::Scan,
            params: Vec::new(),
            row_index: false,
            head_order: false,
            grid,
            bucket_runs: None,
            summaries_entry: None,
            tensor_maps: false,
            dependent_launch: false,
            list_bitmaps: Vec::new(),
            split_kv: None,
        }
    }

    #[test]
    fn grid_orders_parse_their_names_and_shape_the_grid() {
        for g in GridOrder::ALL {
            assert_eq!(GridOrder::parse(g.name()), Some(g));
        }
        assert_eq!(GridOrder::parse("diagonal"), None);
        // 10 query blocks, 3 heads, batch 2.
        assert_eq!(GridOrder::HeadMajor.grid(10, 3, 2), (10, 3, 2));
        assert_eq!(GridOrder::HeaviestFirst.grid(10, 3, 2), (6, 10, 1));
        assert_eq!(GridOrder::RankMajor.grid(10, 3, 2), (3, 2, 10));
    }

    /// Every (query block, batch, head) once; for the heaviest-first order
    /// in launch order (x fastest), query blocks never move up once the
    /// grid has moved past them.
    #[test]
    fn every_grid_covers_each_work_item_once() {
        for (q_blocks, heads, batch) in [(1, 1, 1), (5, 3, 2), (7, 4, 3), (2, 16, 1)] {
            for order in GridOrder::ALL {
                let grid = order.grid(q_blocks, heads, batch);
                let mut seen = std::collections::BTreeMap::new();
                let mut launch_order = Vec::new();
                for z in 0..grid.2 {
                    for y in 0..grid.1 {
                        for x in 0..grid.0 {
                            let (qb, b, h) = order.work_of((x, y, z), q_blocks, heads);
                            assert!(qb < q_blocks && b < batch && h < heads, "{order:?} {grid:?}: ({qb}, {b}, {h})");
                            *seen.entry((qb, b, h)).or_insert(0) += 1;
                            launch_order.push((b * heads + h, qb));
                        }
                    }
                }
                assert_eq!(seen.len() as u32, q_blocks * heads * batch, "{order:?} misses work");
                assert!(seen.values().all(|&n| n == 1), "{order:?} runs some work twice");
                if order.heaviest_first() {
                    assert!(launch_order.windows(2).all(|w| w[0].1 >= w[1].1), "heaviest first across all heads");
                }
            }
        }
    }

    #[test]
    fn manifests_written_before_grid_orders_launch_head_major() {
        let text = manifest(GridOrder::HeaviestFirst).attach_to_ptx(".version 8.0");
        assert_eq!(KernelManifest::from_ptx(&text).expect("round trip").grid, GridOrder::HeaviestFirst);
        let mut json: serde_json::Value = serde_json::to_value(manifest(GridOrder::HeaviestFirst)).expect("serialises");
        json.as_object_mut().expect("an object").remove("grid");
        let old: KernelManifest = serde_json::from_value(json).expect("parses without `grid`");
        assert_eq!(old.grid, GridOrder::HeadMajor);
    }
}
