//! Precision of the block analysis on the standard patterns: how many tiles
//! marked Partial are really Empty or Full. Zero where the predicate allows
//! exactness (causal, windows, MoA bands, compacted QK-drop, sorted hash
//! buckets, through their bucket runs), boundary tiles only where it does
//! not (sinks, block lists).

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
        for name in ["hash-bucket", "hash-bucket-strict"] {
            for buckets in ["3", "8", "32"] {
                let (c, _) = check(name, Dims::new(1, 2, 1500, 1700), tiles, &[("buckets", buckets)]);
                assert!(c.is_exact(), "{name}, {buckets} buckets, {tiles:?}: {c}");
            }
        }
    }
}

#[test]
fn boundary_only_imprecision_for_sinks_and_lists() {
    let tiles = TileShape::new(64, 64);
    // Sinks: only tiles that straddle the sink boundary or meet the band edge there.
    let (c, mask) = check("sliding-window", Dims::new(1, 1, 2048, 2048), tiles, &[("W", "512"), ("sink", "100")]);
    let imprecise = c.partial_really_empty + c.partial_really_full;
    assert!(imprecise <= mask.q_blocks, "sink imprecision {imprecise} > one per query block: {c}");
    // MoA with 64 sinks, block 64: the sink column is exactly one block, so still exact.
    let (c, _) = check("moa", Dims::new(1, 4, 2048, 2048), tiles, &[]);
    assert!(c.is_exact(), "moa + 64 sinks at block 64: {c}");
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
