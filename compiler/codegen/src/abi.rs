//! The kernel ABI: entry names and the forward kernel's parameter list, in
//! the one place both the LLVM signature and the manifest are built from.
//! The runtime is written against this order; changing it is a breaking change.

use lacuna_ir::{BucketJoin, BucketRunSummaries, InputId, InputKind, KernelParam, PatternIr, ScalarType};

use crate::plan::KernelPlan;

/// Entry name of the per-block min/max summary kernel.
pub const SUMMARY_ENTRY: &str = "block_minmax";
/// Entry name of the summary kernel with bucket runs (`lacuna_ir::summary`),
/// present only in modules whose pattern joins on a bucket.
pub const RUN_SUMMARY_ENTRY: &str = "block_minmax_runs";
/// Entry name of the kernel that makes every tensor input's summary in one
/// launch (modules whose pattern reads tensors; `lower/summary.rs`).
pub const FUSED_SUMMARY_ENTRY: &str = "block_summaries";
/// Suffix of the split-KV forward entry (`<forward entry>_split`, see
/// `lower/forward.rs`) and of the kernel that combines its splits
/// (`<forward entry>_combine`, `lower/combine.rs`).
pub const SPLIT_SUFFIX: &str = "_split";
pub const COMBINE_SUFFIX: &str = "_combine";

/// The type of one kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiType {
    /// `ptr addrspace(1)`.
    GlobalPtr,
    I32,
    I64,
    F32,
    /// A 128-byte `CUtensorMap` passed by value as a grid constant
    /// (`.param .align 64 .b8 name[128]`), read by TMA where it lies.
    TensorMap,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbiParam {
    pub name: String,
    pub ty: AbiType,
}

/// The forward kernel's parameters, and where each pattern input starts.
#[derive(Clone, Debug)]
pub struct ForwardAbi {
    pub params: Vec<AbiParam>,
    /// Index into `params` of the first parameter of input `i`.
    pub input_start: Vec<usize>,
    /// With `plan.row_index`: where `q_rows, kv_rows, q_src_len, kv_src_len`
    /// start (after the pattern inputs).
    pub rows_start: Option<usize>,
    /// With `plan.head_order`: the `head_order` parameter.
    pub head_order: Option<usize>,
    /// With `plan.tma()`: `q_tensor_map`, `k_tensor_map`, `v_tensor_map`.
    pub tensor_maps: Option<usize>,
    /// The split-KV entry only: where `kv_splits, o_partial, lse_partial`
    /// start (last). The grid's batch axis runs over `batch · kv_splits`
    /// (split s of batch b at `b · kv_splits + s`); split s visits its share
    /// of the CTA's key blocks and writes, for row q of (b, h), its O
    /// normalised by its own softmax sum to `o_partial` (f32, contiguous
    /// `[kv_splits, B, H, q_len, head_dim]`) and its log-sum-exp in base 2 to
    /// `lse_partial` (f32 `[kv_splits, B, H, q_len]`; -inf and zeros for a
    /// row the split saw nothing of).
    pub split_start: Option<usize>,
}

/// Indices of the fixed parameters.
pub mod fixed {
    pub const Q: usize = 0;
    pub const K: usize = 1;
    pub const V: usize = 2;
    pub const O: usize = 3;
    pub const LSE: usize = 4;
    /// `q_stride_b, q_stride_h, q_stride_n`, then the same for k, v, o.
    pub const STRIDES: usize = 5;
    /// `batch` is part of the ABI (the runtime checks it); the grid carries the batch index.
    #[allow(dead_code)]
    pub const BATCH: usize = 17;
    pub const HEADS: usize = 18;
    pub const KV_HEADS: usize = 19;
    pub const Q_LEN: usize = 20;
    pub const KV_LEN: usize = 21;
    pub const SCALE_LOG2: usize = 22;
    pub const COUNT: usize = 23;
}

impl ForwardAbi {
    /// The parameters of the forward entry, or with `split` of the split-KV entry.
    pub fn new(p: &PatternIr, plan: &KernelPlan, split: bool) -> Self {
        let mut params = Vec::new();
        let mut push = |name: String, ty: AbiType| params.push(AbiParam { name, ty });
        for t in ["q", "k", "v", "o"] {
            push(t.into(), AbiType::GlobalPtr);
        }
        push("lse".into(), AbiType::GlobalPtr);
        for t in ["q", "k", "v", "o"] {
            for d in ["b", "h", "n"] {
                push(format!("{t}_stride_{d}"), AbiType::I64);
            }
        }
        for n in ["batch", "heads", "kv_heads", "q_len", "kv_len"] {
            push(n.into(), AbiType::I32);
        }
        push("scale_log2".into(), AbiType::F32);
        debug_assert_eq!(params.len(), fixed::COUNT);
        let mut input_start = Vec::new();
        for d in p.inputs() {
            input_start.push(params.len());
            let name = d.name.clone();
            match d.kind {
                InputKind::QueryTensor | InputKind::KeyTensor => {
                    params.push(AbiParam { name: name.clone(), ty: AbiType::GlobalPtr });
                    params.push(AbiParam { name: format!("{name}_summary"), ty: AbiType::GlobalPtr });
                }
                InputKind::HeadScalar(_) => params.push(AbiParam { name, ty: AbiType::GlobalPtr }),
                InputKind::LaunchScalar(ScalarType::F32) => params.push(AbiParam { name, ty: AbiType::F32 }),
                InputKind::LaunchScalar(_) => params.push(AbiParam { name, ty: AbiType::I32 }),
                InputKind::BlockList { .. } => {
                    params.push(AbiParam { name: name.clone(), ty: AbiType::GlobalPtr });
                    params.push(AbiParam { name: format!("{name}_width"), ty: AbiType::I32 });
                }
            }
        }
        let rows_start = plan.row_index.then(|| {
            let start = params.len();
            params.push(AbiParam { name: "q_rows".into(), ty: AbiType::GlobalPtr });
            params.push(AbiParam { name: "kv_rows".into(), ty: AbiType::GlobalPtr });
            params.push(AbiParam { name: "q_src_len".into(), ty: AbiType::I32 });
            params.push(AbiParam { name: "kv_src_len".into(), ty: AbiType::I32 });
            start
        });
        let head_order = plan.head_order.then(|| {
            params.push(AbiParam { name: "head_order".into(), ty: AbiType::GlobalPtr });
            params.len() - 1
        });
        let tensor_maps = plan.tma().then(|| {
            let start = params.len();
            for t in ["q", "k", "v"] {
                params.push(AbiParam { name: format!("{t}_tensor_map"), ty: AbiType::TensorMap });
            }
            start
        });
        let split_start = split.then(|| {
            let start = params.len();
            params.push(AbiParam { name: "kv_splits".into(), ty: AbiType::I32 });
            params.push(AbiParam { name: "o_partial".into(), ty: AbiType::GlobalPtr });
            params.push(AbiParam { name: "lse_partial".into(), ty: AbiType::GlobalPtr });
            start
        });
        Self { params, input_start, rows_start, head_order, tensor_maps, split_start }
    }
}

/// The manifest's view of the inputs (one entry per pattern input, in order).
pub fn manifest_params(p: &PatternIr) -> Vec<KernelParam> {
    p.inputs().iter().map(|d| KernelParam::Input { name: d.name.clone(), kind: d.kind }).collect()
}

/// The manifest's record of the inputs summarised with bucket runs.
pub fn bucket_runs(p: &PatternIr) -> Option<BucketRunSummaries> {
    let join = BucketJoin::find(p)?;
    let name = |id: InputId| p.input(id).name.clone();
    Some(BucketRunSummaries {
        entry: RUN_SUMMARY_ENTRY.to_string(),
        query_bucket: name(join.query),
        key_bucket: name(join.key),
        inputs: (0..p.inputs().len()).map(|i| InputId(i as u32)).filter(|&id| join.has_runs(p, id)).map(name).collect(),
    })
}

/// `fwd_<pattern name in snake case>_d<D>_<bf16|fp16>`.
pub fn forward_entry(p: &PatternIr, plan: &KernelPlan) -> String {
    format!("fwd_{}_d{}_{}", snake_case(p.name()), plan.head_dim, plan.dtype.name())
}

/// `HashBucket` → `hash_bucket`, `MoA` → `mo_a`, `Causal_and_Window` →
/// `causal_and_window`; anything not alphanumeric becomes `_`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { chars[i - 1] } else { '_' };
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let boundary = prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_lower);
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "pattern".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Causal"), "causal");
        assert_eq!(snake_case("HashBucket"), "hash_bucket");
        assert_eq!(snake_case("SlidingWindow"), "sliding_window");
        assert_eq!(snake_case("MoA"), "mo_a");
        assert_eq!(snake_case("QKDropCompact"), "qk_drop_compact");
        assert_eq!(snake_case("Causal_and_Window"), "causal_and_window");
        assert_eq!(snake_case("Top2K"), "top2_k");
    }
}
