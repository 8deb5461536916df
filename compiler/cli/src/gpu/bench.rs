//! `lacuna bench`: times the forward kernel (block summaries included) over a
//! grid of shapes and patterns; prints a table and writes JSON. Peers
//! (PyTorch SDPA, FlexAttention) run beside it from bench/peers.py in the
//! same GPU session. A program, not a test: nothing here asserts a time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use lacuna_ir::{analyze, Bindings, Dims, Dtype, TileShape};
use lacuna_runtime::clock::SmClock;
use lacuna_runtime::{DeviceTensor, ElemType, ForwardOptions, Gpu};

use super::{median, upload_rounded, DeviceInputs, KernelForPlan, Noise};
use crate::commands::compile::PlanOverrides;
use crate::error::CliError;

/// One benchmarked configuration of a standard pattern.
struct Variant {
    label: &'static str,
    pattern: &'static str,
    params: &'static [(&'static str, &'static str)],
    /// Fraction of tokens kept (QK-drop compacts the sequence to this).
    keep: f64,
    /// Rows are long though the planner cannot tell (QK-drop's compacted
    /// rows are causal on positions, as SCFA's method says:
    /// `MethodPattern::long_rows`); the key length still picks the tiles.
    long_rows: bool,
    /// Aligned bottom-right (decoding): runs only with `--q-len`, which
    /// the others do not take.
    decode: bool,
}

const VARIANTS: &[Variant] = &[
    Variant { label: "causal", pattern: "causal", params: &[], keep: 1.0, long_rows: false, decode: false },
    Variant { label: "window1024", pattern: "sliding-window", params: &[("W", "1024"), ("sink", "0")], keep: 1.0, long_rows: false, decode: false },
    Variant { label: "moa", pattern: "moa", params: &[], keep: 1.0, long_rows: false, decode: false },
    Variant { label: "hash8", pattern: "hash-bucket", params: &[("buckets", "8")], keep: 1.0, long_rows: false, decode: false },
    Variant { label: "hash32", pattern: "hash-bucket", params: &[("buckets", "32")], keep: 1.0, long_rows: false, decode: false },
    Variant { label: "qkdrop50", pattern: "qk-drop", params: &[("drop", "0.5")], keep: 0.5, long_rows: true, decode: false },
    Variant { label: "qkdrop80", pattern: "qk-drop", params: &[("drop", "0.8")], keep: 0.2, long_rows: true, decode: false },
    Variant { label: "decode", pattern: "causal-decode", params: &[], keep: 1.0, long_rows: false, decode: true },
    Variant { label: "moa-decode", pattern: "moa-decode", params: &[], keep: 1.0, long_rows: false, decode: true },
];

#[derive(serde::Serialize, Clone)]
struct Row {
    pattern: String,
    batch: usize,
    heads: usize,
    n: usize,
    compacted_len: usize,
    head_dim: u32,
    ms: f64,
    visited_fraction: f64,
    tflops_visited: f64,
    tflops_causal_equiv: f64,
    /// The time Q, K, V, O and the LSE alone take to cross HBM at the
    /// bandwidth of this run's fill ([`fill_bandwidth`]): no kernel of this
    /// shape can be faster.
    hbm_floor_ms: f64,
    plan: String,
    /// CTAs per query block's keys in this launch (`--kv-splits`, or the
    /// runtime's choice).
    kv_splits: usize,
    /// Query rows per (b, h): N, or `--q-len` for decoding.
    q_len: usize,
    /// The SM clock right after each timed launch (median, MHz; `SmClock`):
    /// a row that ran slower than before at a lower clock is the card's
    /// doing, not the kernel's.
    sm_mhz: f64,
}

pub struct BenchArgs<'a> {
    pub ns: &'a [usize],
    pub head_dims: &'a [u32],
    pub patterns: Option<&'a [String]>,
    pub reps: usize,
    pub mma: Option<lacuna_codegen::Mma>,
    pub tile: Option<[u32; 4]>,
    /// Fill [`FLUSH_BYTES`] before each timed launch (see `run`).
    pub flush: bool,
    pub rows: Option<lacuna_codegen::RowLength>,
    pub grid: Option<lacuna_ir::GridOrder>,
    /// `ForwardOptions::kv_splits` for every launch (None: the runtime's choice).
    pub kv_splits: Option<usize>,
    /// Query rows per (b, h) for the decoding patterns (the last tokens of
    /// N); None runs the square grid.
    pub q_len: Option<usize>,
    pub json_out: Option<&'a Path>,
}

/// Bytes written before each timed launch: more than any GPU's L2 (50 MB on
/// an H100), the size triton's do_bench clears with.
const FLUSH_BYTES: usize = 256 << 20;

/// Times each launch as triton's do_bench times the peers (bench/peers.py):
/// a 256 MB fill goes first, so L2 holds none of the inputs and the host's
/// launch work (validation, the summary launches) overlaps the fill instead
/// of delaying the kernels. With `flush` off, each launch starts on an idle
/// GPU with a warm L2, and host time counts (the older tables' method; on
/// an H200 it added up to 18% to the 4K problems, 0-4% at 16K).
pub fn run(args: &BenchArgs<'_>, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let gpu = Gpu::new(0)?;
    let mut fill = DeviceTensor::zeros(&gpu, ElemType::I32, &[FLUSH_BYTES / 4])?;
    let bytes_per_ms = fill_bandwidth(&gpu, &mut fill)?;
    let mut flush = args.flush.then_some(fill);
    let clock = SmClock::load(&gpu)?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CliError::Output);
    w(out, format!(
        "lacuna bench on {} ({} SMs), bf16, forward, block summaries included, {}; HBM {:.2} TB/s (a 256 MB fill)",
        gpu.name(),
        gpu.sm_count(),
        if args.flush { "each launch after a 256 MB fill (cold L2, as do_bench)" } else { "launches back to back (warm L2, host time counted)" },
        bytes_per_ms / 1e9,
    ))?;
    w(out, format!("{:<11} {:>3} {:>6} {:>5} {:>9} {:>8} {:>10} {:>12} {:>6} {:>6}", "pattern", "D", "N", "B", "ms", "visited", "TFLOP/s", "causal-eq", "splits", "MHz"))?;
    let [block_q, block_k, warps, stages] = args.tile.map_or([None; 4], |t| t.map(Some));
    let overrides = PlanOverrides { mma: args.mma, rows: args.rows, row_index: false, block_q, block_k, warps, stages, grid: args.grid, kv_len: None, q_len: args.q_len, long_rows: false };
    let mut rows = Vec::new();
    for &d in args.head_dims {
        let batch = if d <= 64 { 4 } else { 2 };
        let heads = 16;
        for variant in VARIANTS {
            if variant.decode != args.q_len.is_some() {
                continue;
            }
            if let Some(only) = args.patterns {
                if !only.iter().any(|p| p == variant.label) {
                    continue;
                }
            }
            let sp = lacuna_patterns::find(variant.pattern)?;
            let ir = (sp.ir)();
            // One kernel per plan: the plan depends on the key length
            // (`KernelPlan::for_length`), as it does for `lacuna run`.
            let mut loaded = KernelForPlan::default();
            for &n in args.ns {
                let len = ((n as f64) * variant.keep).round() as usize;
                let (plan, kernel) = loaded.get(&gpu, &ir, d, Dtype::Bf16, &PlanOverrides { kv_len: Some(len), long_rows: variant.long_rows, ..overrides })?;
                let qn = args.q_len.unwrap_or(len);
                let dims = Dims::new(batch, heads, qn, len);
                let params: BTreeMap<String, String> = variant.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                let values = lacuna_patterns::example_inputs(sp, dims, &params, &BTreeMap::new(), 11)?;
                // Visited tiles, counted on batch 0 (example inputs are generated batch by batch).
                let dims0 = Dims::new(1, heads, qn, len);
                let values0 = lacuna_patterns::example_inputs(sp, dims0, &params, &BTreeMap::new(), 11)?;
                let mask = analyze(&ir, &Bindings::new(&ir, dims0, values0).map_err(|source| CliError::Bind { source, file: None })?, TileShape::new(plan.block_q as usize, plan.block_k as usize))?;
                let visited_fraction = mask.visited_elements() as f64 / (heads * qn * len) as f64;

                let mut noise = Noise::new(n as u64 + d as u64);
                let shape = [batch, heads, len, d as usize];
                let numel = batch * heads * len * d as usize;
                let q_shape = [batch, heads, qn, d as usize];
                let (q, _) = upload_rounded(&gpu, &noise.vec(batch * heads * qn * d as usize), &q_shape, Dtype::Bf16)?;
                let (k, _) = upload_rounded(&gpu, &noise.vec(numel), &shape, Dtype::Bf16)?;
                let (v, _) = upload_rounded(&gpu, &noise.vec(numel), &shape, Dtype::Bf16)?;
                let inputs = DeviceInputs::upload(&gpu, &ir, &values)?;
                let launch_args = inputs.args();
                let mut o = DeviceTensor::zeros(&gpu, ElemType::Bf16, &q_shape)?;
                let mut lse = DeviceTensor::zeros(&gpu, ElemType::F32, &[batch, heads, qn])?;
                let kv_splits = kernel.kv_splits_for(&q, &k, &v, args.kv_splits)?;
                let mut launch = || kernel.forward_into(&q, &k, &v, &launch_args, &mut o, &mut lse, ForwardOptions { kv_splits: args.kv_splits, ..ForwardOptions::default() });
                for _ in 0..3 {
                    launch()?;
                }
                gpu.synchronize()?;
                let mut times = Vec::with_capacity(args.reps);
                let mut clocks = Vec::with_capacity(args.reps);
                for _ in 0..args.reps.max(1) {
                    if let Some(f) = flush.as_mut() {
                        f.fill_i32(0)?;
                    }
                    times.push(gpu.time_ms(&mut launch)? as f64);
                    clocks.push(clock.mhz()?);
                }
                let (ms, sm_mhz) = (median(&mut times), median(&mut clocks));
                let visited_flops = 4.0 * d as f64 * visited_fraction * (heads * qn * len) as f64 * batch as f64;
                let causal_flops = 2.0 * d as f64 * (args.q_len.unwrap_or(n) * n) as f64 * (batch * heads) as f64;
                // Q and O rows, K and V rows (bf16), the LSE (f32).
                let compulsory_bytes = (batch * heads) as f64 * ((qn + len) as f64 * 4.0 * d as f64 + 4.0 * qn as f64);
                let row = Row {
                    pattern: variant.label.into(),
                    batch,
                    heads,
                    n,
                    compacted_len: len,
                    head_dim: d,
                    ms,
                    visited_fraction,
                    tflops_visited: visited_flops / ms / 1e9,
                    tflops_causal_equiv: causal_flops / ms / 1e9,
                    hbm_floor_ms: compulsory_bytes / bytes_per_ms,
                    plan: format!("{} {}x{} tiles, {} warps, {} stages, {} grid", plan.mma.name(), plan.block_q, plan.block_k, plan.warps, plan.stages, plan.grid.name()),
                    kv_splits,
                    q_len: qn,
                    sm_mhz,
                };
                w(out, format!(
                    "{:<11} {:>3} {:>6} {:>5} {:>9.3} {:>7.1}% {:>10.1} {:>12.1} {:>6} {:>6.0}",
                    row.pattern, d, n, batch, ms, 100.0 * visited_fraction, row.tflops_visited, row.tflops_causal_equiv, row.kv_splits, row.sm_mhz
                ))?;
                rows.push(row);
            }
        }
    }
    if let Some(table) = dense_share_table(&rows) {
        w(out, table)?;
    }
    if let Some(path) = args.json_out {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "device": gpu.name(), "l2_flushed": args.flush, "hbm_tb_s": bytes_per_ms / 1e9, "rows": rows })).unwrap_or_default();
        std::fs::write(path, text).map_err(|e| CliError::WriteFile { path: path.to_path_buf(), source: e })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes per millisecond a 256 MB fill writes (the median of 5): the HBM
/// bandwidth the floors of this run assume (on an H200 close to the 4.3
/// TB/s of a device-to-device copy, anchors.md).
fn fill_bandwidth(gpu: &Gpu, fill: &mut DeviceTensor) -> Result<f64, CliError> {
    fill.fill_i32(0)?;
    let mut times = (0..5).map(|_| gpu.time_ms(|| fill.fill_i32(0)).map(f64::from)).collect::<Result<Vec<_>, _>>()?;
    Ok(FLUSH_BYTES as f64 / median(&mut times).max(1e-6))
}


/// Each sparse row's TFLOP/s on visited tiles as a share of dense causal's
/// at the same head dim and length (issue 3's per-visited-tile target is
/// 85% at every shape), a table per head dim; None without causal rows.
/// Under each table, the shapes whose target the HBM floor alone rules
/// out: their visited FLOPs over `hbm_floor_ms` fall short of 85% of dense.
fn dense_share_table(rows: &[Row]) -> Option<String> {
    let dense: BTreeMap<(u32, usize), &Row> = rows.iter().filter(|r| r.pattern == "causal").map(|r| ((r.head_dim, r.n), r)).collect();
    let sparse: Vec<&Row> = rows.iter().filter(|r| r.pattern != "causal" && dense.contains_key(&(r.head_dim, r.n))).collect();
    if sparse.is_empty() {
        return None;
    }
    let mut out = String::from("\nper visited tile, share of dense causal at the same shape (target 85%; * below it)\n");
    let mut dims: Vec<u32> = sparse.iter().map(|r| r.head_dim).collect();
    dims.dedup();
    for d in dims {
        let ns: Vec<usize> = {
            let mut ns: Vec<usize> = sparse.iter().filter(|r| r.head_dim == d).map(|r| r.n).collect();
            ns.sort_unstable();
            ns.dedup();
            ns
        };
        out += &format!("{:<11} {:>3}", "pattern", "D");
        for n in &ns {
            out += &format!(" {:>7}", format!("N={n}"));
        }
        out += "\n";
        let mut labels: Vec<&str> = sparse.iter().filter(|r| r.head_dim == d).map(|r| r.pattern.as_str()).collect();
        labels.dedup();
        for label in labels {
            out += &format!("{label:<11} {d:>3}");
            for &n in &ns {
                match sparse.iter().find(|r| r.head_dim == d && r.n == n && r.pattern == label) {
                    Some(r) => {
                        let share = 100.0 * r.tflops_visited / dense[&(d, n)].tflops_visited;
                        out += &format!(" {:>6.0}{}", share, if share < 85.0 { "*" } else { "%" });
                    }
                    None => out += &format!(" {:>7}", "-"),
                }
            }
            out += "\n";
        }
        let ruled_out: Vec<String> = sparse
            .iter()
            .filter(|r| r.head_dim == d && r.hbm_floor_ms > 0.0)
            .filter_map(|r| {
                let ceiling = 100.0 * r.tflops_visited * r.ms / r.hbm_floor_ms / dense[&(d, r.n)].tflops_visited;
                (ceiling < 85.0).then(|| format!("{} N={} ({ceiling:.0}%)", r.pattern, r.n))
            })
            .collect();
        if !ruled_out.is_empty() {
            out += &format!("  past the HBM floor (best share moving only Q, K, V, O, LSE): {}\n", ruled_out.join(", "));
        }
        let clocked: Vec<String> = sparse
            .iter()
            .filter(|r| r.head_dim == d)
            .filter_map(|r| {
                let dense_row = dense[&(d, r.n)];
                let share = 100.0 * r.tflops_visited / dense_row.tflops_visited;
                let at_equal_clocks = share * equal_clock_factor(dense_row.sm_mhz, r.sm_mhz)?;
                ((at_equal_clocks - share).abs() >= 2.0).then(|| format!("{} N={} {at_equal_clocks:.0}%", r.pattern, r.n))
            })
            .collect();
        if !clocked.is_empty() {
            out += &format!("  at equal SM clocks (a row's TFLOP/s per MHz; the rows above ran at different clocks): {}\n", clocked.join(", "));
        }
    }
    Some(out)
}

/// What a share becomes when both rows are counted per MHz of their own SM
/// clock: long, heavy rows (dense causal past 16K) run throttled, which
/// lifts every share against them. None when a clock is missing.
fn equal_clock_factor(dense_mhz: f64, sparse_mhz: f64) -> Option<f64> {
    (dense_mhz > 0.0 && sparse_mhz > 0.0).then(|| dense_mhz / sparse_mhz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pattern: &str, head_dim: u32, n: usize, tflops_visited: f64) -> Row {
        Row { pattern: pattern.into(), batch: 1, heads: 1, n, compacted_len: n, head_dim, ms: 1.0, visited_fraction: 0.5, tflops_visited, tflops_causal_equiv: 1.0, hbm_floor_ms: 0.1, plan: String::new(), kv_splits: 1, q_len: n, sm_mhz: 1980.0 }
    }

    #[test]
    fn shares_are_against_dense_at_the_same_shape() {
        let rows = [
            row("causal", 64, 4096, 400.0),
            row("causal", 64, 16384, 500.0),
            row("hash32", 64, 4096, 100.0),
            row("hash32", 64, 16384, 450.0),
            row("window1024", 64, 16384, 500.0),
            // No dense row at D=128: left out.
            row("hash32", 128, 4096, 100.0),
        ];
        let table = dense_share_table(&rows).expect("a table");
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[2].starts_with("pattern") && lines[2].contains("N=4096") && lines[2].contains("N=16384"), "{table}");
        assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["hash32", "64", "25*", "90%"], "{table}");
        assert_eq!(lines[4].split_whitespace().collect::<Vec<_>>(), ["window1024", "64", "-", "100%"], "{table}");
        assert!(!table.contains(" 128 "), "{table}");
        assert!(dense_share_table(&rows[..2]).is_none());
        assert!(!table.contains("HBM floor"), "{table}");
        // 100 TFLOP/s in 1 ms with a 0.5 ms floor: at best 200 of dense's 400 (50%).
        let mut floored = rows.to_vec();
        floored[2].hbm_floor_ms = 0.5;
        let table = dense_share_table(&floored).expect("a table");
        assert!(table.contains("past the HBM floor") && table.contains("hash32 N=4096 (50%)") && !table.contains("N=16384 ("), "{table}");
        assert!(!table.contains("equal SM clocks"), "{table}");
        // Dense at 16K throttled to 1800 MHz, hash-32 at 1980: 90% becomes
        // 90 * 1800 / 1980 = 82% per MHz; the window's 1% change is not listed.
        let mut throttled = rows.to_vec();
        throttled[1].sm_mhz = 1800.0;
        throttled[4].sm_mhz = 1782.0;
        let table = dense_share_table(&throttled).expect("a table");
        assert!(table.contains("at equal SM clocks") && table.contains("hash32 N=16384 82%") && !table.contains("window1024 N=16384 "), "{table}");
        assert_eq!(equal_clock_factor(0.0, 1980.0), None);
    }
}
