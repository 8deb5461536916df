//! `pattern!` diagnostics: every compile error the macro reports has a case in
//! tests/ui/fail (with its expected `.stderr`), and tests/ui/pass holds
//! declarations that must compile. Re-bless with
//! `TRYBUILD=overwrite cargo test -p codegen-tests --test ui`, then read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
