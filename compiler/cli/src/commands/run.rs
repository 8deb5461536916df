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
use crate::gpu::{load_kernel, DeviceInputs};
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
    let descr = header.dtype().descr();
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
    let pattern = lacuna_patterns::find(&args.pattern)?;
    let ir = (pattern.ir)();
    let q = read_operand("q", &args.q)?;
    let k = read_operand("k", &args.k)?;
    let v = read_operand("v", &args.v)?;
    if q.dtype != k.dtype || q.dtype != v.dtype {
        return Err(usage(format!("q, k and v must share one dtype, got {:?}, {:?}, {:?}", q.dtype, k.dtype, v.dtype)));
    }
    if k.shape != v.shape {
        return Err(usage(format!("k has shape {:?} but v has {:?}; they must match (B, Hkv, Nk, D)", k.shape, v.shape)));
    }
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
    // f32 files run through the bf16 kernel; the output is widened back to f32.
    let kernel_dtype = if q.dtype == FileDtype::F16 { Dtype::F16 } else { Dtype::Bf16 };
    let (_, kernel) = load_kernel(&gpu, &ir, d as u32, kernel_dtype)?;
    let upload = |o: &Operand| -> Result<DeviceTensor, CliError> {
        Ok(match kernel_dtype {
            Dtype::F16 => DeviceTensor::from_host_f16(&gpu, &o.data.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(), &o.shape)?,
            Dtype::Bf16 => DeviceTensor::from_host_bf16(&gpu, &o.data.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>(), &o.shape)?,
        })
    };
    let (qd, kd, vd) = (upload(&q)?, upload(&k)?, upload(&v)?);
    let inputs = DeviceInputs::upload(&gpu, &ir, &values)?;
    let mut o = DeviceTensor::zeros(&gpu, ElemType::from(kernel_dtype), &q.shape)?;
    let mut lse = DeviceTensor::zeros(&gpu, ElemType::F32, &[b, h, nq])?;
    kernel.forward_into(&qd, &kd, &vd, &inputs.args(), &mut o, &mut lse, ForwardOptions { scale: args.scale })?;
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
        write_npy(path, "<f4", &[b, h, nq], &l.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    }
    writeln!(out, "{} on {}: B={b} H={h} Hkv={} Nq={nq} Nk={nk} D={d} -> {}", pattern.name, gpu.name(), k.shape[1], args.out.display())?;
    Ok(ExitCode::SUCCESS)
}
