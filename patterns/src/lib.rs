//! The standard patterns, each declared once with `pattern!`, and a registry
//! that gives them CLI names and example inputs. Nothing here is special to
//! the compiler: a user's own `pattern!` gets the same analysis and kernels.

mod example;
mod rng;

use lacuna_ir::{pattern, Pattern, PatternIr};

pub use example::{example_inputs, ExampleError};

pattern! {
    /// Inclusive causal attention: query `q` sees every key at or before it.
    pub Causal() = q >= k;

    /// Strict causal attention: query `q` sees keys strictly before it (the
    /// SCFA training code's shared-QK variant; row 0 attends to nothing).
    pub CausalStrict() = q > k;

    /// Causal sliding window of `W` keys (the query itself included), plus
    /// the first `sink` keys for every query ("attention sinks"; 0 for none).
    /// Longformer / Mistral windows; sinks from StreamingLLM (Xiao et al., 2023).
    pub SlidingWindow(W: i32, sink: i32) = k <= q && (q - k < W || k < sink);

    /// SCFA QK-dropping (Pagliardini et al., 2023): queries and keys were
    /// dropped and the survivors compacted per (batch, head); `q_pos`/`k_pos`
    /// hold original positions, increasing, with padding queries at -1 and
    /// padding keys at i32::MAX so that padding masks itself out.
    pub QkDrop(q_pos: Q<i32>, k_pos: K<i32>) = q_pos[q] >= k_pos[k];

    /// SCFA hash-bucketed attention (Pagliardini et al., 2023): tokens sorted
    /// by LSH bucket per (batch, head); attend within the same bucket,
    /// causally on original positions (inclusive).
    pub HashBucket(q_bucket: Q<i32>, k_bucket: K<i32>, q_pos: Q<i32>, k_pos: K<i32>) =
        q_bucket[q] == k_bucket[k] && q_pos[q] >= k_pos[k];

    /// SCFA hash-bucketed attention with strict causality on original
    /// positions (the shared-QK training variant).
    pub HashBucketStrict(q_bucket: Q<i32>, k_bucket: K<i32>, q_pos: Q<i32>, k_pos: K<i32>) =
        q_bucket[q] == k_bucket[k] && q_pos[q] > k_pos[k];

    /// SparseK-style block top-k (Lou et al., 2024): per query block, the
    /// selected key blocks `sel` (a runtime list, 64-token blocks), OR a causal
    /// window of `W` keys (0 for none), causal overall.
    pub TopK(sel: Blocks<64>, W: i32) = k <= q && (sel[q, k] || q - k < W);

    /// MoA elastic band (Fu et al., 2024): head `h` sees a causal window of
    /// `alpha[h] + beta[h] * N` keys at length `N`, plus the first `sink[h]` keys.
    pub Moa(alpha: H<i32>, beta: H<f32>, sink: H<i32>, N: i32) =
        k <= q && (q - k < alpha[h] + (beta[h] * N as f32) as i32 || k < sink[h]);

    /// Inclusive causal attention aligned bottom-right, for decoding with a
    /// KV cache: query row `q` is token `past + q` (`past` = Nk - Nq when
    /// the queries are the sequence's last tokens), and sees every key up
    /// to itself.
    pub CausalDecode(past: i32) = k <= q + past;

    /// MoA's elastic band (as `Moa`) while decoding: query row `q` is token
    /// `past + q` of a sequence of `N` tokens (the band's length term).
    pub MoaDecode(alpha: H<i32>, beta: H<f32>, sink: H<i32>, N: i32, past: i32) =
        k <= q + past && (q + past - k < alpha[h] + (beta[h] * N as f32) as i32 || k < sink[h]);
}

/// A standard pattern with its command-line name.
#[derive(Debug)]
pub struct StandardPattern {
    /// The name on the command line, e.g. `hash-bucket`.
    pub name: &'static str,
    pub summary: &'static str,
    pub paper: &'static str,
    pub ir: fn() -> PatternIr,
    /// Extra `--param` knobs that shape example inputs: (name, meaning).
    pub knobs: &'static [(&'static str, &'static str)],
}

static STANDARD: &[StandardPattern] = &[
    StandardPattern {
        name: "causal",
        summary: "inclusive causal: k <= q",
        paper: "Vaswani et al., 2017",
        ir: Causal::ir,
        knobs: &[],
    },
    StandardPattern {
        name: "causal-strict",
        summary: "strict causal: k < q",
        paper: "SCFA shared-QK variant (Pagliardini et al., 2023)",
        ir: CausalStrict::ir,
        knobs: &[],
    },
    StandardPattern {
        name: "sliding-window",
        summary: "causal window of W keys plus `sink` leading keys",
        paper: "Beltagy et al., 2020; sinks: Xiao et al., 2023",
        ir: SlidingWindow::ir,
        knobs: &[],
    },
    StandardPattern {
        name: "qk-drop",
        summary: "SCFA QK-dropping: causal on original positions after compaction",
        paper: "Pagliardini et al., 2023 (SCFA)",
        ir: QkDrop::ir,
        knobs: &[("drop", "fraction of tokens dropped in the example inputs, default 0.5")],
    },
    StandardPattern {
        name: "hash-bucket",
        summary: "SCFA hash attention: same LSH bucket and q_pos >= k_pos",
        paper: "Pagliardini et al., 2023 (SCFA)",
        ir: HashBucket::ir,
        knobs: &[("buckets", "number of hash buckets in the example inputs, default 8")],
    },
    StandardPattern {
        name: "hash-bucket-strict",
        summary: "SCFA hash attention, strict: same LSH bucket and q_pos > k_pos",
        paper: "Pagliardini et al., 2023 (SCFA)",
        ir: HashBucketStrict::ir,
        knobs: &[("buckets", "number of hash buckets in the example inputs, default 8")],
    },
    StandardPattern {
        name: "topk",
        summary: "SparseK block top-k: listed key blocks or a window of W, causal",
        paper: "Lou et al., 2024 (SparseK)",
        ir: TopK::ir,
        knobs: &[("topk", "key blocks selected per query block in the example inputs, default 4")],
    },
    StandardPattern {
        name: "moa",
        summary: "MoA: per-head band alpha_h + beta_h*N plus sink_h leading keys, causal",
        paper: "Fu et al., 2024 (MoA)",
        ir: Moa::ir,
        knobs: &[],
    },
    StandardPattern {
        name: "causal-decode",
        summary: "causal aligned bottom-right: query q is token past + q (decoding with a KV cache)",
        paper: "the KV-cache form of Vaswani et al., 2017",
        ir: CausalDecode::ir,
        knobs: &[],
    },
    StandardPattern {
        name: "moa-decode",
        summary: "MoA's per-head band while decoding: query q is token past + q of N",
        paper: "Fu et al., 2024 (MoA)",
        ir: MoaDecode::ir,
        knobs: &[],
    },
];

/// Every standard pattern, in a fixed order.
pub fn standard() -> &'static [StandardPattern] {
    STANDARD
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no standard pattern named `{name}`; the standard patterns are: {known}")]
pub struct UnknownPattern {
    pub name: String,
    pub known: String,
}

/// Looks a pattern up by its command-line name.
pub fn find(name: &str) -> Result<&'static StandardPattern, UnknownPattern> {
    STANDARD.iter().find(|p| p.name == name).ok_or_else(|| UnknownPattern {
        name: name.into(),
        known: STANDARD.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
    })
}

/// The docs pages' examples, compiled and run as doctests.
#[cfg(doctest)]
mod docs {
    #[doc = include_str!("../../docs/pattern-language.md")]
    struct PatternLanguage;
    #[doc = include_str!("../../docs/block-analysis.md")]
    struct BlockAnalysis;
}
