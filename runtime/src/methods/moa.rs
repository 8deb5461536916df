//! MoA (Fu et al., 2024): the plan format and heterogeneous heads in one
//! launch. A plan gives every head of every layer an elastic span
//! `S_h(N) = alpha_h + beta_h · N` and a number of sink tokens; the `Moa`
//! pattern kernel takes them as per-head inputs, so one launch serves a whole
//! layer whatever its heads' spans.
//!
//! Plan JSON: `{"layers": [{"heads": [{"alpha": 1024, "beta": 0.125, "sink": 64}, ...]}, ...]}`
//! (`sink` may be left out: 64, as in the reference code). Unknown fields are
//! refused so a typo is not silently ignored.

use serde::{Deserialize, Serialize};

use super::{check_kernel, check_qkv, MethodOutput, MethodPattern};
use crate::args::PatternArgs;
use crate::gpu::Gpu;
use crate::kernel::{AttentionKernel, ForwardOptions};
use crate::ops::{invalid, OpResult};
use crate::tensor::DeviceTensor;

fn default_sink() -> i64 {
    64
}

/// One head's elastic rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoaHead {
    /// Fixed part of the span, in tokens (≥ 0).
    pub alpha: i64,
    /// Part of the span that grows with the length N (in [0, 1]).
    pub beta: f64,
    /// Leading tokens every query sees (≥ 0).
    #[serde(default = "default_sink")]
    pub sink: i64,
}

/// One layer: one entry per query head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoaLayer {
    pub heads: Vec<MoaHead>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoaPlan {
    pub layers: Vec<MoaLayer>,
}

/// One thing wrong with a plan, located by layer and head (from 0).
#[derive(Clone, Debug, PartialEq)]
pub enum PlanProblem {
    NoLayers,
    EmptyLayer { layer: usize },
    NegativeAlpha { layer: usize, head: usize, alpha: i64 },
    AlphaTooLarge { layer: usize, head: usize, alpha: i64 },
    BetaOutOfRange { layer: usize, head: usize, beta: f64 },
    NegativeSink { layer: usize, head: usize, sink: i64 },
    SinkTooLarge { layer: usize, head: usize, sink: i64 },
}

impl std::fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            PlanProblem::NoLayers => write!(f, "the plan has no layers; give at least one {{\"heads\": [...]}}"),
            PlanProblem::EmptyLayer { layer } => write!(f, "layer {layer} has no heads; give one entry per query head"),
            PlanProblem::NegativeAlpha { layer, head, alpha } => {
                write!(f, "layer {layer} head {head}: alpha is {alpha}; a span cannot be negative (use 0 for a purely elastic span)")
            }
            PlanProblem::AlphaTooLarge { layer, head, alpha } => {
                write!(f, "layer {layer} head {head}: alpha is {alpha}, above i32::MAX; the kernel takes i32 spans")
            }
            PlanProblem::BetaOutOfRange { layer, head, beta } => {
                write!(f, "layer {layer} head {head}: beta is {beta}; it must be in [0, 1] (the share of the length N added to the span)")
            }
            PlanProblem::NegativeSink { layer, head, sink } => {
                write!(f, "layer {layer} head {head}: sink is {sink}; use 0 for no sink tokens")
            }
            PlanProblem::SinkTooLarge { layer, head, sink } => {
                write!(f, "layer {layer} head {head}: sink is {sink}, above i32::MAX")
            }
        }
    }
}

fn list(problems: &[PlanProblem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the MoA plan is not valid: {message} at line {line}, column {column}; the form is \
         {{\"layers\": [{{\"heads\": [{{\"alpha\": 1024, \"beta\": 0.125, \"sink\": 64}}, ...]}}, ...]}}"
    )]
    Json { message: String, line: usize, column: usize },
    #[error("the MoA plan has {} problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<PlanProblem>),
    #[error("the MoA plan has {layers} layer(s); there is no layer {layer} (layers count from 0)")]
    NoSuchLayer { layer: usize, layers: usize },
    #[error("the MoA layer has {plan} head(s) but q has {tensor}; a plan gives one entry per query head: use the plan made for this model")]
    HeadCount { plan: usize, tensor: usize },
    #[error("head {head}'s span alpha + beta·N = {alpha} + {beta}·{n} does not fit an i32; launch with a smaller N")]
    SpanOverflow { head: usize, alpha: i64, beta: f64, n: usize },
    #[error("the launch length N is {n}; it must be in 1..=i32::MAX")]
    BadLength { n: usize },
}

fn head_problems(layer: usize, heads: &[MoaHead], out: &mut Vec<PlanProblem>) {
    if heads.is_empty() {
        out.push(PlanProblem::EmptyLayer { layer });
    }
    let max = i32::MAX as i64;
    for (head, hd) in heads.iter().enumerate() {
        if hd.alpha < 0 {
            out.push(PlanProblem::NegativeAlpha { layer, head, alpha: hd.alpha });
        } else if hd.alpha > max {
            out.push(PlanProblem::AlphaTooLarge { layer, head, alpha: hd.alpha });
        }
        // NaN fails this test too.
        if !(0.0..=1.0).contains(&hd.beta) {
            out.push(PlanProblem::BetaOutOfRange { layer, head, beta: hd.beta });
        }
        if hd.sink < 0 {
            out.push(PlanProblem::NegativeSink { layer, head, sink: hd.sink });
        } else if hd.sink > max {
            out.push(PlanProblem::SinkTooLarge { layer, head, sink: hd.sink });
        }
    }
}

impl MoaPlan {
    /// Parses and validates a plan; every problem is reported, not just the first.
    pub fn from_json(text: &str) -> Result<MoaPlan, PlanError> {
        let plan: MoaPlan = serde_json::from_str(text).map_err(|e| PlanError::Json {
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
            line: e.line(),
            column: e.column(),
        })?;
        plan.validate()?;
        Ok(plan)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), PlanError> {
        let mut problems = Vec::new();
        if self.layers.is_empty() {
            problems.push(PlanProblem::NoLayers);
        }
        for (i, l) in self.layers.iter().enumerate() {
            head_problems(i, &l.heads, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Invalid(problems))
        }
    }

    pub fn layer(&self, layer: usize) -> Result<&MoaLayer, PlanError> {
        self.layers.get(layer).ok_or(PlanError::NoSuchLayer { layer, layers: self.layers.len() })
    }
}

impl MoaLayer {
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut problems = Vec::new();
        head_problems(0, &self.heads, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Invalid(problems))
        }
    }

    /// The layer has one entry per query head.
    pub fn check_heads(&self, heads: usize) -> Result<(), PlanError> {
        if self.heads.len() != heads {
            return Err(PlanError::HeadCount { plan: self.heads.len(), tensor: heads });
        }
        Ok(())
    }

    /// The elastic rule at length `n`, exactly as the kernel evaluates it:
    /// `alpha + (beta as f32 · n as f32) as i32`, per head.
    pub fn spans(&self, n: usize) -> Result<Vec<i32>, PlanError> {
        if n == 0 || n > i32::MAX as usize {
            return Err(PlanError::BadLength { n });
        }
        self.heads
            .iter()
            .enumerate()
            .map(|(head, h)| {
                let grow = (h.beta as f32 * n as f32) as i64;
                let span = h.alpha.checked_add(grow).filter(|s| *s <= i32::MAX as i64 && *s >= 0);
                span.map(|s| s as i32).ok_or(PlanError::SpanOverflow { head, alpha: h.alpha, beta: h.beta, n })
            })
            .collect()
    }

    /// The heads heaviest first (most (q, k) pairs at length `n`: band plus
    /// sinks, in closed form), ties in index order: the launch order that
    /// keeps long-span heads from running alone at the end of the grid.
    pub fn launch_order(&self, n: usize) -> Result<Vec<i32>, PlanError> {
        let spans = self.spans(n)?;
        let n = n as u64;
        let pairs = |span: i32, sink: u64| {
            let s = (span.max(0) as u64).min(n);
            // Σ_q min(q + 1, s), plus up to `sink` keys below each band that starts past them.
            s * (s + 1) / 2 + (n - s) * s + sink.min(n) * (n - s)
        };
        let mut order: Vec<(u64, i32)> = spans.iter().zip(&self.heads).enumerate().map(|(i, (&s, h))| (pairs(s, h.sink.max(0) as u64), i as i32)).collect();
        order.sort_by_key(|&(pairs, head)| (std::cmp::Reverse(pairs), head));
        Ok(order.into_iter().map(|(_, head)| head).collect())
    }

    /// Per head, the share of causal (q, k) pairs the head computes at
    /// length `n` (queries and keys 0..n): its cost relative to dense causal.
    pub fn density(&self, n: usize) -> Result<Vec<f64>, PlanError> {
        let spans = self.spans(n)?;
        let causal = n as f64 * (n as f64 + 1.0) / 2.0;
        Ok(spans
            .iter()
            .zip(&self.heads)
            .map(|(&s, h)| {
                let (s, sink) = (s.max(0) as u64, h.sink.max(0) as u64);
                let kept: u64 = (0..n as u64)
                    .map(|q| {
                        // Keys k <= q with q - k < s, plus sinks below the band.
                        let band = (q + 1).min(s);
                        let band_start = q + 1 - band;
                        band + sink.min(band_start)
                    })
                    .sum();
                kept as f64 / causal
            })
            .collect())
    }
}

/// MoA attention for one layer: every head's band `alpha_h + beta_h·N` plus
/// `sink_h` leading keys, causal, all heads in ONE launch of the `Moa`
/// kernel; `n` is the current length N the elastic rule is evaluated at
/// (usually the key length). q (B, H, Nq, D) with H = the layer's heads.
pub fn moa_attention(
    gpu: &Gpu,
    kernel: &AttentionKernel,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    layer: &MoaLayer,
    n: usize,
) -> OpResult<MethodOutput> {
    let p = check_qkv(q, k, v)?;
    check_kernel(gpu, kernel, "moa_attention", MethodPattern::Moa, &p)?;
    layer.validate()?;
    layer.check_heads(p.heads)?;
    layer.spans(n)?;
    if n < p.kv_len {
        // Not wrong (a span computed for a shorter prefix), but usually a mistake.
        return Err(invalid(
            "the launch length N",
            format!("is {n}, shorter than the {} keys; pass the current length (usually Nk)", p.kv_len),
        ));
    }
    let alpha: Vec<i32> = layer.heads.iter().map(|h| h.alpha as i32).collect();
    let beta: Vec<f32> = layer.heads.iter().map(|h| h.beta as f32).collect();
    let sink: Vec<i32> = layer.heads.iter().map(|h| h.sink as i32).collect();
    let args = PatternArgs::new()
        .head_i32("alpha", &alpha)
        .head_f32("beta", &beta)
        .head_i32("sink", &sink)
        .i32("N", n as i32);
    // Heaviest heads first where the kernel takes an order (the planner
    // gives MoA kernels one: their work depends on the head).
    let order = layer.launch_order(n)?;
    let opts = ForwardOptions { head_order: kernel.manifest().head_order.then_some(&order[..]), ..ForwardOptions::default() };
    let (o, lse) = kernel.forward(q, k, v, &args, opts)?;
    Ok(MethodOutput { o, lse })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"{"layers": [
        {"heads": [{"alpha": 1024, "beta": 0.125, "sink": 64}, {"alpha": 0, "beta": 1.0}]},
        {"heads": [{"alpha": 2048, "beta": 0.0, "sink": 0}, {"alpha": 64, "beta": 0.5, "sink": 16}]}
    ]}"#;

    #[test]
    fn a_good_plan_parses_with_default_sinks() {
        let plan = MoaPlan::from_json(PLAN).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.layers.len(), 2);
        assert_eq!(plan.layers[0].heads[1], MoaHead { alpha: 0, beta: 1.0, sink: 64 });
        let again = MoaPlan::from_json(&plan.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, plan);
        assert!(plan.layer(1).is_ok());
        let err = plan.layer(2).expect_err("two layers");
        assert_eq!(err, PlanError::NoSuchLayer { layer: 2, layers: 2 });
        assert!(err.to_string().contains("no layer 2"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let bad = r#"{"layers": [{"heads": [{"alpha": -5, "beta": 1.5, "sink": -1}, {"alpha": 3000000000, "beta": 0.5}]}, {"heads": []}]}"#;
        let err = MoaPlan::from_json(bad).expect_err("invalid");
        let PlanError::Invalid(problems) = &err else { panic!("{err:?}") };
        assert_eq!(
            problems,
            &vec![
                PlanProblem::NegativeAlpha { layer: 0, head: 0, alpha: -5 },
                PlanProblem::BetaOutOfRange { layer: 0, head: 0, beta: 1.5 },
                PlanProblem::NegativeSink { layer: 0, head: 0, sink: -1 },
                PlanProblem::AlphaTooLarge { layer: 0, head: 1, alpha: 3_000_000_000 },
                PlanProblem::EmptyLayer { layer: 1 },
            ]
        );
        let msg = err.to_string();
        assert!(msg.contains("5 problem(s)") && msg.contains("layer 0 head 0: beta is 1.5; it must be in [0, 1]"), "{msg}");
        assert!(matches!(MoaPlan::from_json(r#"{"layers": []}"#), Err(PlanError::Invalid(p)) if p == vec![PlanProblem::NoLayers]));
    }

    #[test]
    fn json_errors_say_where_and_what_form() {
        let err = MoaPlan::from_json(r#"{"layers": [{"heads": [{"alpha": 1, "beta": 0.1, "sinks": 3}]}]}"#).expect_err("typo");
        let msg = err.to_string();
        assert!(msg.contains("unknown field `sinks`") && msg.contains("line 1"), "{msg}");
        assert!(msg.contains("\"alpha\": 1024"), "{msg}");
        assert!(matches!(MoaPlan::from_json("{"), Err(PlanError::Json { .. })));
    }

    #[test]
    fn head_count_must_match_the_tensor() {
        let plan = MoaPlan::from_json(PLAN).unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.layers[0].check_heads(2).is_ok());
        let err = plan.layers[0].check_heads(8).expect_err("2 vs 8");
        assert!(err.to_string().contains("2 head(s) but q has 8"), "{err}");
    }

    #[test]
    fn elastic_rule_matches_the_kernel_arithmetic() {
        let plan = MoaPlan::from_json(PLAN).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.layers[0].spans(8192).ok(), Some(vec![1024 + 1024, 8192]));
        assert_eq!(plan.layers[1].spans(1000).ok(), Some(vec![2048, 64 + 500]));
        assert!(matches!(plan.layers[0].spans(0), Err(PlanError::BadLength { n: 0 })));
        let huge = MoaLayer { heads: vec![MoaHead { alpha: i32::MAX as i64, beta: 1.0, sink: 0 }] };
        assert!(matches!(huge.spans(10), Err(PlanError::SpanOverflow { head: 0, .. })));
    }

    #[test]
    fn density_counts_band_and_sinks() {
        // Span 1, no sink: only the diagonal, n of n(n+1)/2 pairs.
        let diag = MoaLayer { heads: vec![MoaHead { alpha: 1, beta: 0.0, sink: 0 }] };
        let d = diag.density(10).unwrap_or_else(|e| panic!("{e}"));
        assert!((d[0] - 10.0 / 55.0).abs() < 1e-12);
        // Full span: dense causal.
        let full = MoaLayer { heads: vec![MoaHead { alpha: 0, beta: 1.0, sink: 4 }] };
        assert!((full.density(100).unwrap_or_else(|e| panic!("{e}"))[0] - 1.0).abs() < 1e-12);
        // Span 1 and sink 2 at n = 4: rows see 1, 2, 3, 3 keys = 9 of 10.
        let s = MoaLayer { heads: vec![MoaHead { alpha: 1, beta: 0.0, sink: 2 }] };
        assert!((s.density(4).unwrap_or_else(|e| panic!("{e}"))[0] - 0.9).abs() < 1e-12);
    }

    #[test]
    fn launch_order_puts_the_most_pairs_first() {
        // Spans 64, full, 512 (+ sinks), 64 + 16 sinks at n = 1000: ranked
        // as the exact pair counts (density) rank them.
        let layer = MoaLayer {
            heads: vec![
                MoaHead { alpha: 64, beta: 0.0, sink: 0 },
                MoaHead { alpha: 0, beta: 1.0, sink: 0 },
                MoaHead { alpha: 256, beta: 0.25, sink: 8 },
                MoaHead { alpha: 64, beta: 0.0, sink: 16 },
            ],
        };
        let order = layer.launch_order(1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(order, vec![1, 2, 3, 0]);
        let density = layer.density(1000).unwrap_or_else(|e| panic!("{e}"));
        assert!(order.windows(2).all(|w| density[w[0] as usize] >= density[w[1] as usize]), "{order:?} vs {density:?}");
        // Equal heads keep index order.
        let even = MoaLayer { heads: vec![MoaHead { alpha: 100, beta: 0.0, sink: 0 }; 3] };
        assert_eq!(even.launch_order(500).ok(), Some(vec![0, 1, 2]));
    }

}
