//! `pattern!` expansions: the IR they build (its text form), that it verifies,
//! and what it means element by element (checked against plain Rust closures).

use std::collections::BTreeMap;

use lacuna_ir::eval::ElementEvaluator;
use lacuna_ir::{verify, Bindings, Dims, InputKind, InputValue, Node, Pattern, PatternIr, ScalarType};

lacuna_ir::pattern! {
    /// SCFA hash-bucketed attention: same bucket, causal on original positions.
    pub HashBucket(q_bucket: Q<i32>, k_bucket: K<i32>, q_pos: Q<i32>, k_pos: K<i32>) =
        q_bucket[q] == k_bucket[k] && q_pos[q] >= k_pos[k];

    /// Inclusive causal.
    pub Causal() = q >= k;

    pub(crate) MoaBand(alpha: H<i32>, beta: H<f32>, sink: H<i32>, N: i32) =
        k <= q && (q - k < alpha[h] + (beta[h] * N as f32) as i32 || k < sink[h]);

    pub TopK(sel: Blocks<64>, W: i32) = q >= k && (sel[q, k] || q - k < W);
}

lacuna_ir::pattern! {
    /// First line.
    ///
    ///   Indented third line.
    pub MultiDoc(unused: K<i32>) = true;

    pub AbsBand(W: i32) = abs(q - k) <= W && (k - q).abs() <= W;

    pub Clamp(lo: i32, hi: i32) = k == max(lo, min(q, hi)) || k == q.min(hi).max(lo) + 100;

    pub Select(T: i32) = if q > T { k % 2 == 0 } else if q == T { false } else { k <= q };

    pub Truncate(s: f32) = ((q - k) as f32 * s) as i32 == -1 || (q >= k) as f32 * 2.5f32 > 2.0 && (b == 1) as i32 == 1;

    pub IntMin() = q + -2147483648 < k - 2147483647i32 && -(q) <= --k;

    pub Raw(r#type: Q<i32>) = r#type[q] >= 0 && r#q >= k;

    pub Heads(scale: H<f32>, off: H<i32>) = (k as f32) < scale[h] * -1.5 + (off[h] / 2 % 3) as f32 && !(h != 0 && q < k);
}

fn bind(ir: &PatternIr, dims: Dims, values: Vec<(&str, InputValue)>) -> Bindings {
    let values: BTreeMap<String, InputValue> = values.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
    match Bindings::new(ir, dims, values) {
        Ok(b) => b,
        Err(e) => panic!("test bindings rejected: {e}"),
    }
}

fn i32s(shape: &[usize], data: Vec<i32>) -> InputValue {
    InputValue::I32Array { shape: shape.to_vec(), data }
}

/// Compares the evaluator with `expected` at every element of `dims`.
fn assert_mask(ir: &PatternIr, bindings: &Bindings, expected: impl Fn(usize, usize, usize, usize) -> bool) {
    let d = bindings.dims();
    let mut ev = ElementEvaluator::new(ir, bindings);
    let mut trues = 0;
    for b in 0..d.batch {
        for h in 0..d.heads {
            for q in 0..d.q_len {
                for k in 0..d.kv_len {
                    let got = ev.mask(b, h, q, k);
                    assert_eq!(got, expected(b, h, q, k), "{} at b={b} h={h} q={q} k={k}", ir.name());
                    trues += usize::from(got);
                }
            }
        }
    }
    let total = d.batch * d.heads * d.q_len * d.kv_len;
    assert!(trues > 0 && trues < total, "{}: mask is constant ({trues} of {total} true); test is too weak", ir.name());
}

#[test]
fn causal_text_and_trait() {
    assert_eq!(Causal::NAME, "Causal");
    assert_eq!(
        Causal::ir().to_string(),
        "pattern Causal(): \"Inclusive causal.\"\n  %0 = coord q\n  %1 = coord k\n  %2 = ge %0, %1 : bool\n  mask %2\n"
    );
    // The unit struct derives Clone, Copy, Debug, Default, PartialEq, Eq, Hash.
    fn derived<T: Clone + Copy + std::fmt::Debug + Default + Eq + std::hash::Hash>(t: T) -> (T, T, String) {
        (t, T::default(), format!("{t:?}"))
    }
    let (c, d, debug) = derived(Causal);
    assert_eq!(c, d);
    assert_eq!(debug, "Causal");
}

#[test]
fn hash_bucket_text() {
    let expected = "\
pattern HashBucket(q_bucket: Q<i32>, k_bucket: K<i32>, q_pos: Q<i32>, k_pos: K<i32>): \"SCFA hash-bucketed attention: same bucket, causal on original positions.\"
  %0 = load q_bucket[q] : i32
  %1 = load k_bucket[k] : i32
  %2 = eq %0, %1 : bool
  %3 = load q_pos[q] : i32
  %4 = load k_pos[k] : i32
  %5 = ge %3, %4 : bool
  %6 = and %2, %5 : bool
  mask %6
";
    assert_eq!(HashBucket::ir().to_string(), expected);
}

#[test]
fn moa_band_text() {
    let expected = "\
pattern MoaBand(alpha: H<i32>, beta: H<f32>, sink: H<i32>, N: i32)
  %0 = coord k
  %1 = coord q
  %2 = le %0, %1 : bool
  %3 = sub %1, %0 : i32
  %4 = load alpha[h] : i32
  %5 = load beta[h] : f32
  %6 = load N : i32
  %7 = cast %6 to f32
  %8 = mul %5, %7 : f32
  %9 = cast %8 to i32
  %10 = add %4, %9 : i32
  %11 = lt %3, %10 : bool
  %12 = load sink[h] : i32
  %13 = lt %0, %12 : bool
  %14 = or %11, %13 : bool
  %15 = and %2, %14 : bool
  mask %15
";
    let ir = MoaBand::ir();
    assert_eq!(ir.to_string(), expected);
    assert_eq!(ir.doc(), "");
}

#[test]
fn top_k_text_and_kinds() {
    let ir = TopK::ir();
    assert_eq!(
        ir.to_string(),
        "pattern TopK(sel: Blocks<64>, W: i32)\n  %0 = coord q\n  %1 = coord k\n  %2 = ge %0, %1 : bool\n  \
         %3 = load sel[q, k] : bool\n  %4 = sub %0, %1 : i32\n  %5 = load W : i32\n  %6 = lt %4, %5 : bool\n  \
         %7 = or %3, %6 : bool\n  %8 = and %2, %7 : bool\n  mask %8\n"
    );
    let kinds: Vec<InputKind> = ir.inputs().iter().map(|d| d.kind).collect();
    assert_eq!(kinds, [InputKind::BlockList { block: 64 }, InputKind::LaunchScalar(ScalarType::I32)]);
    let kinds: Vec<InputKind> = MoaBand::ir().inputs().iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            InputKind::HeadScalar(ScalarType::I32),
            InputKind::HeadScalar(ScalarType::F32),
            InputKind::HeadScalar(ScalarType::I32),
            InputKind::LaunchScalar(ScalarType::I32),
        ]
    );
}

#[test]
fn every_pattern_verifies() {
    let all = [
        HashBucket::ir(),
        Causal::ir(),
        MoaBand::ir(),
        TopK::ir(),
        MultiDoc::ir(),
        AbsBand::ir(),
        Clamp::ir(),
        Select::ir(),
        Truncate::ir(),
        IntMin::ir(),
        Heads::ir(),
    ];
    for ir in &all {
        assert_eq!(verify(ir), Ok(()), "{ir}");
    }
}

#[test]
fn docs_are_trimmed_and_joined() {
    let ir = MultiDoc::ir();
    assert_eq!(ir.doc(), "First line.\n\nIndented third line.");
    // An input the mask never reads is still declared, in order.
    assert_eq!(ir.inputs().len(), 1);
    assert_eq!(ir.inputs()[0].name, "unused");
    assert_eq!(ir.inputs()[0].kind, InputKind::KeyTensor);
}

#[test]
fn raw_identifiers_are_unraw() {
    let ir = Raw::ir();
    assert_eq!(ir.inputs()[0].name, "type");
    assert_eq!(verify(&ir), Ok(()));
    assert!(ir.to_string().contains("load type[q] : i32"), "{ir}");
}

#[test]
fn hash_bucket_semantics() {
    let ir = HashBucket::ir();
    let dims = Dims::new(2, 1, 6, 5);
    let q_bucket = vec![0, 1, 0, 2, 1, 0, /* b=1 */ 1, 1, 0, 0, 2, 2];
    let k_bucket = vec![0, 0, 1, 1, 2, /* b=1 */ 1, 0, 1, 2, 2];
    let q_pos = vec![5, 0, 3, 2, 4, 1, /* b=1 */ 0, 1, 2, 3, 4, 5];
    let k_pos = vec![4, 1, 0, 3, 2, /* b=1 */ 0, 2, 4, 1, 3];
    let bindings = bind(
        &ir,
        dims,
        vec![
            ("q_bucket", i32s(&[2, 1, 6], q_bucket.clone())),
            ("k_bucket", i32s(&[2, 1, 5], k_bucket.clone())),
            ("q_pos", i32s(&[2, 1, 6], q_pos.clone())),
            ("k_pos", i32s(&[2, 1, 5], k_pos.clone())),
        ],
    );
    assert_mask(&ir, &bindings, |b, _, q, k| {
        q_bucket[b * 6 + q] == k_bucket[b * 5 + k] && q_pos[b * 6 + q] >= k_pos[b * 5 + k]
    });
    let mut ev = ElementEvaluator::new(&ir, &bindings);
    assert!(ev.mask(0, 0, 0, 0)); // bucket 0 == 0, pos 5 >= 4
    assert!(!ev.mask(0, 0, 5, 0)); // bucket 0 == 0, pos 1 < 4
    assert!(!ev.mask(0, 0, 1, 1)); // bucket 1 != 0
}

#[test]
fn moa_band_semantics() {
    let ir = MoaBand::ir();
    let dims = Dims::new(1, 3, 12, 12);
    let alpha = vec![2, 0, 1];
    let beta = vec![0.5f32, 0.25, 0.1];
    let sink = vec![1, 0, 3];
    let n = 8;
    let bindings = bind(
        &ir,
        dims,
        vec![
            ("alpha", i32s(&[3], alpha.clone())),
            ("beta", InputValue::F32Array { shape: vec![3], data: beta.clone() }),
            ("sink", i32s(&[3], sink.clone())),
            ("N", InputValue::I32(n)),
        ],
    );
    assert_mask(&ir, &bindings, |_, h, q, k| {
        let (q, k) = (q as i32, k as i32);
        k <= q && (q - k < alpha[h] + (beta[h] * n as f32) as i32 || k < sink[h])
    });
    // Head 0: band 2 + 4 = 6 plus one sink key; head 1: band 0 + 2 = 2, no sink.
    let mut ev = ElementEvaluator::new(&ir, &bindings);
    assert!(ev.mask(0, 0, 10, 5) && !ev.mask(0, 0, 10, 4) && ev.mask(0, 0, 10, 0));
    assert!(ev.mask(0, 1, 10, 9) && !ev.mask(0, 1, 10, 8) && !ev.mask(0, 1, 10, 0));
    assert!(!ev.mask(0, 0, 3, 4), "never above the diagonal");
}

#[test]
fn top_k_semantics() {
    let ir = TopK::ir();
    let dims = Dims::new(1, 1, 192, 192);
    // Query block 0 selects key block 0; block 1 selects nothing; block 2 selects 0 and 2.
    let sel = vec![0, -1, -1, -1, 2, 0];
    let w = 3;
    let bindings = bind(&ir, dims, vec![("sel", i32s(&[1, 1, 3, 2], sel)), ("W", InputValue::I32(w))]);
    let listed = |qb: usize, kb: usize| matches!((qb, kb), (0, 0) | (2, 0) | (2, 2));
    assert_mask(&ir, &bindings, |_, _, q, k| q >= k && (listed(q / 64, k / 64) || (q - k) < w as usize));
}

#[test]
fn abs_min_max_forms() {
    let ir = AbsBand::ir();
    let bindings = bind(&ir, Dims::new(1, 1, 9, 9), vec![("W", InputValue::I32(2))]);
    assert_mask(&ir, &bindings, |_, _, q, k| q.abs_diff(k) <= 2);
    assert!(ir.to_string().contains("abs "), "{ir}");

    let ir = Clamp::ir();
    let text = ir.to_string();
    assert!(text.contains("min ") && text.contains("max "), "{text}");
    let bindings = bind(&ir, Dims::new(1, 1, 10, 10), vec![("lo", InputValue::I32(3)), ("hi", InputValue::I32(6))]);
    assert_mask(&ir, &bindings, |_, _, q, k| {
        let c = (q as i32).clamp(3, 6);
        k as i32 == c || k as i32 == c + 100
    });
}

#[test]
fn if_becomes_a_select() {
    let ir = Select::ir();
    assert_eq!(ir.nodes().filter(|(_, n)| matches!(n, Node::Select(..))).count(), 2, "{ir}");
    let bindings = bind(&ir, Dims::new(1, 1, 8, 8), vec![("T", InputValue::I32(4))]);
    assert_mask(&ir, &bindings, |_, _, q, k| {
        if q > 4 {
            k % 2 == 0
        } else if q == 4 {
            false
        } else {
            k <= q
        }
    });
}

#[test]
fn casts_truncate_and_bools_convert() {
    let ir = Truncate::ir();
    let text = ir.to_string();
    assert!(text.contains("to f32") && text.contains("to i32"), "{text}");
    let bindings = bind(&ir, Dims::new(2, 1, 7, 7), vec![("s", InputValue::F32(-0.4))]);
    assert_mask(&ir, &bindings, |b, _, q, k| {
        let diff = q as i32 - k as i32;
        // -0.4 * diff truncates toward zero: -1 exactly for diff in 3..=4.
        ((diff as f32 * -0.4) as i32 == -1) || (q >= k && b == 1)
    });
    let mut ev = ElementEvaluator::new(&ir, &bindings);
    assert!(ev.mask(0, 0, 5, 2) && ev.mask(0, 0, 6, 2) && !ev.mask(0, 0, 5, 3) && !ev.mask(0, 0, 6, 1));
}

#[test]
fn negative_literals_fold_into_constants() {
    let ir = IntMin::ir();
    let text = ir.to_string();
    assert!(text.contains("const -2147483648 : i32"), "{text}");
    assert!(text.contains("const 2147483647 : i32"), "{text}");
    // `-(q)` and `--k` stay negations; only a literal is folded.
    assert_eq!(ir.nodes().filter(|(_, n)| matches!(n, Node::Unary(lacuna_ir::UnaryOp::Neg, _))).count(), 3, "{text}");
    let bindings = bind(&ir, Dims::new(1, 1, 6, 6), vec![]);
    assert_mask(&ir, &bindings, |_, _, q, k| {
        let (q, k) = (q as i32, k as i32);
        q.wrapping_add(i32::MIN) < k - i32::MAX && -q <= k
    });
}

#[test]
fn head_inputs_float_math() {
    let ir = Heads::ir();
    let text = ir.to_string();
    assert!(text.contains("const -1.5 : f32") && text.contains("rem ") && text.contains("div "), "{text}");
    let scale = vec![-4.0f32, -6.0];
    let off = vec![7, 20];
    let bindings = bind(
        &ir,
        Dims::new(1, 2, 9, 9),
        vec![("scale", InputValue::F32Array { shape: vec![2], data: scale.clone() }), ("off", i32s(&[2], off.clone()))],
    );
    assert_mask(&ir, &bindings, |_, h, q, k| {
        (k as f32) < scale[h] * -1.5 + (off[h] / 2 % 3) as f32 && !(h != 0 && q < k)
    });
}
