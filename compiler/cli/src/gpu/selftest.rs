//! `lacuna selftest`: every standard pattern on the GPU against the CPU
//! reference, on fresh random inputs, outputs poisoned before each launch;
//! ragged lengths, Nq != Nk, GQA/MQA, head dims, both dtypes, strided layouts.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use lacuna_ir::reference::{attention, AttentionShape, Precision};
use lacuna_ir::{Bindings, Dims, Dtype};
use lacuna_runtime::{DeviceTensor, ElemType, ForwardOptions, Gpu};

use super::{load_kernel, upload_rounded, DeviceInputs, Noise};
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
    let base = Case { pattern: "", params: &[], batch: 1, heads: 4, kv_heads: 4, q_len: 384, kv_len: 384, head_dim: 64, dtype: Dtype::Bf16, bnhd: false };
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
    pass: bool,
}

pub fn run(quick: bool, filter: Option<&str>, mma: Option<lacuna_codegen::Mma>, json_out: Option<&std::path::Path>, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let gpu = Gpu::new(0)?;
    writeln!(out, "selftest on {} (sm count {})", gpu.name(), gpu.sm_count()).map_err(CliError::Output)?;
    let mut outcomes = Vec::new();
    let mut seed = 1u64;
    for case in cases(quick) {
        seed += 1;
        if filter.is_some_and(|f| !case.pattern.contains(f)) {
            continue;
        }
        let outcome = run_case(&gpu, &case, seed, mma)?;
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

fn run_case(gpu: &Gpu, c: &Case, seed: u64, mma: Option<lacuna_codegen::Mma>) -> Result<Outcome, CliError> {
    let name = format!(
        "{}{} B{} H{}/{} Nq{} Nk{} D{} {}{}",
        c.pattern,
        c.params.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>(),
        c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len, c.head_dim, c.dtype.name(),
        if c.bnhd { " bnhd" } else { "" }
    );
    let sp = lacuna_patterns::find(c.pattern)?;
    let ir = (sp.ir)();
    let dims = Dims::new(c.batch, c.heads, c.q_len, c.kv_len);
    let params: BTreeMap<String, String> = c.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let values = lacuna_patterns::example_inputs(sp, dims, &params, &BTreeMap::new(), seed)?;
    let bindings = Bindings::new(&ir, dims, values.clone()).map_err(|source| CliError::Bind { source, file: None })?;
    let (_, kernel) = load_kernel(gpu, &ir, c.head_dim, c.dtype, mma)?;
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
    kernel.forward_into(&q, &k, &v, &inputs.args(), &mut o, &mut lse, ForwardOptions::default())?;
    gpu.synchronize()?;
    // Downloads come back in logical (B, H, N, D) order whatever the strides.
    let o_got = o.to_host_as_f32()?;
    let lse_dev = lse.to_host_f32()?;
    let shape = AttentionShape { batch: b, heads: h, kv_heads: hk, q_len: nq, kv_len: nk, head_dim: d };
    let scale = 1.0 / (d as f32).sqrt();
    let reference = attention(&ir, &bindings, shape, &qr, &kr, &vr, scale, Precision::F32)?;
    let unwritten = o_got.iter().chain(&lse_dev).filter(|x| x.is_nan()).count();
    let (mut num, mut den, mut lse_err) = (0f64, 0f64, 0f64);
    let (mut masked_rows, mut bad_masked_rows) = (0, 0);
    for row in 0..b * h * nq {
        let (got, want) = (&o_got[row * d..][..d], &reference.out[row * d..][..d]);
        if reference.lse[row] == f32::NEG_INFINITY {
            masked_rows += 1;
            if lse_dev[row] != f32::NEG_INFINITY || got.iter().any(|&x| x != 0.0) {
                bad_masked_rows += 1;
            }
            continue;
        }
        lse_err = lse_err.max((lse_dev[row] as f64 - reference.lse[row] as f64).abs());
        for t in 0..d {
            num += ((got[t] - want[t]) as f64).powi(2);
            den += (want[t] as f64).powi(2);
        }
    }
    let rel_err = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    let tolerance = 1e-2;
    let pass = unwritten == 0 && bad_masked_rows == 0 && rel_err < tolerance && lse_err < 2e-2 && !rel_err.is_nan();
    Ok(Outcome { case: name, rel_err, lse_err, masked_rows, bad_masked_rows, unwritten, pass })
}

fn round_like(x: &[f32], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::Bf16 => x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
        Dtype::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
    }
}
