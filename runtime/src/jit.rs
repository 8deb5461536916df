//! Compiling on first use (`jit` feature): plan and compile a pattern with
//! lacuna-codegen for this GPU's arch, through an on-disk cache of
//! self-describing PTX. The cache helpers (directory, file name, integrity
//! trailer) are always built so they are tested without LLVM; only
//! `AttentionKernel::compile` needs the feature. A cache problem is never an
//! error: a bad file is recompiled, an unwritable directory is skipped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lacuna_ir::pattern::fnv1a64;

/// The last line of a cache file: a checksum of everything before it, so a
/// truncated or edited file is recompiled rather than handed to the driver.
const TRAILER: &str = "// lacuna-cache-fnv1a64: ";

/// `$LACUNA_CACHE`, else `$XDG_CACHE_HOME/lacuna`, else `~/.cache/lacuna`.
/// Empty values count as unset; a relative XDG_CACHE_HOME is ignored, as the
/// XDG spec requires.
pub fn cache_dir_from(lacuna: Option<OsString>, xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(lacuna) {
        return Some(dir);
    }
    if let Some(xdg) = set(xdg).filter(|p| p.is_absolute()) {
        return Some(xdg.join("lacuna"));
    }
    set(home).map(|h| h.join(".cache").join("lacuna"))
}

pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(std::env::var_os("LACUNA_CACHE"), std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// `{pattern}-{ir hash}-{plan hash}.ptx`. The plan text fixes head_dim,
/// dtype, arch and tiles; `generator` (the code generator's fingerprint: its
/// version and a hash of its sources) is mixed in so a changed code generator
/// does not reuse an old one's PTX.
pub fn cache_file_name(pattern: &str, ir_hash: u64, plan_text: &str, generator: &str) -> String {
    let safe: String = pattern
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    let plan_hash = fnv1a64(format!("{generator}\n{plan_text}").as_bytes());
    format!("{safe}-{ir_hash:016x}-{plan_hash:016x}.ptx")
}

/// The file contents for PTX that already carries its manifest line.
pub fn seal(ptx_with_manifest: &str) -> String {
    let mut body = ptx_with_manifest.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let sum = fnv1a64(body.as_bytes());
    format!("{body}{TRAILER}{sum:016x}\n")
}

/// The PTX of a sealed file, or None when the file is damaged.
pub fn unseal(file: &str) -> Option<&str> {
    let without_newline = file.strip_suffix('\n')?;
    let at = without_newline.rfind('\n')? + 1;
    let (body, last) = file.split_at(at);
    let sum = last.trim_end().strip_prefix(TRAILER)?;
    let sum = u64::from_str_radix(sum, 16).ok()?;
    (fnv1a64(body.as_bytes()) == sum).then_some(body)
}

pub fn read_cached(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    unseal(&text).map(str::to_string)
}

/// Writes through a temporary file and a rename, so a reader never sees a
/// half-written file. Failure only costs a recompile next time.
pub fn write_cached(path: &Path, ptx_with_manifest: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, seal(ptx_with_manifest))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(feature = "jit")]
mod compile {
    use lacuna_codegen::{KernelPlan, RowLength};
    use lacuna_ir::{Arch, Dtype, KernelManifest, PatternIr};

    use super::{cache_dir, cache_file_name, read_cached, write_cached};
    use crate::error::{Result, RuntimeError};
    use crate::gpu::Gpu;
    use crate::by_length::KernelByLength;
    use crate::kernel::AttentionKernel;

    impl AttentionKernel {
        /// Plans and compiles `pattern` for this GPU (sm_90a on compute
        /// capability 9.0, sm_80 otherwise) and loads it, reusing PTX from
        /// the on-disk cache when an intact file for the same IR and plan exists.
        pub fn compile(gpu: &Gpu, pattern: &PatternIr, head_dim: u32, dtype: Dtype) -> Result<AttentionKernel> {
            Self::compile_with(gpu, pattern, head_dim, dtype, false, false, None)
        }

        /// [`AttentionKernel::compile`] with tiles for sequences of about
        /// `kv_len` keys (`KernelPlan::for_length`: causal-like patterns run
        /// 10-14% faster on short-row tiles up to 4K keys at D=64 and 8K at
        /// D=128). The kernel is correct at any length; compile one per
        /// length class you launch at.
        pub fn compile_for_length(gpu: &Gpu, pattern: &PatternIr, head_dim: u32, dtype: Dtype, kv_len: usize) -> Result<AttentionKernel> {
            Self::compile_with(gpu, pattern, head_dim, dtype, false, false, Some(kv_len))
        }

        /// [`AttentionKernel::compile`] for decoding: `q_len` query rows per
        /// (b, h) over about `kv_len` keys (`KernelPlan::for_queries`, then
        /// `for_length`: up to 64 query rows take short-row tiles at every
        /// key length, 14-20% faster for one row over 16K-32K keys at
        /// D=64). Launches split the keys among CTAs on their own
        /// (`ForwardOptions::kv_splits`).
        pub fn compile_for_decoding(gpu: &Gpu, pattern: &PatternIr, head_dim: u32, dtype: Dtype, q_len: usize, kv_len: usize) -> Result<AttentionKernel> {
            let plan = base_plan(gpu, pattern, head_dim, dtype, false, false)?.for_queries(q_len).for_length(kv_len);
            compile_plan(gpu, pattern, &plan)
        }

        /// [`AttentionKernel::compile`] of a kernel that reads and writes rows
        /// through index arrays ([`AttentionKernel::forward_rows_into`]).
        pub fn compile_row_index(gpu: &Gpu, pattern: &PatternIr, head_dim: u32, dtype: Dtype) -> Result<AttentionKernel> {
            Self::compile_with(gpu, pattern, head_dim, dtype, true, false, None)
        }

        /// The one compile path: `row_index` as above; `long_rows`: tiles
        /// shaped for long rows whatever the planner guesses (what
        /// `MethodPattern::compile` asks for, see `MethodPattern::long_rows`);
        /// `kv_len`: tiles for that key length (`KernelPlan::for_length`).
        pub(crate) fn compile_with(
            gpu: &Gpu,
            pattern: &PatternIr,
            head_dim: u32,
            dtype: Dtype,
            row_index: bool,
            long_rows: bool,
            kv_len: Option<usize>,
        ) -> Result<AttentionKernel> {
            let mut plan = base_plan(gpu, pattern, head_dim, dtype, row_index, long_rows)?;
            if let Some(n) = kv_len {
                plan = plan.for_length(n);
            }
            compile_plan(gpu, pattern, &plan)
        }
    }

    impl KernelByLength {
        /// Plans `pattern` as [`AttentionKernel::compile_with`] does
        /// (`row_index`, `long_rows`), then compiles (or takes from the
        /// on-disk cache) one kernel per key-length class of that plan
        /// (`KernelPlan::length_classes`): usually one to three.
        pub fn compile(gpu: &Gpu, pattern: &PatternIr, head_dim: u32, dtype: Dtype, row_index: bool, long_rows: bool) -> Result<KernelByLength> {
            let plan = base_plan(gpu, pattern, head_dim, dtype, row_index, long_rows)?;
            let classes = plan.length_classes().into_iter().map(|(bound, plan)| Ok((bound, compile_plan(gpu, pattern, &plan)?)));
            KernelByLength::new(classes.collect::<Result<_>>()?)
        }
    }

    fn codegen_err(pattern: &PatternIr, head_dim: u32, dtype: Dtype, arch: Arch) -> impl Fn(String) -> RuntimeError + '_ {
        move |message| RuntimeError::Codegen { pattern: pattern.name().into(), head_dim, dtype: dtype.name(), arch: arch.name(), message }
    }

    /// The planner's plan for this GPU, with rows through index arrays and
    /// long-row tiles where asked.
    fn base_plan(gpu: &Gpu, pattern: &PatternIr, head_dim: u32, dtype: Dtype, row_index: bool, long_rows: bool) -> Result<KernelPlan> {
        let arch = gpu.arch()?;
        let mut plan = KernelPlan::for_pattern(pattern, head_dim, dtype, arch).map_err(|e| codegen_err(pattern, head_dim, dtype, arch)(e.to_string()))?;
        plan.row_index = row_index;
        if long_rows {
            plan = plan.with_row_length(RowLength::Long);
        }
        Ok(plan)
    }

    /// Compiles `plan` (or reads its PTX from the on-disk cache) and loads it.
    fn compile_plan(gpu: &Gpu, pattern: &PatternIr, plan: &KernelPlan) -> Result<AttentionKernel> {
        let (head_dim, dtype, arch, row_index) = (plan.head_dim, plan.dtype, plan.arch, plan.row_index);
        let codegen_err = codegen_err(pattern, head_dim, dtype, arch);
        let path = cache_dir().map(|d| d.join(cache_file_name(pattern.name(), pattern.content_hash(), &plan.to_string(), lacuna_codegen::FINGERPRINT)));
        if let Some(text) = path.as_deref().and_then(read_cached) {
            let fits = KernelManifest::from_ptx(&text)
                .is_ok_and(|m| m.head_dim == head_dim && m.dtype == dtype && m.arch == arch && m.row_index == row_index);
            if fits {
                // Anything wrong with a cached file (stale, unloadable)
                // falls through to a fresh compile, which reports real errors.
                if let Ok(kernel) = AttentionKernel::from_ptx(gpu, &text, pattern) {
                    return Ok(kernel);
                }
            }
        }
        let compiled = lacuna_codegen::compile(pattern, plan).map_err(|e| codegen_err(e.to_string()))?;
        let ptx: &str = compiled.ptx.as_ref();
        let text = if KernelManifest::from_ptx(ptx).is_ok() {
            ptx.to_string()
        } else {
            compiled.manifest.attach_to_ptx(ptx)
        };
        if let Some(path) = &path {
            // Not fatal: an unwritable cache only costs a recompile.
            let _ = write_cached(path, &text);
        }
        AttentionKernel::from_ptx(gpu, &text, pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn cache_dir_precedence() {
        assert_eq!(cache_dir_from(os("/c"), os("/x"), os("/h")), Some(PathBuf::from("/c")));
        assert_eq!(cache_dir_from(None, os("/x"), os("/h")), Some(PathBuf::from("/x/lacuna")));
        assert_eq!(cache_dir_from(os(""), os(""), os("/h")), Some(PathBuf::from("/h/.cache/lacuna")));
        assert_eq!(cache_dir_from(None, os("rel"), os("/h")), Some(PathBuf::from("/h/.cache/lacuna")));
        assert_eq!(cache_dir_from(None, None, None), None);
    }

    #[test]
    fn cache_names_follow_ir_and_plan() {
        let a = cache_file_name("Causal", 0xabc, "plan A", "g1");
        assert!(a.starts_with("Causal-0000000000000abc-") && a.ends_with(".ptx"), "{a}");
        assert_ne!(a, cache_file_name("Causal", 0xabc, "plan B", "g1"));
        assert_ne!(a, cache_file_name("Causal", 0xabd, "plan A", "g1"));
        assert_eq!(a, cache_file_name("Causal", 0xabc, "plan A", "g1"));
        assert_ne!(a, cache_file_name("Causal", 0xabc, "plan A", "g2"), "a new code generator misses the cache");
        assert!(cache_file_name("a/../b c", 1, "p", "g1").starts_with("a____b_c-"));
    }

    #[test]
    fn sealed_files_roundtrip_and_damage_is_detected() {
        let ptx = "// lacuna-manifest: {}\n.version 8.0\n.target sm_90a\n";
        let file = seal(ptx);
        assert_eq!(unseal(&file), Some(ptx));
        // Truncated, edited, trailer missing, empty.
        assert_eq!(unseal(&file[..file.len() - 10]), None);
        assert_eq!(unseal(&file.replace("sm_90a", "sm_80a")), None);
        assert_eq!(unseal(ptx), None);
        assert_eq!(unseal(""), None);
        // No trailing newline in the input is fine.
        assert_eq!(unseal(&seal(".version 8.0")), Some(".version 8.0\n"));
    }

    #[test]
    fn cache_files_write_and_read_back() {
        let dir = std::env::temp_dir().join(format!("lacuna-runtime-test-{}", std::process::id()));
        let path = dir.join("sub").join(cache_file_name("P", 1, "plan", "g1"));
        write_cached(&path, "ptx text\n").expect("temp dir is writable");
        assert_eq!(read_cached(&path).as_deref(), Some("ptx text\n"));
        std::fs::write(&path, "ptx text\n// lacuna-cache-fnv1a64: 0000000000000000\n").expect("writable");
        assert_eq!(read_cached(&path), None, "a bad checksum reads as a miss");
        assert_eq!(read_cached(&dir.join("absent.ptx")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
