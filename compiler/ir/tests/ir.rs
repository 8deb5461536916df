//! The IR's text form, hash, composition, verifier and binding errors.

use std::collections::BTreeMap;

use lacuna_ir::{BinaryOp, BindError, Bindings, Coord, Dims, InputKind, InputValue, PatternBuilder, PatternIr, ScalarType};

fn causal() -> PatternIr {
    let mut p = PatternBuilder::new("Causal", "Inclusive causal.");
    let (q, k) = (p.coord(Coord::Q), p.coord(Coord::K));
    let root = p.binary(BinaryOp::Ge, q, k).expect("typed");
    p.finish(root).expect("bool")
}

fn buckets() -> PatternIr {
    let mut p = PatternBuilder::new("Bucket", "");
    let qb = p.declare("qb", InputKind::QueryTensor).expect("fresh");
    let kb = p.declare("kb", InputKind::KeyTensor).expect("fresh");
    let (a, b) = (p.read(qb), p.read(kb));
    let root = p.binary(BinaryOp::Eq, a, b).expect("typed");
    p.finish(root).expect("bool")
}

#[test]
fn text_form_is_stable() {
    assert_eq!(
        causal().to_string(),
        "pattern Causal(): \"Inclusive causal.\"\n  %0 = coord q\n  %1 = coord k\n  %2 = ge %0, %1 : bool\n  mask %2\n"
    );
}

#[test]
fn hash_changes_with_content_not_with_rebuilding() {
    assert_eq!(causal().content_hash(), causal().content_hash());
    assert_ne!(causal().content_hash(), buckets().content_hash());
}

#[test]
fn composition_shares_inputs_and_verifies() {
    let both = causal().and(&buckets()).expect("compatible");
    lacuna_ir::verify(&both).expect("valid");
    assert_eq!(both.inputs().len(), 2);
    let twice = both.or(&buckets()).expect("same inputs reused");
    assert_eq!(twice.inputs().len(), 2, "inputs with the same name are shared");
    let mut p = PatternBuilder::new("Clash", "");
    let x = p.declare("qb", InputKind::HeadScalar(ScalarType::I32)).expect("fresh");
    let v = p.read(x);
    let zero = p.const_i32(0);
    let root = p.binary(BinaryOp::Gt, v, zero).expect("typed");
    let clash = p.finish(root).expect("bool");
    let err = buckets().and(&clash).expect_err("qb differs in kind");
    assert!(err.to_string().contains("input `qb` is Q<i32> in one and H<i32> in the other"), "{err}");
}

#[test]
fn builder_refuses_ill_typed_nodes_with_advice() {
    let mut p = PatternBuilder::new("Bad", "");
    let c = p.declare("c", InputKind::HeadScalar(ScalarType::F32)).expect("fresh");
    let (q, cv) = (p.coord(Coord::Q), p.read(c));
    let err = p.binary(BinaryOp::Lt, q, cv).expect_err("i32 vs f32");
    assert!(err.to_string().contains("as f32"), "{err}");
    let err = p.finish(q).expect_err("i32 root");
    assert!(err.to_string().contains("a mask must be a bool"), "{err}");
}

#[test]
fn bindings_name_the_input_and_shape() {
    let p = buckets();
    let dims = Dims::new(2, 3, 10, 12);
    let err = Bindings::new(&p, dims, BTreeMap::new()).expect_err("missing");
    assert!(matches!(err, BindError::Missing { ref name, .. } if name == "qb"), "{err}");
    let wrong = BTreeMap::from([
        ("qb".to_string(), InputValue::I32Array { shape: vec![2, 3, 12], data: vec![0; 72] }),
        ("kb".to_string(), InputValue::I32Array { shape: vec![2, 3, 12], data: vec![0; 72] }),
    ]);
    let err = Bindings::new(&p, dims, wrong).expect_err("qb has the key length");
    assert_eq!(err.to_string(), "input `qb` must be an i32 array of shape [2, 3, 10] (B, H, Nq), got an i32 array of shape [2, 3, 12]");
    let extra = BTreeMap::from([
        ("qb".to_string(), InputValue::I32Array { shape: vec![2, 3, 10], data: vec![0; 60] }),
        ("kb".to_string(), InputValue::I32Array { shape: vec![2, 3, 12], data: vec![0; 72] }),
        ("W".to_string(), InputValue::I32(3)),
    ]);
    let err = Bindings::new(&p, dims, extra).expect_err("unknown W");
    assert!(err.to_string().contains("has no input `W`; its inputs are: qb, kb"), "{err}");
}
