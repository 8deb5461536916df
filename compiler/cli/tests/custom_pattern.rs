//! A user's own `pattern!` gets the whole command line through
//! `lacuna_cli::run_with`, with no other code: ir, mask (with the brute-force
//! check), compile, and the pattern list.

use std::process::ExitCode;

use lacuna_cli::{run_with, StandardPattern};
use lacuna_ir::{pattern, Pattern};

pattern! {
    /// Dilated causal attention: every `stride`-th key in the past, plus the 64 nearest.
    pub Dilated(stride: i32) = k <= q && ((q - k) % stride == 0 || q - k < 64);
}

fn run(args: &[&str]) -> (ExitCode, String) {
    let extra = vec![StandardPattern {
        name: "dilated",
        summary: "every stride-th past key plus a local window of 64",
        paper: "a user's own pattern",
        ir: Dilated::ir,
        knobs: &[],
    }];
    let mut out = Vec::new();
    let code = run_with(std::iter::once("lacuna").chain(args.iter().copied()), extra, &mut out);
    (code, String::from_utf8(out).expect("utf-8 output"))
}

#[test]
fn mask_ir_compile_and_list_a_user_pattern() {
    let (code, text) = run(&["mask", "dilated", "--q-len", "512", "--block-q", "64", "--block-k", "64", "--param", "stride=4", "--check"]);
    assert_eq!(code, ExitCode::SUCCESS, "{text}");
    assert!(text.contains("unsound: 0 empty tiles that attend, 0 full tiles that mask"), "{text}");
    assert!(text.contains("tiles: 28 empty (.)"), "the strictly upper 28 of 64 tiles are empty:\n{text}");

    let (code, text) = run(&["ir", "dilated"]);
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(text.contains("pattern Dilated(stride: i32)") && text.contains("rem"), "{text}");

    let (code, text) = run(&["compile", "dilated", "--head-dim", "64", "--emit", "ptx"]);
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(text.contains("// lacuna-manifest: ") && text.contains(".entry fwd_dilated_d64_bf16"), "{}", &text[..text.len().min(400)]);

    let (code, text) = run(&["patterns"]);
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(text.contains("dilated") && text.contains("hash-bucket"), "{text}");
}

#[test]
fn a_user_pattern_without_its_scalar_says_how_to_pass_it() {
    let (code, _) = run(&["mask", "dilated", "--q-len", "128"]);
    assert_eq!(code, ExitCode::from(2), "stride has no example value: an error naming --param stride");
}
