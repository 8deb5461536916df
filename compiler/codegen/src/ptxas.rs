//! ptxas as a checker, with no GPU: find it, assemble a PTX module for an
//! arch, and read back registers, spills and static shared memory per entry.
//!
//! Lookup order: `$LACUNA_PTXAS`, then `ptxas` on `PATH`, then
//! `<workspace>/.tools/ptxas/nvidia/cuda_nvcc/bin/ptxas` (see [`INSTALL_HINT`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use lacuna_ir::Arch;

/// How to get a ptxas on a machine without CUDA.
pub const INSTALL_HINT: &str = "install one with: mkdir -p .tools/ptxas && cd .tools/ptxas && \
pip download --no-deps nvidia-cuda-nvcc-cu12==12.9.86 -d . && python3 -m zipfile -e nvidia_cuda_nvcc_cu12-*.whl . && \
chmod +x nvidia/cuda_nvcc/bin/ptxas   (run in the workspace root), or set LACUNA_PTXAS=/path/to/ptxas";

#[derive(Debug, thiserror::Error)]
pub enum PtxasError {
    #[error("ptxas not found (looked at: {}); {INSTALL_HINT}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { searched: Vec<PathBuf> },
    #[error("could not run ptxas: {0}")]
    Io(#[from] std::io::Error),
    #[error("ptxas rejected the PTX (kept at {}); reproduce with:\n  {command}\n{log}", ptx.display())]
    Failed { command: String, ptx: PathBuf, log: String },
}

/// Resource usage of one entry, as ptxas reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryUsage {
    pub name: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_bytes: u32,
    /// Static shared memory (dynamic shared memory is not counted by ptxas).
    pub shared_bytes: u32,
}

/// What ptxas said about a module: the maxima / sums over its entries, each entry, and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxasReport {
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub shared_bytes: u32,
    pub entries: Vec<EntryUsage>,
    pub log: String,
}

impl PtxasReport {
    pub fn entry(&self, name: &str) -> Option<&EntryUsage> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Finds ptxas (see the module docs for the order).
pub fn find() -> Result<PathBuf, PtxasError> {
    let mut searched = Vec::new();
    // An explicit choice wins, and a wrong one is reported rather than silently replaced.
    if let Some(p) = std::env::var_os("LACUNA_PTXAS") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(PtxasError::NotFound { searched: vec![p] });
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("ptxas");
            if p.is_file() {
                return Ok(p);
            }
        }
        searched.push(PathBuf::from("$PATH/ptxas"));
    }
    let rel = Path::new(".tools/ptxas/nvidia/cuda_nvcc/bin/ptxas");
    let mut roots: Vec<PathBuf> = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().map(Path::to_path_buf).collect();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    for root in roots {
        let p = root.join(rel);
        if p.is_file() {
            return Ok(p);
        }
        if root.join("Cargo.lock").is_file() {
            searched.push(p);
        }
    }
    Err(PtxasError::NotFound { searched })
}

/// Assembles `ptx` for `arch` with `ptxas -arch=sm_XX -v --warn-on-spills`.
pub fn assemble(ptx: &str, arch: Arch) -> Result<PtxasReport, PtxasError> {
    assemble_with(&find()?, ptx, arch)
}

/// As [`assemble`] with an explicit ptxas.
pub fn assemble_with(ptxas: &Path, ptx: &str, arch: Arch) -> Result<PtxasReport, PtxasError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("lacuna-ptxas-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir)?;
    let (input, output) = (dir.join("kernel.ptx"), dir.join("kernel.cubin"));
    std::fs::write(&input, ptx)?;
    let arch_flag = format!("-arch={}", arch.name());
    let out = Command::new(ptxas).arg(&arch_flag).arg("-v").arg("--warn-on-spills").arg(&input).arg("-o").arg(&output).output()?;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let command = format!("{} {arch_flag} -v --warn-on-spills {} -o {}", ptxas.display(), input.display(), output.display());
        return Err(PtxasError::Failed { command, ptx: input, log });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(parse_report(&log))
}

/// Reads `ptxas -v` output.
pub fn parse_report(log: &str) -> PtxasReport {
    let mut entries: Vec<EntryUsage> = Vec::new();
    let mut current: Option<usize> = None;
    let entry_index = |entries: &mut Vec<EntryUsage>, name: &str| -> usize {
        match entries.iter().position(|e| e.name == name) {
            Some(i) => i,
            None => {
                entries.push(EntryUsage { name: name.to_string(), ..Default::default() });
                entries.len() - 1
            }
        }
    };
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            current = Some(entry_index(&mut entries, name));
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(entry_index(&mut entries, rest.trim()));
        } else if let Some(i) = current {
            let e = &mut entries[i];
            if line.contains("bytes stack frame") {
                e.stack_bytes = number_before(line, "bytes stack frame");
                e.spill_stores = number_before(line, "bytes spill stores");
                e.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used ") && line.contains(" registers") {
                e.registers = number_before(line, "registers");
                e.shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    PtxasReport {
        registers: entries.iter().map(|e| e.registers).max().unwrap_or(0),
        spill_stores: entries.iter().map(|e| e.spill_stores).sum(),
        spill_loads: entries.iter().map(|e| e.spill_loads).sum(),
        shared_bytes: entries.iter().map(|e| e.shared_bytes).max().unwrap_or(0),
        entries,
        log: log.to_string(),
    }
}

/// The integer right before `marker` in `line` (0 when absent).
fn number_before(line: &str, marker: &str) -> u32 {
    let Some(pos) = line.find(marker) else { return 0 };
    line[..pos].split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::parse_report;

    #[test]
    fn parses_ptxas_verbose_output() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'fwd_causal_d64_bf16' for 'sm_90a'\n\
ptxas info    : Function properties for fwd_causal_d64_bf16\n\
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 168 registers, used 1 barriers, 32 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'block_minmax' for 'sm_90a'\n\
ptxas info    : Function properties for block_minmax\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 12 registers, used 1 barriers, 32 bytes smem, 384 bytes cmem[0]\n";
        let r = parse_report(log);
        assert_eq!(r.entries.len(), 2);
        let f = r.entry("fwd_causal_d64_bf16").expect("entry parsed");
        assert_eq!((f.registers, f.spill_stores, f.spill_loads, f.shared_bytes), (168, 8, 4, 32));
        assert_eq!(r.entry("block_minmax").map(|e| e.registers), Some(12));
        assert_eq!((r.registers, r.spill_stores, r.spill_loads), (168, 8, 4));
    }
}
