//! The CPU reference: exact masked attention, the oracle for every GPU test.
//! Slow on purpose (no tiling, no online softmax): it must be obviously right.

use crate::bindings::Bindings;
use crate::eval::ElementEvaluator;
use crate::pattern::PatternIr;

/// Accumulation precision of the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

/// Shapes of one attention call: Q is `(B, H, Nq, D)`, K and V `(B, Hkv, Nk, D)`,
/// all row-major and contiguous. `H` must be a multiple of `Hkv` (GQA / MQA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("{name} has {got} elements, expected {expected} for shape {shape}")]
    WrongLength { name: &'static str, got: usize, expected: usize, shape: String },
    #[error("heads ({heads}) must be a multiple of kv_heads ({kv_heads})")]
    BadGqa { heads: usize, kv_heads: usize },
    #[error("the bindings were made for dims {bound:?}, the attention shape is {shape:?}")]
    DimsMismatch { bound: crate::bindings::Dims, shape: AttentionShape },
}

/// Output `(B, H, Nq, D)` and log-sum-exp `(B, H, Nq)` in natural-log units.
/// A row with every key masked gets output 0 and lse −inf.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOutput {
    pub out: Vec<f32>,
    pub lse: Vec<f32>,
}

/// `softmax(scale · Q Kᵀ masked) V` for every (b, h), with `mask` from the pattern.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pattern: &PatternIr,
    bindings: &Bindings,
    shape: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    precision: Precision,
) -> Result<AttentionOutput, ReferenceError> {
    let AttentionShape { batch, heads, kv_heads, q_len, kv_len, head_dim: d } = shape;
    let dims = bindings.dims();
    if dims.batch != batch || dims.heads != heads || dims.q_len != q_len || dims.kv_len != kv_len {
        return Err(ReferenceError::DimsMismatch { bound: dims, shape });
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(ReferenceError::BadGqa { heads, kv_heads });
    }
    let check = |name, got: usize, expected: usize, s: String| {
        if got == expected { Ok(()) } else { Err(ReferenceError::WrongLength { name, got, expected, shape: s }) }
    };
    check("q", q.len(), batch * heads * q_len * d, format!("({batch}, {heads}, {q_len}, {d})"))?;
    check("k", k.len(), batch * kv_heads * kv_len * d, format!("({batch}, {kv_heads}, {kv_len}, {d})"))?;
    check("v", v.len(), batch * kv_heads * kv_len * d, format!("({batch}, {kv_heads}, {kv_len}, {d})"))?;

    let mut eval = ElementEvaluator::new(pattern, bindings);
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![f32::NEG_INFINITY; batch * heads * q_len];
    let mut scores = vec![0f64; kv_len];
    let mut allowed = vec![false; kv_len];
    let mut acc = vec![0f64; d];
    let round = |x: f64| if precision == Precision::F32 { x as f32 as f64 } else { x };
    for b in 0..batch {
        for h in 0..heads {
            let hk = h / (heads / kv_heads);
            for i in 0..q_len {
                let qrow = &q[((b * heads + h) * q_len + i) * d..][..d];
                let mut max = f64::NEG_INFINITY;
                for j in 0..kv_len {
                    allowed[j] = eval.mask(b, h, i, j);
                    if !allowed[j] {
                        continue;
                    }
                    let krow = &k[((b * kv_heads + hk) * kv_len + j) * d..][..d];
                    let mut dot = 0f64;
                    for t in 0..d {
                        dot = round(dot + qrow[t] as f64 * krow[t] as f64);
                    }
                    scores[j] = round(dot * scale as f64);
                    max = max.max(scores[j]);
                }
                if max == f64::NEG_INFINITY {
                    continue;
                }
                let mut sum = 0f64;
                acc.iter_mut().for_each(|a| *a = 0.0);
                for j in 0..kv_len {
                    if !allowed[j] {
                        continue;
                    }
                    let p = round((scores[j] - max).exp());
                    sum = round(sum + p);
                    let vrow = &v[((b * kv_heads + hk) * kv_len + j) * d..][..d];
                    for t in 0..d {
                        acc[t] = round(acc[t] + p * vrow[t] as f64);
                    }
                }
                let orow = &mut out[((b * heads + h) * q_len + i) * d..][..d];
                for t in 0..d {
                    orow[t] = (acc[t] / sum) as f32;
                }
                lse[(b * heads + h) * q_len + i] = (max + sum.ln()) as f32;
            }
        }
    }
    Ok(AttentionOutput { out, lse })
}
