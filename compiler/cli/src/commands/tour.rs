//! `lacuna tour`: the README's first command, runnable without a GPU. For
//! every standard pattern it prints the IR, the key range, the block mask of
//! an example problem checked against brute force, then compiles the forward
//! kernel at two head dims, writes the PTX (with manifest) and, when ptxas is
//! there, assembles it; a summary table ends the run. It only strings the
//! other commands' helpers together: no analysis or codegen logic lives here.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lacuna_codegen::ptxas::{PtxasError, PtxasReport};
use lacuna_ir::{Arch, Dims, Dtype, KeySource, PatternIr, TileShape};
use lacuna_patterns::StandardPattern;

use crate::commands::compile::{compile_kernel, ptx_file_text, write_file, PlanOverrides};
use crate::commands::ir::{verified, write_ir};
use crate::commands::mask::{bind_inputs, check_size, element_count, visited_line, Bound, MAX_CHECK};
use crate::error::CliError;
use crate::{picture, TourArgs};

const HEAD_DIMS: [u32; 2] = [64, 128];
const DTYPE: Dtype = Dtype::Bf16;
const ARCH: Arch = Arch::Sm90a;
const HEADS: usize = 2;
const TILE: usize = 128;
const SEED: u64 = 0;
/// Side-by-side pictures wider than this are drawn one head under the other.
const PICTURE_WIDTH: usize = 100;

/// One compiled kernel, for the summary table.
struct Row {
    pattern: &'static str,
    head_dim: u32,
    key_source: &'static str,
    ptx_bytes: Option<usize>,
    ptxas: Option<PtxasLine>,
}

/// What ptxas said about one kernel.
struct PtxasLine {
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Whether the kernels get assembled, and with which ptxas.
enum PtxasState {
    Skipped,
    Found(PathBuf),
    /// Not found; where it was looked for.
    Missing(String),
}

pub fn run(args: &TourArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(&args.out).map_err(|source| CliError::CreateDir { path: args.out.clone(), source })?;
    let dims = Dims::new(1, HEADS, args.q_len, args.q_len);
    let tiles = TileShape::new(TILE, TILE);
    let ptxas = if args.no_ptxas { PtxasState::Skipped } else { find_ptxas() };
    let mut rows = Vec::new();
    // Failures are collected so one bad kernel does not hide the others.
    let mut problems: Vec<String> = Vec::new();

    writeln!(out, "Lacuna tour: every standard pattern, from its IR to PTX.")?;
    writeln!(
        out,
        "  block masks: B=1 H={HEADS} Nq=Nk={}, tiles of {TILE} x {TILE}, example inputs (seed {SEED}), checked against brute force",
        args.q_len
    )?;
    writeln!(
        out,
        "  kernels:     {} {}, head_dim {}, written with their manifests to {}",
        DTYPE.name(),
        ARCH.name(),
        HEAD_DIMS.map(|d| d.to_string()).join(" and "),
        args.out.display()
    )?;
    writeln!(out, "  tiles:       . empty (skipped), + partial (masked per element), # full (no mask needed)")?;
    match &ptxas {
        PtxasState::Skipped => writeln!(out, "  ptxas:       skipped (--no-ptxas)")?,
        PtxasState::Found(path) => writeln!(out, "  ptxas:       {}", path.display())?,
        PtxasState::Missing(_) => writeln!(out, "  ptxas:       not found; the kernels are not assembled (how to install it: at the end)")?,
    }

    for pattern in crate::registry::all() {
        writeln!(out)?;
        writeln!(out, "== {}: {}", pattern.name, pattern.summary)?;
        writeln!(out, "   paper: {}", pattern.paper)?;
        let ir = (pattern.ir)();
        write_ir(out, &ir)?;
        verified(&ir)?;

        writeln!(out)?;
        mask_section(pattern, &ir, dims, tiles, out, &mut problems)?;

        writeln!(out)?;
        writeln!(out, "kernels ({} {}):", DTYPE.name(), ARCH.name())?;
        for head_dim in HEAD_DIMS {
            let row = kernel_section(pattern, &ir, head_dim, &args.out, &ptxas, out, &mut problems)?;
            rows.push(row);
        }
    }

    writeln!(out)?;
    write_summary(out, &rows, !matches!(ptxas, PtxasState::Found(_)))?;
    if let PtxasState::Missing(searched) = &ptxas {
        writeln!(out)?;
        writeln!(out, "ptxas was not found (looked at: {searched}), so the kernels were not assembled.")?;
        writeln!(out, "`./dev test` installs it under .tools/ptxas (from the PyPI wheel nvidia-cuda-nvcc-cu12); or set LACUNA_PTXAS=/path/to/ptxas.")?;
    }
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    out.flush()?;
    let mut err = io::stderr();
    for p in &problems {
        let _ = writeln!(err, "error: {p}");
    }
    Ok(ExitCode::from(1))
}

/// The example inputs, the block mask picture, the share visited and the brute-force check.
fn mask_section(
    pattern: &StandardPattern,
    ir: &PatternIr,
    dims: Dims,
    tiles: TileShape,
    out: &mut dyn Write,
    problems: &mut Vec<String>,
) -> Result<(), CliError> {
    check_size(ir, dims, tiles)?;
    let Bound { bindings, inputs_text } = bind_inputs(pattern, ir, dims, &[], &[], SEED)?;
    let mask = lacuna_ir::analyze(ir, &bindings, tiles)?;
    writeln!(out, "block mask: B={} H={} Nq=Nk={}, tiles of {} x {}", dims.batch, dims.heads, dims.q_len, tiles.block_q, tiles.block_k)?;
    write!(out, "{inputs_text}")?;
    let pictures = picture::heads_side_by_side(&mask, PICTURE_WIDTH).unwrap_or_else(|| picture::text(&mask, HEADS));
    write!(out, "{pictures}")?;
    writeln!(out, "{}", visited_line(&mask))?;
    let elements = element_count(dims);
    if elements > MAX_CHECK {
        writeln!(out, "check against brute force: skipped (B·H·Nq·Nk = {elements} is more than 2^31; use a smaller --q-len)")?;
        return Ok(());
    }
    let check = lacuna_ir::check_against_brute_force(ir, &bindings, &mask);
    writeln!(out, "{check}")?;
    if !check.is_sound() {
        problems.push(format!(
            "the block mask of `{}` is unsound (see its check line); a kernel using it would compute wrong results: a bug in lacuna, please report it",
            pattern.name
        ));
    }
    Ok(())
}

/// Compiles one kernel, writes its PTX file, assembles it if ptxas is usable.
fn kernel_section(
    pattern: &StandardPattern,
    ir: &PatternIr,
    head_dim: u32,
    dir: &Path,
    ptxas: &PtxasState,
    out: &mut dyn Write,
    problems: &mut Vec<String>,
) -> Result<Row, CliError> {
    let label = format!("  D={head_dim:<4}");
    let pad = " ".repeat(label.len());
    let mut row = Row { pattern: pattern.name, head_dim, key_source: "-", ptx_bytes: None, ptxas: None };
    let kernel = match compile_kernel(pattern.name, ir, head_dim, DTYPE, ARCH, &PlanOverrides::default()) {
        Ok(k) => k,
        Err(e) => {
            writeln!(out, "{label}compile failed: {e}")?;
            problems.push(e.to_string());
            return Ok(row);
        }
    };
    let plan = &kernel.plan;
    row.key_source = match plan.key_source {
        KeySource::Range(_) => "range",
        KeySource::Scan => "scan",
    };
    let path: PathBuf = dir.join(format!("{}_d{head_dim}.ptx", pattern.name));
    let text = ptx_file_text(&kernel);
    write_file(&path, &text)?;
    row.ptx_bytes = Some(text.len());
    writeln!(
        out,
        "{label}{} x {} tiles, {} warps, {} stages, {} B shared, key source {}",
        plan.block_q,
        plan.block_k,
        plan.warps,
        plan.stages,
        plan.shared_bytes(),
        row.key_source
    )?;
    writeln!(out, "{pad}kernel {} -> {} ({} bytes)", kernel.manifest.entry, path.display(), text.len())?;

    let PtxasState::Found(ptxas) = ptxas else {
        return Ok(row);
    };
    match assemble(ptxas, &kernel.ptx) {
        Assembled::Report(r) => {
            // The forward kernel's own numbers; spills count every entry of the module.
            let (registers, shared) = match r.entry(&kernel.manifest.entry) {
                Some(e) => (e.registers, e.shared_bytes),
                None => (r.registers, r.shared_bytes),
            };
            let spills = if r.spill_stores + r.spill_loads == 0 {
                "no spills".to_string()
            } else {
                problems.push(format!(
                    "ptxas reports register spills in `{}` ({} bytes stored, {} loaded): the plan for head_dim {head_dim} keeps too much in registers (a lacuna bug)\n  reproduce with: {} -arch={} -v {} -o /dev/null",
                    path.display(),
                    r.spill_stores,
                    r.spill_loads,
                    ptxas.display(),
                    ARCH.name(),
                    path.display()
                ));
                format!("SPILLS: {} bytes stored, {} bytes loaded", r.spill_stores, r.spill_loads)
            };
            writeln!(out, "{pad}ptxas: {registers} registers, {spills}, shared {shared} B static + {} B dynamic", kernel.plan.shared_bytes())?;
            row.ptxas = Some(PtxasLine { registers, spill_stores: r.spill_stores, spill_loads: r.spill_loads });
        }
        Assembled::Failed(why) => {
            writeln!(out, "{pad}ptxas: FAILED (details at the end)")?;
            problems.push(format!("ptxas rejects `{}`: {why}", path.display()));
        }
    }
    Ok(row)
}

/// The outcome of one ptxas run, in the terms the tour reports.
enum Assembled {
    Report(PtxasReport),
    Failed(String),
}

fn assemble(ptxas: &Path, ptx: &str) -> Assembled {
    match lacuna_codegen::ptxas::assemble_with(ptxas, ptx, ARCH) {
        Ok(r) => Assembled::Report(r),
        Err(e) => Assembled::Failed(e.to_string()),
    }
}

/// Looks for ptxas once, up front, so the intro can say which one is used.
fn find_ptxas() -> PtxasState {
    match lacuna_codegen::ptxas::find() {
        Ok(path) => PtxasState::Found(path),
        Err(PtxasError::NotFound { searched }) => {
            PtxasState::Missing(searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
        }
        Err(e) => PtxasState::Missing(e.to_string()),
    }
}

fn write_summary(out: &mut dyn Write, rows: &[Row], no_ptxas: bool) -> io::Result<()> {
    let name_w = rows.iter().map(|r| r.pattern.len()).max().unwrap_or(0).max("pattern".len());
    writeln!(out, "summary ({} {}):", DTYPE.name(), ARCH.name())?;
    let dash = |r: Option<String>| r.unwrap_or_else(|| "-".into());
    if no_ptxas {
        writeln!(out, "  {:name_w$}  {:>4}  {:10}  {:>9}", "pattern", "D", "key source", "PTX bytes")?;
        for r in rows {
            writeln!(out, "  {:name_w$}  {:>4}  {:10}  {:>9}", r.pattern, r.head_dim, r.key_source, dash(r.ptx_bytes.map(|b| b.to_string())))?;
        }
    } else {
        writeln!(out, "  {:name_w$}  {:>4}  {:10}  {:>9}  {:>12}  {:>9}", "pattern", "D", "key source", "registers", "spills st/ld", "PTX bytes")?;
        for r in rows {
            writeln!(
                out,
                "  {:name_w$}  {:>4}  {:10}  {:>9}  {:>12}  {:>9}",
                r.pattern,
                r.head_dim,
                r.key_source,
                dash(r.ptxas.as_ref().map(|p| p.registers.to_string())),
                dash(r.ptxas.as_ref().map(|p| format!("{}/{}", p.spill_stores, p.spill_loads))),
                dash(r.ptx_bytes.map(|b| b.to_string())),
            )?;
        }
    }
    Ok(())
}
