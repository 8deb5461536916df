//! Soundness of the block analysis and of closed-form key ranges, against
//! brute force, on random patterns, random inputs, ragged lengths, Nq != Nk.

use std::collections::BTreeMap;

use lacuna_ir::analysis::{analyze, check_against_brute_force, BlockClass, TileShape};
use lacuna_ir::eval::ElementEvaluator;
use lacuna_ir::{BinaryOp, Bindings, Coord, Dims, InputKind, InputValue, KeyRange, NodeId, PatternBuilder, PatternIr, ScalarType, UnaryOp};
use proptest::prelude::*;

/// A tiny deterministic generator so that one proptest seed is one pattern.
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Inputs every random pattern may read.
struct Vocabulary {
    tq: lacuna_ir::InputId,
    tk: lacuna_ir::InputId,
    a: lacuna_ir::InputId,
    c: lacuna_ir::InputId,
    w: lacuna_ir::InputId,
    sel: lacuna_ir::InputId,
}

fn declare(p: &mut PatternBuilder) -> Vocabulary {
    let mut d = |n: &str, k| p.declare(n, k).expect("fresh names");
    Vocabulary {
        tq: d("tq", InputKind::QueryTensor),
        tk: d("tk", InputKind::KeyTensor),
        a: d("a", InputKind::HeadScalar(ScalarType::I32)),
        c: d("c", InputKind::HeadScalar(ScalarType::F32)),
        w: d("w", InputKind::LaunchScalar(ScalarType::I32)),
        sel: d("sel", InputKind::BlockList { block: 16 }),
    }
}

fn int(p: &mut PatternBuilder, v: &Vocabulary, g: &mut Gen, depth: u32) -> NodeId {
    let leaf = depth == 0 || g.below(3) == 0;
    if leaf {
        return match g.below(8) {
            0 => p.coord(Coord::Q),
            1 => p.coord(Coord::K),
            2 => p.coord(Coord::H),
            3 => p.read(v.tq),
            4 => p.read(v.tk),
            5 => p.read(v.a),
            6 => p.read(v.w),
            _ => p.const_i32(g.below(40) as i32 - 20),
        };
    }
    match g.below(10) {
        0 => {
            let f = float(p, v, g, depth - 1);
            p.cast(ScalarType::I32, f).expect("cast")
        }
        1 => {
            let a = int(p, v, g, depth - 1);
            let op = [UnaryOp::Neg, UnaryOp::Abs][g.below(2) as usize];
            p.unary(op, a).expect("unary")
        }
        2 => {
            let c = boolean(p, v, g, depth - 1);
            let a = int(p, v, g, depth - 1);
            let b = int(p, v, g, depth - 1);
            p.select(c, a, b).expect("select")
        }
        _ => {
            let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Rem, BinaryOp::Min, BinaryOp::Max];
            let op = ops[g.below(ops.len() as u64) as usize];
            let a = int(p, v, g, depth - 1);
            let b = int(p, v, g, depth - 1);
            p.binary(op, a, b).expect("int binary")
        }
    }
}

fn float(p: &mut PatternBuilder, v: &Vocabulary, g: &mut Gen, depth: u32) -> NodeId {
    if depth == 0 || g.below(3) == 0 {
        return match g.below(3) {
            0 => p.read(v.c),
            1 => p.const_f32((g.below(17) as f32 - 8.0) * 0.375),
            _ => {
                let i = int(p, v, g, depth.saturating_sub(1));
                p.cast(ScalarType::F32, i).expect("cast")
            }
        };
    }
    let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Min, BinaryOp::Max];
    let op = ops[g.below(ops.len() as u64) as usize];
    let a = float(p, v, g, depth - 1);
    let b = float(p, v, g, depth - 1);
    p.binary(op, a, b).expect("float binary")
}

fn boolean(p: &mut PatternBuilder, v: &Vocabulary, g: &mut Gen, depth: u32) -> NodeId {
    let cmps = [BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge, BinaryOp::Eq, BinaryOp::Ne];
    if depth == 0 || g.below(3) == 0 {
        if g.below(8) == 0 {
            return p.read(v.sel);
        }
        let op = cmps[g.below(6) as usize];
        let (a, b) = if g.below(5) == 0 {
            (float(p, v, g, depth.saturating_sub(1)), float(p, v, g, depth.saturating_sub(1)))
        } else {
            (int(p, v, g, depth.saturating_sub(1)), int(p, v, g, depth.saturating_sub(1)))
        };
        return p.binary(op, a, b).expect("comparison");
    }
    match g.below(4) {
        0 => {
            let a = boolean(p, v, g, depth - 1);
            p.unary(UnaryOp::Not, a).expect("not")
        }
        1 => {
            let a = boolean(p, v, g, depth - 1);
            let b = boolean(p, v, g, depth - 1);
            p.binary(BinaryOp::Or, a, b).expect("or")
        }
        _ => {
            let a = boolean(p, v, g, depth - 1);
            let b = boolean(p, v, g, depth - 1);
            p.binary(BinaryOp::And, a, b).expect("and")
        }
    }
}

fn random_pattern(seed: u64) -> PatternIr {
    let mut g = Gen(seed);
    let mut p = PatternBuilder::new("Random", "");
    let v = declare(&mut p);
    let root = boolean(&mut p, &v, &mut g, 4);
    p.finish(root).expect("bool root")
}

/// `bq[q] == bk[k] && <random>` (or the equality second): a bucket join,
/// whose other tensors the analysis summarises per bucket run.
fn random_join_pattern(seed: u64) -> PatternIr {
    let mut g = Gen(seed);
    let mut p = PatternBuilder::new("RandomJoin", "");
    let v = declare(&mut p);
    let bq = p.declare("bq", InputKind::QueryTensor).expect("fresh name");
    let bk = p.declare("bk", InputKind::KeyTensor).expect("fresh name");
    let (x, y) = (p.read(bq), p.read(bk));
    let join = p.binary(BinaryOp::Eq, x, y).expect("i32 equality");
    let rest = boolean(&mut p, &v, &mut g, 3);
    let root = if g.below(2) == 0 { p.binary(BinaryOp::And, join, rest) } else { p.binary(BinaryOp::And, rest, join) };
    p.finish(root.expect("and")).expect("bool root")
}

fn random_bindings(p: &PatternIr, dims: Dims, seed: u64, sorted: bool) -> Bindings {
    let mut g = Gen(seed ^ 0x5555);
    let Dims { batch, heads, q_len, kv_len } = dims;
    let tensor = |n: usize, g: &mut Gen| {
        let mut data: Vec<i32> = (0..batch * heads * n).map(|_| g.below(60) as i32 - 20).collect();
        if sorted {
            data.chunks_mut(n).for_each(|c| c.sort_unstable());
        }
        InputValue::I32Array { shape: vec![batch, heads, n], data }
    };
    let mut values = BTreeMap::new();
    values.insert("tq".to_string(), tensor(q_len, &mut g));
    values.insert("tk".to_string(), tensor(kv_len, &mut g));
    values.insert("a".to_string(), InputValue::I32Array { shape: vec![heads], data: (0..heads).map(|_| g.below(40) as i32 - 10).collect() });
    values.insert("c".to_string(), InputValue::F32Array { shape: vec![heads], data: (0..heads).map(|_| (g.below(33) as f32 - 16.0) * 0.25).collect() });
    values.insert("w".to_string(), InputValue::I32(g.below(50) as i32 - 5));
    // Bucket-join patterns: few buckets, so blocks hold runs of several.
    for (name, n) in [("bq", q_len), ("bk", kv_len)] {
        if p.input_id(name).is_some() {
            let mut data: Vec<i32> = (0..batch * heads * n).map(|_| g.below(4) as i32).collect();
            if sorted {
                data.chunks_mut(n).for_each(|c| c.sort_unstable());
            }
            values.insert(name.to_string(), InputValue::I32Array { shape: vec![batch, heads, n], data });
        }
    }
    let (qb, kb) = (q_len.div_ceil(16), kv_len.div_ceil(16));
    let width = 3;
    let sel: Vec<i32> = (0..batch * heads * qb * width).map(|_| g.below(kb as u64 + 1) as i32 - 1).collect();
    values.insert("sel".to_string(), InputValue::I32Array { shape: vec![batch, heads, qb, width], data: sel });
    Bindings::new(p, dims, values).expect("random bindings match the vocabulary")
}

fn arb_case() -> impl Strategy<Value = (u64, Dims, TileShape, bool)> {
    (any::<u64>(), 1usize..=2, 1usize..=2, 1usize..=70, 1usize..=70, 1usize..=19, 1usize..=19, any::<bool>())
        .prop_map(|(seed, b, h, nq, nk, bq, bk, sorted)| (seed, Dims::new(b, h, nq, nk), TileShape::new(bq, bk), sorted))
}

/// `p` verifies, and its tile classes on random inputs agree with brute force.
fn classes_are_sound(p: &PatternIr, seed: u64, dims: Dims, tiles: TileShape, sorted: bool) -> Result<(), TestCaseError> {
    lacuna_ir::verify(p).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let bindings = random_bindings(p, dims, seed, sorted);
    let mask = analyze(p, &bindings, tiles).expect("positive tiles");
    let check = check_against_brute_force(p, &bindings, &mask);
    prop_assert!(check.is_sound(), "{}\n{}\n{}", p, check, mask);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Empty ⇒ every element masked; Full ⇒ none masked.
    #[test]
    fn tile_classes_are_sound((seed, dims, tiles, sorted) in arb_case()) {
        classes_are_sound(&random_pattern(seed), seed, dims, tiles, sorted)?;
    }

    /// The same for bucket joins, where the analysis also splits on the bucket.
    #[test]
    fn bucket_join_classes_are_sound((seed, dims, tiles, sorted) in arb_case()) {
        let p = random_join_pattern(seed);
        // tq and tk (inputs 0 and 1) get bucket runs whenever the rest reads them.
        let reads_tensors = p.nodes().any(|(_, n)| matches!(n, lacuna_ir::Node::Input(i) if i.index() < 2));
        prop_assert_eq!(lacuna_ir::BucketJoin::find(&p).is_some(), reads_tensors);
        classes_are_sound(&p, seed, dims, tiles, sorted)?;
    }

    /// Every key a query may attend to lies inside the closed-form key range.
    #[test]
    fn key_ranges_contain_every_attended_key((seed, dims, tiles, sorted) in arb_case()) {
        let p = random_pattern(seed);
        let Some(range) = KeyRange::derive(&p) else { return Ok(()) };
        let bindings = random_bindings(&p, dims, seed, sorted);
        let mut eval = ElementEvaluator::new(&p, &bindings);
        for b in 0..dims.batch {
            for h in 0..dims.heads {
                for qb in 0..dims.q_len.div_ceil(tiles.block_q) {
                    let q0 = qb * tiles.block_q;
                    let q1 = (q0 + tiles.block_q).min(dims.q_len) - 1;
                    let Some(spans) = range.key_blocks(&p, &bindings, (b, h), (q0, q1), tiles.block_k) else { continue };
                    for q in q0..=q1 {
                        for k in 0..dims.kv_len {
                            if eval.mask(b, h, q, k) {
                                let kb = k / tiles.block_k;
                                prop_assert!(spans.iter().any(|&(s, e)| s <= kb && kb < e),
                                    "{p}\n{range}: key {k} (block {kb}) of query {q} outside {spans:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The window pattern's key range is exact: the blocks it lists are exactly the non-Empty ones.
#[test]
fn window_key_range_is_exact() {
    let mut p = PatternBuilder::new("Window", "");
    let w = p.declare("W", InputKind::LaunchScalar(ScalarType::I32)).expect("fresh");
    let (q, k, wv) = (p.coord(Coord::Q), p.coord(Coord::K), p.read(w));
    let causal = p.binary(BinaryOp::Le, k, q).expect("typed");
    let dist = p.binary(BinaryOp::Sub, q, k).expect("typed");
    let near = p.binary(BinaryOp::Lt, dist, wv).expect("typed");
    let root = p.binary(BinaryOp::And, causal, near).expect("typed");
    let p = p.finish(root).expect("bool");
    let range = KeyRange::derive(&p).expect("affine in k");
    assert_eq!(range.to_string(), "k in [q - %2 + 1, q]");
    let dims = Dims::new(1, 1, 1000, 1000);
    let bindings = Bindings::new(&p, dims, BTreeMap::from([("W".to_string(), InputValue::I32(200))])).expect("bound");
    let tiles = TileShape::new(64, 32);
    let mask = analyze(&p, &bindings, tiles).expect("tiles");
    for qb in 0..mask.q_blocks {
        let q0 = qb * 64;
        let q1 = (q0 + 64).min(1000) - 1;
        let spans = range.key_blocks(&p, &bindings, (0, 0), (q0, q1), 32).expect("no overflow");
        let visited: Vec<usize> = (0..mask.k_blocks).filter(|&kb| mask.class(0, 0, qb, kb) != BlockClass::Empty).collect();
        let listed: Vec<usize> = spans.iter().flat_map(|&(s, e)| s..e).collect();
        assert_eq!(visited, listed, "query block {qb}");
    }
}
