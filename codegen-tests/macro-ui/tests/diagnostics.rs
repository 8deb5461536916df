//! `pattern!` diagnostics: every compile error the macro reports has a case in
//! tests/fail (with its expected `.stderr`), and tests/pass holds declarations
//! that must compile. Re-bless with
//! `TRYBUILD=overwrite cargo test -p macro-ui-tests`, then read the diff.

#[test]
fn pattern_macro_diagnostics() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/fail/*.rs");
    t.pass("tests/pass/*.rs");
}
