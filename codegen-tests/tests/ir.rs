//! Snapshots of the first two stages for every standard pattern: the IR text
//! (with its closed-form key range) and the block-mask picture on example
//! inputs. A diff here means the meaning or the analysis of a pattern moved.

use std::collections::BTreeMap;

use lacuna_ir::{analyze, check_against_brute_force, Bindings, Dims, KeyRange, TileShape};
use lacuna_patterns::{example_inputs, standard};

#[test]
fn ir_text_of_every_standard_pattern() {
    for sp in standard() {
        let ir = (sp.ir)();
        let range = KeyRange::derive(&ir).map_or_else(|| "key range: scan (no closed form)".to_string(), |r| format!("key range: {r}"));
        insta::assert_snapshot!(format!("ir_{}", sp.name), format!("{ir}{range}\n"));
    }
}

#[test]
fn block_mask_of_every_standard_pattern() {
    for sp in standard() {
        let ir = (sp.ir)();
        let dims = Dims::new(1, 2, 1000, 1000);
        let values = example_inputs(sp, dims, &BTreeMap::new(), &BTreeMap::new(), 3).expect("examples");
        let bindings = Bindings::new(&ir, dims, values).expect("examples bind");
        let mask = analyze(&ir, &bindings, TileShape::new(64, 64)).expect("tiles");
        let check = check_against_brute_force(&ir, &bindings, &mask);
        assert!(check.is_sound(), "{}: {check}", sp.name);
        insta::assert_snapshot!(format!("mask_{}", sp.name), format!("{mask}{check}\n"));
    }
}
