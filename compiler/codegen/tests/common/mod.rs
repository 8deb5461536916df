//! Test patterns built by hand with `PatternBuilder` (the standard pattern
//! crate is written concurrently; these mirror its shapes).
#![allow(dead_code)]

use lacuna_ir::{BinaryOp as B, Coord, InputKind, PatternBuilder, PatternIr, ScalarType};

type R<T> = Result<T, lacuna_ir::PatternError>;

/// Runs a builder closure; the test patterns are valid by construction.
fn build(f: impl FnOnce() -> R<PatternIr>) -> PatternIr {
    f().expect("valid test pattern")
}

pub fn causal() -> PatternIr {
    build(|| {
        let mut b = PatternBuilder::new("Causal", "Inclusive causal mask.");
        let (q, k) = (b.coord(Coord::Q), b.coord(Coord::K));
        let m = b.binary(B::Ge, q, k)?;
        b.finish(m)
    })
}

/// `q >= k && q - k < window`.
pub fn sliding_window() -> PatternIr {
    build(|| {
        let mut b = PatternBuilder::new("SlidingWindow", "Causal band of `window` keys.");
        let w = b.declare("window", InputKind::LaunchScalar(ScalarType::I32))?;
        let (q, k, w) = (b.coord(Coord::Q), b.coord(Coord::K), b.read(w));
        let causal = b.binary(B::Ge, q, k)?;
        let d = b.binary(B::Sub, q, k)?;
        let near = b.binary(B::Lt, d, w)?;
        let m = b.binary(B::And, causal, near)?;
        b.finish(m)
    })
}

/// Reformer-style: same bucket and causal in original positions.
pub fn hash_bucket() -> PatternIr {
    build(|| {
        let mut b = PatternBuilder::new("HashBucket", "Same LSH bucket, causal on original positions.");
        let qb = b.declare("q_bucket", InputKind::QueryTensor)?;
        let kb = b.declare("k_bucket", InputKind::KeyTensor)?;
        let qp = b.declare("q_pos", InputKind::QueryTensor)?;
        let kp = b.declare("k_pos", InputKind::KeyTensor)?;
        let (qb, kb, qp, kp) = (b.read(qb), b.read(kb), b.read(qp), b.read(kp));
        let same = b.binary(B::Eq, qb, kb)?;
        let before = b.binary(B::Ge, qp, kp)?;
        let m = b.binary(B::And, same, before)?;
        b.finish(m)
    })
}

/// MoA: `k <= q && (q - k < span_h || k < sink_h)`, span_h = (alpha_h + beta_h * n) as i32.
pub fn moa() -> PatternIr {
    build(|| {
        let mut b = PatternBuilder::new("MoA", "Mixture of attention spans: per-head band plus sink.");
        let alpha = b.declare("alpha", InputKind::HeadScalar(ScalarType::F32))?;
        let beta = b.declare("beta", InputKind::HeadScalar(ScalarType::F32))?;
        let sink = b.declare("sink", InputKind::HeadScalar(ScalarType::I32))?;
        let n = b.declare("n", InputKind::LaunchScalar(ScalarType::I32))?;
        let (q, k) = (b.coord(Coord::Q), b.coord(Coord::K));
        let (alpha, beta, sink, n) = (b.read(alpha), b.read(beta), b.read(sink), b.read(n));
        let nf = b.cast(ScalarType::F32, n)?;
        let grow = b.binary(B::Mul, beta, nf)?;
        let spanf = b.binary(B::Add, alpha, grow)?;
        let span = b.cast(ScalarType::I32, spanf)?;
        let causal = b.binary(B::Le, k, q)?;
        let d = b.binary(B::Sub, q, k)?;
        let near = b.binary(B::Lt, d, span)?;
        let is_sink = b.binary(B::Lt, k, sink)?;
        let either = b.binary(B::Or, near, is_sink)?;
        let m = b.binary(B::And, causal, either)?;
        b.finish(m)
    })
}

/// Top-k style block selection, causal inside: `sel[q, k] && q >= k`.
pub fn block_list() -> PatternIr {
    build(|| {
        let mut b = PatternBuilder::new("BlockSparse", "Selected key blocks per query block, causal.");
        let sel = b.declare("sel", InputKind::BlockList { block: 64 })?;
        let (q, k, sel) = (b.coord(Coord::Q), b.coord(Coord::K), b.read(sel));
        let causal = b.binary(B::Ge, q, k)?;
        let m = b.binary(B::And, sel, causal)?;
        b.finish(m)
    })
}

/// Dense: `true` (every tile Full).
pub fn dense() -> PatternIr {
    build(|| {
        let mut b = PatternBuilder::new("Dense", "No mask.");
        let t = b.const_bool(true);
        b.finish(t)
    })
}
