mod common;
use lacuna_codegen::*;

#[test]
fn smoke() {
    let pats = [common::causal(), common::sliding_window(), common::hash_bucket(), common::moa(), common::block_list(), common::dense()];
    for p in &pats {
        for d in [64, 128] {
            for arch in [Arch::Sm90a, Arch::Sm80] {
                let plan = KernelPlan::for_pattern(p, d, Dtype::Bf16, arch).unwrap();
                let t = std::time::Instant::now();
                let k = compile(p, &plan).unwrap();
                let ct = t.elapsed();
                let r = ptxas::assemble(&k.ptx, plan.arch).unwrap();
                let e = r.entry(&k.manifest.entry).unwrap();
                println!("{:14} d{d} {:6} regs {:3} spill {}/{} compile {:?}", p.name(), arch.name(), e.registers, e.spill_stores, e.spill_loads, ct);
                std::fs::write(format!("/tmp/k_{}_{}_{}.ptx", p.name(), d, arch.name()), &k.ptx).unwrap();
                std::fs::write(format!("/tmp/k_{}_{}_{}.ll", p.name(), d, arch.name()), &k.llvm_ir).unwrap();
            }
        }
    }
}
