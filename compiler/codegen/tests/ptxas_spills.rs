//! Every kernel shape the project ships must assemble with ptxas for its
//! target with zero local-memory spills. Needs ptxas (see
//! `lacuna_codegen::ptxas::INSTALL_HINT`); without it this test FAILS.

mod common;

use lacuna_codegen::{compile, ptxas, Arch, Dtype, KernelPlan, RowLength};
use lacuna_ir::PatternIr;

fn assert_no_spills(p: &PatternIr, head_dim: u32, dtype: Dtype, arch: Arch) -> u32 {
    let plan = KernelPlan::for_pattern(p, head_dim, dtype, arch).expect("plan");
    assert_plan_without_spills(p, &plan)
}

fn assert_plan_without_spills(p: &PatternIr, plan: &KernelPlan) -> u32 {
    let (head_dim, arch) = (plan.head_dim, plan.arch);
    let k = compile(p, plan).unwrap_or_else(|e| panic!("{} d{head_dim}: {e}", p.name()));
    let report = match ptxas::assemble(&k.ptx, arch) {
        Ok(r) => r,
        Err(e @ ptxas::PtxasError::NotFound { .. }) => panic!("this test needs ptxas: {e}"),
        Err(e) => panic!("{} d{head_dim} {}: {e}", p.name(), arch.name()),
    };
    let fwd = report.entry(&k.manifest.entry).unwrap_or_else(|| panic!("no ptxas report for {}:\n{}", k.manifest.entry, report.log));
    assert_eq!(
        (fwd.spill_stores, fwd.spill_loads, fwd.stack_bytes),
        (0, 0, 0),
        "{} on {} spills:\n{}",
        k.manifest.entry,
        arch.name(),
        report.log
    );
    let summary = report.entry("block_minmax").expect("summary kernel report");
    assert_eq!((summary.spill_stores, summary.spill_loads), (0, 0));
    fwd.registers
}

#[test]
fn required_patterns_assemble_without_spills() {
    let patterns = [common::causal(), common::sliding_window(), common::hash_bucket(), common::moa(), common::block_list()];
    for p in &patterns {
        for arch in [Arch::Sm80, Arch::Sm90a] {
            for d in [64, 128] {
                let regs = assert_no_spills(p, d, Dtype::Bf16, arch);
                assert!(regs <= 255, "{} d{d}: {regs} registers", p.name());
            }
        }
    }
}

/// Every key-length class (`KernelPlan::length_classes`): `lacuna run` and
/// the method pipelines compile the class of the launch's key length, and
/// the short-row classes fit more CTAs per SM, so fewer registers (the
/// top-k kernel's short class once spilled 48 bytes at D=64 where its
/// long class did not).
#[test]
fn standard_patterns_assemble_without_spills() {
    for sp in lacuna_patterns::standard() {
        let p = (sp.ir)();
        for arch in [Arch::Sm80, Arch::Sm90a] {
            for d in [64, 128] {
                let plan = KernelPlan::for_pattern(&p, d, Dtype::Bf16, arch).expect("plan");
                for (_, class) in plan.length_classes() {
                    assert_plan_without_spills(&p, &class);
                }
            }
        }
        assert_no_spills(&p, 64, Dtype::F16, Arch::Sm90a);
    }
}

#[test]
fn large_head_dims_assemble_without_spills() {
    for d in [192, 256] {
        assert_no_spills(&common::moa(), d, Dtype::Bf16, Arch::Sm90a);
        assert_no_spills(&common::hash_bucket(), d, Dtype::Bf16, Arch::Sm80);
    }
}

/// The SCFA pipelines' kernels (rows through index arrays; QK-drop on long
/// rows, as `MethodPattern::long_rows` asks), in every key-length class.
#[test]
fn method_pipeline_kernels_assemble_without_spills() {
    for (name, long_rows) in [("hash-bucket", false), ("hash-bucket-strict", false), ("qk-drop", true)] {
        let p = (lacuna_patterns::find(name).expect("standard pattern").ir)();
        for d in [64, 128] {
            let mut plan = KernelPlan::for_pattern(&p, d, Dtype::Bf16, Arch::Sm90a).expect("plan");
            plan.row_index = true;
            if long_rows {
                plan = plan.with_row_length(RowLength::Long);
            }
            for (_, class) in plan.length_classes() {
                assert_plan_without_spills(&p, &class);
            }
        }
    }
}
