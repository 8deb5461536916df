//! LLVM module → PTX through the NVPTX target machine: the target (triple,
//! CPU, PTX version), the data layout taken from the target machine, the
//! verifier, the `default<O3>` pipeline and the assembly printer.

use std::sync::Once;

use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::OptimizationLevel;

use lacuna_ir::Arch;

use crate::error::{CodegenError, Result};

pub const TRIPLE: &str = "nvptx64-nvidia-cuda";

/// CPU and feature string for `arch`. sm_90a needs PTX 8.0; sm_80 needs 7.0
/// (mma bf16, cp.async, ldmatrix). Only these two exist in [`Arch`], and both
/// support every intrinsic the lowering uses, so no selection can fail later.
pub fn target_cpu(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::Sm80 => ("sm_80", "+ptx70"),
        Arch::Sm90a => ("sm_90a", "+ptx80"),
    }
}

/// The NVPTX target machine for `arch` at opt level Aggressive.
pub fn target_machine(arch: Arch) -> Result<TargetMachine> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        Target::initialize_nvptx(&InitializationConfig::default());
        // 32-bit pointers for shared (and const/local) memory: every shared
        // address in the kernel then takes one register instead of two, which
        // is what keeps the D=64 kernel (2 m16 slabs per warp) from spilling.
        // This is process-wide LLVM state, set once, before any target machine.
        let args = [c"lacuna".as_ptr(), c"-nvptx-short-ptr".as_ptr()];
        // SAFETY: two valid NUL-terminated strings and an empty overview; the option
        // exists in LLVM 22's NVPTX backend (a typo would be reported and ignored).
        unsafe { llvm_sys::support::LLVMParseCommandLineOptions(2, args.as_ptr(), c"".as_ptr()) };
    });
    let triple = TargetTriple::create(TRIPLE);
    let target = Target::from_triple(&triple).map_err(|e| CodegenError::Llvm { stage: "target lookup", message: e.to_string() })?;
    let (cpu, features) = target_cpu(arch);
    target
        .create_target_machine(&triple, cpu, features, OptimizationLevel::Aggressive, RelocMode::Default, CodeModel::Default)
        .ok_or_else(|| CodegenError::Llvm { stage: "target machine creation", message: format!("no NVPTX target machine for {cpu} {features}") })
}

/// Sets the module's triple and data layout from the target machine.
pub fn prepare(module: &Module, tm: &TargetMachine) {
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
}

pub fn verify(module: &Module, stage: &'static str) -> Result<()> {
    module.verify().map_err(|e| CodegenError::Llvm { stage, message: e.to_string() })
}

/// Verifies, optimises (`default<O3>`) and prints PTX.
pub fn to_ptx(module: &Module, tm: &TargetMachine) -> Result<String> {
    verify(module, "verification of the generated IR")?;
    module
        .run_passes("default<O3>", tm, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm { stage: "default<O3> pipeline", message: e.to_string() })?;
    verify(module, "verification after optimisation")?;
    let buf = tm
        .write_to_memory_buffer(module, FileType::Assembly)
        .map_err(|e| CodegenError::Llvm { stage: "PTX emission", message: e.to_string() })?;
    Ok(String::from_utf8_lossy(buf.as_slice()).trim_end_matches('\0').to_string())
}
