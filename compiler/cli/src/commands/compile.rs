//! `lacuna compile`: plans one pattern's forward kernel, applies the command
//! line's overrides, generates it and prints one stage (the plan, LLVM IR, or
//! PTX headed by its manifest). Planning and lowering belong to
//! `lacuna-codegen`; this file turns names into values and picks what to print.
//! `lacuna tour` compiles through [`compile_kernel`] too.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use lacuna_codegen::{CompiledKernel, KernelPlan, Mma, RowLength};
use lacuna_ir::{Arch, Dtype, GridOrder, PatternIr};

use crate::commands::ir::verified;
use crate::error::CliError;
use crate::{CompileArgs, Emit};

pub fn run(args: &CompileArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let pattern = crate::registry::find(&args.pattern)?;
    let ir = (pattern.ir)();
    verified(&ir)?;
    let dtype = Dtype::parse(&args.dtype).ok_or_else(|| CliError::UnknownDtype { given: args.dtype.clone() })?;
    let arch = Arch::parse(&args.arch).ok_or_else(|| CliError::UnknownArch { given: args.arch.clone() })?;
    let overrides = PlanOverrides {
        mma: args.mma,
        rows: args.rows,
        row_index: args.row_index,
        block_q: args.block_q,
        block_k: args.block_k,
        warps: args.warps,
        stages: args.stages,
        grid: args.grid,
        kv_len: args.kv_len,
        q_len: args.q_len,
        long_rows: false,
    };
    let kernel = compile_kernel(pattern.name, &ir, args.head_dim, dtype, arch, &overrides)?;
    let text = match args.emit {
        Emit::Plan => format!("{}{}{}", kernel.plan, kernel.manifest, length_classes_text(&kernel.plan, &overrides)),
        Emit::Llvm => with_newline(kernel.llvm_ir.clone()),
        Emit::Ptx => ptx_file_text(&kernel),
    };
    match &args.output {
        None => out.write_all(text.as_bytes())?,
        Some(path) => {
            write_file(path, &text)?;
            writeln!(out, "wrote {} ({} bytes): {} of kernel {}", path.display(), text.len(), stage_name(args.emit), kernel.manifest.entry)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Plan fields given on the command line; `None` keeps the planner's choice.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlanOverrides {
    /// The tensor-core path (its default tiles first; the fields below then apply).
    pub mma: Option<Mma>,
    /// Tiles shaped for this row length (its default tiles; the tile fields below then apply).
    pub rows: Option<RowLength>,
    /// Rows through index arrays (`KernelPlan::row_index`).
    pub row_index: bool,
    pub block_q: Option<u32>,
    pub block_k: Option<u32>,
    pub warps: Option<u32>,
    pub stages: Option<u32>,
    /// The grid order (`KernelPlan::grid`).
    pub grid: Option<GridOrder>,
    /// The key length the kernel will run at (`KernelPlan::for_length`:
    /// short problems take short-row tiles); ignored when `rows` is given.
    pub kv_len: Option<usize>,
    /// The query length it will run at (`KernelPlan::for_queries`:
    /// decoding takes short-row tiles); ignored when `rows` is given.
    pub q_len: Option<usize>,
    /// The caller knows the rows are long though the planner cannot see it
    /// (SCFA's QK-drop: compacted rows stay causal on positions): the plan
    /// starts from long-row tiles, and `kv_len` may still shorten them.
    /// Ignored when `rows` is given.
    pub long_rows: bool,
}

impl PlanOverrides {
    /// `plan` with these fields changed: the path first (with its default
    /// tiles), then the row length (its default tiles) or else the key
    /// length's tiles, then row indices and
    /// the tile fields. Not checked here: `lacuna_codegen::compile` validates
    /// the result.
    pub fn apply(&self, mut plan: KernelPlan) -> KernelPlan {
        if let Some(m) = self.mma {
            plan = plan.with_mma(m);
        }
        if self.rows.is_none() && self.long_rows {
            plan = plan.with_row_length(RowLength::Long);
        }
        if let (None, Some(n)) = (self.rows, self.q_len) {
            plan = plan.for_queries(n);
        }
        match (self.rows, self.kv_len) {
            (Some(r), _) => plan = plan.with_row_length(r),
            (None, Some(n)) => plan = plan.for_length(n),
            (None, None) => {}
        }
        plan.row_index |= self.row_index;
        plan.block_q = self.block_q.unwrap_or(plan.block_q);
        plan.block_k = self.block_k.unwrap_or(plan.block_k);
        plan.warps = self.warps.unwrap_or(plan.warps);
        plan.stages = self.stages.unwrap_or(plan.stages);
        plan.grid = self.grid.unwrap_or(plan.grid);
        plan
    }
}

/// Plans with `KernelPlan::for_pattern`, applies `overrides` and generates
/// the kernel; `compile` re-checks the changed plan, so a bad override comes
/// back as a codegen error that names the field.
pub fn compile_kernel(
    pattern: &str,
    ir: &PatternIr,
    head_dim: u32,
    dtype: Dtype,
    arch: Arch,
    overrides: &PlanOverrides,
) -> Result<CompiledKernel, CliError> {
    let err = |source| CliError::Codegen { pattern: pattern.into(), head_dim, source };
    let plan = overrides.apply(KernelPlan::for_pattern(ir, head_dim, dtype, arch).map_err(err)?);
    lacuna_codegen::compile(ir, &plan).map_err(err)
}

/// For a plan no length was given for: the other tiles `--kv-len` would
/// pick (`KernelPlan::length_classes`), so that an ahead-of-time build knows
/// which kernels to make when its key lengths vary; empty when one plan
/// serves every length.
fn length_classes_text(plan: &KernelPlan, overrides: &PlanOverrides) -> String {
    if overrides.kv_len.is_some() || overrides.rows.is_some() {
        return String::new();
    }
    let classes = plan.length_classes();
    if classes.len() < 2 {
        return String::new();
    }
    let mut text = String::from("key-length classes (compile one kernel per class with --kv-len N):\n");
    let mut from = 1;
    for (bound, p) in &classes {
        let keys = if *bound == usize::MAX { format!("{from} keys and more") } else { format!("{from}-{bound} keys") };
        let rows = if p.rows == RowLength::Long { "long" } else { "short" };
        text += &format!("  {keys}: {}x{} tiles, {} warps, {} stages ({rows} rows), {} grid\n", p.block_q, p.block_k, p.warps, p.stages, p.grid.name());
        from = bound.saturating_add(1);
    }
    text
}

/// The PTX with its `// lacuna-manifest:` line first, which is what the
/// runtime's `KernelManifest::from_ptx` reads back.
pub fn ptx_file_text(kernel: &CompiledKernel) -> String {
    with_newline(kernel.manifest.attach_to_ptx(&kernel.ptx))
}

pub fn write_file(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|source| CliError::WriteFile { path: path.to_path_buf(), source })
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn stage_name(emit: Emit) -> &'static str {
    match emit {
        Emit::Plan => "the plan and manifest",
        Emit::Llvm => "the LLVM IR",
        Emit::Ptx => "the PTX and manifest",
    }
}
