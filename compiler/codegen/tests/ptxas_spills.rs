//! Every kernel shape the project ships must assemble with ptxas for its
//! target with zero local-memory spills. Needs ptxas (see
//! `lacuna_codegen::ptxas::INSTALL_HINT`); without it this test FAILS.

mod common;

use lacuna_codegen::{compile, ptxas, Arch, Dtype, KernelPlan};
use lacuna_ir::PatternIr;

fn assert_no_spills(p: &PatternIr, head_dim: u32, dtype: Dtype, arch: Arch) -> u32 {
    let plan = KernelPlan::for_pattern(p, head_dim, dtype, arch).expect("plan");
    let k = compile(p, &plan).unwrap_or_else(|e| panic!("{} d{head_dim}: {e}", p.name()));
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

#[test]
fn standard_patterns_assemble_without_spills() {
    for sp in lacuna_patterns::standard() {
        let p = (sp.ir)();
        for arch in [Arch::Sm80, Arch::Sm90a] {
            for d in [64, 128] {
                assert_no_spills(&p, d, Dtype::Bf16, arch);
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
