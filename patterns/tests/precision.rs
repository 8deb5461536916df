//! Precision of the block analysis on the standard patterns: how many tiles
//! marked Partial are really Empty or Full. Zero where the predicate allows
//! exactness (causal, windows, MoA bands, compacted QK-drop), boundary tiles
//! only where it does not (sinks, sorted hash buckets, block lists).

use std::collections::BTreeMap;

use lacuna_ir::{analyze, check_against_brute_force, Bindings, BlockClass, Dims, InputValue, KeyRange, MaskCheck, TileShape};
use lacuna_patterns::{example_inputs, find};

fn check(name: &str, dims: Dims, tiles: TileShape, params: &[(&str, &str)]) -> (MaskCheck, lacuna_ir::BlockMask) {
    let sp = find(name).expect("standard");
    let ir = (sp.ir)();
    lacuna_ir::verify(&ir).expect("standard patterns verify");
    let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let values = example_inputs(sp, dims, &params, &BTreeMap::new(), 7).expect("examples");
    let bindings = Bindings::new(&ir, dims, values).expect("examples bind");
    let mask = analyze(&ir, &bindings, tiles).expect("tiles");
    let c = check_against_brute_force(&ir, &bindings, &mask);
    assert!(c.is_sound(), "{name}: {c}");
    (c, mask)
}

#[test]
fn causal_1024_has_8_diagonal_partials() {
    let (c, mask) = check("causal", Dims::new(1, 1, 1024, 1024), TileShape::new(128, 128), &[]);
    assert!(c.is_exact(), "{c}");
    let n = mask.counts();
    assert_eq!((n.partial, n.full, n.empty), (8, 28, 28));
    for qb in 0..8 {
        assert_eq!(mask.class(0, 0, qb, qb), BlockClass::Partial);
    }
}

#[test]
fn exact_patterns_have_no_imprecise_tiles() {
    let ragged = Dims::new(2, 3, 1000, 1300);
    for tiles in [TileShape::new(128, 64), TileShape::new(64, 64), TileShape::new(128, 128)] {
        for name in ["causal", "causal-strict"] {
            let (c, _) = check(name, ragged, tiles, &[]);
            assert!(c.is_exact(), "{name} {tiles:?}: {c}");
        }
        let (c, _) = check("sliding-window", ragged, tiles, &[("W", "300")]);
        assert!(c.is_exact(), "window {tiles:?}: {c}");
        let (c, _) = check("moa", Dims::new(1, 4, 1024, 1024), tiles, &[("sink", "0")]);
        assert!(c.is_exact(), "moa band {tiles:?}: {c}");
        let (c, _) = check("qk-drop", Dims::new(2, 3, 900, 900), tiles, &[("drop", "0.6")]);
        assert!(c.is_exact(), "qk-drop {tiles:?}: {c}");
    }
}

#[test]
fn boundary_only_imprecision_for_sinks_buckets_and_lists() {
    let tiles = TileShape::new(64, 64);
    // Sinks: only tiles that straddle the sink boundary or meet the band edge there.
    let (c, mask) = check("sliding-window", Dims::new(1, 1, 2048, 2048), tiles, &[("W", "512"), ("sink", "100")]);
    let imprecise = c.partial_really_empty + c.partial_really_full;
    assert!(imprecise <= mask.q_blocks, "sink imprecision {imprecise} > one per query block: {c}");
    // MoA with 64 sinks, block 64: the sink column is exactly one block, so still exact.
    let (c, _) = check("moa", Dims::new(1, 4, 2048, 2048), tiles, &[]);
    assert!(c.is_exact(), "moa + 64 sinks at block 64: {c}");
    // Hash buckets: imprecise tiles only where a query or key block straddles two buckets.
    let dims = Dims::new(1, 2, 2048, 2048);
    let (c, mask) = check("hash-bucket", dims, tiles, &[("buckets", "8")]);
    let sp = find("hash-bucket").expect("standard");
    let values = example_inputs(sp, dims, &BTreeMap::new(), &BTreeMap::new(), 7).expect("examples");
    let InputValue::I32Array { data: buckets, .. } = &values["q_bucket"] else { panic!("q_bucket is an i32 array") };
    let straddles = |h: usize, blk: usize| {
        let row = &buckets[h * 2048..][blk * 64..(blk + 1) * 64];
        row[0] != row[63]
    };
    let mut boundary_partials = 0;
    for h in 0..2 {
        for qb in 0..mask.q_blocks {
            for kb in 0..mask.k_blocks {
                if mask.class(0, h, qb, kb) == BlockClass::Partial && (straddles(h, qb) || straddles(h, kb)) {
                    boundary_partials += 1;
                }
            }
        }
    }
    let imprecise = c.partial_really_empty + c.partial_really_full;
    eprintln!("hash-bucket, 8 buckets, 2 heads, N=2048, tiles 64x64: {c}; {:?}; {boundary_partials} partial tiles on bucket boundaries", mask.counts());
    assert!(imprecise <= boundary_partials, "imprecision {imprecise} beyond the {boundary_partials} boundary tiles");
    // Block lists at the list's own granularity classify exactly, window off.
    let (c, _) = check("topk", Dims::new(1, 2, 1024, 1024), tiles, &[("topk", "4")]);
    eprintln!("topk: {c}");
    assert_eq!(c.partial_really_empty + c.partial_really_full, 0, "{c}");
}

#[test]
fn closed_form_key_ranges_for_band_patterns() {
    for (name, expect) in [
        ("causal", "k in [0, q]"),
        ("causal-strict", "k in [0, q - 1]"),
        ("sliding-window", "k in [q - %4 + 1, q] | [0, min(q, %6 - 1)]"),
    ] {
        let ir = (find(name).expect("standard").ir)();
        let range = KeyRange::derive(&ir).unwrap_or_else(|| panic!("{name} has a closed form"));
        assert_eq!(range.to_string(), expect, "{name}");
    }
    for name in ["qk-drop", "hash-bucket"] {
        assert!(KeyRange::derive(&(find(name).expect("standard").ir)()).is_none(), "{name} is data-dependent: scanned");
    }
    let moa = (find("moa").expect("standard").ir)();
    assert!(KeyRange::derive(&moa).is_some(), "MoA bands are affine in k");
    let _ = InputValue::I32(0);
}
