//! The CPU reference against a naive dense implementation (explicit mask
//! matrix, two-pass softmax in f64), and its fully-masked-row contract.

use std::collections::BTreeMap;

use lacuna_ir::reference::{attention, AttentionShape, Precision};
use lacuna_ir::{BinaryOp, Bindings, Coord, Dims, InputKind, InputValue, PatternBuilder, PatternIr, ScalarType};

fn window_pattern() -> PatternIr {
    let mut p = PatternBuilder::new("Window", "");
    let w = p.declare("W", InputKind::LaunchScalar(ScalarType::I32)).expect("fresh");
    let (q, k, wv) = (p.coord(Coord::Q), p.coord(Coord::K), p.read(w));
    let causal = p.binary(BinaryOp::Gt, q, k).expect("typed");
    let dist = p.binary(BinaryOp::Sub, q, k).expect("typed");
    let near = p.binary(BinaryOp::Lt, dist, wv).expect("typed");
    let root = p.binary(BinaryOp::And, causal, near).expect("typed");
    p.finish(root).expect("bool")
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn matches_naive_dense_attention_with_gqa_and_ragged_lengths() {
    let p = window_pattern();
    let shape = AttentionShape { batch: 2, heads: 4, kv_heads: 2, q_len: 13, kv_len: 21, head_dim: 8 };
    let dims = Dims::new(2, 4, 13, 21);
    let bindings = Bindings::new(&p, dims, BTreeMap::from([("W".to_string(), InputValue::I32(5))])).expect("bound");
    let q = noise(2 * 4 * 13 * 8, 1);
    let k = noise(2 * 2 * 21 * 8, 2);
    let v = noise(2 * 2 * 21 * 8, 3);
    let scale = 0.35;
    let got = attention(&p, &bindings, shape, &q, &k, &v, scale, Precision::F64).expect("shapes agree");
    let got32 = attention(&p, &bindings, shape, &q, &k, &v, scale, Precision::F32).expect("shapes agree");
    for b in 0..2 {
        for h in 0..4 {
            let hk = h / 2;
            for i in 0..13 {
                // Naive: materialise the row's mask, softmax in two passes.
                let allowed: Vec<bool> = (0..21).map(|j| i > j && i - j < 5).collect();
                let s: Vec<f64> = (0..21)
                    .map(|j| (0..8).map(|t| q[((b * 4 + h) * 13 + i) * 8 + t] as f64 * k[((b * 2 + hk) * 21 + j) * 8 + t] as f64).sum::<f64>() * scale as f64)
                    .collect();
                let row = (b * 4 + h) * 13 + i;
                if !allowed.iter().any(|&a| a) {
                    assert_eq!(got.lse[row], f32::NEG_INFINITY, "fully masked row {row} has lse -inf");
                    assert!(got.out[row * 8..][..8].iter().all(|&x| x == 0.0), "fully masked row {row} is zero");
                    continue;
                }
                let m = (0..21).filter(|&j| allowed[j]).map(|j| s[j]).fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = (0..21).filter(|&j| allowed[j]).map(|j| (s[j] - m).exp()).sum();
                assert!((got.lse[row] as f64 - (m + z.ln())).abs() < 1e-5);
                for t in 0..8 {
                    let o: f64 = (0..21).filter(|&j| allowed[j]).map(|j| (s[j] - m).exp() / z * v[((b * 2 + hk) * 21 + j) * 8 + t] as f64).sum();
                    assert!((got.out[row * 8 + t] as f64 - o).abs() < 1e-5, "out[{row},{t}]");
                    assert!((got32.out[row * 8 + t] as f64 - o).abs() < 1e-4, "f32 out[{row},{t}]");
                }
            }
        }
    }
    assert!(got.out.iter().chain(&got.lse).all(|x| !x.is_nan()), "no NaN anywhere");
}

#[test]
fn rejects_wrong_lengths_and_gqa() {
    let p = window_pattern();
    let dims = Dims::new(1, 3, 4, 4);
    let bindings = Bindings::new(&p, dims, BTreeMap::from([("W".to_string(), InputValue::I32(2))])).expect("bound");
    let shape = AttentionShape { batch: 1, heads: 3, kv_heads: 2, q_len: 4, kv_len: 4, head_dim: 2 };
    let err = attention(&p, &bindings, shape, &[0.0; 24], &[0.0; 16], &[0.0; 16], 1.0, Precision::F32).expect_err("3 heads over 2 kv heads");
    assert!(err.to_string().contains("multiple of kv_heads"), "{err}");
    let shape = AttentionShape { kv_heads: 1, ..shape };
    let err = attention(&p, &bindings, shape, &[0.0; 23], &[0.0; 8], &[0.0; 8], 1.0, Precision::F32).expect_err("short q");
    assert!(err.to_string().contains("q has 23 elements, expected 24"), "{err}");
}
