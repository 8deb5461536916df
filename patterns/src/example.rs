//! Example inputs for the standard patterns: realistic, deterministic values
//! (sorted LSH buckets, compacted positions, top-k block lists, MoA spans) so
//! that `lacuna mask` and the benchmarks can show a pattern without data files.

use std::collections::BTreeMap;

use lacuna_ir::{Dims, InputKind, InputValue, ScalarType};

use crate::rng::SplitMix64;
use crate::StandardPattern;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExampleError {
    #[error("`--param {name}` is neither an input nor a knob of `{pattern}`; it takes: {known}")]
    UnknownParam { pattern: String, name: String, known: String },
    #[error("`--param {name}={value}` is not a valid {expected}")]
    BadValue { name: String, value: String, expected: String },
    #[error("`--param {name}` needs {expected} values (one per head) or a single value, got {got}")]
    WrongCount { name: String, expected: usize, got: usize },
    #[error("input `{name}` of `{pattern}` has no example value; pass it with {how}")]
    NoDefault { pattern: String, name: String, how: String },
}

/// Example values for every input of `p` that `given` does not bind.
pub fn example_inputs(
    p: &StandardPattern,
    dims: Dims,
    params: &BTreeMap<String, String>,
    given: &BTreeMap<String, InputValue>,
    seed: u64,
) -> Result<BTreeMap<String, InputValue>, ExampleError> {
    let ir = (p.ir)();
    for name in params.keys() {
        let known_input = ir.inputs().iter().any(|d| &d.name == name);
        let known_knob = p.knobs.iter().any(|(k, _)| k == name);
        if !known_input && !known_knob {
            let mut known: Vec<&str> = ir.inputs().iter().map(|d| d.name.as_str()).collect();
            known.extend(p.knobs.iter().map(|(k, _)| *k));
            return Err(ExampleError::UnknownParam {
                pattern: p.name.into(),
                name: name.clone(),
                known: if known.is_empty() { "no parameters".into() } else { known.join(", ") },
            });
        }
    }
    let mut out = given.clone();
    let mut rng = SplitMix64::new(seed);
    // Tensors that must agree with each other (positions with buckets) are made together.
    let tensors = example_tensors(p, dims, params, &mut rng)?;
    for decl in ir.inputs() {
        if out.contains_key(&decl.name) {
            continue;
        }
        let text = params.get(&decl.name);
        let value = match decl.kind {
            InputKind::LaunchScalar(ty) => match text {
                Some(t) => parse_scalar(&decl.name, t, ty)?,
                None => default_scalar(p.name, &decl.name, dims).ok_or_else(|| ExampleError::NoDefault {
                    pattern: p.name.into(),
                    name: decl.name.clone(),
                    how: format!("`--param {}=VALUE`", decl.name),
                })?,
            },
            InputKind::HeadScalar(ty) => match text {
                Some(t) => parse_heads(&decl.name, t, ty, dims.heads)?,
                None => default_heads(p.name, &decl.name, dims.heads).ok_or_else(|| ExampleError::NoDefault {
                    pattern: p.name.into(),
                    name: decl.name.clone(),
                    how: format!("`--param {}=V1,V2,...` (one per head)", decl.name),
                })?,
            },
            _ => tensors.get(&decl.name).cloned().ok_or_else(|| ExampleError::NoDefault {
                pattern: p.name.into(),
                name: decl.name.clone(),
                how: format!("`--input {}=FILE.npy`", decl.name),
            })?,
        };
        out.insert(decl.name.clone(), value);
    }
    Ok(out)
}

fn parse_scalar(name: &str, text: &str, ty: ScalarType) -> Result<InputValue, ExampleError> {
    let bad = || ExampleError::BadValue { name: name.into(), value: text.into(), expected: ty.to_string() };
    match ty {
        ScalarType::F32 => text.trim().parse::<f32>().map(InputValue::F32).map_err(|_| bad()),
        _ => text.trim().parse::<i32>().map(InputValue::I32).map_err(|_| bad()),
    }
}

fn parse_heads(name: &str, text: &str, ty: ScalarType, heads: usize) -> Result<InputValue, ExampleError> {
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() != 1 && parts.len() != heads {
        return Err(ExampleError::WrongCount { name: name.into(), expected: heads, got: parts.len() });
    }
    let pick = |h: usize| parts[if parts.len() == 1 { 0 } else { h }];
    let bad = |t: &str| ExampleError::BadValue { name: name.into(), value: t.into(), expected: ty.to_string() };
    match ty {
        ScalarType::F32 => {
            let data = (0..heads).map(|h| pick(h).trim().parse::<f32>().map_err(|_| bad(pick(h)))).collect::<Result<_, _>>()?;
            Ok(InputValue::F32Array { shape: vec![heads], data })
        }
        _ => {
            let data = (0..heads).map(|h| pick(h).trim().parse::<i32>().map_err(|_| bad(pick(h)))).collect::<Result<_, _>>()?;
            Ok(InputValue::I32Array { shape: vec![heads], data })
        }
    }
}

fn default_scalar(pattern: &str, name: &str, dims: Dims) -> Option<InputValue> {
    match (pattern, name) {
        ("sliding-window", "W") => Some(InputValue::I32(256)),
        ("sliding-window", "sink") => Some(InputValue::I32(0)),
        ("topk", "W") => Some(InputValue::I32(0)),
        ("moa" | "moa-decode", "N") => Some(InputValue::I32(dims.kv_len as i32)),
        // The queries are the last Nq of the Nk tokens.
        ("causal-decode" | "moa-decode", "past") => Some(InputValue::I32(dims.kv_len.saturating_sub(dims.q_len) as i32)),
        _ => None,
    }
}

/// MoA spans that differ per head: a few (alpha, beta) pairs from the paper's grid.
fn default_heads(pattern: &str, name: &str, heads: usize) -> Option<InputValue> {
    let ints = |f: fn(usize) -> i32| InputValue::I32Array { shape: vec![heads], data: (0..heads).map(f).collect() };
    match (pattern, name) {
        ("moa" | "moa-decode", "alpha") => Some(ints(|h| 128 * (1 + (h % 4) as i32))),
        ("moa" | "moa-decode", "sink") => Some(ints(|_| 64)),
        ("moa" | "moa-decode", "beta") => Some(InputValue::F32Array {
            shape: vec![heads],
            data: (0..heads).map(|h| [0.0, 0.125, 0.25, 0.5][h % 4]).collect(),
        }),
        _ => None,
    }
}

fn knob<T: std::str::FromStr>(params: &BTreeMap<String, String>, name: &str, default: T, expected: &str) -> Result<T, ExampleError> {
    match params.get(name) {
        None => Ok(default),
        Some(t) => t.trim().parse().map_err(|_| ExampleError::BadValue { name: name.into(), value: t.clone(), expected: expected.into() }),
    }
}

fn example_tensors(p: &StandardPattern, dims: Dims, params: &BTreeMap<String, String>, rng: &mut SplitMix64) -> Result<BTreeMap<String, InputValue>, ExampleError> {
    let Dims { batch, heads, q_len, kv_len } = dims;
    let array3 = |n: usize, data: Vec<i32>| InputValue::I32Array { shape: vec![batch, heads, n], data };
    let mut out = BTreeMap::new();
    match p.name {
        "qk-drop" => {
            let drop: f64 = knob(params, "drop", 0.5, "fraction in [0, 1)")?;
            if !(0.0..1.0).contains(&drop) {
                return Err(ExampleError::BadValue { name: "drop".into(), value: drop.to_string(), expected: "fraction in [0, 1)".into() });
            }
            let (mut qp, mut kp) = (Vec::new(), Vec::new());
            for bh in 0..batch * heads {
                // The busiest head fills the compacted length; others are padded.
                let slack = if bh == 0 { 0.0 } else { 0.1 * rng.unit() };
                let kept = kept_positions(rng, q_len.max(kv_len), drop);
                let nq = ((q_len as f64) * (1.0 - slack)) as usize;
                let nk = ((kv_len as f64) * (1.0 - slack)) as usize;
                qp.extend((0..q_len).map(|i| if i < nq.max(1) { kept[i] } else { -1 }));
                kp.extend((0..kv_len).map(|i| if i < nk.max(1) { kept[i] } else { i32::MAX }));
            }
            out.insert("q_pos".into(), array3(q_len, qp));
            out.insert("k_pos".into(), array3(kv_len, kp));
        }
        "hash-bucket" | "hash-bucket-strict" => {
            let buckets: u64 = knob(params, "buckets", 8, "positive integer")?;
            if buckets == 0 {
                return Err(ExampleError::BadValue { name: "buckets".into(), value: "0".into(), expected: "positive integer".into() });
            }
            let (mut qb, mut qp, mut kb, mut kp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..batch * heads {
                // Shared-QK hashing: one bucket per original position, both sides sorted by (bucket, position).
                let n = q_len.max(kv_len);
                let ids: Vec<i32> = (0..n).map(|_| rng.below(buckets) as i32).collect();
                for (len, bucket_out, pos_out) in [(q_len, &mut qb, &mut qp), (kv_len, &mut kb, &mut kp)] {
                    let mut order: Vec<usize> = (0..len).collect();
                    order.sort_by_key(|&i| (ids[i], i));
                    bucket_out.extend(order.iter().map(|&i| ids[i]));
                    pos_out.extend(order.iter().map(|&i| i as i32));
                }
            }
            out.insert("q_bucket".into(), array3(q_len, qb));
            out.insert("q_pos".into(), array3(q_len, qp));
            out.insert("k_bucket".into(), array3(kv_len, kb));
            out.insert("k_pos".into(), array3(kv_len, kp));
        }
        "topk" => {
            let topk: usize = knob(params, "topk", 4, "positive integer")?;
            let block = 64;
            let (nqb, nkb) = (q_len.div_ceil(block), kv_len.div_ceil(block));
            let width = topk.max(1);
            let mut data = Vec::with_capacity(batch * heads * nqb * width);
            for _ in 0..batch * heads {
                for i in 0..nqb {
                    // Causal candidates; the diagonal block is always kept (SparseK keeps the local window).
                    let last = i.min(nkb - 1);
                    let mut chosen = vec![last];
                    let mut candidates: Vec<usize> = (0..last).collect();
                    while chosen.len() < topk && !candidates.is_empty() {
                        let j = rng.below(candidates.len() as u64) as usize;
                        chosen.push(candidates.swap_remove(j));
                    }
                    chosen.sort_unstable();
                    data.extend(chosen.iter().map(|&c| c as i32));
                    data.extend(std::iter::repeat_n(-1, width - chosen.len()));
                }
            }
            out.insert("sel".into(), InputValue::I32Array { shape: vec![batch, heads, nqb, width], data });
        }
        _ => {}
    }
    Ok(out)
}

/// Original positions kept after dropping each with probability `drop`, increasing.
fn kept_positions(rng: &mut SplitMix64, count: usize, drop: f64) -> Vec<i32> {
    let mut kept = Vec::with_capacity(count);
    let mut pos = 0i32;
    while kept.len() < count {
        if rng.unit() >= drop {
            kept.push(pos);
        }
        pos += 1;
    }
    kept
}
