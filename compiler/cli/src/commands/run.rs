//! `lacuna run`: one attention on the GPU from .npy files. This is the
//! contract outside tools check Lacuna through, so its flags and file formats
//! stay stable: Q (B, H, Nq, D), K and V (B, Hkv, Nk, D) as f32 (`<f4`), fp16
//! (`<f2`) or bf16 (2-byte void `|V2`, as ml_dtypes writes it) in; O in the
//! same dtype and LSE as f32 out.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use half::{bf16, f16};
use lacuna_ir::{Dims, Dtype, InputId, InputValue};
use lacuna_runtime::{DeviceTensor, ElemType, ForwardOptions, Gpu};
use npyz::NpyHeader;

use crate::commands::mask::bind_inputs;
use crate::error::CliError;
use crate::commands::compile::PlanOverrides;
use crate::gpu::{load_kernel_with, load_method_kernels, DeviceInputs};
use crate::RunArgs;

/// Element type of an attention operand file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileDtype {
    F32,
    F16,
    Bf16,
}

struct Operand {
    dtype: FileDtype,
    shape: Vec<usize>,
    /// Values widened to f32 (exact for all three dtypes).
    data: Vec<f32>,
}

fn usage(what: String) -> CliError {
    CliError::Usage { what }
}

fn read_operand(name: &str, path: &Path) -> Result<Operand, CliError> {
    let file = File::open(path).map_err(|e| usage(format!("cannot open {name} file `{}`: {e}", path.display())))?;
    let mut reader = BufReader::new(file);
    let header = NpyHeader::from_reader(&mut reader).map_err(|e| usage(format!("`{}` ({name}) is not a .npy file: {e}", path.display())))?;
    let descr = header.dtype().descr().trim_matches('\'').to_string();
    let dtype = match descr.as_str() {
        "<f4" => FileDtype::F32,
        "<f2" => FileDtype::F16,
        "|V2" | "<V2" => FileDtype::Bf16,
        other => {
            return Err(usage(format!(
                "{name} (`{}`) has dtype {other}; use float32 (<f4), float16 (<f2) or bfloat16 (ml_dtypes, |V2)",
                path.display()
            )))
        }
    };
    if header.order() == npyz::Order::Fortran {
        return Err(usage(format!("{name} (`{}`) is in Fortran order; save it C-contiguous (numpy.ascontiguousarray)", path.display())));
    }
    let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
    if shape.len() != 4 {
        return Err(usage(format!("{name} (`{}`) has shape {shape:?}; it must be 4-d (B, H, N, D)", path.display())));
    }
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| usage(format!("cannot read {name} from `{}`: {e}", path.display())))?;
    let n: usize = shape.iter().product();
    let width = if dtype == FileDtype::F32 { 4 } else { 2 };
    if bytes.len() < n * width {
        return Err(usage(format!("{name} (`{}`) is truncated: {} bytes of data for shape {shape:?}", path.display(), bytes.len())));
    }
    let data = match dtype {
        FileDtype::F32 => bytes.chunks_exact(4).take(n).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        FileDtype::F16 => bytes.chunks_exact(2).take(n).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        FileDtype::Bf16 => bytes.chunks_exact(2).take(n).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    };
    Ok(Operand { dtype, shape, data })
}

/// Writes a C-order .npy (format 1.0) with raw little-endian data.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<(), CliError> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&out))
        .map_err(|source| CliError::WriteFile { path: path.to_path_buf(), source })
}

pub fn run(args: &RunArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let pattern = crate::registry::find(&args.pattern)?;
    // The SCFA patterns run their whole pipeline from raw Q/K/V unless the
    // pattern's own (already reordered) inputs are given: decided from the
    // names alone, before any file is read or the GPU is touched.
    if let Some(pipeline) = pipeline::plan(pattern, args)? {
        return pipeline::run(&pipeline, args, out);
    }
    let ir = (pattern.ir)();
    let q = read_operand("q", &args.q)?;
    let k = read_operand("k", &args.k)?;
    let v = read_operand("v", &args.v)?;
    check_qkv_files(&q, &k, &v)?;
    let (b, h, nq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let nk = k.shape[2];
    let dims = Dims::new(b, h, nq, nk);
    let bound = bind_inputs(pattern, &ir, dims, &args.inputs, &args.params, args.seed)?;
    let values = ir
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, decl)| (decl.name.clone(), bound.bindings.value(InputId(i as u32)).clone()))
        .collect::<std::collections::BTreeMap<String, InputValue>>();

    let gpu = Gpu::new(0)?;
    let kernel_dtype = kernel_dtype(q.dtype);
    // Tiles for this key length (`KernelPlan::for_length`).
    let (_, kernel) = load_kernel_with(&gpu, &ir, d as u32, kernel_dtype, &PlanOverrides { kv_len: Some(nk), q_len: Some(nq), ..PlanOverrides::default() })?;
    let (qd, kd, vd) = (upload(&gpu, &q, kernel_dtype)?, upload(&gpu, &k, kernel_dtype)?, upload(&gpu, &v, kernel_dtype)?);
    let inputs = DeviceInputs::upload(&gpu, &ir, &values)?;
    let mut o = DeviceTensor::zeros(&gpu, ElemType::from(kernel_dtype), &q.shape)?;
    let mut lse = DeviceTensor::zeros(&gpu, ElemType::F32, &[b, h, nq])?;
    kernel.forward_into(&qd, &kd, &vd, &inputs.args(), &mut o, &mut lse, ForwardOptions { scale: args.scale, ..ForwardOptions::default() })?;
    write_outputs(args, &q, &o, &lse)?;
    writeln!(out, "{} on {}: B={b} H={h} Hkv={} Nq={nq} Nk={nk} D={d} -> {}", pattern.name, gpu.name(), k.shape[1], args.out.display())?;
    Ok(ExitCode::SUCCESS)
}

fn check_qkv_files(q: &Operand, k: &Operand, v: &Operand) -> Result<(), CliError> {
    if q.dtype != k.dtype || q.dtype != v.dtype {
        return Err(usage(format!("q, k and v must share one dtype, got {:?}, {:?}, {:?}", q.dtype, k.dtype, v.dtype)));
    }
    if k.shape != v.shape {
        return Err(usage(format!("k has shape {:?} but v has {:?}; they must match (B, Hkv, Nk, D)", k.shape, v.shape)));
    }
    Ok(())
}

/// f32 files run through the bf16 kernel; the output is widened back to f32.
fn kernel_dtype(file: FileDtype) -> Dtype {
    if file == FileDtype::F16 {
        Dtype::F16
    } else {
        Dtype::Bf16
    }
}

fn upload(gpu: &Gpu, o: &Operand, dtype: Dtype) -> Result<DeviceTensor, CliError> {
    Ok(match dtype {
        Dtype::F16 => DeviceTensor::from_host_f16(gpu, &o.data.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(), &o.shape)?,
        Dtype::Bf16 => DeviceTensor::from_host_bf16(gpu, &o.data.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>(), &o.shape)?,
    })
}

/// O (q's file dtype, q's shape) to --out and, if asked, LSE (f32) to --lse.
fn write_outputs(args: &RunArgs, q: &Operand, o: &DeviceTensor, lse: &DeviceTensor) -> Result<(), CliError> {
    let o_host = o.to_host_as_f32()?;
    let bytes: Vec<u8> = match q.dtype {
        FileDtype::F32 => o_host.iter().flat_map(|x| x.to_le_bytes()).collect(),
        FileDtype::F16 => o_host.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        FileDtype::Bf16 => o_host.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
    };
    let descr = match q.dtype {
        FileDtype::F32 => "<f4",
        FileDtype::F16 => "<f2",
        FileDtype::Bf16 => "|V2",
    };
    write_npy(&args.out, descr, &q.shape, &bytes)?;
    if let Some(path) = &args.lse {
        let l = lse.to_host_f32()?;
        write_npy(path, "<f4", &q.shape[..3], &l.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    }
    Ok(())
}

/// `lacuna run hash-bucket | hash-bucket-strict | qk-drop` from raw,
/// unreordered Q/K/V: the runtime's one-call SCFA pipelines
/// (`scfa_hash_attention`, `scfa_qk_drop_attention`), output in original
/// order. Every argument is checked before the GPU is opened.
mod pipeline {
    use std::path::PathBuf;

    use lacuna_codegen::KernelPlan;
    use lacuna_ir::Arch;
    use lacuna_patterns::StandardPattern;
    use lacuna_runtime::methods::{Causal, HashConfig, MethodPattern, Projection};
    use lacuna_runtime::{scfa_hash_attention, scfa_qk_drop_attention, KeepMask};

    use super::*;
    use crate::gpu::methods_bench::op_error;
    use crate::params;

    /// The pattern's own inputs: all given = the kernel on reordered inputs (no pipeline).
    const HASH_INPUTS: [&str; 4] = ["q_bucket", "k_bucket", "q_pos", "k_pos"];
    const HASH_PARAMS: &str = "buckets (even, 2..=1024; default 8), seed (the LSH projection's seed; default --seed), \
                               strict (0 or 1: q_pos > k_pos), shared_qk (0 or 1: keys use the queries' buckets; needs Nq = Nk)";
    const KEEP_INPUTS: [&str; 2] = ["q_keep", "k_keep"];

    #[derive(Debug)]
    pub enum Method {
        Hash { buckets: usize, seed: u64, causal: Causal, shared_qk: bool },
        QkDrop { q_keep: PathBuf, k_keep: PathBuf },
    }

    /// Whether this `lacuna run` is a pipeline run, and with what; `None`
    /// keeps the plain kernel launch on the given (reordered) inputs.
    pub fn plan(pattern: &StandardPattern, args: &RunArgs) -> Result<Option<Method>, CliError> {
        match pattern.name {
            "hash-bucket" | "hash-bucket-strict" => plan_hash(pattern, args),
            "qk-drop" => plan_qk_drop(args),
            _ => Ok(None),
        }
    }

    fn flag(name: &str, value: &str) -> Result<bool, CliError> {
        match value {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(usage(format!("`--param {name}={value}`: give 1 (on) or 0 (off)"))),
        }
    }

    fn no_scale(args: &RunArgs, what: &str) -> Result<(), CliError> {
        match args.scale {
            Some(s) => Err(usage(format!(
                "--scale {s}: the {what} pipeline uses the softmax scale 1/sqrt(D); --scale works only with the pattern's \
                 own inputs given by --input (the kernel alone)"
            ))),
            None => Ok(()),
        }
    }

    fn plan_hash(pattern: &StandardPattern, args: &RunArgs) -> Result<Option<Method>, CliError> {
        let name = pattern.name;
        let files = params::collect(&args.inputs, "--input")?;
        let values = params::collect(&args.params, "--param")?;
        let given: Vec<&str> = HASH_INPUTS.iter().copied().filter(|n| files.contains_key(*n)).collect();
        if !given.is_empty() {
            let missing: Vec<&str> = HASH_INPUTS.iter().copied().filter(|n| !files.contains_key(*n)).collect();
            if !missing.is_empty() {
                return Err(usage(format!(
                    "`{name}` with --input runs the kernel alone on inputs already in bucket order and needs all of \
                     q_bucket, k_bucket, q_pos, k_pos; missing: {}. Give none of them to run the whole pipeline \
                     (hashing, sort, gather, attention, scatter) from raw Q/K/V with --param buckets=N",
                    missing.join(", ")
                )));
            }
            if let Some(p) = ["seed", "strict", "shared_qk"].iter().find(|p| values.contains_key(**p)) {
                return Err(usage(format!(
                    "`--param {p}` belongs to the full pipeline (no --input); with q_bucket, k_bucket, q_pos and k_pos \
                     given, the kernel runs on them as they are. Drop `--param {p}` or the --input files"
                )));
            }
            return Ok(None);
        }
        if let Some(other) = files.keys().next() {
            return Err(usage(format!(
                "`--input {other}`: the `{name}` pipeline reads only --q, --k and --v (raw, in original order). \
                 --input is for the pattern's own inputs q_bucket, k_bucket, q_pos, k_pos (all four, already in bucket \
                 order), which run the kernel alone"
            )));
        }
        no_scale(args, name)?;
        let mut buckets = 8usize;
        let mut seed = None;
        let mut strict = None;
        let mut shared_qk = false;
        for (p, v) in &values {
            match p.as_str() {
                "buckets" => {
                    buckets = v.parse().map_err(|_| usage(format!("`--param buckets={v}`: give an even integer in 2..=1024")))?;
                    lacuna_runtime::ops::hash::check_buckets(buckets).map_err(|e| usage(format!("`--param buckets={v}`: {e}")))?;
                }
                "seed" => seed = Some(v.parse::<u64>().map_err(|_| usage(format!("`--param seed={v}`: give a non-negative integer")))?),
                "strict" => strict = Some(flag(p, v)?),
                "shared_qk" => shared_qk = flag(p, v)?,
                other => {
                    return Err(usage(format!(
                        "the `{name}` pipeline has no parameter `{other}`; `--param` accepts: {HASH_PARAMS}"
                    )))
                }
            }
        }
        let strict = match (name, strict) {
            ("hash-bucket-strict", Some(false)) => {
                return Err(usage(
                    "`hash-bucket-strict` is the strict pattern; `--param strict=0` contradicts it (use `hash-bucket` for q_pos >= k_pos)".into(),
                ))
            }
            ("hash-bucket-strict", _) => true,
            (_, s) => s.unwrap_or(false),
        };
        let seed = match seed {
            Some(s) if args.seed != 0 && args.seed != s => {
                return Err(usage(format!(
                    "the projection seed is given twice (--seed {} and --param seed={s}); keep one",
                    args.seed
                )))
            }
            Some(s) => s,
            None => args.seed,
        };
        let causal = if strict { Causal::Strict } else { Causal::Inclusive };
        Ok(Some(Method::Hash { buckets, seed, causal, shared_qk }))
    }

    fn plan_qk_drop(args: &RunArgs) -> Result<Option<Method>, CliError> {
        let files = params::collect(&args.inputs, "--input")?;
        if !KEEP_INPUTS.iter().any(|n| files.contains_key(*n)) {
            return Ok(None);
        }
        if let Some(p) = ["q_pos", "k_pos"].iter().find(|n| files.contains_key(**n)) {
            return Err(usage(format!(
                "`--input {p}` and keep masks (q_keep, k_keep) do not mix: give q_keep and k_keep to run the whole \
                 QK-drop pipeline from raw Q/K/V, or q_pos and k_pos (already compacted inputs) to run the kernel alone"
            )));
        }
        let (Some(q_keep), Some(k_keep)) = (files.get("q_keep"), files.get("k_keep")) else {
            let missing = if files.contains_key("q_keep") { "k_keep" } else { "q_keep" };
            return Err(usage(format!(
                "the qk-drop pipeline needs both keep masks: --input q_keep=FILE.npy (B, H, Nq) and --input \
                 k_keep=FILE.npy (B, H or Hkv, Nk), uint8/bool or int32, nonzero = keep; `{missing}` is missing \
                 (an all-ones mask keeps every token)"
            )));
        };
        if let Some(other) = files.keys().find(|n| !KEEP_INPUTS.contains(&n.as_str())) {
            return Err(usage(format!("`--input {other}`: the qk-drop pipeline reads only q_keep and k_keep besides --q, --k and --v")));
        }
        if let Some((p, _)) = args.params.first() {
            return Err(usage(format!(
                "`--param {p}`: the qk-drop pipeline takes no --param (`drop` only shapes example inputs; with keep \
                 masks the masks decide what is dropped)"
            )));
        }
        no_scale(args, "qk-drop")?;
        Ok(Some(Method::QkDrop { q_keep: PathBuf::from(q_keep), k_keep: PathBuf::from(k_keep) }))
    }

    /// A keep mask from a .npy file: bytes (bool / uint8) or i32, (B, H, N).
    enum Keep {
        Bytes(Vec<u8>),
        I32(Vec<i32>),
    }

    fn read_keep(name: &str, path: &std::path::Path, want: [usize; 3], heads_ok: &[usize]) -> Result<(Keep, [usize; 3]), CliError> {
        let file = File::open(path).map_err(|e| usage(format!("cannot open the {name} file `{}`: {e}", path.display())))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = BufReader::new(file);
        let header = NpyHeader::from_reader(&mut reader)
            .map_err(|e| usage(format!("`{}` ({name}) is not a .npy file: {e}; write it with numpy.save", path.display())))?;
        let descr = header.dtype().descr().trim_matches('\'').to_string();
        let bytes = match descr.as_str() {
            "|b1" | "|u1" => true,
            "<i4" => false,
            other => {
                return Err(usage(format!(
                    "{name} (`{}`) has dtype {other}; a keep mask is bool, uint8 or int32 (nonzero = keep): \
                     `mask.astype(numpy.uint8)`",
                    path.display()
                )))
            }
        };
        let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
        let heads_text = heads_ok.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(" or ");
        if shape.len() != 3 || shape[0] != want[0] || !heads_ok.contains(&shape[1]) || shape[2] != want[2] {
            return Err(usage(format!(
                "{name} (`{}`) has shape {shape:?}; it must be (B, H, N) = ({}, {heads_text}, {}) to match --q/--k",
                path.display(),
                want[0],
                want[2]
            )));
        }
        if header.order() == npyz::Order::Fortran {
            return Err(usage(format!("{name} (`{}`) is in Fortran order; save it C-contiguous (numpy.ascontiguousarray)", path.display())));
        }
        let n: usize = shape.iter().product();
        let width = if bytes { 1 } else { 4 };
        if (n * width) as u64 > file_len {
            return Err(usage(format!("{name} (`{}`) is truncated: {file_len} bytes for shape {shape:?}", path.display())));
        }
        let mut data = Vec::new();
        reader.read_to_end(&mut data).map_err(|e| usage(format!("cannot read {name} from `{}`: {e}", path.display())))?;
        if data.len() < n * width {
            return Err(usage(format!("{name} (`{}`) is truncated: {} bytes of data for shape {shape:?}", path.display(), data.len())));
        }
        let keep = if bytes {
            data.truncate(n);
            Keep::Bytes(data)
        } else {
            Keep::I32(data.chunks_exact(4).take(n).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        Ok((keep, [shape[0], shape[1], shape[2]]))
    }

    fn upload_keep(gpu: &Gpu, keep: Keep, shape: [usize; 3]) -> Result<KeepMask, CliError> {
        match keep {
            Keep::Bytes(b) => KeepMask::from_host_u8(gpu, &b, shape).map_err(op_error),
            Keep::I32(v) => KeepMask::from_i32(DeviceTensor::from_host_i32(gpu, &v, &shape)?).map_err(op_error),
        }
    }

    pub fn run(method: &Method, args: &RunArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
        let q = read_operand("q", &args.q)?;
        let k = read_operand("k", &args.k)?;
        let v = read_operand("v", &args.v)?;
        check_qkv_files(&q, &k, &v)?;
        let (b, h, nq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let (hkv, nk) = (k.shape[1], k.shape[2]);
        if q.shape.contains(&0) || k.shape.contains(&0) {
            return Err(usage(format!("q has shape {:?} and k {:?}; no dimension may be 0", q.shape, k.shape)));
        }
        if k.shape[0] != b || k.shape[3] != d {
            return Err(usage(format!("k has shape {:?}; its batch and head_dim must be q's ({b}, {d})", k.shape)));
        }
        if h % hkv != 0 {
            return Err(usage(format!("q has {h} heads and k has {hkv}: the query heads must be a multiple of the key/value heads")));
        }
        let pattern = match method {
            Method::Hash { causal: Causal::Strict, .. } => MethodPattern::HashBucketStrict,
            Method::Hash { .. } => MethodPattern::HashBucket,
            Method::QkDrop { .. } => MethodPattern::QkDrop,
        };
        let ir = pattern.ir();
        let kernel_dtype = kernel_dtype(q.dtype);
        // The head_dim check of the code generator, before the GPU is opened.
        KernelPlan::for_pattern(&ir, d as u32, kernel_dtype, Arch::Sm80)
            .map_err(|source| CliError::Codegen { pattern: ir.name().into(), head_dim: d as u32, source })?;
        let masks = match method {
            Method::Hash { shared_qk: true, .. } if nq != nk => {
                return Err(usage(format!(
                    "`--param shared_qk=1` needs as many keys as queries, got Nq = {nq} and Nk = {nk}"
                )))
            }
            Method::Hash { .. } => None,
            Method::QkDrop { q_keep, k_keep } => {
                Some((read_keep("q_keep", q_keep, [b, h, nq], &[h])?, read_keep("k_keep", k_keep, [b, hkv, nk], &[h, hkv])?))
            }
        };

        let gpu = Gpu::new(0)?;
        // A kernel per key-length class: QK-drop's compacted length is known
        // only on the GPU.
        let kernel = load_method_kernels(&gpu, pattern, d as u32, kernel_dtype, None, None)?;
        let (qd, kd, vd) = (upload(&gpu, &q, kernel_dtype)?, upload(&gpu, &k, kernel_dtype)?, upload(&gpu, &v, kernel_dtype)?);
        let (result, what) = match (method, masks) {
            (Method::Hash { buckets, seed, causal, shared_qk }, _) => {
                let cfg = HashConfig { buckets: *buckets, projection: Projection::Seed(*seed), shared_qk: *shared_qk, causal: *causal };
                let what = format!(
                    "{buckets} buckets, projection seed {seed}, {} causality{}",
                    if *causal == Causal::Strict { "strict" } else { "inclusive" },
                    if *shared_qk { ", shared-QK" } else { "" }
                );
                (scfa_hash_attention(&gpu, &kernel, &qd, &kd, &vd, &cfg).map_err(op_error)?, what)
            }
            (Method::QkDrop { .. }, Some(((qk, qs), (kk, ks)))) => {
                let kept = |keep: &Keep| match keep {
                    Keep::Bytes(b) => b.iter().filter(|&&x| x != 0).count(),
                    Keep::I32(v) => v.iter().filter(|&&x| x != 0).count(),
                };
                let what = format!("kept {} of {} queries, {} of {} keys", kept(&qk), qs.iter().product::<usize>(), kept(&kk), ks.iter().product::<usize>());
                let (qm, km) = (upload_keep(&gpu, qk, qs)?, upload_keep(&gpu, kk, ks)?);
                (scfa_qk_drop_attention(&gpu, &kernel, &qd, &kd, &vd, &qm, &km).map_err(op_error)?, what)
            }
            (Method::QkDrop { .. }, None) => return Err(usage("internal: keep masks were not read".into())),
        };
        write_outputs(args, &q, &result.o, &result.lse)?;
        writeln!(
            out,
            "{} pipeline on {}: B={b} H={h} Hkv={hkv} Nq={nq} Nk={nk} D={d}, {what} -> {} (original order)",
            args.pattern,
            gpu.name(),
            args.out.display()
        )?;
        Ok(ExitCode::SUCCESS)
    }
}
