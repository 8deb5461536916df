//! `lacuna bench-methods`: the seed methods END TO END at the shapes
//! (bf16, B=4, H=16, D=64, as in SCFA's kernel plots), one process, against
//! Lacuna's own dense causal kernel; PyTorch SDPA flash (the issue's
//! baseline for its 2.0x / 3.3x targets) and FlexAttention run beside it
//! from bench/peers_methods.py, and bench/report_methods.py joins the two.
//!
//! Every end-to-end number calls the runtime's one-call pipelines
//! (`scfa_hash_attention`, `scfa_qk_drop_attention`, `moa_attention`,
//! `sparsek_attention`), never a copy of them. The pipelines do not expose
//! their stages, so the stage breakdown times the same public `GpuOps` calls
//! and the same kernel one stage at a time on the previous stage's results;
//! the stages need not add up exactly to the end-to-end time (allocations,
//! launch gaps). Times: CUDA events on the runtime's stream, 3 warm-up calls,
//! then the median (also min and max) of `--reps` (≥ 10 by default) timed calls.
//! A program, not a test: nothing here asserts a time.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use lacuna_ir::{analyze, Bindings, Dims, Dtype, InputValue, TileShape};
use lacuna_runtime::methods::{Causal, HashConfig, MethodPattern, MoaHead, MoaLayer, Projection, SparseKConfig, TokenScores};
use lacuna_runtime::clock::SmClock;
use lacuna_runtime::ops::BlockReduce;
use lacuna_runtime::{
    moa_attention, scfa_hash_attention, scfa_qk_drop_attention, sparsek_attention, AttentionKernel, DeviceTensor, ElemType, KernelByLength, KernelForKeys,
    ForwardOptions, Gpu, GpuOps, KeepMask, OpError, PatternArgs,
};
use serde::Serialize;

use super::{load_method_kernel, load_method_kernels_with, median, upload_rounded, KernelForPlan, Noise};
use crate::commands::compile::PlanOverrides;
use crate::error::CliError;

/// The shape (SCFA's kernel benchmark uses B=4, D=64; H=16 here as in `lacuna bench`).
const BATCH: usize = 4;
const HEADS: usize = 16;
const HEAD_DIM: usize = 64;
const BUCKETS: [usize; 6] = [2, 4, 8, 16, 32, 64];
/// Percent of queries and of keys dropped, independently per (b, h, token).
const DROPS: [u64; 3] = [20, 50, 80];
const MOA_DENSITY: f64 = 0.5;
const MOA_SINK: i64 = 64;
const SPARSEK_TOPK: usize = 16;
const SPARSEK_WINDOW: i32 = 256;
const WARMUP: usize = 3;
/// Method groups `--methods` accepts.
pub const METHODS: [&str; 5] = ["dense", "hash", "qkdrop", "moa", "sparsek"];

/// A helper-op or pipeline error as a CLI error: launch errors stay runtime
/// errors, the rest (a refused argument, NVRTC missing) keep their message.
pub(crate) fn op_error(e: OpError) -> CliError {
    match e {
        OpError::Runtime(r) => CliError::Runtime(r),
        other => CliError::Usage { what: other.to_string() },
    }
}

pub struct MethodsBenchArgs<'a> {
    pub ns: &'a [usize],
    pub methods: Option<&'a [String]>,
    pub reps: usize,
    pub mma: Option<lacuna_codegen::Mma>,
    /// Tiles of every method's kernel, instead of each method's choice.
    pub rows: Option<lacuna_codegen::RowLength>,
    pub json_out: Option<&'a Path>,
}

#[derive(Serialize, Clone, Copy, Debug)]
struct Timing {
    median: f64,
    min: f64,
    max: f64,
    /// The SM clock after each call, median (MHz; `SmClock`).
    sm_mhz: f64,
}

#[derive(Serialize, Debug)]
struct Stage {
    name: &'static str,
    ms: f64,
}

#[derive(Serialize, Debug)]
struct Row {
    /// dense-causal | hash | qk-drop | moa | sparsek
    method: &'static str,
    /// causal | hash<b> | qkdrop<pct> | moa50 | sparsek<topk>
    label: String,
    batch: usize,
    heads: usize,
    head_dim: usize,
    n: usize,
    /// End to end (all stages), median.
    ms: f64,
    ms_min: f64,
    ms_max: f64,
    reps: usize,
    /// Lacuna dense causal ms / ms, same N, same process.
    speedup_vs_dense: Option<f64>,
    /// The SM clock the row ran at (median after each call, MHz).
    sm_mhz: f64,
    /// The same ratio counted in SM cycles (ms x MHz): long dense rows run
    /// at a throttled clock (perf log, "The SM clock beside every bench
    /// row"), which lifts every ratio against them.
    speedup_at_equal_clocks: Option<f64>,
    /// Each stage timed alone (see the module comment).
    stages: Vec<Stage>,
    /// Method-specific facts (buckets, density, padded lengths, balance, ...).
    info: serde_json::Value,
}

/// Median, min and max GPU time of `f` over `reps` calls after the warm-up,
/// and the SM clock right after each.
fn time(gpu: &Gpu, clock: &SmClock, reps: usize, mut f: impl FnMut() -> Result<(), CliError>) -> Result<Timing, CliError> {
    for _ in 0..WARMUP {
        f()?;
    }
    gpu.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    let mut clocks = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let mut failed = None;
        let ms = gpu.time_ms(|| {
            if let Err(e) = f() {
                failed = Some(e);
            }
            Ok(())
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        times.push(ms as f64);
        clocks.push(clock.mhz()?);
    }
    let (median, sm_mhz) = (median(&mut times), median(&mut clocks));
    Ok(Timing { median, min: times[0], max: times[times.len() - 1], sm_mhz })
}


fn ms_of(t: Timing) -> f64 {
    t.median
}

/// Checks the arguments (before the GPU is opened).
fn check_args(args: &MethodsBenchArgs<'_>) -> Result<(), CliError> {
    let usage = |what: String| CliError::Usage { what };
    if args.ns.is_empty() {
        return Err(usage("--ns is empty; give lengths such as --ns 4096,8192".into()));
    }
    if let Some(&n) = args.ns.iter().find(|&&n| !(128..=(1 << 20)).contains(&n)) {
        return Err(usage(format!("--ns {n}: lengths must be in 128..=1048576")));
    }
    if args.reps == 0 {
        return Err(usage("--reps 0: give at least 1 timed call (10 or more for a reported median)".into()));
    }
    if let Some(methods) = args.methods {
        if let Some(m) = methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(usage(format!("--methods {m}: unknown; choose from {}", METHODS.join(", "))));
        }
    }
    Ok(())
}

pub fn run(args: &MethodsBenchArgs<'_>, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    check_args(args)?;
    let wants = |m: &str| args.methods.is_none_or(|ms| ms.iter().any(|x| x == m));
    let gpu = Gpu::new(0)?;
    let ops = GpuOps::for_gpu(&gpu).map_err(op_error)?;
    let clock = SmClock::load(&gpu)?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CliError::Output);
    w(out, format!(
        "lacuna bench-methods on {} ({} SMs): bf16 forward, B={BATCH} H={HEADS} D={HEAD_DIM}, end to end, median of {} after {WARMUP} warm-up calls",
        gpu.name(), gpu.sm_count(), args.reps
    ))?;
    w(out, format!("{:<11} {:>6} {:>9} {:>9} {:>6}  {}", "method", "N", "ms", "vs dense", "MHz", "stages (ms, each timed alone) | facts"))?;

    let d = HEAD_DIM as u32;
    // The dense baseline is always timed: every ratio needs it. Its tiles
    // follow the length (`KernelPlan::for_length`), so each ratio is against
    // the dense kernel a user would run at that length.
    let causal_ir = (lacuna_patterns::find("causal")?.ir)();
    let dense_overrides = |n: usize| PlanOverrides { mma: args.mma, kv_len: Some(n), ..PlanOverrides::default() };
    let mut dense_kernels = KernelForPlan::default();
    // SCFA: the row-index kernel the pipelines run, and the plain one for the
    // gather → attention → scatter comparison.
    // Both pipelines take a kernel per key-length class, picked by the
    // length of the call.
    let both = |method: MethodPattern| -> Result<(KernelByLength, KernelByLength), CliError> {
        let with = |row_index| load_method_kernels_with(&gpu, method, d, Dtype::Bf16, args.mma, args.rows, row_index);
        Ok((with(method.regroups_rows())?, with(false)?))
    };
    let hash_kernel = if wants("hash") { Some(both(MethodPattern::HashBucket)?) } else { None };
    let drop_kernel = if wants("qkdrop") { Some(both(MethodPattern::QkDrop)?) } else { None };
    let method = |m: MethodPattern| load_method_kernel(&gpu, m, d, Dtype::Bf16, args.mma, args.rows);
    let moa = if wants("moa") { Some(method(MethodPattern::Moa)?) } else { None };
    let topk_kernel = if wants("sparsek") { Some(method(MethodPattern::TopK)?.1) } else { None };

    let mut rows = Vec::new();
    for &n in args.ns {
        let shape = [BATCH, HEADS, n, HEAD_DIM];
        let numel = BATCH * HEADS * n * HEAD_DIM;
        let mut noise = Noise::new(0x5eed ^ n as u64);
        let (q, _) = upload_rounded(&gpu, &noise.vec(numel), &shape, Dtype::Bf16)?;
        let (k, _) = upload_rounded(&gpu, &noise.vec(numel), &shape, Dtype::Bf16)?;
        let (v, _) = upload_rounded(&gpu, &noise.vec(numel), &shape, Dtype::Bf16)?;
        let x = Qkv { q: &q, k: &k, v: &v, n };
        let ctx = Ctx { gpu: &gpu, ops: &ops, clock: &clock, reps: args.reps };

        let (_, dense_kernel) = dense_kernels.get(&gpu, &causal_ir, d, Dtype::Bf16, &dense_overrides(n))?;
        let dense = ctx.time(|| {
            dense_kernel.forward(&q, &k, &v, &PatternArgs::new(), ForwardOptions::default())?;
            Ok(())
        })?;
        let dense_ms = ms_of(dense);
        let row = ctx.row("dense-causal", "causal".into(), n, dense, None, Vec::new(), serde_json::json!({
            "causal_equiv_tflops": causal_flops(n) / dense_ms / 1e9,
        }));
        print_row(out, &row)?;
        rows.push(row);

        if let Some(kernel) = &hash_kernel {
            for nb in BUCKETS {
                let row = bench_hash(&ctx, kernel, &x, nb, dense)?;
                print_row(out, &row)?;
                rows.push(row);
            }
        }
        if let Some(kernel) = &drop_kernel {
            for pct in DROPS {
                let row = bench_qk_drop(&ctx, kernel, &x, pct, dense)?;
                print_row(out, &row)?;
                rows.push(row);
            }
        }
        if let Some((plan, kernel)) = &moa {
            let tile = TileShape::new(plan.block_q as usize, plan.block_k as usize);
            let row = bench_moa(&ctx, kernel, tile, &x, dense)?;
            print_row(out, &row)?;
            rows.push(row);
        }
        if let Some(kernel) = &topk_kernel {
            let row = bench_sparsek(&ctx, kernel, &x, dense)?;
            print_row(out, &row)?;
            rows.push(row);
        }
    }
    if let Some(path) = args.json_out {
        let doc = serde_json::json!({
            "device": gpu.name(),
            "dtype": "bf16",
            "batch": BATCH,
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "reps": args.reps,
            "warmup": WARMUP,
            "rows": rows,
        });
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text).map_err(|e| CliError::WriteFile { path: path.to_path_buf(), source: e })?;
        w(out, format!("wrote {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

struct Qkv<'a> {
    q: &'a DeviceTensor,
    k: &'a DeviceTensor,
    v: &'a DeviceTensor,
    n: usize,
}

struct Ctx<'a> {
    gpu: &'a Gpu,
    ops: &'a GpuOps,
    clock: &'a SmClock,
    reps: usize,
}

impl Ctx<'_> {
    fn time(&self, f: impl FnMut() -> Result<(), CliError>) -> Result<Timing, CliError> {
        time(self.gpu, self.clock, self.reps, f)
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        method: &'static str,
        label: String,
        n: usize,
        t: Timing,
        dense: Option<Timing>,
        stages: Vec<Stage>,
        info: serde_json::Value,
    ) -> Row {
        Row {
            method,
            label,
            batch: BATCH,
            heads: HEADS,
            head_dim: HEAD_DIM,
            n,
            ms: t.median,
            ms_min: t.min,
            ms_max: t.max,
            reps: self.reps,
            speedup_vs_dense: dense.map(|d| d.median / t.median),
            sm_mhz: t.sm_mhz,
            speedup_at_equal_clocks: dense.and_then(|d| cycles_ratio(d, t)),
            stages,
            info,
        }
    }

    /// Fresh outputs in original order, as the pipelines make them (o = 0, lse = −inf).
    fn fresh_outputs(&self, n: usize) -> Result<(DeviceTensor, DeviceTensor), CliError> {
        let o = DeviceTensor::zeros(self.gpu, ElemType::Bf16, &[BATCH, HEADS, n, HEAD_DIM])?;
        let mut lse = DeviceTensor::zeros(self.gpu, ElemType::F32, &[BATCH, HEADS, n])?;
        lse.fill_f32(f32::NEG_INFINITY)?;
        Ok((o, lse))
    }
}

/// `dense`'s time over `t`'s, both in SM cycles (ms x MHz); None without
/// a clock.
fn cycles_ratio(dense: Timing, t: Timing) -> Option<f64> {
    (dense.sm_mhz > 0.0 && t.sm_mhz > 0.0 && t.median > 0.0).then(|| dense.median * dense.sm_mhz / (t.median * t.sm_mhz))
}

fn causal_flops(n: usize) -> f64 {
    2.0 * HEAD_DIM as f64 * (n as f64) * (n as f64) * (BATCH * HEADS) as f64
}

fn print_row(out: &mut dyn Write, r: &Row) -> Result<(), CliError> {
    let speed = r.speedup_vs_dense.map_or("-".to_string(), |s| format!("{s:.2}x"));
    // Where the clocks differ enough to matter, the ratio per SM cycle too.
    let clocked = match (r.speedup_vs_dense, r.speedup_at_equal_clocks) {
        (Some(raw), Some(eq)) if (eq / raw - 1.0).abs() >= 0.02 => format!(", {eq:.2}x at equal SM clocks"),
        _ => String::new(),
    };
    let stages: Vec<String> = r.stages.iter().map(|s| format!("{} {:.3}", s.name, s.ms)).collect();
    let facts = match &r.info {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_array() && !v.is_object())
            .map(|(k, v)| match v.as_f64() {
                Some(x) if v.is_f64() => format!("{k} {x:.3}"),
                _ => format!("{k} {v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    writeln!(out, "{:<11} {:>6} {:>9.3} {:>9} {:>6.0}  {} | {}{clocked}", r.label, r.n, r.ms, speed, r.sm_mhz, stages.join(", "), facts).map_err(CliError::Output)
}

/// SCFA hash end to end with the row-index kernel (hashing, sort, attention
/// reading and writing rows through the sort's permutation), and the same
/// with an explicit gather and scatter around the plain kernel (separate
/// hashing for keys, inclusive causality).
fn bench_hash(c: &Ctx<'_>, kernels: &(KernelByLength, KernelByLength), x: &Qkv<'_>, nb: usize, dense: Timing) -> Result<Row, CliError> {
    let (gpu, ops) = (c.gpu, c.ops);
    let (kernel, plain) = kernels;
    let cfg = HashConfig { buckets: nb, projection: Projection::Seed(7), shared_qk: false, causal: Causal::Inclusive };
    let e2e = c.time(|| {
        scfa_hash_attention(gpu, kernel, x.q, x.k, x.v, &cfg).map_err(op_error)?;
        Ok(())
    })?;
    let unfused = c.time(|| {
        scfa_hash_attention(gpu, plain, x.q, x.k, x.v, &cfg).map_err(op_error)?;
        Ok(())
    })?;
    let r = ops.upload_projection(&cfg.projection.matrix(HEAD_DIM, nb), HEAD_DIM, nb).map_err(op_error)?;
    let hash = c.time(|| {
        ops.lsh_buckets(x.q, &r, nb).map_err(op_error)?;
        ops.lsh_buckets(x.k, &r, nb).map_err(op_error)?;
        Ok(())
    })?;
    let qb = ops.lsh_buckets(x.q, &r, nb).map_err(op_error)?;
    let kb = ops.lsh_buckets(x.k, &r, nb).map_err(op_error)?;
    let sort = c.time(|| {
        ops.sort_by_bucket(&qb, nb).map_err(op_error)?;
        ops.sort_by_bucket(&kb, nb).map_err(op_error)?;
        Ok(())
    })?;
    let qo = ops.sort_by_bucket(&qb, nb).map_err(op_error)?;
    let ko = ops.sort_by_bucket(&kb, nb).map_err(op_error)?;
    let args = PatternArgs::new()
        .tensor("q_bucket", &qo.buckets)
        .tensor("k_bucket", &ko.buckets)
        .tensor("q_pos", &qo.perm)
        .tensor("k_pos", &ko.perm);
    let (mut o, mut lse) = c.fresh_outputs(x.n)?;
    let attention = c.time(|| {
        kernel.for_keys(x.n).forward_rows_into(x.q, x.k, x.v, &qo.perm, &ko.perm, &args, &mut o, &mut lse, ForwardOptions::default())?;
        Ok(())
    })?;
    // Share of the causal (q, k) pairs that share a bucket: the attention's real work.
    let density = bucket_density(&qb.to_host_i32()?, &kb.to_host_i32()?, x.n, nb);
    let stages = vec![
        Stage { name: "hash", ms: ms_of(hash) },
        Stage { name: "sort", ms: ms_of(sort) },
        Stage { name: "attention (rows through the permutation)", ms: ms_of(attention) },
    ];
    Ok(c.row("hash", format!("hash{nb}"), x.n, e2e, Some(dense), stages, serde_json::json!({
        "buckets": nb,
        "pair_density": density,
        "projection_seed": 7,
        "attention_speedup_vs_dense": dense.median / ms_of(attention),
        "with_gather_and_scatter_ms": ms_of(unfused),
    })))
}

/// Fraction of causal pairs (j <= i) with k_bucket[j] == q_bucket[i], over all (b, h).
fn bucket_density(qb: &[i32], kb: &[i32], n: usize, nb: usize) -> f64 {
    let mut same = 0u64;
    for (qrow, krow) in qb.chunks(n).zip(kb.chunks(n)) {
        let mut seen = vec![0u64; nb];
        for (qi, ki) in qrow.iter().zip(krow) {
            seen[(*ki as usize).min(nb - 1)] += 1;
            same += seen[(*qi as usize).min(nb - 1)];
        }
    }
    let rows = (qb.len() / n.max(1)) as f64;
    same as f64 / (rows * n as f64 * (n as f64 + 1.0) / 2.0)
}

/// SCFA QK-drop with random keep masks: `pct`% of queries and of keys dropped,
/// independently per (b, h, token).
fn bench_qk_drop(c: &Ctx<'_>, kernels: &(KernelByLength, KernelByLength), x: &Qkv<'_>, pct: u64, dense: Timing) -> Result<Row, CliError> {
    let (gpu, ops) = (c.gpu, c.ops);
    let (kernel, plain) = kernels;
    let mut noise = Noise::new(0xd209 ^ (pct << 32) ^ x.n as u64);
    let drop = pct as f32 / 100.0;
    let mut mask = || -> Vec<bool> { (0..BATCH * HEADS * x.n).map(|_| (noise.next() + 1.0) * 0.5 >= drop).collect() };
    let (qk, kk) = (mask(), mask());
    let kept = |m: &[bool]| m.iter().filter(|&&b| b).count() as f64 / m.len() as f64;
    let (q_kept, k_kept) = (kept(&qk), kept(&kk));
    let qm = KeepMask::from_host_bool(gpu, &qk, [BATCH, HEADS, x.n]).map_err(op_error)?;
    let km = KeepMask::from_host_bool(gpu, &kk, [BATCH, HEADS, x.n]).map_err(op_error)?;
    let e2e = c.time(|| {
        scfa_qk_drop_attention(gpu, kernel, x.q, x.k, x.v, &qm, &km).map_err(op_error)?;
        Ok(())
    })?;
    let unfused = c.time(|| {
        scfa_qk_drop_attention(gpu, plain, x.q, x.k, x.v, &qm, &km).map_err(op_error)?;
        Ok(())
    })?;
    // As in the pipeline: compaction into the full length, nothing read back.
    let compact = c.time(|| {
        ops.compact_into(&qm, x.n, -1).map_err(op_error)?;
        ops.compact_into(&km, x.n, i32::MAX).map_err(op_error)?;
        Ok(())
    })?;
    let q_pos = ops.compact_into(&qm, x.n, -1).map_err(op_error)?;
    let k_pos = ops.compact_into(&km, x.n, i32::MAX).map_err(op_error)?;
    let args = PatternArgs::new().tensor("q_pos", &q_pos).tensor("k_pos", &k_pos);
    let (mut o, mut lse) = c.fresh_outputs(x.n)?;
    let picked = kernel.for_keys(x.n);
    let attention = c.time(|| {
        picked.forward_rows_into(x.q, x.k, x.v, &q_pos, &k_pos, &args, &mut o, &mut lse, ForwardOptions::default())?;
        Ok(())
    })?;
    // The busiest (b, h)'s kept tokens: the rows that hold work.
    let busiest = |m: &[bool]| m.chunks(x.n).map(|row| row.iter().filter(|&&k| k).count()).max().unwrap_or(0);
    let stages = vec![
        Stage { name: "compact", ms: ms_of(compact) },
        Stage { name: "attention (rows through the compaction)", ms: ms_of(attention) },
    ];
    Ok(c.row("qk-drop", format!("qkdrop{pct}"), x.n, e2e, Some(dense), stages, serde_json::json!({
        "drop": drop as f64,
        "q_kept": q_kept,
        "k_kept": k_kept,
        "busiest_q": busiest(&qk),
        "busiest_k": busiest(&kk),
        "tiles": format!("{}x{}", picked.manifest().block_q, picked.manifest().block_k),
        "attention_speedup_vs_dense": dense.median / ms_of(attention),
        "with_gather_and_scatter_ms": ms_of(unfused),
    })))
}

/// MoA plan at length `n` with mean density `target`: heterogeneous heads
/// mixing the paper's two kinds of rules, fixed spans (beta = 0) and elastic
/// ones (beta up to 1/2), with alphas spread over 8x, all scaled by one
/// factor found by bisection so that the mean density at `n` is `target`
/// (MoA's plans are found per density budget and length the same way).
fn moa_plan(n: usize, target: f64) -> Result<(MoaLayer, f64), CliError> {
    let make = |c: f64| MoaLayer {
        heads: (0..HEADS)
            .map(|h| {
                let alpha_frac = [1.0 / 64.0, 1.0 / 32.0, 1.0 / 16.0, 1.0 / 8.0][h % 4];
                let beta = [0.0, 0.125, 0.25, 0.5][(h + h / 4) % 4];
                MoaHead { alpha: (c * alpha_frac * n as f64).round() as i64, beta: (c * beta).min(1.0), sink: MOA_SINK }
            })
            .collect(),
    };
    let mean = |l: &MoaLayer| -> Result<f64, CliError> {
        let d = l.density(n).map_err(|e| op_error(e.into()))?;
        Ok(d.iter().sum::<f64>() / d.len() as f64)
    };
    let (mut lo, mut hi) = (0.0f64, 64.0f64);
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if mean(&make(mid))? < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let layer = make(hi);
    let m = mean(&layer)?;
    Ok((layer, m))
}

/// Every head the same fixed span (sink 64), chosen so the mean density is as
/// close as possible to `target`: the same total work, evenly spread.
fn moa_uniform(n: usize, target: f64) -> Result<(MoaLayer, f64), CliError> {
    let make = |s: i64| MoaLayer { heads: vec![MoaHead { alpha: s, beta: 0.0, sink: MOA_SINK }; HEADS] };
    let density = |s: i64| -> Result<f64, CliError> {
        let one = MoaLayer { heads: vec![MoaHead { alpha: s, beta: 0.0, sink: MOA_SINK }] };
        Ok(one.density(n).map_err(|e| op_error(e.into()))?[0])
    };
    let (mut lo, mut hi) = (1i64, n as i64);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if density(mid)? < target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let s = if lo > 1 && (density(lo - 1)? - target).abs() < (density(lo)? - target).abs() { lo - 1 } else { lo };
    Ok((make(s), density(s)?))
}

fn moa_values(layer: &MoaLayer, n: usize) -> std::collections::BTreeMap<String, InputValue> {
    let h = layer.heads.len();
    let mut v = std::collections::BTreeMap::new();
    v.insert("alpha".into(), InputValue::I32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.alpha as i32).collect() });
    v.insert("beta".into(), InputValue::F32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.beta as f32).collect() });
    v.insert("sink".into(), InputValue::I32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.sink as i32).collect() });
    v.insert("N".into(), InputValue::I32(n as i32));
    v
}

/// Elements of the tiles the kernel visits for one batch entry, all heads.
fn moa_visited(layer: &MoaLayer, n: usize, tile: TileShape) -> Result<u64, CliError> {
    let ir = MethodPattern::Moa.ir();
    let b = Bindings::new(&ir, Dims::new(1, layer.heads.len(), n, n), moa_values(layer, n))
        .map_err(|source| CliError::Bind { source, file: None })?;
    Ok(analyze(&ir, &b, tile)?.visited_elements() as u64)
}

/// MoA at 50% mean density: the heterogeneous launch (one launch, every head
/// its own span), its ratio to dense causal, and its balance.
///
/// Balance: the question is whether heads of very different spans in ONE
/// launch waste time (CTAs of the long-span heads finishing last while SMs
/// idle). The measure chosen is the heterogeneous launch against a launch of
/// the same kernel at the same shape where every head has the SAME span,
/// chosen for the same mean density (same total work, evenly spread): same
/// grid, same occupancy, same launch count, so the ratio isolates the cost
/// of heterogeneity; it is also normalised by the visited tile elements of
/// each (they differ slightly at tile granularity). Timing each head alone
/// (H=1) and summing is reported too, as `sum_heads_alone_ms`, but it is not
/// the balance measure: at H=1 a launch has only B·N/128 CTAs (128 at
/// N=4096, under one wave on 132 SMs) and pays 16 launch tails, so the sum
/// overstates the ideal and would flatter the one-launch number.
fn bench_moa(c: &Ctx<'_>, kernel: &AttentionKernel, tile: TileShape, x: &Qkv<'_>, dense: Timing) -> Result<Row, CliError> {
    let gpu = c.gpu;
    let n = x.n;
    let (layer, density) = moa_plan(n, MOA_DENSITY)?;
    let (uniform, uniform_density) = moa_uniform(n, density)?;
    let hetero = c.time(|| {
        moa_attention(gpu, kernel, x.q, x.k, x.v, &layer, n).map_err(op_error)?;
        Ok(())
    })?;
    let even = c.time(|| {
        moa_attention(gpu, kernel, x.q, x.k, x.v, &uniform, n).map_err(op_error)?;
        Ok(())
    })?;
    let mut alone = Vec::with_capacity(HEADS);
    let head_view = |t: &DeviceTensor, h: usize| -> Result<DeviceTensor, CliError> {
        Ok(t.view_at(t.offset() + h * n * HEAD_DIM, &[BATCH, 1, n, HEAD_DIM], &[HEADS * n * HEAD_DIM, n * HEAD_DIM, HEAD_DIM, 1])?)
    };
    for h in 0..HEADS {
        let (qh, kh, vh) = (head_view(x.q, h)?, head_view(x.k, h)?, head_view(x.v, h)?);
        let one = MoaLayer { heads: vec![layer.heads[h].clone()] };
        alone.push(ms_of(c.time(|| {
            moa_attention(gpu, kernel, &qh, &kh, &vh, &one, n).map_err(op_error)?;
            Ok(())
        })?));
    }
    let sum_alone: f64 = alone.iter().sum();
    let (vis_h, vis_u) = (moa_visited(&layer, n, tile)?, moa_visited(&uniform, n, tile)?);
    let spans = layer.spans(n).map_err(|e| op_error(e.into()))?;
    let per_head_density = layer.density(n).map_err(|e| op_error(e.into()))?;
    let balance = ms_of(hetero) / ms_of(even);
    let balance_per_work = balance * vis_u as f64 / vis_h.max(1) as f64;
    Ok(c.row("moa", "moa50".into(), n, hetero, Some(dense), Vec::new(), serde_json::json!({
        "mean_density": density,
        "uniform_span": uniform.heads[0].alpha,
        "uniform_density": uniform_density,
        "uniform_ms": ms_of(even),
        "balance_vs_uniform": balance,
        "balance_vs_uniform_per_visited": balance_per_work,
        "visited_hetero": vis_h as f64 / (HEADS * n * n) as f64,
        "visited_uniform": vis_u as f64 / (HEADS * n * n) as f64,
        "sum_heads_alone_ms": sum_alone,
        "heads_alone_ms": alone,
        "spans": spans,
        "head_density": per_head_density,
        "plan": layer.heads.iter().map(|h| serde_json::json!({"alpha": h.alpha, "beta": h.beta, "sink": h.sink})).collect::<Vec<_>>(),
    })))
}

/// SparseK block top-k: scores u = K·w, 64-key block scores (max), causal
/// top-16 key blocks per 64-query block, plus a causal window of 256 keys.
fn bench_sparsek(c: &Ctx<'_>, kernel: &AttentionKernel, x: &Qkv<'_>, dense: Timing) -> Result<Row, CliError> {
    let (gpu, ops) = (c.gpu, c.ops);
    let wv = Noise::new(10).vec(HEAD_DIM);
    let cfg = SparseKConfig { topk: SPARSEK_TOPK, window: SPARSEK_WINDOW, reduce: BlockReduce::Max };
    let e2e = c.time(|| {
        sparsek_attention(gpu, kernel, x.q, x.k, x.v, TokenScores::Weights(&wv), &cfg).map_err(op_error)?;
        Ok(())
    })?;
    let wd = DeviceTensor::from_host_f32(gpu, &wv, &[HEAD_DIM])?;
    let scores = c.time(|| {
        let u = ops.token_scores(x.k, &wd).map_err(op_error)?;
        ops.block_scores(&u, cfg.reduce).map_err(op_error)?;
        Ok(())
    })?;
    let u = ops.token_scores(x.k, &wd).map_err(op_error)?;
    let bs = ops.block_scores(&u, cfg.reduce).map_err(op_error)?;
    let select = c.time(|| {
        ops.topk_blocks(&bs, HEADS, x.n, cfg.topk, cfg.window).map_err(op_error)?;
        Ok(())
    })?;
    let sel = ops.topk_blocks(&bs, HEADS, x.n, cfg.topk, cfg.window).map_err(op_error)?;
    let args = PatternArgs::new().block_list("sel", &sel).i32("W", cfg.window);
    let attention = c.time(|| {
        kernel.forward(x.q, x.k, x.v, &args, ForwardOptions::default())?;
        Ok(())
    })?;
    let block_share = sparsek_block_share(&sel.to_host_i32()?, x.n, cfg.topk, cfg.window);
    let stages = vec![
        Stage { name: "scores", ms: ms_of(scores) },
        Stage { name: "select", ms: ms_of(select) },
        Stage { name: "attention", ms: ms_of(attention) },
    ];
    Ok(c.row("sparsek", format!("sparsek{SPARSEK_TOPK}"), x.n, e2e, Some(dense), stages, serde_json::json!({
        "topk": cfg.topk,
        "window": cfg.window,
        "key_block_share": block_share,
        "attention_speedup_vs_dense": dense.median / ms_of(attention),
    })))
}

/// Share of the causal 64x64 key blocks visited: the selected blocks plus
/// those the window reaches, per 64-query block.
fn sparsek_block_share(sel: &[i32], n: usize, topk: usize, window: i32) -> f64 {
    let nqb = n.div_ceil(64);
    let (mut visited, mut causal) = (0u64, 0u64);
    for (i, row) in sel.chunks(topk).enumerate() {
        let qb = i % nqb;
        let first_window = if window > 0 { ((qb * 64) as i64 - window as i64 + 1).max(0) as usize / 64 } else { qb + 1 };
        let in_window = (qb + 1).saturating_sub(first_window) as u64;
        let extra = row.iter().filter(|&&b| b >= 0 && (b as usize) < first_window).count() as u64;
        visited += in_window + extra;
        causal += qb as u64 + 1;
    }
    visited as f64 / causal.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moa_plan_hits_the_density_and_is_heterogeneous() {
        for n in [4096, 8192] {
            let (layer, d) = moa_plan(n, 0.5).unwrap_or_else(|e| panic!("{e}"));
            assert!((d - 0.5).abs() < 1e-3, "n {n}: mean density {d}");
            let spans = layer.spans(n).unwrap_or_else(|e| panic!("{e}"));
            let (lo, hi) = (spans.iter().min().copied().unwrap_or(0), spans.iter().max().copied().unwrap_or(0));
            assert!(hi >= 4 * lo, "n {n}: spans {spans:?} are not heterogeneous");
            let (uniform, ud) = moa_uniform(n, d).unwrap_or_else(|e| panic!("{e}"));
            assert!((ud - d).abs() < 1e-3, "n {n}: uniform density {ud} vs {d}");
            assert!(uniform.heads.iter().all(|h| h.alpha == uniform.heads[0].alpha && h.beta == 0.0));
        }
    }

    #[test]
    fn bucket_density_counts_causal_pairs_in_one_bucket() {
        // One bucket: every causal pair.
        assert!((bucket_density(&[0; 8], &[0; 8], 4, 2) - 1.0).abs() < 1e-12);
        // Alternating buckets, same for q and k: i sees j <= i of its parity.
        let b = [0, 1, 0, 1];
        // Pairs: i=0:1, i=1:1, i=2:2, i=3:2 = 6 of 10.
        assert!((bucket_density(&b, &b, 4, 2) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn ratios_per_sm_cycle_undo_a_throttled_dense_row() {
        let t = |median, sm_mhz| Timing { median, min: median, max: median, sm_mhz };
        // Dense 10 ms at 1700 MHz, the method 1 ms at 1980 MHz: 10x on the
        // wall clock, 10 * 1700 / 1980 = 8.59x per SM cycle.
        let r = cycles_ratio(t(10.0, 1700.0), t(1.0, 1980.0)).expect("both clocked");
        assert!((r - 10.0 * 1700.0 / 1980.0).abs() < 1e-9, "{r}");
        assert_eq!(cycles_ratio(t(10.0, 0.0), t(1.0, 1980.0)), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn sparsek_share_is_one_when_the_window_covers_everything() {
        let n = 256;
        let sel: Vec<i32> = (0..4).flat_map(|qb| [qb, -1]).collect();
        assert!((sparsek_block_share(&sel, n, 2, n as i32) - 1.0).abs() < 1e-12);
        // No window, only the diagonal block selected: 4 of 10 causal blocks.
        assert!((sparsek_block_share(&sel, n, 2, 0) - 0.4).abs() < 1e-12);
    }
}
