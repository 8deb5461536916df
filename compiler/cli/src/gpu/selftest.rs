//! `lacuna selftest`: every standard pattern on the GPU against the CPU
//! reference, on fresh random inputs, outputs poisoned before each launch;
//! ragged lengths, Nq != Nk, GQA/MQA, head dims, both dtypes, strided layouts;
//! and row-index kernels (SCFA's regrouped rows) on random permutations with
//! padding entries, checked row by row in source order. First, the block
//! summary kernel against the CPU (the classifier trusts its output).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use lacuna_ir::reference::{attention, AttentionShape, Precision};
use lacuna_ir::{Bindings, Dims, Dtype};
use lacuna_runtime::{DeviceTensor, ElemType, ForwardOptions, Gpu};

use super::{load_kernel_with, upload_rounded, DeviceInputs, Noise};
use crate::commands::compile::PlanOverrides;
use lacuna_codegen::RowLength;
use crate::error::CliError;

/// One correctness case.
#[derive(Clone, Debug)]
struct Case {
    pattern: &'static str,
    params: &'static [(&'static str, &'static str)],
    batch: usize,
    heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head_dim: u32,
    dtype: Dtype,
    /// Q, K, V and O laid out (B, N, H, D) instead of (B, H, N, D).
    bnhd: bool,
    /// A row-index kernel over `q_len` / `kv_len` regrouped rows of longer
    /// source tensors (random distinct source rows, some entries padding).
    row_index: bool,
    /// Tiles shaped for this row length instead of the planner's guess.
    rows: Option<RowLength>,
    /// A softmax scale other than 1/sqrt(D) (the kernel folds it into the
    /// exponent, so large and small ones are worth a case each).
    scale: Option<f32>,
    /// Tiles for this case's lengths (`KernelPlan::for_queries` and
    /// `for_length`, what `lacuna run` and `lacuna bench` use) instead of
    /// the planner's.
    by_length: bool,
    /// `ForwardOptions::kv_splits`: `Some(1)` runs the plain entry (every
    /// case but the split-KV ones), `None` the runtime's choice.
    kv_splits: Option<usize>,
}

fn cases(quick: bool) -> Vec<Case> {
    let patterns: &[(&str, &[(&str, &str)])] = &[
        ("causal", &[]),
        ("causal-strict", &[]),
        ("sliding-window", &[("W", "100"), ("sink", "0")]),
        ("sliding-window", &[("W", "300"), ("sink", "70")]),
        ("qk-drop", &[("drop", "0.5")]),
        ("hash-bucket", &[("buckets", "8")]),
        ("hash-bucket-strict", &[("buckets", "4")]),
        ("topk", &[("topk", "3"), ("W", "64")]),
        ("moa", &[("alpha", "64,128,192,256"), ("sink", "16")]),
    ];
    let base = Case { pattern: "", params: &[], batch: 1, heads: 4, kv_heads: 4, q_len: 384, kv_len: 384, head_dim: 64, dtype: Dtype::Bf16, bnhd: false, row_index: false, rows: None, scale: None, by_length: false, kv_splits: Some(1) };
    let mut out = Vec::new();
    for &(pattern, params) in patterns {
        let c = Case { pattern, params, ..base.clone() };
        out.push(c.clone());
        // Ragged, Nq != Nk, GQA, D = 128.
        out.push(Case { batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, ..c.clone() });
        if !quick {
            // MQA, fp16, ragged.
            out.push(Case { kv_heads: 1, q_len: 257, kv_len: 257, dtype: Dtype::F16, ..c.clone() });
            // (B, N, H, D) strides.
            out.push(Case { batch: 2, q_len: 200, kv_len: 333, head_dim: 128, bnhd: true, ..c });
        }
    }
    // Row indices: what the SCFA pipelines run, and plain causal.
    for (pattern, params) in [("hash-bucket", &[("buckets", "8")][..]), ("qk-drop", &[("drop", "0.5")][..]), ("causal", &[][..])] {
        let c = Case { pattern, params, row_index: true, ..base.clone() };
        out.push(c.clone());
        out.push(Case { batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, ..c });
    }
    // Long-row tiles where a method's pipeline runs them: QK-drop's compacted
    // rows, MoA's elastic bands.
    let c = Case { pattern: "qk-drop", params: &[("drop", "0.5")], row_index: true, rows: Some(RowLength::Long), ..base.clone() };
    out.push(c.clone());
    out.push(Case { batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, ..c });
    // The same rows without indices: long tiles over a scanned key source
    // (what `lacuna bench` runs for QK-drop above 8K compacted keys).
    let c = Case { pattern: "qk-drop", params: &[("drop", "0.5")], rows: Some(RowLength::Long), ..base.clone() };
    out.push(c.clone());
    out.push(Case { batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, ..c });
    let c = Case { pattern: "moa", params: &[("alpha", "64,128,192,256"), ("sink", "16")], rows: Some(RowLength::Long), ..base.clone() };
    out.push(c.clone());
    out.push(Case { batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, ..c });
    // Short causal problems on short-row tiles (64x64 at D=64, 64x48 at D=128).
    let c = Case { pattern: "causal", by_length: true, ..base.clone() };
    out.push(c.clone());
    out.push(Case { batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, ..c });
    // Short scanned rows at D=128 on 64x64 tiles (QK-drop's compacted rows).
    out.push(Case { pattern: "qk-drop", params: &[("drop", "0.5")], batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, by_length: true, ..base.clone() });
    out.push(Case { pattern: "hash-bucket", params: &[("buckets", "8")], head_dim: 128, q_len: 700, kv_len: 700, by_length: true, ..base.clone() });
    // Block lists on short-row tiles, and past 2048 keys: bitmap rows of
    // more than one word, and (64x48 at D=128) key tiles whose two list
    // blocks straddle a word.
    let c = Case { pattern: "topk", params: &[("topk", "4"), ("W", "64")], heads: 2, kv_heads: 2, q_len: 2200, kv_len: 2200, by_length: true, ..base.clone() };
    out.push(c.clone());
    out.push(Case { head_dim: 128, ..c });
    out.push(Case { pattern: "topk", params: &[("topk", "3"), ("W", "64")], batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, by_length: true, ..base.clone() });
    // Short band problems run heaviest first (rank-major grid; MoA with its head order).
    out.push(Case { pattern: "moa", params: &[("alpha", "64,128,192,256"), ("sink", "16")], batch: 2, q_len: 450, kv_len: 450, by_length: true, ..base.clone() });
    out.push(Case { pattern: "sliding-window", params: &[("W", "300"), ("sink", "70")], head_dim: 128, q_len: 333, kv_len: 333, by_length: true, ..base.clone() });
    // Scales far from 1/sqrt(D): sharp rows (max dominates) and flat ones.
    out.push(Case { pattern: "causal", scale: Some(1.0), ..base.clone() });
    out.push(Case { pattern: "hash-bucket", params: &[("buckets", "8")], head_dim: 128, q_len: 300, kv_len: 300, scale: Some(0.02), ..base.clone() });
    // Split-KV: each query block's keys shared among CTAs, then combined.
    // Forced counts on ragged, GQA, D=128 problems (more splits than some
    // query blocks have key blocks, so some splits see nothing); decoding
    // shapes (a few query rows over thousands of keys) take the runtime's
    // automatic count; a strided O goes through the combine.
    let split_patterns: &[(&str, &[(&str, &str)])] = if quick {
        &[("causal", &[]), ("sliding-window", &[("W", "300"), ("sink", "70")]), ("hash-bucket", &[("buckets", "8")]), ("moa", &[("alpha", "64,128,192,256"), ("sink", "16")]), ("topk", &[("topk", "3"), ("W", "64")])]
    } else {
        patterns
    };
    for &(pattern, params) in split_patterns {
        out.push(Case { pattern, params, batch: 2, kv_heads: 2, q_len: 300, kv_len: 517, head_dim: 128, kv_splits: Some(3), ..base.clone() });
    }
    let moa: &[(&str, &str)] = &[("alpha", "64,128,192,256"), ("sink", "16")];
    for (pattern, params) in [("causal-decode", &[][..]), ("moa-decode", moa)] {
        out.push(Case { pattern, params, q_len: 1, kv_len: 4099, kv_splits: None, ..base.clone() });
        out.push(Case { pattern, params, q_len: 16, kv_len: 9000, kv_splits: None, by_length: true, ..base.clone() });
        out.push(Case { pattern, params, batch: 2, kv_heads: 2, q_len: 5, kv_len: 2500, head_dim: 128, kv_splits: Some(16), by_length: true, ..base.clone() });
        out.push(Case { pattern, params, q_len: 70, kv_len: 1000, kv_splits: Some(1), ..base.clone() });
    }
    out.push(Case { pattern: "causal", batch: 2, q_len: 200, kv_len: 333, head_dim: 128, bnhd: true, kv_splits: Some(7), ..base.clone() });
    out.push(Case { pattern: "qk-drop", params: &[("drop", "0.5")], q_len: 64, kv_len: 2000, dtype: Dtype::F16, kv_splits: Some(4), ..base.clone() });
    if !quick {
        for d in (16..=256).step_by(16).filter(|d| *d != 64 && *d != 128) {
            out.push(Case { pattern: "causal", params: &[], heads: 2, kv_heads: 2, q_len: 200, kv_len: 200, head_dim: d, ..base.clone() });
        }
    }
    out
}

#[derive(serde::Serialize)]
struct Outcome {
    case: String,
    rel_err: f64,
    lse_err: f64,
    masked_rows: usize,
    bad_masked_rows: usize,
    unwritten: usize,
    /// Summary checks: values that differ from the CPU's (0 for attention cases).
    wrong_values: usize,
    pass: bool,
}

/// Which cases run: patterns whose name contains `pattern`, cases at
/// `head_dim` (None: all).
#[derive(Clone, Copy, Debug, Default)]
pub struct Only<'a> {
    pub pattern: Option<&'a str>,
    pub head_dim: Option<u32>,
}

/// `base`: plan overrides every case starts from (`--mma`, `--grid`,
/// `--tile`); cases add their own row length and row indices.
pub fn run(quick: bool, only: Only<'_>, base: PlanOverrides, json_out: Option<&std::path::Path>, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let gpu = Gpu::new(0)?;
    writeln!(out, "selftest on {} (sm count {})", gpu.name(), gpu.sm_count()).map_err(CliError::Output)?;
    let mut outcomes = Vec::new();
    if only.pattern.is_none_or(|f| "summaries".contains(f)) && only.head_dim.is_none() {
        outcomes.extend(check_summaries(&gpu, out)?);
    }
    let mut seed = 1u64;
    for case in cases(quick) {
        seed += 1;
        if only.pattern.is_some_and(|f| !case.pattern.contains(f)) || only.head_dim.is_some_and(|d| d != case.head_dim) {
            continue;
        }
        let outcome = run_case(&gpu, &case, seed, base)?;
        writeln!(
            out,
            "{} {:<60} rel {:.2e}  lse {:.2e}  masked rows {:>4} (bad {})  unwritten {}",
            if outcome.pass { "ok  " } else { "FAIL" },
            outcome.case, outcome.rel_err, outcome.lse_err, outcome.masked_rows, outcome.bad_masked_rows, outcome.unwritten
        )
        .map_err(CliError::Output)?;
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    writeln!(out, "{} cases, {} failed", outcomes.len(), failed).map_err(CliError::Output)?;
    if let Some(path) = json_out {
        let text = serde_json::to_string_pretty(&outcomes).unwrap_or_default();
        std::fs::write(path, text).map_err(|e| CliError::WriteFile { path: path.to_path_buf(), source: e })?;
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run_case(gpu: &Gpu, c: &Case, seed: u64, base: PlanOverrides) -> Result<Outcome, CliError> {
    let name = format!(
        "{}{} B{} H{}/{} Nq{} Nk{} D{} {}{}",
        c.pattern,
        c.params.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>(),
        c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len, c.head_dim, c.dtype.name(),
        if c.bnhd { " bnhd" } else if c.row_index { " rows" } else { "" },
    );
    let name = match c.rows {
        Some(r) => format!("{name} {}-row tiles", r.name()),
        None => name,
    };
    let name = if c.by_length { format!("{name} length-shaped tiles") } else { name };
    let name = match c.kv_splits {
        Some(1) => name,
        Some(n) => format!("{name} kv_splits {n}"),
        None => format!("{name} kv_splits auto"),
    };
    let name = match c.scale {
        Some(s) => format!("{name} scale {s}"),
        None => name,
    };
    let sp = lacuna_patterns::find(c.pattern)?;
    let ir = (sp.ir)();
    let dims = Dims::new(c.batch, c.heads, c.q_len, c.kv_len);
    let params: BTreeMap<String, String> = c.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let values = lacuna_patterns::example_inputs(sp, dims, &params, &BTreeMap::new(), seed)?;
    let bindings = Bindings::new(&ir, dims, values.clone()).map_err(|source| CliError::Bind { source, file: None })?;
    if c.row_index {
        return run_row_index_case(gpu, c, name, &ir, &bindings, &values, seed, base);
    }
    let (_, kernel) = load_kernel_with(gpu, &ir, c.head_dim, c.dtype, &PlanOverrides { rows: c.rows, kv_len: c.by_length.then_some(c.kv_len), q_len: c.by_length.then_some(c.q_len), ..base })?;
    let d = c.head_dim as usize;
    let mut noise = Noise::new(seed);
    let (b, h, hk, nq, nk) = (c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len);
    // Host data is always (B, H, N, D); for bnhd the device buffer is (B, N, H, D) viewed back.
    let q_host = noise.vec(b * h * nq * d);
    let k_host = noise.vec(b * hk * nk * d);
    let v_host = noise.vec(b * hk * nk * d);
    let place = |x: &[f32], heads: usize, n: usize| -> Result<(DeviceTensor, Vec<f32>), CliError> {
        if !c.bnhd {
            return upload_rounded(gpu, x, &[b, heads, n, d], c.dtype);
        }
        let mut t = vec![0f32; x.len()];
        for bi in 0..b {
            for hi in 0..heads {
                for ni in 0..n {
                    let src = ((bi * heads + hi) * n + ni) * d;
                    let dst = ((bi * n + ni) * heads + hi) * d;
                    t[dst..dst + d].copy_from_slice(&x[src..src + d]);
                }
            }
        }
        let (dev, _) = upload_rounded(gpu, &t, &[b, n, heads, d], c.dtype)?;
        Ok((dev.transpose(1, 2)?, round_like(x, c.dtype)))
    };
    let (q, qr) = place(&q_host, h, nq)?;
    let (k, kr) = place(&k_host, hk, nk)?;
    let (v, vr) = place(&v_host, hk, nk)?;
    let inputs = DeviceInputs::upload(gpu, &ir, &values)?;
    let elem = ElemType::from(c.dtype);
    let mut o = if c.bnhd {
        DeviceTensor::zeros(gpu, elem, &[b, nq, h, d])?.transpose(1, 2)?
    } else {
        DeviceTensor::zeros(gpu, elem, &[b, h, nq, d])?
    };
    let mut lse = DeviceTensor::zeros(gpu, ElemType::F32, &[b, h, nq])?;
    o.poison()?;
    lse.poison()?;
    // Kernels that take a head order run the heads last-first here, so the
    // mapping from grid row to head is checked, not just the identity.
    let reversed: Vec<i32> = (0..c.heads as i32).rev().collect();
    let opts = ForwardOptions { scale: c.scale, head_order: kernel.manifest().head_order.then_some(&reversed[..]), kv_splits: c.kv_splits };
    kernel.forward_into(&q, &k, &v, &inputs.args(), &mut o, &mut lse, opts)?;
    gpu.synchronize()?;
    // Downloads come back in logical (B, H, N, D) order whatever the strides.
    let o_got = o.to_host_as_f32()?;
    let lse_dev = lse.to_host_f32()?;
    let shape = AttentionShape { batch: b, heads: h, kv_heads: hk, q_len: nq, kv_len: nk, head_dim: d };
    let scale = c.scale.unwrap_or(1.0 / (d as f32).sqrt());
    let reference = attention(&ir, &bindings, shape, &qr, &kr, &vr, scale, Precision::F32)?;
    let unwritten = o_got.iter().chain(&lse_dev).filter(|x| x.is_nan()).count();
    let mut check = RowCheck::default();
    for row in 0..b * h * nq {
        check.row(&o_got[row * d..][..d], lse_dev[row], &reference.out[row * d..][..d], reference.lse[row]);
    }
    Ok(check.outcome(name, unwritten, 0))
}

/// (B, H, N, block) of the summary checks: ragged last blocks, a block
/// longer than a warp's round and than the row, the bench's shapes, and more
/// than 65535 rows (split launches).
const SUMMARY_SHAPES: &[(usize, usize, usize, u32)] = &[(2, 3, 1000, 64), (1, 1, 5, 64), (1, 2, 70, 1024), (4, 16, 16_384, 32), (2, 16, 3000, 100), (2, 40_000, 3, 2)];

/// The generated summary kernels against the CPU, on random values:
/// `block_minmax` (per-block min/max), then `block_minmax_runs` (also the
/// bucket runs); one outcome line per shape.
fn check_summaries(gpu: &Gpu, out: &mut dyn Write) -> Result<Vec<Outcome>, CliError> {
    let ir = (lacuna_patterns::find("causal")?.ir)();
    let (_, kernel) = load_kernel_with(gpu, &ir, 64, Dtype::Bf16, &PlanOverrides::default())?;
    let mut noise = Noise::new(7);
    let mut outcomes = Vec::new();
    for &(b, h, n, block) in SUMMARY_SHAPES {
        let host: Vec<i32> = noise.vec(b * h * n).iter().map(|x| (x * 1e6) as i32).collect();
        let values = DeviceTensor::from_host_i32(gpu, &host, &[b, h, n])?;
        let got = kernel.block_summary(&values, block)?.to_host_i32()?;
        let want: Vec<i32> = host.chunks(n).flat_map(|row| row.chunks(block as usize)).flat_map(|c| [*c.iter().min().expect("nonempty"), *c.iter().max().expect("nonempty")]).collect();
        let wrong = got.len().abs_diff(want.len()) + got.iter().zip(&want).filter(|(g, w)| g != w).count();
        let case = format!("summaries B{b} H{h} N{n} block {block}");
        writeln!(out, "{} {case:<60} {} blocks, {wrong} wrong values", if wrong == 0 { "ok  " } else { "FAIL" }, want.len() / 2).map_err(CliError::Output)?;
        outcomes.push(Outcome { case, rel_err: 0.0, lse_err: 0.0, masked_rows: 0, bad_masked_rows: 0, unwritten: 0, wrong_values: wrong, pass: wrong == 0 });
    }

    // The run summaries of a bucket join (hash-bucket's module), against
    // lacuna_ir::summary on the host: buckets sorted per row (as hash
    // attention has them) and unsorted (every merge order of the runs).
    let ir = (lacuna_patterns::find("hash-bucket")?.ir)();
    let (_, kernel) = load_kernel_with(gpu, &ir, 64, Dtype::Bf16, &PlanOverrides::default())?;
    for &(b, h, n, block) in SUMMARY_SHAPES {
        for sorted in [true, false] {
            let host: Vec<i32> = noise.vec(b * h * n).iter().map(|x| (x * 1e6) as i32).collect();
            let mut buckets: Vec<i32> = noise.vec(b * h * n).iter().map(|x| ((x + 1.0) * 4.0) as i32).collect();
            if sorted {
                buckets.chunks_mut(n).for_each(|row| row.sort_unstable());
            }
            let values = DeviceTensor::from_host_i32(gpu, &host, &[b, h, n])?;
            let bucket_t = DeviceTensor::from_host_i32(gpu, &buckets, &[b, h, n])?;
            let got = kernel.bucket_run_summary(&values, &bucket_t, block)?.to_host_i32()?;
            let block = block as usize;
            let want: Vec<i32> = host
                .chunks(n)
                .zip(buckets.chunks(n))
                .flat_map(|(row, brow)| {
                    let ranges = lacuna_ir::summary::block_ranges(row, block);
                    let runs = lacuna_ir::summary::bucket_runs(row, brow, block);
                    ranges.into_iter().zip(runs).flat_map(|(r, [f, l])| [r.0, r.1, f.0, f.1, l.0, l.1]).collect::<Vec<_>>()
                })
                .collect();
            let wrong = got.len().abs_diff(want.len()) + got.iter().zip(&want).filter(|(g, w)| g != w).count();
            let case = format!("run summaries B{b} H{h} N{n} block {block}{}", if sorted { "" } else { ", unsorted" });
            writeln!(out, "{} {case:<60} {} blocks, {wrong} wrong values", if wrong == 0 { "ok  " } else { "FAIL" }, want.len() / 6).map_err(CliError::Output)?;
            outcomes.push(Outcome { case, rel_err: 0.0, lse_err: 0.0, masked_rows: 0, bad_masked_rows: 0, unwritten: 0, wrong_values: wrong, pass: wrong == 0 });
        }
    }
    Ok(outcomes)
}

/// Accumulates the comparison of output rows with the reference: relative
/// L2 error over rows with keys, the largest LSE difference, and fully
/// masked rows, which must be exactly 0 with LSE -inf.
#[derive(Default)]
struct RowCheck {
    num: f64,
    den: f64,
    lse_err: f64,
    masked_rows: usize,
    bad_masked_rows: usize,
}

impl RowCheck {
    fn row(&mut self, got: &[f32], got_lse: f32, want: &[f32], want_lse: f32) {
        if want_lse == f32::NEG_INFINITY {
            self.masked_rows += 1;
            if got_lse != f32::NEG_INFINITY || got.iter().any(|&x| x != 0.0) {
                self.bad_masked_rows += 1;
            }
            return;
        }
        self.lse_err = self.lse_err.max((got_lse as f64 - want_lse as f64).abs());
        for (g, w) in got.iter().zip(want) {
            self.num += ((g - w) as f64).powi(2);
            self.den += (*w as f64).powi(2);
        }
    }

    /// Passes with relative error under 1e-2 (bf16), LSE within 2e-2, and no
    /// unwritten, badly masked or wrongly written (`clobbered`) rows.
    fn outcome(&self, case: String, unwritten: usize, clobbered: usize) -> Outcome {
        let rel_err = if self.den > 0.0 { (self.num / self.den).sqrt() } else { self.num.sqrt() };
        let pass = unwritten == 0 && clobbered == 0 && self.bad_masked_rows == 0 && rel_err < 1e-2 && self.lse_err < 2e-2 && !rel_err.is_nan();
        Outcome { case, rel_err, lse_err: self.lse_err, masked_rows: self.masked_rows, bad_masked_rows: self.bad_masked_rows, unwritten, wrong_values: 0, pass }
    }
}

fn round_like(x: &[f32], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::Bf16 => x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
        Dtype::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
    }
}

/// Source rows per regrouped row: the regrouped sequence of `n` rows takes
/// distinct random rows of `src_len` (> n) source rows, every 7th entry
/// padding (`pad`, outside the source rows), and the last `trailing` entries
/// padding too (as SCFA's QK-drop compacts into the full length: whole
/// query blocks of padding, which the kernel leaves early).
fn random_rows(noise: &mut Noise, n: usize, src_len: usize, pad: i32, trailing: usize) -> Vec<i32> {
    let mut rows: Vec<i32> = (0..src_len as i32).collect();
    for i in (1..rows.len()).rev() {
        let j = ((noise.next() + 1.0) * 0.5 * (i + 1) as f32) as usize;
        rows.swap(i, j.min(i));
    }
    rows.truncate(n);
    for (i, r) in rows.iter_mut().enumerate() {
        if i % 7 == 3 || i + trailing >= n {
            *r = pad;
        }
    }
    rows
}

/// A row-index kernel: q (B, H, Nq + 37, D) and k, v (B, Hkv, Nk + 29, D)
/// source tensors, q_rows (B, H, Nq) and kv_rows (B, H, Nk) random distinct
/// source rows with padding entries. The reference runs on the regrouped
/// rows (padding rows zero, keys per query head); o and lse are checked at
/// the named source rows, and every source row no index names must still
/// hold the poison.
#[allow(clippy::too_many_arguments)]
fn run_row_index_case(
    gpu: &Gpu,
    c: &Case,
    name: String,
    ir: &lacuna_ir::PatternIr,
    bindings: &Bindings,
    values: &BTreeMap<String, lacuna_ir::InputValue>,
    seed: u64,
    base: PlanOverrides,
) -> Result<Outcome, CliError> {
    let overrides = PlanOverrides { rows: c.rows, row_index: true, ..base };
    let (_, kernel) = load_kernel_with(gpu, ir, c.head_dim, c.dtype, &overrides)?;
    let d = c.head_dim as usize;
    let (b, h, hk, nq, nk) = (c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len);
    let (sq, sk) = (nq + 37, nk + 29);
    let mut noise = Noise::new(seed);
    let (q, qr) = upload_rounded(gpu, &noise.vec(b * h * sq * d), &[b, h, sq, d], c.dtype)?;
    let (k, kr) = upload_rounded(gpu, &noise.vec(b * hk * sk * d), &[b, hk, sk, d], c.dtype)?;
    let (v, vr) = upload_rounded(gpu, &noise.vec(b * hk * sk * d), &[b, hk, sk, d], c.dtype)?;
    let mut q_rows = Vec::with_capacity(b * h * nq);
    let mut kv_rows = Vec::with_capacity(b * h * nk);
    for _ in 0..b * h {
        q_rows.extend(random_rows(&mut noise, nq, sq, -1, nq / 3));
        kv_rows.extend(random_rows(&mut noise, nk, sk, i32::MAX, 0));
    }
    let q_rows_dev = DeviceTensor::from_host_i32(gpu, &q_rows, &[b, h, nq])?;
    let kv_rows_dev = DeviceTensor::from_host_i32(gpu, &kv_rows, &[b, h, nk])?;
    let inputs = DeviceInputs::upload(gpu, ir, values)?;
    let elem = ElemType::from(c.dtype);
    let mut o = DeviceTensor::zeros(gpu, elem, &[b, h, sq, d])?;
    let mut lse = DeviceTensor::zeros(gpu, ElemType::F32, &[b, h, sq])?;
    o.poison()?;
    lse.poison()?;
    kernel.forward_rows_into(&q, &k, &v, &q_rows_dev, &kv_rows_dev, &inputs.args(), &mut o, &mut lse, ForwardOptions::default())?;
    gpu.synchronize()?;
    let (o_got, lse_got) = (o.to_host_as_f32()?, lse.to_host_f32()?);

    // The regrouped problem on the host: keys per query head, padding rows zero.
    // Regrouped row i of (b, head) is source row rows[i] of (b, head / group)
    // in a tensor of src_heads heads.
    let gather = |src: &[f32], src_heads: usize, group: usize, src_len: usize, rows: &[i32], n: usize| -> Vec<f32> {
        let mut out = vec![0f32; b * h * n * d];
        for bh in 0..b * h {
            let src_bh = (bh / h) * src_heads + (bh % h) / group;
            for i in 0..n {
                let r = rows[bh * n + i];
                if r >= 0 && (r as usize) < src_len {
                    out[(bh * n + i) * d..][..d].copy_from_slice(&src[(src_bh * src_len + r as usize) * d..][..d]);
                }
            }
        }
        out
    };
    let group = h / hk;
    let qg = gather(&qr, h, 1, sq, &q_rows, nq);
    let kg = gather(&kr, hk, group, sk, &kv_rows, nk);
    let vg = gather(&vr, hk, group, sk, &kv_rows, nk);
    let shape = AttentionShape { batch: b, heads: h, kv_heads: h, q_len: nq, kv_len: nk, head_dim: d };
    let reference = attention(ir, bindings, shape, &qg, &kg, &vg, 1.0 / (d as f32).sqrt(), Precision::F32)?;

    let mut check = RowCheck::default();
    let mut unwritten = 0;
    let mut named = vec![false; b * h * sq];
    for bh in 0..b * h {
        for i in 0..nq {
            let r = q_rows[bh * nq + i];
            if r < 0 || r as usize >= sq {
                continue;
            }
            let src = bh * sq + r as usize;
            named[src] = true;
            let got = &o_got[src * d..][..d];
            if got.iter().any(|x| x.is_nan()) || lse_got[src].is_nan() {
                unwritten += 1;
                continue;
            }
            check.row(got, lse_got[src], &reference.out[(bh * nq + i) * d..][..d], reference.lse[bh * nq + i]);
        }
    }
    // Rows no index names keep the poison: the kernel wrote nothing there.
    let clobbered = (0..b * h * sq).filter(|&r| !named[r] && (!lse_got[r].is_nan() || o_got[r * d..][..d].iter().any(|x| !x.is_nan()))).count();
    Ok(check.outcome(format!("{name} (unnamed rows touched: {clobbered})"), unwritten, clobbered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_rows_are_distinct_source_rows_with_padding() {
        let mut noise = Noise::new(3);
        let rows = random_rows(&mut noise, 300, 337, -1, 0);
        assert_eq!(rows.len(), 300);
        let real: Vec<i32> = rows.iter().copied().filter(|&r| r >= 0).collect();
        assert!(real.iter().all(|&r| (r as usize) < 337));
        let mut sorted = real.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), real.len(), "a source row named twice would be written twice");
        assert_eq!(rows.iter().filter(|&&r| r == -1).count(), (0..300).filter(|i| i % 7 == 3).count());
        // Not the identity: the kernel must really read through the index.
        assert!(rows.iter().enumerate().filter(|(i, &r)| r == *i as i32).count() < 30);
        // A trailing run of padding: whole padding blocks at the end.
        let rows = random_rows(&mut noise, 300, 337, -1, 100);
        assert!(rows[200..].iter().all(|&r| r == -1));
        assert_eq!(rows[..200].iter().filter(|&&r| r == -1).count(), (0..200).filter(|i| i % 7 == 3).count());
    }
}
